"""Trained runs as library objects: train one from a config, load it, sample, evaluate, reuse its network.

    from edt_jax import runs
    runs.train(config, workdir)                  # what launch.train runs (resumes)
    run = runs.load_run(workdir)                 # also edt_jax.load_run
    images = run.sample(labels=[0, 1, 2], steps=20, guidance_scale=3.0)

``build`` turns configs into library objects; ``generate`` holds the compiled, sharded sampling.
"""

from edt_jax.runs.run import Run, load_frozen_run, load_run
from edt_jax.runs.training import train

__all__ = ["Run", "load_frozen_run", "load_run", "train"]
