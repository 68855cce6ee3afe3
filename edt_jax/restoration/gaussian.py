"""DP-IR's denoiser as in the paper: a Gaussian denoiser D(x~, sigma) of x~ = x0 + sigma eps, used as x0_D(x_t, t).

    apply = lambda p, x, sigma: GaussianDenoiser().apply({"params": p}, x, sigma)
    loss_fn = denoiser_loss(apply, sigma_range(ns))        # the trainer's loss (edt_jax.training.loop.train)
    denoise = x0_predictor(apply, ns)                      # (params, x_t, t_input) -> x0, as dpir.x0_predictor

A DPM state x_t = alpha_t x0 + s_t eps is a Gaussian-noisy image in disguise: x~_t = x_t / alpha_t = x0 +
(s_t / alpha_t) eps, so D(x~_t, sigma~_t) with sigma~_t = sqrt((1 - abar_t) / abar_t) estimates x0 at every step
of any sampler on the schedule ``ns`` (Zhussip et al., NeurIPS 2024, sec. 3). Shapes: images (B, H, W, C) in
[-1, 1]; sigma and t_input (B,).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from edt_jax.diffusion import NoiseScheduleVP

DenoiseFn = Callable[[Any, jax.Array, jax.Array], jax.Array]  # (params, x~ (B, H, W, C), sigma (B,)) -> x0


def noise_level(ns: NoiseScheduleVP, t_input: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(1 / alpha_t, sigma~_t) at the network times ``t_input`` (B,): x~_t = x_t / alpha_t has noise std sigma~_t."""
    t = ns.continuous_time(jnp.asarray(t_input, jnp.float32))
    alpha = ns.marginal_alpha(t)
    return 1.0 / alpha, ns.marginal_std(t) / alpha


def sigma_range(ns: NoiseScheduleVP) -> tuple[float, float]:
    """(sigma~ at the first training timestep, sigma~ at T): the noise levels DP-IR's chain visits on ``ns``."""
    _, low = noise_level(ns, jnp.zeros((1,)))
    _, high = noise_level(ns, jnp.full((1,), 1000.0 * (ns.total_N - 1) / ns.total_N))
    return float(low[0]), float(high[0])


def x0_predictor(denoiser_apply: DenoiseFn, ns: NoiseScheduleVP) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
    """x0_D(params, x_t, t_input) = D(x_t / alpha_t, sqrt((1 - abar_t) / abar_t)): the Gaussian denoiser as DP-IR's
    x0 estimate on the DPM schedule ``ns`` (the one the chain samples on); ``t_input`` a scalar or (B,)."""

    def denoise(params, x_t, t_input):
        scale, sigma = noise_level(ns, jnp.broadcast_to(t_input, (x_t.shape[0],)))
        return denoiser_apply(params, x_t * scale.reshape(-1, 1, 1, 1).astype(x_t.dtype), sigma)

    return denoise


def denoiser_loss(denoiser_apply: DenoiseFn, sigmas: tuple[float, float], *, sigma_data: float = 0.5) -> Callable:
    """The trainer's ``loss_fn(params, frozen, batch, key)``: EDM-weighted L2 of D(x0 + sigma eps, sigma) to x0.

    sigma is log-uniform on ``sigmas`` = (low, high), e.g. ``sigma_range(ns)``. Why log-uniform and not the
    chain's uniform timesteps mapped to sigma~: on linear betas, uniform t puts 70 % of the draws above
    sigma~ = 1, where x0 is barely recoverable and the estimate is near the mean, and under 10 % below 0.1,
    the levels that tau-start and the chain's last steps spend their NFE on and where the denoiser's
    detail shows. Log-uniform gives each octave the same share. The weight (sigma^2 + s^2) / (sigma s)^2 is
    EDM's: it makes every level's loss of unit scale (the error is divided by c_out), so neither end dominates.
    """
    low, high = (float(s) for s in sigmas)
    if not 0.0 < low < high or not math.isfinite(high):
        raise ValueError(f"the denoiser's sigma range must be 0 < low < high (finite), got {sigmas!r}")

    def loss_fn(params, frozen, batch, key):
        del frozen
        x0 = batch["image"]
        sigma_key, noise_key = jax.random.split(key)
        sigma = jnp.exp(jax.random.uniform(sigma_key, (x0.shape[0],), jnp.float32, math.log(low), math.log(high)))
        s = sigma.reshape(-1, 1, 1, 1)
        error = denoiser_apply(params, x0 + s * jax.random.normal(noise_key, x0.shape, jnp.float32), sigma) - x0
        weight = (s ** 2 + sigma_data ** 2) / (s * sigma_data) ** 2
        return jnp.mean(weight * error ** 2), {"l1": jnp.mean(jnp.abs(error))}

    return loss_fn
