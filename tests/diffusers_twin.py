"""Plain-loop NumPy float64 twins of diffusers' ``UniPCMultistepScheduler``, ``DPMSolverMultistepScheduler`` and
``DDIMScheduler`` ``step`` functions (diffusers 0.42.1), for the options the fixture does not cover.

Each twin keeps diffusers' state as diffusers does (the list of converted model outputs, the step index, the
lower-order counter, UniPC's last sample and order) and writes every update as diffusers' code does, term by
term, with no pre-folded coefficients. The grids (timesteps and sigmas) come from
``edt_jax.samplers.diffusers_config``, which the tests check separately against diffusers' formulas. The twins
are themselves checked against ``tests/fixtures/diffusers_schedulers.npz``.

``model(x, t)`` is a NumPy callable getting the integer timestep t (a Python int).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from edt_jax.samplers.diffusers_config import DDIM, DPM, alphas_cumprod, ddim_timesteps, multistep_schedule

Model = Callable[[np.ndarray, int], np.ndarray]


def _alpha_sigma(sigma: float) -> tuple[float, float]:
    alpha = 1.0 / np.sqrt(sigma ** 2 + 1.0)
    return alpha, sigma * alpha


def _lam(sigma: float) -> float:
    alpha, s = _alpha_sigma(sigma)
    with np.errstate(divide="ignore"):
        return np.log(alpha) - np.log(s)


def _convert(cfg: Mapping[str, Any], output: np.ndarray, x: np.ndarray, alpha: float, sigma: float,
             data: bool) -> np.ndarray:
    """convert_model_output: the data prediction (data=True) or the noise prediction of the raw output."""
    kind = cfg["prediction_type"]
    if data:
        if kind == "epsilon":
            return (x - sigma * output) / alpha
        return output if kind == "sample" else alpha * x - sigma * output
    if kind == "epsilon":
        return output
    return (x - alpha * output) / sigma if kind == "sample" else alpha * output + sigma * x


def _unipc_update(cfg, sigmas, k, outputs, x, order, model_t=None):
    """multistep_uni_p_bh_update (model_t None, from step k) / multistep_uni_c_bh_update (corrector at step k)."""
    corrector = model_t is not None
    t_idx, s_idx = (k, k - 1) if corrector else (k + 1, k)
    alpha_t, sigma_t = _alpha_sigma(sigmas[t_idx])
    alpha_s0, sigma_s0 = _alpha_sigma(sigmas[s_idx])
    h = _lam(sigmas[t_idx]) - _lam(sigmas[s_idx])
    m0 = outputs[-1]
    rks, d1s = [], []
    for i in range(1, order):
        si = s_idx - i
        rk = (_lam(sigmas[si]) - _lam(sigmas[s_idx])) / h
        rks.append(rk)
        d1s.append((outputs[-(i + 1)] - m0) / rk)
    rks.append(1.0)
    rks = np.asarray(rks)
    predict_x0 = cfg["predict_x0"]
    hh = -h if predict_x0 else h
    h_phi_1 = np.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    factorial = 1
    b_h = hh if cfg["solver_type"] == "bh1" else np.expm1(hh)
    rows, b = [], []
    for i in range(1, order + 1):
        rows.append(rks ** (i - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    R, b = np.stack(rows), np.asarray(b)
    base = (sigma_t / sigma_s0 * x - alpha_t * h_phi_1 * m0) if predict_x0 else \
        (alpha_t / alpha_s0 * x - sigma_t * h_phi_1 * m0)
    scale = alpha_t if predict_x0 else sigma_t
    if corrector:
        rhos = np.array([0.5]) if order == 1 else np.linalg.solve(R, b)
        res = sum((r * d for r, d in zip(rhos[:-1], d1s, strict=True)), np.zeros_like(x))
        return base - scale * b_h * (res + rhos[-1] * (model_t - m0))
    if not d1s:
        return base
    rhos = np.array([0.5]) if order == 2 else np.linalg.solve(R[:-1, :-1], b[:-1])
    return base - scale * b_h * sum((r * d for r, d in zip(rhos, d1s, strict=True)), np.zeros_like(x))


def _dpm_update(cfg, sigmas, k, outputs, x, order):
    """dpm_solver_first_order_update / multistep_dpm_solver_second/third_order_update from step k."""
    alpha_t, sigma_t = _alpha_sigma(sigmas[k + 1])
    alpha_s0, sigma_s0 = _alpha_sigma(sigmas[k])
    h = _lam(sigmas[k + 1]) - _lam(sigmas[k])
    data = cfg["algorithm_type"] == "dpmsolver++"
    m0 = outputs[-1]
    if order == 1:
        if data:
            return (sigma_t / sigma_s0) * x - (alpha_t * (np.exp(-h) - 1.0)) * m0
        return (alpha_t / alpha_s0) * x - (sigma_t * (np.exp(h) - 1.0)) * m0
    h_0 = _lam(sigmas[k]) - _lam(sigmas[k - 1])
    r0 = h_0 / h
    d1_0 = (1.0 / r0) * (m0 - outputs[-2])
    if order == 2:
        heun = cfg["solver_type"] == "heun"
        if data:
            e = np.exp(-h) - 1.0
            last = (alpha_t * (e / h + 1.0)) * d1_0 if heun else -0.5 * (alpha_t * e) * d1_0
            return (sigma_t / sigma_s0) * x - (alpha_t * e) * m0 + last
        e = np.exp(h) - 1.0
        last = -(sigma_t * (e / h - 1.0)) * d1_0 if heun else -0.5 * (sigma_t * e) * d1_0
        return (alpha_t / alpha_s0) * x - (sigma_t * e) * m0 + last
    h_1 = _lam(sigmas[k - 1]) - _lam(sigmas[k - 2])
    r1 = h_1 / h
    d1_1 = (1.0 / r1) * (outputs[-2] - outputs[-3])
    d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
    d2 = (1.0 / (r0 + r1)) * (d1_0 - d1_1)
    if data:
        return ((sigma_t / sigma_s0) * x - (alpha_t * (np.exp(-h) - 1.0)) * m0
                + (alpha_t * ((np.exp(-h) - 1.0) / h + 1.0)) * d1
                - (alpha_t * ((np.exp(-h) - 1.0 + h) / h ** 2 - 0.5)) * d2)
    return ((alpha_t / alpha_s0) * x - (sigma_t * (np.exp(h) - 1.0)) * m0
            - (sigma_t * ((np.exp(h) - 1.0) / h - 1.0)) * d1
            - (sigma_t * ((np.exp(h) - 1.0 - h) / h ** 2 - 0.5)) * d2)


def multistep_loop(cfg: Mapping[str, Any], steps: int, model: Model, x: np.ndarray) -> tuple[np.ndarray, list]:
    """diffusers' loop ``for t in timesteps: x = scheduler.step(model(x, t), t, x).prev_sample`` for UniPC or
    DPM-Solver; returns the final x and the list of the timesteps the model saw."""
    timesteps, sigmas = multistep_schedule(cfg, steps)
    sigmas = sigmas.astype(np.float64)
    x = np.asarray(x, np.float64)
    # diffusers computes unused 0/0 and x/0 terms at a zero-length or sigma = 0 step, silently in torch.
    with np.errstate(divide="ignore", invalid="ignore"):
        return _multistep_steps(cfg, timesteps, sigmas, model, x)


def _multistep_steps(cfg, timesteps, sigmas, model, x):
    num, order = len(timesteps), cfg["solver_order"]
    outputs: list[np.ndarray] = []
    lower_order_nums, last_sample, this_order, seen = 0, None, None, []
    for k, t in enumerate(timesteps):
        seen.append(int(t))
        output = model(x, int(t))
        alpha, sigma = _alpha_sigma(sigmas[k])
        if cfg["_class_name"] == DPM:
            final_first = k == num - 1 and (cfg["euler_at_final"] or (cfg["lower_order_final"] and num < 15)
                                            or cfg["final_sigmas_type"] == "zero")
            second = k == num - 2 and cfg["lower_order_final"] and num < 15
            outputs = (outputs + [_convert(cfg, output, x, alpha, sigma, cfg["algorithm_type"] == "dpmsolver++")])
            outputs = outputs[-order:]
            if order == 1 or lower_order_nums < 1 or final_first:
                this = 1
            elif order == 2 or lower_order_nums < 2 or second:
                this = 2
            else:
                this = 3
            x = _dpm_update(cfg, sigmas, k, outputs, x, this)
        else:
            converted = _convert(cfg, output, x, alpha, sigma, cfg["predict_x0"])
            if k > 0 and k - 1 not in cfg["disable_corrector"] and last_sample is not None:
                x = _unipc_update(cfg, sigmas, k, outputs, last_sample, this_order, model_t=converted)
            outputs = (outputs + [converted])[-order:]
            this_order = min(order, num - k) if cfg["lower_order_final"] else order
            this_order = min(this_order, lower_order_nums + 1)
            last_sample = x
            x = _unipc_update(cfg, sigmas, k, outputs, x, this_order)
        lower_order_nums = min(lower_order_nums + 1, order)
    return x, seen


def ddim_loop(cfg: Mapping[str, Any], steps: int, model: Model, x: np.ndarray) -> tuple[np.ndarray, list]:
    """diffusers' DDIMScheduler loop with eta = 0 and use_clipped_model_output=False."""
    assert cfg["_class_name"] == DDIM
    ac = alphas_cumprod(cfg).astype(np.float64)
    final = 1.0 if cfg["set_alpha_to_one"] else ac[0]
    x, seen = np.asarray(x, np.float64), []
    for t in ddim_timesteps(cfg, steps):
        seen.append(int(t))
        output = model(x, int(t))
        prev = t - cfg["num_train_timesteps"] // steps
        a_t, a_prev = ac[t], (ac[prev] if prev >= 0 else final)
        b_t = 1 - a_t
        kind = cfg["prediction_type"]
        if kind == "epsilon":
            x0, eps = (x - b_t ** 0.5 * output) / a_t ** 0.5, output
        elif kind == "sample":
            x0, eps = output, (x - a_t ** 0.5 * output) / b_t ** 0.5
        else:
            x0, eps = a_t ** 0.5 * x - b_t ** 0.5 * output, a_t ** 0.5 * output + b_t ** 0.5 * x
        if cfg["clip_sample"]:
            x0 = np.clip(x0, -cfg["clip_sample_range"], cfg["clip_sample_range"])
        x = a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps
    return x, seen
