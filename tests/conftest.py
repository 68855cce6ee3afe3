"""Test-session setup: 8 virtual CPU devices for the sharding tests (must precede JAX's backend start)."""

import jax

jax.config.update("jax_num_cpu_devices", 8)
