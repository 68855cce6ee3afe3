"""Plain-Python-loop, NumPy float64 twins of the official multistep UniPC and DPM-Solver samplers.

These follow ``uni_pc.py`` (wl-zhao/UniPC) and ``dpm_solver_pytorch.py`` (LuChengTHU/dpm-solver),
``method='multistep'``, step by step: a list of previous model outputs and a list of their times,
the update functions written as in the papers / reference code (no pre-folded coefficients), one
Python iteration per step. They are the slow, obviously-correct baseline that the ``lax.scan``
samplers in ``edt_jax.samplers`` are checked against, and are themselves checked against the
official fixture ``tests/fixtures/samplers_reference.npz``.

``model_fn(x, t_vec)`` is a NumPy callable returning the noise prediction eps for x of shape
(B, ...) at continuous times t_vec of shape (B,).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from edt_jax.diffusion import NoiseScheduleVP

ModelFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

UNIPC_VARIANTS = ("bh1", "bh2")
DPM_ALGORITHMS = ("dpmsolver", "dpmsolver++")
CORRECTORS = (None, "unic_bh1", "unic_bh2")


class CountingModel:
    """Wraps a ``model_fn(x, t_vec)`` and counts how often it is called (``.calls``)."""

    def __init__(self, model_fn: ModelFn) -> None:
        self.model_fn = model_fn
        self.calls = 0

    def __call__(self, x: np.ndarray, t_vec: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.asarray(self.model_fn(x, t_vec), dtype=np.float64)


def _per_sample(v, ndim: int) -> np.ndarray:
    """Reshape a (B,) vector to (B, 1, ..., 1) so that it broadcasts over a (B, ...) array."""
    return np.reshape(v, (-1,) + (1,) * (ndim - 1))


def dynamic_thresholding(x0: np.ndarray, ratio: float, max_val: float) -> np.ndarray:
    """Imagen dynamic thresholding: per-sample quantile s of |x0|, s >= max_val, clip to [-s, s], divide by s."""
    flat = np.abs(x0).reshape(x0.shape[0], -1)
    s = np.quantile(flat, ratio, axis=1)                      # "linear" interpolation, as torch.quantile
    s = _per_sample(np.maximum(s, max_val), x0.ndim)
    return np.clip(x0, -s, s) / s


class _Wrapped:
    """The reference's ``noise_prediction_fn`` / ``data_prediction_fn`` / ``model_fn`` around a noise model."""

    def __init__(self, model_fn: ModelFn, ns: NoiseScheduleVP, predict_x0: bool,
                 thresholding: tuple[float, float] | None) -> None:
        self.model = model_fn
        self.ns = ns
        self.predict_x0 = predict_x0
        self.thresholding = thresholding

    # Schedule quantities at a scalar time, as Python floats.
    def lam(self, t: float) -> float:
        return float(self.ns.marginal_lambda(np.float64(t)))

    def log_alpha(self, t: float) -> float:
        return float(self.ns.marginal_log_mean_coeff(np.float64(t)))

    def sigma(self, t: float) -> float:
        return float(self.ns.marginal_std(np.float64(t)))

    def noise_prediction(self, x: np.ndarray, t: float) -> np.ndarray:
        t_vec = np.full((x.shape[0],), t, dtype=np.float64)
        return np.asarray(self.model(x, t_vec), dtype=np.float64)

    def data_prediction(self, x: np.ndarray, t: float) -> np.ndarray:
        noise = self.noise_prediction(x, t)
        alpha_t, sigma_t = math.exp(self.log_alpha(t)), self.sigma(t)
        x0 = (x - sigma_t * noise) / alpha_t
        if self.thresholding is not None:
            ratio, max_val = self.thresholding
            x0 = dynamic_thresholding(x0, ratio, max_val)
        return x0

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        if self.predict_x0:
            return self.data_prediction(x, t)
        return self.noise_prediction(x, t)


# --------------------------------------------------------------------------------------------- UniPC
def _unipc_bh_update(w: _Wrapped, variant: str, x: np.ndarray, model_prev_list: Sequence[np.ndarray],
                     t_prev_list: Sequence[float], t: float, order: int, x_t: np.ndarray | None = None,
                     use_corrector: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """One ``multistep_uni_pc_bh_update``: UniP-``order`` predictor (skipped when ``x_t`` is given) then UniC.

    Returns the new x at time t and the model value at the *predicted* point (None without corrector).
    """
    assert order <= len(model_prev_list)
    t_prev_0 = t_prev_list[-1]
    model_prev_0 = model_prev_list[-1]
    lambda_prev_0, lambda_t = w.lam(t_prev_0), w.lam(t)
    sigma_prev_0, sigma_t = w.sigma(t_prev_0), w.sigma(t)
    log_alpha_prev_0, log_alpha_t = w.log_alpha(t_prev_0), w.log_alpha(t)
    alpha_t = math.exp(log_alpha_t)
    h = lambda_t - lambda_prev_0

    # Scaled divided differences of the older model outputs.
    rks: list[float] = []
    d1s: list[np.ndarray] = []
    for i in range(1, order):
        lambda_prev_i = w.lam(t_prev_list[-(i + 1)])
        rk = (lambda_prev_i - lambda_prev_0) / h
        rks.append(rk)
        d1s.append((model_prev_list[-(i + 1)] - model_prev_0) / rk)
    rks.append(1.0)
    rks_arr = np.asarray(rks, dtype=np.float64)

    hh = -h if w.predict_x0 else h
    h_phi_1 = math.expm1(hh)                    # h phi_1(h) = e^h - 1
    if variant == "bh1":
        b_h = hh
    elif variant == "bh2":
        b_h = math.expm1(hh)
    else:
        raise ValueError(f"unknown UniPC variant {variant!r}")

    # Order conditions: R[i-1] = rks ** (i - 1), b[i-1] = i! * hh * phi_{i+1}(hh) / B(h).
    rows, b = [], []
    h_phi_k = h_phi_1 / hh - 1.0
    factorial_i = 1
    for i in range(1, order + 1):
        rows.append(rks_arr ** (i - 1))
        b.append(h_phi_k * factorial_i / b_h)
        factorial_i *= i + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial_i
    r_mat = np.stack(rows)
    b_vec = np.asarray(b, dtype=np.float64)

    use_predictor = len(d1s) > 0 and x_t is None
    rhos_p = None
    if use_predictor:
        if order == 2:
            rhos_p = np.array([0.5])            # the reference's simplified order-2 predictor
        else:
            rhos_p = np.linalg.solve(r_mat[:-1, :-1], b_vec[:-1])
    rhos_c = None
    if use_corrector:
        if order == 1:
            rhos_c = np.array([0.5])            # the reference's simplified order-1 corrector
        else:
            rhos_c = np.linalg.solve(r_mat, b_vec)

    def weighted(rhos: np.ndarray) -> np.ndarray | float:
        if not d1s:
            return 0.0
        return sum(rho * d1 for rho, d1 in zip(rhos, d1s, strict=False))

    if w.predict_x0:
        x_t_ = sigma_t / sigma_prev_0 * x - alpha_t * h_phi_1 * model_prev_0
        scale = alpha_t * b_h
    else:
        x_t_ = math.exp(log_alpha_t - log_alpha_prev_0) * x - sigma_t * h_phi_1 * model_prev_0
        scale = sigma_t * b_h

    if x_t is None:
        pred_res = weighted(rhos_p) if use_predictor else 0.0
        x_t = x_t_ - scale * pred_res

    model_t = None
    if use_corrector:
        model_t = w(x_t, t)
        corr_res = weighted(rhos_c[:-1])
        d1_t = model_t - model_prev_0
        x_t = x_t_ - scale * (corr_res + rhos_c[-1] * d1_t)
    return x_t, model_t


def _multistep_loop(w: _Wrapped, x: np.ndarray, timesteps: np.ndarray, order: int, lower_order_final: bool,
                    corrects: bool, advance, t_0: float, denoise_to_zero: bool) -> np.ndarray:
    """The official multistep ``sample`` loop shared by UniPC and DPM-Solver.

    ``advance(x, model_prev_list, t_prev_list, t, step_order, correct)`` returns x at t and the model
    value at the predicted point when it corrected (else None, and the model is evaluated at x).
    """
    steps = len(timesteps) - 1
    t = float(timesteps[0])
    t_prev_list = [t]
    model_prev_list = [w(x, t)]

    # Warm-up: steps 1 .. order-1 with order `step`.
    for step in range(1, order):
        t = float(timesteps[step])
        x, model_x = advance(x, model_prev_list, t_prev_list, t, step, corrects)
        if model_x is None:
            model_x = w(x, t)
        t_prev_list.append(t)
        model_prev_list.append(model_x)

    # Main loop with order `order` (lowered at the end if asked), no corrector at the last step.
    for step in range(order, steps + 1):
        t = float(timesteps[step])
        step_order = min(order, steps + 1 - step) if lower_order_final else order
        x, model_x = advance(x, model_prev_list, t_prev_list, t, step_order, corrects and step < steps)
        for i in range(order - 1):
            t_prev_list[i] = t_prev_list[i + 1]
            model_prev_list[i] = model_prev_list[i + 1]
        t_prev_list[-1] = t
        if step < steps:
            if model_x is None:
                model_x = w(x, t)
            model_prev_list[-1] = model_x

    if denoise_to_zero:
        x = w.data_prediction(x, t_0)
    return x


def unipc_loop(model_fn: ModelFn, x: np.ndarray, ns: NoiseScheduleVP, steps: int, order: int = 2,
               variant: str = "bh1", solver_space: str = "data", skip_type: str = "time_uniform",
               t_start: float | None = None, t_end: float | None = None, lower_order_final: bool = True,
               denoise_to_zero: bool = False, thresholding: tuple[float, float] | None = None) -> np.ndarray:
    """Official ``UniPC.sample(method='multistep')`` with the B(h) variants, as a plain loop in float64.

    Args:
      model_fn: noise-prediction model ``model_fn(x, t_vec)``.
      x: (B, ...) starting point at t_start.
      ns: the noise schedule.
      steps: number of steps (= model evaluations, +1 with denoise_to_zero).
      order: UniPC order p (predictor UniP-p, corrector UniC-p).
      variant: "bh1" (B(h) = hh) or "bh2" (B(h) = expm1(hh)).
      solver_space: "data" (official ``data_prediction``) or "noise" (``noise_prediction``).
      thresholding: optional (ratio, max_val) of dynamic thresholding on the data prediction.
    """
    if variant not in UNIPC_VARIANTS:
        raise ValueError(f"unknown UniPC variant {variant!r}")
    if solver_space not in ("data", "noise"):
        raise ValueError(f"solver_space must be 'data' or 'noise', got {solver_space!r}")
    if steps < order:
        raise ValueError(f"multistep UniPC needs steps >= order, got steps={steps}, order={order}")
    w = _Wrapped(model_fn, ns, solver_space == "data", thresholding)
    t_0 = ns.t_end_default if t_end is None else float(t_end)
    timesteps = ns.time_grid(skip_type, steps, t_start, t_end)
    x = np.asarray(x, dtype=np.float64)

    def advance(x_prev, model_prev_list, t_prev_list, t, step_order, correct):
        return _unipc_bh_update(w, variant, x_prev, model_prev_list, t_prev_list, t, step_order,
                                use_corrector=correct)

    # UniPC always lowers the final orders and always corrects (but after the last step).
    return _multistep_loop(w, x, timesteps, order, lower_order_final, True, advance, t_0, denoise_to_zero)


# --------------------------------------------------------------------------------------------- DPM-Solver
def _dpm_first_update(w: _Wrapped, x: np.ndarray, s: float, t: float, model_s: np.ndarray) -> np.ndarray:
    """DPM-Solver-1 (DDIM) from s to t."""
    h = w.lam(t) - w.lam(s)
    log_alpha_s, log_alpha_t = w.log_alpha(s), w.log_alpha(t)
    sigma_s, sigma_t = w.sigma(s), w.sigma(t)
    alpha_t = math.exp(log_alpha_t)
    if w.predict_x0:
        phi_1 = math.expm1(-h)
        return sigma_t / sigma_s * x - alpha_t * phi_1 * model_s
    phi_1 = math.expm1(h)
    return math.exp(log_alpha_t - log_alpha_s) * x - sigma_t * phi_1 * model_s


def _dpm_multistep_second_update(w: _Wrapped, x: np.ndarray, model_prev_list: Sequence[np.ndarray],
                                 t_prev_list: Sequence[float], t: float) -> np.ndarray:
    """Multistep DPM-Solver-2 (solver_type 'dpmsolver') from t_prev_list[-1] to t."""
    model_prev_1, model_prev_0 = model_prev_list[-2], model_prev_list[-1]
    t_prev_1, t_prev_0 = t_prev_list[-2], t_prev_list[-1]
    lambda_prev_1, lambda_prev_0, lambda_t = w.lam(t_prev_1), w.lam(t_prev_0), w.lam(t)
    log_alpha_prev_0, log_alpha_t = w.log_alpha(t_prev_0), w.log_alpha(t)
    sigma_prev_0, sigma_t = w.sigma(t_prev_0), w.sigma(t)
    alpha_t = math.exp(log_alpha_t)

    h_0 = lambda_prev_0 - lambda_prev_1
    h = lambda_t - lambda_prev_0
    r0 = h_0 / h
    d1_0 = (1.0 / r0) * (model_prev_0 - model_prev_1)
    if w.predict_x0:
        phi_1 = math.expm1(-h)
        return (sigma_t / sigma_prev_0) * x - (alpha_t * phi_1) * model_prev_0 - 0.5 * (alpha_t * phi_1) * d1_0
    phi_1 = math.expm1(h)
    return (math.exp(log_alpha_t - log_alpha_prev_0) * x - (sigma_t * phi_1) * model_prev_0
            - 0.5 * (sigma_t * phi_1) * d1_0)


def _dpm_multistep_third_update(w: _Wrapped, x: np.ndarray, model_prev_list: Sequence[np.ndarray],
                                t_prev_list: Sequence[float], t: float) -> np.ndarray:
    """Multistep DPM-Solver-3 from t_prev_list[-1] to t."""
    model_prev_2, model_prev_1, model_prev_0 = model_prev_list[-3], model_prev_list[-2], model_prev_list[-1]
    t_prev_2, t_prev_1, t_prev_0 = t_prev_list[-3], t_prev_list[-2], t_prev_list[-1]
    lambda_prev_2, lambda_prev_1 = w.lam(t_prev_2), w.lam(t_prev_1)
    lambda_prev_0, lambda_t = w.lam(t_prev_0), w.lam(t)
    log_alpha_prev_0, log_alpha_t = w.log_alpha(t_prev_0), w.log_alpha(t)
    sigma_prev_0, sigma_t = w.sigma(t_prev_0), w.sigma(t)
    alpha_t = math.exp(log_alpha_t)

    h_1 = lambda_prev_1 - lambda_prev_2
    h_0 = lambda_prev_0 - lambda_prev_1
    h = lambda_t - lambda_prev_0
    r0, r1 = h_0 / h, h_1 / h
    d1_0 = (1.0 / r0) * (model_prev_0 - model_prev_1)
    d1_1 = (1.0 / r1) * (model_prev_1 - model_prev_2)
    d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
    d2 = (1.0 / (r0 + r1)) * (d1_0 - d1_1)
    if w.predict_x0:
        phi_1 = math.expm1(-h)
        phi_2 = phi_1 / h + 1.0
        phi_3 = phi_2 / h - 0.5
        return ((sigma_t / sigma_prev_0) * x - (alpha_t * phi_1) * model_prev_0
                + (alpha_t * phi_2) * d1 - (alpha_t * phi_3) * d2)
    phi_1 = math.expm1(h)
    phi_2 = phi_1 / h - 1.0
    phi_3 = phi_2 / h - 0.5
    return (math.exp(log_alpha_t - log_alpha_prev_0) * x - (sigma_t * phi_1) * model_prev_0
            - (sigma_t * phi_2) * d1 - (sigma_t * phi_3) * d2)


def _dpm_multistep_update(w: _Wrapped, x: np.ndarray, model_prev_list: Sequence[np.ndarray],
                          t_prev_list: Sequence[float], t: float, order: int) -> np.ndarray:
    if order == 1:
        return _dpm_first_update(w, x, t_prev_list[-1], t, model_prev_list[-1])
    if order == 2:
        return _dpm_multistep_second_update(w, x, model_prev_list, t_prev_list, t)
    if order == 3:
        return _dpm_multistep_third_update(w, x, model_prev_list, t_prev_list, t)
    raise ValueError(f"DPM-Solver order must be 1, 2 or 3, got {order}")


def dpm_solver_loop(model_fn: ModelFn, x: np.ndarray, ns: NoiseScheduleVP, steps: int, order: int = 2,
                    algorithm: str = "dpmsolver++", skip_type: str = "time_uniform", t_start: float | None = None,
                    t_end: float | None = None, lower_order_final: bool = True, denoise_to_zero: bool = False,
                    thresholding: tuple[float, float] | None = None, corrector: str | None = None) -> np.ndarray:
    """Official ``DPM_Solver.sample(method='multistep', solver_type='dpmsolver')`` as a plain loop in float64.

    ``corrector`` ("unic_bh1" / "unic_bh2") adds UniPC's corrector UniC (of the step's order, in the
    data- or noise-prediction form matching ``algorithm``) after every step but the last, reusing the
    model value at the predicted point as the history entry, so the model is still called ``steps`` times.
    """
    if algorithm not in DPM_ALGORITHMS:
        raise ValueError(f"unknown DPM-Solver algorithm {algorithm!r}")
    if corrector not in CORRECTORS:
        raise ValueError(f"unknown corrector {corrector!r}; expected one of {CORRECTORS}")
    if not 1 <= order <= 3:
        raise ValueError(f"DPM-Solver order must be 1, 2 or 3, got {order}")
    if steps < order:
        raise ValueError(f"multistep DPM-Solver needs steps >= order, got steps={steps}, order={order}")
    w = _Wrapped(model_fn, ns, algorithm == "dpmsolver++", thresholding)
    variant = None if corrector is None else corrector.removeprefix("unic_")
    t_0 = ns.t_end_default if t_end is None else float(t_end)
    timesteps = ns.time_grid(skip_type, steps, t_start, t_end)
    x = np.asarray(x, dtype=np.float64)

    def advance(x_prev, model_prev_list, t_prev_list, t, step_order, correct):
        """Predictor, then (optionally) UniC; returns x at t and the model value for the history."""
        x_pred = _dpm_multistep_update(w, x_prev, model_prev_list, t_prev_list, t, step_order)
        if not correct:
            return x_pred, None
        return _unipc_bh_update(w, variant, x_prev, model_prev_list, t_prev_list, t, step_order,
                                x_t=x_pred, use_corrector=True)

    # The official code lowers the final orders only when steps < 10.
    return _multistep_loop(w, x, timesteps, order, lower_order_final and steps < 10, corrector is not None,
                           advance, t_0, denoise_to_zero)
