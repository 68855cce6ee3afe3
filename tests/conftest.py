"""Test-session setup: 8 virtual CPU devices for the sharding tests (must precede JAX's backend start)."""

import jax

jax.config.update("jax_num_cpu_devices", 8)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_shapes_run(tmp_path_factory):
    """A launch.train workdir of the shapes_edt_tiny test config after 2 steps (plain pass), shared by the tests
    of the launchers that read trained runs."""
    from configs import shapes_edt_tiny
    from launch.train import run

    workdir = tmp_path_factory.mktemp("tiny_shapes_run")
    config = shapes_edt_tiny.get_config("test")
    config.total_steps, config.checkpoint_every_steps, config.loss.masked_pass = 2, 2, False
    run(config, str(workdir))
    return workdir
