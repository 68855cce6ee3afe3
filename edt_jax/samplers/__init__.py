"""Jit-compatible functional samplers: UniPC, DPM-Solver(++), DDIM, ancestral DDPM.

Each sampler runs its whole trajectory as one ``lax.scan`` over host-computed float64 coefficients,
so it can sit inside the caller's ``jax.jit``, under ``vmap`` and on sharded inputs. With
``return_trajectory=True`` it also returns the ``Trajectory`` of its model calls.
"""

from edt_jax.samplers.core import dynamic_thresholding
from edt_jax.samplers.ddpm import ddpm
from edt_jax.samplers.dpm_solver import ddim, dpm_solver
from edt_jax.samplers.guidance import guidance_interval, guidance_schedule
from edt_jax.samplers.solve import MODEL_TYPE_OF_PREDICTION, ODE_SAMPLERS, solve
from edt_jax.samplers.trajectory import Trajectory, call_times
from edt_jax.samplers.unipc import unipc
from edt_jax.samplers.wrappers import model_wrapper, output_to_noise

__all__ = [
    "MODEL_TYPE_OF_PREDICTION",
    "ODE_SAMPLERS",
    "Trajectory",
    "call_times",
    "ddim",
    "ddpm",
    "dpm_solver",
    "dynamic_thresholding",
    "guidance_interval",
    "guidance_schedule",
    "model_wrapper",
    "output_to_noise",
    "solve",
    "unipc",
]
