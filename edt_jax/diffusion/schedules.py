"""Variance-preserving noise schedules in continuous time.

Follows the semantics of the reference UniPC / DPM-Solver code: the forward process is
q(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I) with alpha_t^2 + sigma_t^2 = 1 and half-log-SNR
lambda_t = log alpha_t - log sigma_t.

* Discrete-time models trained on n = 0..N-1 are mapped to continuous time t_n = (n + 1) / N, so
  t lies in [1/N, 1]; log alpha_t is piecewise-linear between those knots (and extrapolated
  linearly from the outermost segments, as the reference does).
* ``linear`` is the VP-SDE of score_sde (beta_0 = 0.1, beta_1 = 20 by default) and ``cosine`` the
  improved-DDPM schedule (s = 0.008) stopped at T = 0.9946 where the cosine becomes unstable.

Every method accepts Python floats, NumPy arrays (evaluated in float64 on the host, which is how
the samplers build their per-step coefficients) or JAX arrays/tracers (evaluated with ``jax.numpy``
in the array's precision, which is how model wrappers use them inside a compiled trajectory).

A discrete schedule is also the training diffusion: ``ns.tables`` holds ADM's float64 tables of the same betas
(``DiscreteDiffusion``: ``alphas_cumprod``, the posterior coefficients, respacing) that the training losses and
ancestral DDPM sampling read, so one object serves training, every sampler and the analyses.

Time: the samplers integrate in the continuous time t (``marginal_*``, ``time_grid``); a network sees its own
time ``t_input = ns.model_time(t)``, the training timestep (0 .. N-1 for N = 1000). Everything a user hands a
network or reads about one (network callables, guidance intervals, DP-IR and DisDiff models) speaks ``t_input``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

SKIP_TYPES = ("time_uniform", "logSNR", "time_quadratic")
SCHEDULES = ("discrete", "linear", "cosine")


def _array_module(*values: Any):
    """``jax.numpy`` if any value is a JAX array or tracer, else ``numpy`` (float64 host math)."""
    return jnp if any(isinstance(v, jax.Array) for v in values) else np


def _interpolate(x, knots_x, knots_y, xp):
    """Piecewise-linear ``y(x)`` through increasing ``knots_x``, extrapolating the end segments."""
    knots_x = xp.asarray(knots_x)
    knots_y = xp.asarray(knots_y)
    num = knots_x.shape[0]
    idx = xp.clip(xp.searchsorted(knots_x, x, side="left") - 1, 0, num - 2)
    x0, x1 = knots_x[idx], knots_x[idx + 1]
    y0, y1 = knots_y[idx], knots_y[idx + 1]
    return y0 + (x - x0) * (y1 - y0) / (x1 - x0)


@dataclasses.dataclass(frozen=True, eq=False)
class NoiseScheduleVP:
    """A VP noise schedule; build it with :meth:`discrete`, :meth:`linear` or :meth:`cosine`.

    Attributes:
      schedule: "discrete" | "linear" | "cosine".
      total_N: number of training steps N (1000 for the continuous schedules, as the reference).
      T: the largest time (1.0, or 0.9946 for cosine).
      t_array, log_alpha_array: the (N,) interpolation knots of a discrete schedule (float64).
      beta_0, beta_1: the linear VP-SDE parameters.
      cosine_s: the improved-DDPM offset s.
      betas: the (N,) float64 betas of a discrete schedule (derived from ``alphas_cumprod`` when built from it).
    """

    schedule: str
    total_N: int
    T: float
    t_array: np.ndarray | None = None
    log_alpha_array: np.ndarray | None = None
    beta_0: float = 0.1
    beta_1: float = 20.0
    cosine_s: float = 0.008
    betas: np.ndarray | None = None

    # ----------------------------------------------------------------------------- constructors
    @classmethod
    def discrete(cls, betas=None, alphas_cumprod=None) -> NoiseScheduleVP:
        """Schedule of a discrete-time DDPM from its (N,) ``betas`` or ``alphas_cumprod``."""
        if (betas is None) == (alphas_cumprod is None):
            raise ValueError("NoiseScheduleVP.discrete needs exactly one of betas=... or alphas_cumprod=...")
        if betas is not None:
            betas = np.asarray(betas, dtype=np.float64)
            if betas.ndim != 1 or betas.size < 2 or np.any(betas <= 0) or np.any(betas >= 1):
                raise ValueError(f"betas must be a 1-D array of at least 2 values in (0, 1), got shape {betas.shape}")
            log_alphas = 0.5 * np.cumsum(np.log1p(-betas))
        else:
            alphas_cumprod = np.asarray(alphas_cumprod, dtype=np.float64)
            if alphas_cumprod.ndim != 1 or alphas_cumprod.size < 2 or np.any(alphas_cumprod <= 0) \
                    or np.any(alphas_cumprod >= 1):
                raise ValueError(f"alphas_cumprod must be a 1-D array of at least 2 values in (0, 1), "
                                 f"got shape {alphas_cumprod.shape}")
            log_alphas = 0.5 * np.log(alphas_cumprod)
            betas = 1.0 - alphas_cumprod / np.append(1.0, alphas_cumprod[:-1])
        n = log_alphas.shape[0]
        t_array = np.linspace(0.0, 1.0, n + 1)[1:]
        return cls("discrete", n, 1.0, t_array=t_array, log_alpha_array=log_alphas, betas=betas)

    @classmethod
    def named(cls, name: str = "linear", num_timesteps: int = 1000) -> NoiseScheduleVP:
        """The discrete schedule of a named beta schedule (``diffusion.BETA_SCHEDULES``: ADM's "linear" and
        "cosine", Stable Diffusion's "scaled_linear") with ``num_timesteps`` training timesteps."""
        from edt_jax.diffusion.ddpm import beta_schedule

        return cls.discrete(betas=beta_schedule(name, num_timesteps))

    # ----------------------------------------------------------------------------- discrete tables
    @functools.cached_property
    def tables(self):
        """ADM's float64 ``DiscreteDiffusion`` tables of this discrete schedule (what the training losses and
        ancestral ``ddpm`` sampling read); a one-line error for the continuous schedules."""
        if self.schedule != "discrete":
            raise ValueError(f"the {self.schedule!r} schedule is continuous and has no discrete DDPM tables; build "
                             f"one with NoiseScheduleVP.discrete(betas=...) or NoiseScheduleVP.named(...)")
        from edt_jax.diffusion.ddpm import DiscreteDiffusion

        return DiscreteDiffusion.from_betas(self.betas)

    @property
    def alphas_cumprod(self) -> np.ndarray:
        """(N,) float64 alpha-bar of a discrete schedule (``tables.alphas_cumprod``)."""
        return self.tables.alphas_cumprod

    @classmethod
    def linear(cls, beta_0: float = 0.1, beta_1: float = 20.0) -> NoiseScheduleVP:
        """Continuous VP-SDE with beta(t) = beta_0 + t (beta_1 - beta_0), t in [0, 1]."""
        if not 0 <= beta_0 < beta_1:
            raise ValueError(f"linear schedule needs 0 <= beta_0 < beta_1, got beta_0={beta_0}, beta_1={beta_1}")
        return cls("linear", 1000, 1.0, beta_0=float(beta_0), beta_1=float(beta_1))

    @classmethod
    def cosine(cls, s: float = 0.008) -> NoiseScheduleVP:
        """Improved-DDPM cosine schedule in continuous time, T = 0.9946."""
        return cls("cosine", 1000, 0.9946, cosine_s=float(s))

    # ----------------------------------------------------------------------------- marginals
    @property
    def _cosine_log_alpha_0(self) -> float:
        return math.log(math.cos(self.cosine_s / (1.0 + self.cosine_s) * math.pi / 2.0))

    def marginal_log_mean_coeff(self, t):
        """log alpha_t for continuous time t (same shape as t)."""
        xp = _array_module(t)
        t = xp.asarray(t) if xp is jnp else np.asarray(t, dtype=np.float64)
        if self.schedule == "discrete":
            return _interpolate(t, self.t_array, self.log_alpha_array, xp)
        if self.schedule == "linear":
            return -0.25 * t**2 * (self.beta_1 - self.beta_0) - 0.5 * t * self.beta_0
        s = self.cosine_s
        return xp.log(xp.cos((t + s) / (1.0 + s) * math.pi / 2.0)) - self._cosine_log_alpha_0

    def marginal_alpha(self, t):
        """alpha_t = exp(log alpha_t)."""
        xp = _array_module(t)
        return xp.exp(self.marginal_log_mean_coeff(t))

    def marginal_std(self, t):
        """sigma_t = sqrt(1 - alpha_t^2), computed with expm1 so it stays accurate near t = 0."""
        xp = _array_module(t)
        return xp.sqrt(-xp.expm1(2.0 * self.marginal_log_mean_coeff(t)))

    def marginal_lambda(self, t):
        """Half-log-SNR lambda_t = log alpha_t - log sigma_t."""
        xp = _array_module(t)
        log_mean = self.marginal_log_mean_coeff(t)
        return log_mean - 0.5 * xp.log(-xp.expm1(2.0 * log_mean))

    def inverse_lambda(self, lamb):
        """The time t with marginal_lambda(t) == lamb."""
        xp = _array_module(lamb)
        lamb = xp.asarray(lamb) if xp is jnp else np.asarray(lamb, dtype=np.float64)
        log_alpha = -0.5 * xp.logaddexp(xp.zeros_like(lamb), -2.0 * lamb)
        if self.schedule == "linear":
            tmp = 2.0 * (self.beta_1 - self.beta_0) * xp.logaddexp(-2.0 * lamb, xp.zeros_like(lamb))
            delta = self.beta_0**2 + tmp
            return tmp / (xp.sqrt(delta) + self.beta_0) / (self.beta_1 - self.beta_0)
        if self.schedule == "discrete":
            # log alpha decreases with t, so interpolate on the flipped (increasing) knots.
            return _interpolate(log_alpha, self.log_alpha_array[::-1], self.t_array[::-1], xp)
        s = self.cosine_s
        return xp.arccos(xp.exp(log_alpha + self._cosine_log_alpha_0)) * 2.0 * (1.0 + s) / math.pi - s

    # ----------------------------------------------------------------------------- time grids
    @property
    def t_end_default(self) -> float:
        """The reference's default end time 1/N (1e-3 for the continuous schedules)."""
        return 1.0 / self.total_N

    def model_time(self, t_continuous):
        """The time the network sees: 1000 (t - 1/N) for discrete schedules, t itself otherwise."""
        if self.schedule == "discrete":
            return (t_continuous - 1.0 / self.total_N) * 1000.0
        return t_continuous

    def continuous_time(self, t_input):
        """The inverse of ``model_time``: t_input / 1000 + 1/N for discrete schedules, t_input otherwise."""
        if self.schedule == "discrete":
            return t_input / 1000.0 + 1.0 / self.total_N
        return t_input

    def time_grid(self, skip_type: str, steps: int, t_start: float | None = None,
                  t_end: float | None = None) -> np.ndarray:
        """(steps + 1,) float64 decreasing time points from t_start (default T) to t_end (default 1/N).

        skip_type: "time_uniform" (uniform in t), "logSNR" (uniform in lambda) or "time_quadratic"
        (uniform in sqrt(t)).
        """
        if skip_type not in SKIP_TYPES:
            raise ValueError(f"unknown skip_type {skip_type!r}; expected one of {', '.join(SKIP_TYPES)}")
        t_T = self.T if t_start is None else float(t_start)
        t_0 = self.t_end_default if t_end is None else float(t_end)
        if skip_type == "logSNR":
            lam_T, lam_0 = self.marginal_lambda(t_T), self.marginal_lambda(t_0)
            return self.inverse_lambda(np.linspace(lam_T, lam_0, steps + 1))
        if skip_type == "time_uniform":
            return np.linspace(t_T, t_0, steps + 1)
        return np.linspace(math.sqrt(t_T), math.sqrt(t_0), steps + 1) ** 2
