"""Multistep DPM-Solver (Lu et al. 2022) and DPM-Solver++ (Lu et al. 2022b), orders 1-3, and DDIM.

Each step is the exponential integrator of the probability-flow ODE in half-log-SNR lambda with the
model output extrapolated from the stored history (``solver_type='dpmsolver'`` of the reference):

    order 1  x_t = x_base                                   (DDIM)
    order 2  x_t = x_base - 1/2 scale phi_1 D1_0            D1_0 = (M_0 - M_1) / r_0
    order 3  x_t = x_base +/- scale (phi_2 D1 - phi_3 D2)   D1, D2 from three points

"dpmsolver++" integrates the data prediction (x0), "dpmsolver" the noise prediction. Optionally
UniPC's corrector (UniC) is applied after every step but the last, at no extra model call.
"""

from __future__ import annotations

import jax
import numpy as np

from edt_jax.checks import check_choice
from edt_jax.diffusion.schedules import NoiseScheduleVP
from edt_jax.samplers import validation
from edt_jax.samplers.core import run_plan
from edt_jax.samplers.plan import LinearStep, TimeGrid, age_vector, build_plan, first_order_terms, warmup_orders
from edt_jax.samplers.unipc import VARIANTS as UNIC_VARIANTS
from edt_jax.samplers.unipc import unic_correctors

ALGORITHMS = ("dpmsolver++", "dpmsolver")
SOLVER_TYPES = ("midpoint", "heun")
CORRECTORS = tuple(f"unic_{v}" for v in UNIC_VARIANTS)
MAX_ORDER = 3


def dpm_solver_step(grid: TimeGrid, j: int, order: int, space: str, size: int, *,
                    solver_type: str = "midpoint") -> LinearStep:
    """Multistep DPM-Solver(++)-``order`` update for step j (t_{j-1} -> t_j).

    ``solver_type`` picks the order-2 update: "midpoint" (-1/2 scale phi_1 D1_0, the reference's default) or
    "heun" (scale phi_2 D1_0, the reference's "taylor"; diffusers' ``solver_type="heun"``). Order 3 is the same
    for both.
    """
    check_choice("solver_type", solver_type, SOLVER_TYPES)
    base = first_order_terms(grid, j, space)
    e0 = age_vector(0, size)
    w = base.m0_coef * e0
    if order == 1:
        return LinearStep(base.x_coef, w)
    s, h = j - 1, base.h
    data = space == "data"
    phi_1 = np.expm1(-h) if data else np.expm1(h)
    r0 = (grid.lam[s] - grid.lam[s - 1]) / h
    d1_0 = (e0 - age_vector(1, size)) / r0
    # The phi_2 terms enter with + for the data prediction and with - for the noise prediction.
    phi_2, sign = (phi_1 / h + 1.0, 1.0) if data else (phi_1 / h - 1.0, -1.0)
    if order == 2:
        if solver_type == "heun":
            return LinearStep(base.x_coef, w + sign * base.scale * phi_2 * d1_0)
        return LinearStep(base.x_coef, w - 0.5 * base.scale * phi_1 * d1_0)
    r1 = (grid.lam[s - 1] - grid.lam[s - 2]) / h
    d1_1 = (age_vector(1, size) - age_vector(2, size)) / r1
    d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / (r0 + r1)
    phi_3 = phi_2 / h - 0.5
    if data:
        return LinearStep(base.x_coef, w + base.scale * (phi_2 * d1 - phi_3 * d2))
    return LinearStep(base.x_coef, w - base.scale * (phi_2 * d1 + phi_3 * d2))


def _sample(model_fn, x_T, ns, steps, order, space, skip_type, t_start, t_end, lower_order_final,
            denoise_to_zero, thresholding, corrector, return_trajectory):
    check_choice("corrector", corrector, CORRECTORS + (None,))
    grid = validation.check_trajectory(ns, steps, order, MAX_ORDER, skip_type, t_start, t_end)
    validation.check_thresholding(thresholding)
    validation.check_guidance_length(model_fn, steps, denoise_to_zero)
    # The reference only lowers the final orders for short trajectories (steps < 10).
    orders = warmup_orders(steps, order, lower_order_final and steps < 10)
    predictors = [dpm_solver_step(grid, j, int(orders[j - 1]), space, order) for j in range(1, steps + 1)]
    if corrector is None:
        correctors = [None] * (steps - 1)
    else:
        correctors = unic_correctors(grid, orders, space, corrector.removeprefix("unic_"), order)
    plan = build_plan(grid, predictors, correctors, space, order)
    return run_plan(model_fn, x_T, plan, thresholding=thresholding, denoise_to_zero=denoise_to_zero,
                    return_trajectory=return_trajectory)


def dpm_solver(model_fn, x_T: jax.Array, ns: NoiseScheduleVP, steps: int = 10, order: int = 2,
               algorithm: str = "dpmsolver++", skip_type: str = "time_uniform", t_start: float | None = None,
               t_end: float | None = None, lower_order_final: bool = True, denoise_to_zero: bool = False,
               thresholding: tuple[float, float] | None = None, corrector: str | None = None,
               return_trajectory: bool = False):
    """Sample with multistep DPM-Solver++ ("dpmsolver++") or DPM-Solver ("dpmsolver"), orders 1-3.

    Arguments as ``unipc``; additionally ``corrector="unic_bh1" | "unic_bh2"`` adds UniPC's
    corrector after each step but the last (still ``steps`` model calls). ``lower_order_final``
    applies only when steps < 10, as in the reference. Thresholding acts on data predictions, so
    it affects "dpmsolver" only through ``denoise_to_zero``. ``return_trajectory`` returns
    ``(sample, Trajectory)``.
    """
    check_choice("algorithm", algorithm, ALGORITHMS)
    space = "data" if algorithm == "dpmsolver++" else "noise"
    return _sample(model_fn, x_T, ns, steps, order, space, skip_type, t_start, t_end, lower_order_final,
                   denoise_to_zero, thresholding, corrector, return_trajectory)


def ddim(model_fn, x_T: jax.Array, ns: NoiseScheduleVP, steps: int = 10, skip_type: str = "time_uniform",
         t_start: float | None = None, t_end: float | None = None, corrector: str | None = None,
         return_trajectory: bool = False):
    """Deterministic DDIM (eta = 0), i.e. first-order DPM-Solver++; ``corrector`` and ``return_trajectory`` as
    ``dpm_solver``."""
    return _sample(model_fn, x_T, ns, steps, 1, "data", skip_type, t_start, t_end, True, False, None, corrector,
                   return_trajectory)
