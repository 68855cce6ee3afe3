"""Noise schedules, the forward process and the discrete DDPM quantities training needs."""

from edt_jax.diffusion.analytic import GaussianMixture
from edt_jax.diffusion.ddpm import (
    BETA_SCHEDULES,
    DiscreteDiffusion,
    beta_schedule,
    predict_eps_from_x0,
    predict_x0_from_eps,
    q_posterior_mean_variance,
    q_sample,
    space_timesteps,
)
from edt_jax.diffusion.losses import PREDICTIONS, WEIGHTINGS, training_losses
from edt_jax.diffusion.schedules import SKIP_TYPES, NoiseScheduleVP
from edt_jax.diffusion.timestep_sampling import TIMESTEP_SAMPLERS, create_timestep_sampler

__all__ = [
    "BETA_SCHEDULES",
    "PREDICTIONS",
    "SKIP_TYPES",
    "TIMESTEP_SAMPLERS",
    "WEIGHTINGS",
    "DiscreteDiffusion",
    "GaussianMixture",
    "NoiseScheduleVP",
    "beta_schedule",
    "create_timestep_sampler",
    "predict_eps_from_x0",
    "predict_x0_from_eps",
    "q_posterior_mean_variance",
    "q_sample",
    "space_timesteps",
    "training_losses",
]
