"""The device side of the multistep samplers: one ``lax.scan`` over a host-computed ``Plan``.

Iteration k of the scan
  1. evaluates the model once at (x_pred_k, t_k) -> M_k (noise, or data prediction),
  2. corrects x_k = corr_x x_{k-1} + corr_hist . H + corr_new M_k where the plan says so (UniC),
  3. stores M_k in ring-buffer slot k mod P of the history H,
  4. predicts x_{k+1} = pred_x x_k + pred_hist . H (+ pred_eps eps_k where the plan has such weights).
After S iterations the last prediction is the sample at t_S: exactly S model calls, and the final
step runs no corrector because no model call follows it. x and H stay float32 (float64 when x_T is
float64) whatever dtype the model computes in. With ``return_trajectory`` each iteration also emits
(t_k, x_pred_k, the data prediction of M_k) as a scan output.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from edt_jax.samplers.plan import Plan
from edt_jax.samplers.trajectory import Trajectory, stack_calls

STEP_KWARG_ATTR = "accepts_step"


def dynamic_thresholding(x0: jax.Array, ratio: float, max_val: float) -> jax.Array:
    """Imagen's dynamic thresholding as the reference does it, for x0 (B, ...).

    s = max(quantile_ratio(|x0| per sample), max_val); x0 -> clip(x0, -s, s) / s.
    """
    batch = x0.shape[0]
    s = jnp.quantile(jnp.abs(x0).reshape(batch, -1), ratio, axis=1)
    s = jnp.maximum(s, max_val).reshape((batch,) + (1,) * (x0.ndim - 1)).astype(x0.dtype)
    return jnp.clip(x0, -s, s) / s


def call_model(model_fn, x: jax.Array, t, step) -> jax.Array:
    """eps = model_fn(x, t (B,)) in x's dtype; passes ``step`` to wrappers that want it."""
    t_vec = jnp.broadcast_to(jnp.asarray(t, x.dtype), (x.shape[0],))
    if getattr(model_fn, STEP_KWARG_ATTR, False):
        out = model_fn(x, t_vec, step=step)
    else:
        out = model_fn(x, t_vec)
    if out.shape != x.shape:
        raise ValueError(f"model_fn returned shape {tuple(out.shape)} for x of shape {tuple(x.shape)}; it must "
                         f"return a noise prediction shaped like x (for 2C-channel learned-sigma networks use "
                         f"model_wrapper(..., learned_sigma=True))")
    return out.astype(x.dtype)


def to_data_prediction(x, eps, alpha, sigma, transform: Callable[[jax.Array], jax.Array] | None = None):
    """x0 = (x - sigma eps) / alpha, then the optional x0 transform (dynamic thresholding, clipping)."""
    x0 = (x - sigma * eps) / alpha
    return x0 if transform is None else transform(x0)


def x0_transform_of(thresholding: tuple[float, float] | None,
                    x0_transform: Callable[[jax.Array], jax.Array] | None) -> Callable[[jax.Array], jax.Array] | None:
    """The one x0 transform of a run: dynamic thresholding ``(ratio, max_val)`` or a callable, not both."""
    if thresholding is not None and x0_transform is not None:
        raise ValueError("give thresholding=(ratio, max_val) or x0_transform=..., not both")
    if thresholding is None:
        return x0_transform
    ratio, max_val = thresholding
    return lambda x0: dynamic_thresholding(x0, ratio, max_val)


def _weighted(weights: jax.Array, hist: jax.Array) -> jax.Array:
    """sum_p weights[p] * hist[p] for hist (P, B, ...).

    Unrolled (P <= 3) so that XLA fuses it into the surrounding elementwise update; a tensordot
    becomes a separate dot over a relaid-out buffer (2-3x the per-step cost on CPU).
    """
    total = weights[0] * hist[0]
    for p in range(1, hist.shape[0]):
        total = total + weights[p] * hist[p]
    return total


def state_dtype(x_T: jax.Array):
    """float32, or float64 for a float64 x_T: the precision of x and the history in the scan."""
    if not jnp.issubdtype(x_T.dtype, jnp.floating):
        raise ValueError(f"x_T must be a floating-point array, got dtype {x_T.dtype}")
    return jnp.promote_types(x_T.dtype, jnp.float32)


def run_plan(model_fn, x_T: jax.Array, plan: Plan, *, thresholding: tuple[float, float] | None = None,
             x0_transform: Callable[[jax.Array], jax.Array] | None = None, denoise_to_zero: bool = False,
             return_trajectory: bool = False):
    """Run a multistep plan from x_T (B, ...) at plan.times[0]; returns x at plan.final_time.

    ``thresholding`` (dynamic thresholding) or ``x0_transform`` (any jit-able map of x0 (B, ...), e.g. a clip)
    acts on every data prediction. With ``return_trajectory`` returns ``(x, Trajectory)`` of every model call
    (see ``trajectory.Trajectory``).
    """
    x_T = jnp.asarray(x_T)
    dtype = state_dtype(x_T)
    x = x_T.astype(dtype)
    data = plan.space == "data"
    transform = x0_transform_of(thresholding, x0_transform)
    # Decided on the host, so samplers without raw-eps weights trace exactly as before.
    use_eps = plan.pred_eps is not None

    def as_state(a):
        return jnp.asarray(np.asarray(a, np.float64), dtype)

    inputs = {
        "t": as_state(plan.times), "alpha": as_state(plan.alphas), "sigma": as_state(plan.sigmas),
        "step": jnp.arange(plan.steps, dtype=jnp.int32), "slot": jnp.asarray(plan.slot, jnp.int32),
        "corr_on": jnp.asarray(plan.corrector_on), "corr_x": as_state(plan.corr_x),
        "corr_hist": as_state(plan.corr_hist), "corr_new": as_state(plan.corr_new),
        "pred_x": as_state(plan.pred_x), "pred_hist": as_state(plan.pred_hist),
    }
    if use_eps:
        inputs["pred_eps"] = as_state(plan.pred_eps)

    def body(carry, c):
        x_prev, x_pred, hist = carry
        eps = call_model(model_fn, x_pred, c["t"], c["step"])
        m = to_data_prediction(x_pred, eps, c["alpha"], c["sigma"], transform) if data else eps
        corrected = c["corr_x"] * x_prev + _weighted(c["corr_hist"], hist) + c["corr_new"] * m
        x_cur = jnp.where(c["corr_on"], corrected, x_pred)
        hist = jax.lax.dynamic_update_index_in_dim(hist, m, c["slot"], axis=0)
        x_next = c["pred_x"] * x_cur + _weighted(c["pred_hist"], hist)
        if use_eps:
            x_next = x_next + c["pred_eps"] * eps
        if not return_trajectory:
            return (x_cur, x_next, hist), None
        denoised = m if data else to_data_prediction(x_pred, eps, c["alpha"], c["sigma"], transform)
        return (x_cur, x_next, hist), Trajectory(c["t"], x_pred, denoised)

    hist = jnp.zeros((plan.history_size,) + x.shape, dtype)
    (_, x, _), calls = jax.lax.scan(body, (x, x, hist), inputs)
    final_call = None
    if denoise_to_zero:
        x_in = x
        eps = call_model(model_fn, x_in, plan.final_time, jnp.int32(plan.steps))
        x = to_data_prediction(x_in, eps, as_state(plan.final_alpha), as_state(plan.final_sigma), transform)
        final_call = Trajectory(as_state(plan.final_time), x_in, x)
    if not return_trajectory:
        return x
    return x, stack_calls(calls, final_call)
