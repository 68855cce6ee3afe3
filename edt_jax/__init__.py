"""edt_jax: diffusion transformers, fast samplers and their tooling in JAX/Flax."""

__version__ = "0.1.0"
