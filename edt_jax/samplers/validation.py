"""Argument checks of the samplers, run on the host before anything is traced (one-line ``ValueError``s)."""

from __future__ import annotations

import numpy as np

from edt_jax.checks import check_choice, check_int
from edt_jax.diffusion.schedules import SKIP_TYPES, NoiseScheduleVP
from edt_jax.samplers.plan import TimeGrid

GUIDANCE_STEPS_ATTR = "guidance_steps"


def check_trajectory(ns: NoiseScheduleVP, steps: int, order: int, max_order: int, skip_type: str,
                     t_start: float | None, t_end: float | None) -> TimeGrid:
    """Validate steps/order/skip_type/time range and return the trajectory's time grid."""
    if not isinstance(ns, NoiseScheduleVP):
        raise ValueError(f"ns must be a NoiseScheduleVP, got {type(ns).__name__}")
    steps = check_int("steps", steps, 1)
    order = check_int("order", order, 1, max_order)
    if order > steps:
        raise ValueError(f"order {order} needs at least {order} steps, got steps={steps}")
    check_choice("skip_type", skip_type, SKIP_TYPES)
    t_T = ns.T if t_start is None else float(t_start)
    t_0 = ns.t_end_default if t_end is None else float(t_end)
    if not 0.0 < t_T <= ns.T:
        raise ValueError(f"t_start must be in (0, {ns.T}] for this schedule, got {t_T}")
    if not 0.0 < t_0 < t_T:
        raise ValueError(f"t_end must be in (0, t_start={t_T}), got t_end={t_0}")
    grid = TimeGrid.build(ns, ns.time_grid(skip_type, steps, t_T, t_0))
    if not (np.all(np.isfinite(grid.lam)) and np.all(np.diff(grid.lam) > 0)):
        raise ValueError(f"the {skip_type} grid from t_start={t_T} to t_end={t_0} with {steps} steps has "
                         f"non-increasing log-SNR; choose a wider time range or fewer steps")
    return grid


def check_thresholding(thresholding) -> None:
    if thresholding is None:
        return
    try:
        ratio, max_val = (float(v) for v in thresholding)
    except (TypeError, ValueError):
        raise ValueError(f"thresholding must be None or (ratio, max_val), got {thresholding!r}") from None
    if not (0.0 < ratio <= 1.0 and max_val > 0.0):
        raise ValueError(f"thresholding (ratio, max_val) needs 0 < ratio <= 1 and max_val > 0, got {thresholding!r}")


def check_guidance_length(model_fn, steps: int, denoise_to_zero: bool) -> None:
    """A per-step guidance array must have one value per model call of this trajectory."""
    num = getattr(model_fn, GUIDANCE_STEPS_ATTR, None)
    calls = steps + int(bool(denoise_to_zero))
    if num is not None and num != calls:
        extra = " + 1 for denoise_to_zero" if denoise_to_zero else ""
        raise ValueError(f"guidance_scale has {num} values but this trajectory makes {calls} model calls "
                         f"(steps={steps}{extra}); pass one value per model call")
