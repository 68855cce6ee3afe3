"""Noise schedules, the forward process and the discrete DDPM quantities training needs.

``NoiseScheduleVP`` is the library's one schedule: the continuous VP view the samplers integrate and, for a
discrete schedule, ADM's tables (``ns.tables``) that training and ancestral sampling read.
"""

from edt_jax.diffusion.analytic import GaussianMixture
from edt_jax.diffusion.ddpm import (
    BETA_SCHEDULES,
    DiscreteDiffusion,
    as_schedule,
    as_tables,
    beta_schedule,
    predict_eps_from_x0,
    predict_x0_from_eps,
    q_posterior_mean_variance,
    q_sample,
    space_timesteps,
)
from edt_jax.diffusion.losses import WEIGHTINGS, training_losses
from edt_jax.diffusion.predictions import PREDICTIONS, SAMPLER_PREDICTIONS, check_prediction
from edt_jax.diffusion.schedules import SKIP_TYPES, NoiseScheduleVP
from edt_jax.diffusion.timestep_sampling import TIMESTEP_SAMPLERS, create_timestep_sampler

__all__ = [
    "BETA_SCHEDULES",
    "PREDICTIONS",
    "SAMPLER_PREDICTIONS",
    "SKIP_TYPES",
    "TIMESTEP_SAMPLERS",
    "WEIGHTINGS",
    "DiscreteDiffusion",
    "GaussianMixture",
    "NoiseScheduleVP",
    "as_schedule",
    "as_tables",
    "beta_schedule",
    "check_prediction",
    "create_timestep_sampler",
    "predict_eps_from_x0",
    "predict_x0_from_eps",
    "q_posterior_mean_variance",
    "q_sample",
    "space_timesteps",
    "training_losses",
]
