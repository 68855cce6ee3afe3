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
from edt_jax.diffusion.schedules import SKIP_TYPES, NoiseScheduleVP

__all__ = [
    "BETA_SCHEDULES",
    "SKIP_TYPES",
    "DiscreteDiffusion",
    "GaussianMixture",
    "NoiseScheduleVP",
    "beta_schedule",
    "predict_eps_from_x0",
    "predict_x0_from_eps",
    "q_posterior_mean_variance",
    "q_sample",
    "space_timesteps",
]
