"""UniPC (Zhao et al., NeurIPS 2023): the unified predictor (UniP) and corrector (UniC).

Both are B(h) variants of the reference ``multistep_uni_pc_bh_update``: with history model outputs
M_0 (newest, at t_s), M_1, ..., their half-log-SNR offsets r_i = (lambda_i - lambda_s) / h and the
differences D_i = (M_i - M_0) / r_i, the step is

    x_t = x_base - scale * B(h) * sum_i rho_i D_i,     x_base the DDIM step from (x_s, M_0),

where rho solves R rho = b (R_ik = r_k^(i-1), b_i = i! phi_{i+1}(hh) / B(h)). The predictor uses the
p - 1 past points (rho = 1/2 for p = 2); the corrector adds the new point r = 1 with
D = M_t - M_0, evaluated at the predicted x_t (rho = 1/2 for p = 1), and that model output is kept
as the history entry, so the corrector costs no extra model call.

``unic_step`` is the corrector alone: it can follow any predictor (``dpm_solver(corrector=...)``).
"""

from __future__ import annotations

import jax
import numpy as np

from edt_jax.checks import check_choice
from edt_jax.deprecation import warn_deprecated
from edt_jax.diffusion.schedules import NoiseScheduleVP
from edt_jax.samplers import validation
from edt_jax.samplers.core import run_plan
from edt_jax.samplers.plan import (
    SOLVER_SPACES,
    LinearStep,
    TimeGrid,
    age_vector,
    build_plan,
    first_order_terms,
    warmup_orders,
)

VARIANTS = ("bh1", "bh2")
MAX_ORDER = 3


def _bh_system(grid: TimeGrid, j: int, order: int, space: str, variant: str):
    """R, b, B(h), the r_k and the shared first-order terms of step j with the given order."""
    base = first_order_terms(grid, j, space)
    s = j - 1
    hh = base.hh
    # r_k for the history points of age 1..order-1, then the end point r = 1.
    rks = np.array([(grid.lam[s - i] - grid.lam[s]) / base.h for i in range(1, order)] + [1.0])
    b_h = hh if variant == "bh1" else np.expm1(hh)
    h_phi_k = np.expm1(hh) / hh - 1.0
    factorial = 1
    rows, b = [], []
    for i in range(1, order + 1):
        rows.append(rks ** (i - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    return np.stack(rows), np.array(b), b_h, rks, base


def _differences(rks: np.ndarray, order: int, size: int) -> list[np.ndarray]:
    """D_i = (M_i - M_0) / r_i as weight vectors over history ages, i = 1..order-1."""
    return [(age_vector(i, size) - age_vector(0, size)) / rks[i - 1] for i in range(1, order)]


def unip_step(grid: TimeGrid, j: int, order: int, space: str, variant: str, size: int) -> LinearStep:
    """UniP-``order`` predictor for step j (t_{j-1} -> t_j)."""
    R, b, b_h, rks, base = _bh_system(grid, j, order, space, variant)
    w = base.m0_coef * age_vector(0, size)
    if order >= 2:
        rhos = np.array([0.5]) if order == 2 else np.linalg.solve(R[:-1, :-1], b[:-1])
        for rho, diff in zip(rhos, _differences(rks, order, size), strict=True):
            w = w - base.scale * b_h * rho * diff
    return LinearStep(x_coef=base.x_coef, hist_coef=w)


def unic_step(grid: TimeGrid, j: int, order: int, space: str, variant: str, size: int) -> LinearStep:
    """UniC-``order`` corrector for step j, using the model output at the predicted x_{t_j}."""
    R, b, b_h, rks, base = _bh_system(grid, j, order, space, variant)
    rhos = np.array([0.5]) if order == 1 else np.linalg.solve(R, b)
    w = base.m0_coef * age_vector(0, size)
    for rho, diff in zip(rhos[:-1], _differences(rks, order, size), strict=True):
        w = w - base.scale * b_h * rho * diff
    # The new point enters as D_t = M_t - M_0 (r = 1).
    new_coef = -base.scale * b_h * rhos[-1]
    w = w - new_coef * age_vector(0, size)
    return LinearStep(x_coef=base.x_coef, hist_coef=w, new_coef=new_coef)


def unic_correctors(grid: TimeGrid, orders: np.ndarray, space: str, variant: str,
                    size: int) -> list[LinearStep]:
    """UniC for steps 1..S-1 at each step's order (none at the final step: no model call follows)."""
    return [unic_step(grid, j, int(orders[j - 1]), space, variant, size) for j in range(1, grid.steps)]


def unipc(model_fn, x_T: jax.Array, ns: NoiseScheduleVP, steps: int = 10, order: int = 2, variant: str = "bh1",
          solver_space: str = "data", skip_type: str = "time_uniform", t_start: float | None = None,
          t_end: float | None = None, lower_order_final: bool = True, denoise_to_zero: bool = False,
          thresholding: tuple[float, float] | None = None, return_trajectory: bool = False, *,
          prediction: str | None = None):
    """Sample with multistep UniPC (orders 1 to 3) as one ``lax.scan``.

    Args:
      model_fn: ``model_fn(x, t_continuous) -> eps`` (see ``model_wrapper``); x (B, ...), t (B,).
      x_T: (B, ...) the state at ``t_start`` (default T), e.g. standard normal noise.
      ns: the noise schedule.
      steps: number of model evaluations (+1 with ``denoise_to_zero``).
      order: 1, 2 or 3; the first steps warm up with lower orders.
      variant: "bh1" (B(h) = h, best for unconditional) or "bh2" (B(h) = e^h - 1, for guidance).
      solver_space: what the solver integrates: "data" (UniPC with the data-prediction model, the default) or
        "noise" (the reference's ``predict_x0=False``). Not what the network predicts: ``model_fn`` always
        returns eps (``model_wrapper`` converts any network). ``prediction=`` is its deprecated name.
      skip_type: "time_uniform" | "logSNR" | "time_quadratic" time grid.
      t_start, t_end: time range (defaults T and 1/N).
      lower_order_final: use lower orders in the last steps (always, as the reference UniPC).
      denoise_to_zero: finish with one more model call returning the data prediction at t_end.
      thresholding: ``(ratio, max_val)`` dynamic thresholding of data predictions, or None.
      return_trajectory: also return the ``Trajectory`` of the model calls (t, x, denoised).
    Returns:
      (B, ...) the sample at t_end, float32 (or float64 when x_T is float64); with ``return_trajectory``,
      ``(sample, Trajectory)``.
    """
    check_choice("variant", variant, VARIANTS)
    if prediction is not None:
        warn_deprecated("unipc(prediction=...)", "unipc(solver_space=...)")
        solver_space = prediction
    check_choice("solver_space", solver_space, SOLVER_SPACES)
    grid = validation.check_trajectory(ns, steps, order, MAX_ORDER, skip_type, t_start, t_end)
    validation.check_thresholding(thresholding)
    validation.check_guidance_length(model_fn, steps, denoise_to_zero)
    orders = warmup_orders(steps, order, lower_order_final)
    predictors = [unip_step(grid, j, int(orders[j - 1]), solver_space, variant, order) for j in range(1, steps + 1)]
    correctors = unic_correctors(grid, orders, solver_space, variant, order)
    plan = build_plan(grid, predictors, correctors, solver_space, order)
    return run_plan(model_fn, x_T, plan, thresholding=thresholding, denoise_to_zero=denoise_to_zero,
                    return_trajectory=return_trajectory)

