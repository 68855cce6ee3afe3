"""Per-call classifier-free guidance scales: guide only where it matters.

``model_wrapper(..., guidance_scale=scales)`` takes one scale s_k per model call and returns
eps_u + s_k (eps_c - eps_u). A call with s_k exactly 1 runs only the conditional half of the batch and one with
s_k exactly 0 only the unconditional half, so a schedule that stops guiding after the early calls (Yi et al.,
NeurIPS 2024: the shape is fixed in the first steps) or guides only inside a time interval (Kynkaanniemi et al.,
2024) costs one network pass instead of two on the other calls.
"""

from __future__ import annotations

import math

import numpy as np

from edt_jax.checks import check_choice

AFTER_MODES = ("cond", "uncond")


def _check_scale(scale) -> float:
    try:
        value = float(scale)
    except (TypeError, ValueError):
        raise ValueError(f"scale must be a number, got {scale!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"scale must be a finite number, got {scale!r}")
    return value


def guidance_schedule(scale: float, num_calls: int, guided_fraction: float = 1.0, after: str = "cond") -> np.ndarray:
    """(num_calls,) float64 scales: ``scale`` on the first ``guided_fraction`` of the model calls, then the rest
    conditional only (``after="cond"``: s = 1) or unconditional only (``after="uncond"``: s = 0, the paper's
    "text removed" late steps).

    The number of guided calls is guided_fraction * num_calls rounded half up (0.5 of 5 calls guides 3).
    """
    scale = _check_scale(scale)
    if isinstance(num_calls, bool) or not isinstance(num_calls, (int, np.integer)) or num_calls < 1:
        raise ValueError(f"num_calls must be an integer >= 1, got {num_calls!r}")
    if not 0.0 <= guided_fraction <= 1.0:
        raise ValueError(f"guided_fraction must be in [0, 1], got {guided_fraction}")
    check_choice("after", after, AFTER_MODES)
    guided = math.floor(guided_fraction * num_calls + 0.5)
    return np.where(np.arange(num_calls) < guided, scale, 1.0 if after == "cond" else 0.0)


def guidance_interval(scale: float, times, t_lo: float, t_hi: float) -> np.ndarray:
    """(S,) float64 scales: ``scale`` for the calls whose continuous time lies in [t_lo, t_hi], 1 elsewhere.

    ``times`` (S,) are the calls' times, e.g. ``call_times(ns, steps, ...)``. Kynkaanniemi et al. (2024) guide
    only in the middle of the noise range, t_lo > 0 and t_hi < T.
    """
    scale = _check_scale(scale)
    times = np.asarray(times, np.float64)
    if times.ndim != 1 or times.size == 0:
        raise ValueError(f"times must be a 1-D array of the model calls' times, got shape {times.shape}")
    if not (math.isfinite(t_lo) and math.isfinite(t_hi) and t_lo <= t_hi):
        raise ValueError(f"the guidance interval needs finite t_lo <= t_hi, got t_lo={t_lo}, t_hi={t_hi}")
    return np.where((times >= t_lo) & (times <= t_hi), scale, 1.0)
