"""Jit-compatible functional samplers: UniPC, DPM-Solver(++), DDIM, ancestral DDPM.

``sample(name, network, x_T, schedule, ...)`` runs any of them from the network itself (its prediction,
guidance, learned variance). Each sampler runs its whole trajectory as one ``lax.scan`` over host-computed
float64 coefficients, so it can sit inside the caller's ``jax.jit``, under ``vmap`` and on sharded inputs.
With ``return_trajectory=True`` it also returns the ``Trajectory`` of its model calls. ``diffusers_sampler(config,
num_inference_steps)`` runs the same core over a diffusers scheduler config's own timesteps.
"""

from edt_jax.deprecation import module_getattr
from edt_jax.samplers.core import dynamic_thresholding
from edt_jax.samplers.ddpm import ddpm
from edt_jax.samplers.diffusers import diffusers_sampler
from edt_jax.samplers.dispatch import ODE_SAMPLERS, SAMPLERS, sample, solve, solve_ode
from edt_jax.samplers.dpm_solver import ddim, dpm_solver
from edt_jax.samplers.guidance import guidance_interval, guidance_schedule
from edt_jax.samplers.trajectory import Trajectory, call_times, call_timesteps
from edt_jax.samplers.unipc import unipc
from edt_jax.samplers.wrappers import guided_network, model_wrapper, output_to_noise

__all__ = [
    "ODE_SAMPLERS",
    "SAMPLERS",
    "Trajectory",
    "call_times",
    "call_timesteps",
    "ddim",
    "ddpm",
    "diffusers_sampler",
    "dpm_solver",
    "dynamic_thresholding",
    "guidance_interval",
    "guidance_schedule",
    "guided_network",
    "model_wrapper",
    "output_to_noise",
    "sample",
    "solve",
    "solve_ode",
    "unipc",
]

# The loss's prediction names were mapped to the reference's model_type names; both now use the former.
__getattr__ = module_getattr("edt_jax.samplers", {
    "MODEL_TYPE_OF_PREDICTION": ("the prediction names themselves (eps, x0, v)",
                                 lambda: {"eps": "noise", "x0": "x_start", "v": "v"}),
})
