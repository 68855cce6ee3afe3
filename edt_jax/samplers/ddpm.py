"""Ancestral DDPM sampling: ADM's ``p_sample_loop`` as one ``lax.scan``.

This is the sampler DiT / EDT report FID with (250 respaced steps of a 1000-step linear-beta
diffusion, learned-range variance). The network sees the ORIGINAL training timestep of each kept
step (ADM's ``_WrappedModel``), and the per-step update is

    x0   = f(model output)                      (eps, x0 or v prediction; optional clip)
    mean = coef1[i] x0 + coef2[i] x_i           (posterior mean of q(x_{i-1} | x_i, x0))
    x_{i-1} = mean + [i > 0] exp(log_var / 2) z, z = normal(fold_in(key, i))

with i the index in the respaced diffusion, running from steps-1 down to 0.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from edt_jax.checks import check_choice
from edt_jax.deprecation import warn_deprecated
from edt_jax.diffusion.ddpm import DiscreteDiffusion, as_tables, space_timesteps
from edt_jax.diffusion.predictions import PREDICTIONS, resolve_prediction
from edt_jax.samplers.core import STEP_KWARG_ATTR, state_dtype
from edt_jax.samplers.trajectory import Trajectory

VARIANCES = ("learned_range", "fixed_small", "fixed_large")


def _step_tables(spaced: DiscreteDiffusion, variance: str) -> dict[str, np.ndarray]:
    """(steps,) float64 per-step coefficients in scan order (index steps-1 first)."""
    n = spaced.num_steps
    if variance == "fixed_large":
        # ADM: the first entry is the posterior variance so that the log stays finite.
        first = spaced.posterior_variance[1] if n > 1 else spaced.betas[0]
        log_var = np.log(np.append(first, spaced.betas[1:]))
    else:
        log_var = spaced.posterior_log_variance_clipped
    tables = {
        "t_input": spaced.timestep_map.astype(np.float64),
        "sqrt_recip_acp": spaced.sqrt_recip_alphas_cumprod,
        "sqrt_recipm1_acp": spaced.sqrt_recipm1_alphas_cumprod,
        "sqrt_acp": spaced.sqrt_alphas_cumprod,
        "sqrt_one_minus_acp": spaced.sqrt_one_minus_alphas_cumprod,
        "coef1": spaced.posterior_mean_coef1,
        "coef2": spaced.posterior_mean_coef2,
        # learned_range interpolates the log variance between these two.
        "min_log": spaced.posterior_log_variance_clipped,
        "max_log": np.log(spaced.betas),
        "log_var": log_var,
        # ADM's nonzero_mask: the last step (index 0) returns the mean, without noise.
        "nonzero": (np.arange(n) != 0).astype(np.float64),
    }
    return {k: np.ascontiguousarray(v[::-1]) for k, v in tables.items()}


def start_timesteps(diffusion: DiscreteDiffusion, t_start: float | None) -> int:
    """How many training timesteps a chain starting at continuous time ``t_start`` covers: round(t_start N)
    (all N for None); the state at t_start = n / N is x at timestep n - 1."""
    if t_start is None:
        return diffusion.num_steps
    n = round(float(t_start) * diffusion.num_steps)
    if not 0.0 < float(t_start) <= 1.0 or n < 1:
        raise ValueError(f"t_start={t_start!r} is not accepted by ddpm; expected a time in [1/N, 1] "
                         f"(N = {diffusion.num_steps}): the chain starts at timestep round(t_start N) - 1")
    return n


def _check_args(diffusion, steps, variance, x_T, available: int) -> None:
    """Raise a one-line ValueError for bad user input, before anything is traced."""
    is_int = isinstance(steps, (int, np.integer)) and not isinstance(steps, bool)
    if not is_int or not 1 <= steps <= available:
        what = "the diffusion's number of timesteps" if available == diffusion.num_steps else \
            "the timesteps below t_start"
        raise ValueError(f"steps={steps!r} is not accepted; expected an integer in [1, {available}] ({what})")
    check_choice("variance", variance, VARIANCES)
    if jnp.ndim(x_T) < 2:
        raise ValueError(f"x_T must have shape (B, ..., C) with at least 2 axes, got shape {jnp.shape(x_T)}")


def _legacy_order(schedule, legacy: tuple, key):
    """``ddpm(model, x_T, key, diffusion, ...)`` (the former argument order) -> (schedule, key), with a warning."""
    if not legacy:
        return schedule, key
    if len(legacy) != 1 or key is not None:
        raise TypeError("ddpm takes (model, x_T, schedule, *, key=..., steps=...)")
    warn_deprecated("samplers.ddpm(model, x_T, key, diffusion)", "samplers.ddpm(model, x_T, schedule, key=key)")
    return legacy[0], schedule


def ddpm(model: Callable[[jax.Array, jax.Array], jax.Array], x_T: jax.Array, schedule, *legacy,
         key: jax.Array | None = None, steps: int = 250, variance: str = "learned_range",
         prediction: str | None = None, clip_denoised: bool = False, t_start: float | None = None,
         return_trajectory: bool = False, model_type: str | None = None):
    """Ancestral sampling from x_T with ``steps`` respaced DDPM steps (ADM ``p_sample_loop``).

    Args:
      model: the raw network ``model(x, t_input)``; x (B, ..., C), t_input (B,) float32 holding the
        original training timestep. Returns (B, ..., C), or (B, ..., 2C) for variance="learned_range"
        where the second half of the last axis is ADM's v in [-1, 1]: the log variance is
        frac * log(beta) + (1 - frac) * posterior_log_variance_clipped with frac = (v + 1) / 2.
        A model built by ``guided_network`` with per-call scales is passed the call index.
      x_T: (B, ..., C) starting noise; the state is kept in promote_types(x_T.dtype, float32).
      schedule: a discrete ``NoiseScheduleVP`` (its ``tables``) or an un-respaced ``DiscreteDiffusion``.
      key: PRNG key; step i draws its noise from ``jax.random.fold_in(key, i)``.
      steps: number of steps (and of model calls); the timesteps are space_timesteps(n, str(steps)) of the n
        timesteps the chain covers, so steps = N is plain DDPM.
      variance: "learned_range" | "fixed_small" (posterior variance) | "fixed_large" (betas).
      prediction: what the first C output channels predict: "eps" (default) | "x0" | "v".
      clip_denoised: clip the predicted x0 to [-1, 1].
      t_start: start the chain part-way, at continuous time t_start (timestep round(t_start N) - 1), from an x_T
        that is a sample of that time (DP-IR's tau < 1); default: the full chain.
      return_trajectory: also return the ``Trajectory`` of the model calls: t = (n + 1) / N for the original
        timestep n (the continuous time of ``NoiseScheduleVP.discrete``), the state and the predicted x0.
      model_type: deprecated name of ``prediction`` ("noise" | "x_start" | "v").

    Returns:
      (B, ..., C) samples x_0 in the state dtype; with ``return_trajectory``, ``(samples, Trajectory)``.
    """
    schedule, key = _legacy_order(schedule, legacy, key)
    prediction = resolve_prediction(prediction, model_type, accepted=PREDICTIONS)
    if key is None:
        raise ValueError("ddpm draws fresh noise at every step: pass key=jax.random.key(...)")
    diffusion = as_tables(schedule)
    if diffusion.is_respaced:
        raise ValueError(f"diffusion is already respaced ({diffusion.num_steps} steps with timestep_map "
                         f"{diffusion.timestep_map[:3].tolist()}...); pass the original diffusion and choose steps=")
    available = start_timesteps(diffusion, t_start)
    _check_args(diffusion, steps, variance, x_T, available)
    steps = int(steps)
    if available < diffusion.num_steps:  # the first n timesteps: the chain starts at timestep n - 1
        diffusion = DiscreteDiffusion.from_betas(diffusion.betas[:available])
    spaced = diffusion.respace(space_timesteps(diffusion.num_steps, str(steps)))
    tables = _step_tables(spaced, variance)
    per_call = getattr(model, STEP_KWARG_ATTR, False)

    x_T = jnp.asarray(x_T)
    dtype = state_dtype(x_T)
    x_T = x_T.astype(dtype)
    batch, channels = x_T.shape[0], x_T.shape[-1]
    out_channels = 2 * channels if variance == "learned_range" else channels
    # Host float64 -> state dtype once; the scan slices one row per step.
    xs = {k: jnp.asarray(v, dtype=jnp.float32 if k == "t_input" else dtype) for k, v in tables.items()}
    xs["index"] = jnp.arange(steps - 1, -1, -1, dtype=jnp.int32)
    xs["call"] = jnp.arange(steps, dtype=jnp.int32)
    xs["t"] = jnp.asarray((tables["t_input"] + 1.0) / diffusion.num_steps, dtype)

    def body(x, c):
        t_input = jnp.full((batch,), c["t_input"], dtype=jnp.float32)
        out = model(x, t_input, step=c["call"]) if per_call else model(x, t_input)
        if out.shape[:-1] != x.shape[:-1] or out.shape[-1] != out_channels:
            raise ValueError(f"model output has shape {out.shape}; variance={variance!r} needs "
                             f"{x.shape[:-1] + (out_channels,)}")
        out = out.astype(dtype)
        pred = out[..., :channels]
        if prediction == "eps":
            x0 = c["sqrt_recip_acp"] * x - c["sqrt_recipm1_acp"] * pred
        elif prediction == "v":
            x0 = c["sqrt_acp"] * x - c["sqrt_one_minus_acp"] * pred
        else:
            x0 = pred
        if clip_denoised:
            x0 = jnp.clip(x0, -1.0, 1.0)
        mean = c["coef1"] * x0 + c["coef2"] * x
        if variance == "learned_range":
            frac = (out[..., channels:] + 1.0) / 2.0
            log_var = frac * c["max_log"] + (1.0 - frac) * c["min_log"]
        else:
            log_var = c["log_var"]
        noise = jax.random.normal(jax.random.fold_in(key, c["index"]), x.shape, dtype=dtype)
        x_next = mean + c["nonzero"] * jnp.exp(0.5 * log_var) * noise
        return x_next, Trajectory(c["t"], x, x0) if return_trajectory else None

    x0, calls = jax.lax.scan(body, x_T, xs)
    return (x0, calls) if return_trajectory else x0
