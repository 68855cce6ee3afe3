"""DP-IR: a conditional DPM assembled from a frozen IR network, a frozen denoiser and a fusion network.

The pieces are plain functions, so any IR network and any denoiser of this library plug in::

    denoise = x0_predictor(lambda p, x, t: edt.apply({"params": p}, x, t, null_labels), ns, "v", True)
    denoise = run.x0_predictor()                            # the same, for a trained run (edt_jax.load_run)
    x0_ir = ir_fn(y)                                        # any callable y -> x0 estimate, (B, H, W, C)
    predict = fusion_inputs(lambda p, *a: fusion.apply({"params": p}, *a), denoise)
    model = fused_model(predict, fusion_params, denoiser_params, x0_ir)
    x_hat = restore(model, x0_ir, key, ns, sampler="ddim", steps=5, tau=0.25)

``model(x, t_input) -> x0`` is a data-prediction network (``prediction="x0"``) that every sampler of the
library runs through ``samplers.sample``. Because the early reverse steps add little beyond x0_IR, sampling may start at
tau < 1 from x_tau = alpha_tau x0_IR + sigma_tau eps (``start_state``).

Times: ``t_input`` is what networks see (the training timestep, 0..N-1 for a discrete schedule);
``t`` the samplers' continuous time, t = t_input / 1000 + 1/N (``NoiseScheduleVP.model_time``'s inverse).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from edt_jax import samplers
from edt_jax.checks import check_choice
from edt_jax.deprecation import warn_deprecated
from edt_jax.diffusion import NoiseScheduleVP
from edt_jax.restoration.networks import lift
from edt_jax.samplers.wrappers import x0_predictor  # noqa: F401 (re-exported: DP-IR's denoiser)

SAMPLERS = samplers.SAMPLERS
LOSSES = ("l1", "l2")
X0Fn = Callable[[Any, jax.Array, jax.Array], jax.Array]  # (params, x_t, t_input) -> x0


def _per_sample(v: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim)).astype(x.dtype)


def fusion_inputs(fusion_apply: Callable, denoise: X0Fn) -> Callable:
    """``(params, frozen, x0_ir, x_t, t_input) -> fused x0`` with the denoiser's x0 held fixed (no gradient)."""

    def fused(params, frozen, x0_ir, x_t, t_input):
        x0_d = jax.lax.stop_gradient(denoise(frozen, x_t, t_input))
        return fusion_apply(params, x0_ir, x0_d, x_t, t_input)

    return fused


def x0_regression_loss(predict: Callable, ns: NoiseScheduleVP, condition: Callable[[dict, jax.Array], jax.Array],
                       loss: str = "l1") -> Callable:
    """The trainer's ``loss_fn(params, frozen, batch, key)`` for a conditional x0 network.

    ``predict(params, frozen, c, x_t, t_input) -> x0`` with ``c = condition(batch, key)`` (e.g. the
    precomputed ``batch["x0_ir"]``, or ``lift(y)`` degraded on the fly); batch {"image": x0 (B, H, W, C),
    ...}. Each example draws t uniformly from the N training timesteps and fresh noise; the loss is the
    mean L1 (or L2) distance of the predicted x0 to the clean image.
    """
    check_choice("loss", loss, LOSSES)

    def loss_fn(params, frozen, batch, key):
        x0 = batch["image"]
        t_key, noise_key, condition_key = jax.random.split(key, 3)
        t_index = jax.random.randint(t_key, (x0.shape[0],), 0, ns.total_N)
        t_input = t_index.astype(jnp.float32) * (1000.0 / ns.total_N)
        t = ns.continuous_time(t_input)
        noise = jax.random.normal(noise_key, x0.shape, jnp.float32)
        x_t = _per_sample(ns.marginal_alpha(t), x0) * x0 + _per_sample(ns.marginal_std(t), x0) * noise
        error = predict(params, frozen, condition(batch, condition_key), x_t, t_input) - x0
        value = jnp.mean(jnp.abs(error)) if loss == "l1" else jnp.mean(error ** 2)
        return value, {"l1": jnp.mean(jnp.abs(error))}

    return loss_fn


def fused_model(predict: Callable, params: Any, frozen: Any,
                condition: jax.Array) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``model(x_t, t_input) -> x0`` for the samplers, from a ``predict`` as in ``x0_regression_loss``."""

    def model(x_t, t_input):
        return predict(params, frozen, condition, x_t, jnp.broadcast_to(t_input, (x_t.shape[0],)))

    return model


def start_timestep(tau: float, num_timesteps: int) -> int:
    """The number of training timesteps a run starting at ``tau`` covers: round(tau N), at least 1.

    ``tau`` in (0, 1] is a fraction of T (1 = the full chain); a one-line error otherwise.
    """
    if isinstance(tau, bool) or not isinstance(tau, numbers.Real) or not 0.0 < float(tau) <= 1.0:
        raise ValueError(f"tau must be a fraction of T in (0, 1] (1 = start from pure noise at T), got {tau!r}")
    return max(1, min(num_timesteps, round(float(tau) * num_timesteps)))


def start_state(x0_ir: jax.Array, key: jax.Array, ns: NoiseScheduleVP, tau: float) -> tuple[jax.Array, float]:
    """(x_tau, t_start): x_tau = alpha_tau x0_IR + sigma_tau eps at the grid time of ``start_timestep``.

    At tau = 1 this is pure noise up to alpha_T x0_IR (alpha_T ~ 6e-3 for linear betas), as a full chain.
    """
    n = start_timestep(tau, ns.total_N)
    t_start = n / ns.total_N
    eps = jax.random.normal(key, x0_ir.shape, jnp.float32)
    return ns.marginal_alpha(t_start) * x0_ir + ns.marginal_std(t_start) * eps, t_start


def restore(model: Callable, x0_ir: jax.Array, key: jax.Array, schedule: NoiseScheduleVP, diffusion=None, *,
            sampler: str = "ddim", steps: int = 10, tau: float = 1.0, order: int = 2) -> jax.Array:
    """Sample x0 with the data-prediction ``model(x, t_input)`` from x_tau (see ``start_state``); jit-able.

    ``sampler``: "ddpm" (ancestral, fixed-small variance, over the first round(tau N) timesteps) or an
    ODE sampler ("unipc", "dpm_solver", "ddim") from t = tau down to 1/N. ``steps`` is the number of
    network evaluations (NFE) either way. ``schedule`` is the denoiser's discrete ``NoiseScheduleVP``
    (``diffusion``, its tables given separately, is deprecated and unused).
    """
    if diffusion is not None:
        warn_deprecated("restoration.restore(..., ns, diffusion)", "restoration.restore(..., schedule)")
    check_choice("sampler", sampler, SAMPLERS)
    start_key, noise_key = jax.random.split(key)
    x, t_start = start_state(x0_ir, start_key, schedule, tau)
    n = start_timestep(tau, schedule.total_N)
    if sampler == "ddpm" and steps > n:
        raise ValueError(f"steps={steps} ancestral steps do not fit in the {n} timesteps below tau={tau}; "
                         f"use steps <= {n}")
    return samplers.sample(sampler, model, x, schedule, steps=steps, prediction="x0", key=noise_key, order=order,
                           t_start=t_start, variance="fixed_small")


def ir_loss(ir_apply: Callable[[Any, jax.Array], jax.Array], degradation, loss: str = "l1") -> Callable:
    """The trainer's ``loss_fn`` of an IR network on (y, x0) pairs degraded on the fly.

    ``ir_apply(params, y_lifted) -> x0`` sees ``lift(y)`` (the image shape); batch {"image": x0}; every
    step draws fresh degradations (kernels and noise) from its key, so the network never sees the
    same pair twice.
    """
    check_choice("loss", loss, LOSSES)

    def loss_fn(params, frozen, batch, key):
        del frozen
        x0 = batch["image"]
        y = degradation.apply(x0, key)
        error = ir_apply(params, lift(y, x0.shape)) - x0
        value = jnp.mean(jnp.abs(error)) if loss == "l1" else jnp.mean(error ** 2)
        return value, {"l1": jnp.mean(jnp.abs(error))}

    return loss_fn
