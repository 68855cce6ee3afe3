"""edt_jax: diffusion transformers, fast samplers and their tooling in JAX/Flax.

    import edt_jax
    run = edt_jax.load_run("/tmp/mnist_quick")            # a launch.train run directory
    images = run.sample(labels=[0, 1, 2], guidance_scale=3.0)

``import edt_jax`` stays light: ``load_run`` and ``Run`` load ``edt_jax.runs`` (and JAX) on first use.
"""

__version__ = "0.1.0"
__all__ = ["Run", "load_run"]


def __getattr__(name: str):
    if name in __all__:
        from edt_jax import runs

        return getattr(runs, name)
    raise AttributeError(f"module 'edt_jax' has no attribute {name!r}")
