"""Host-side (float64) step plans shared by the multistep samplers.

Every multistep update of DDIM, DPM-Solver(++) and UniPC is *linear* in the current state and in the
stored model outputs: x_next = a x + sum_i w_i M_i (+ w_new M_new for a corrector). So a whole
trajectory is described by a few float64 arrays computed once on the host from the time grid --
time points, expm1 terms, ratios r_k, the solved rho vectors, the step orders and the corrector
flags all fold into those weights -- and the device loop (``core.run_plan``) is a single
``lax.scan`` that only evaluates the model and forms weighted sums.

Conventions: the trajectory visits times t_0 > t_1 > ... > t_S. Step j (1 <= j <= S) goes from
t_{j-1} to t_j. A step's history is indexed by *age*: age 0 is the model output at t_{j-1}, age 1
the one at t_{j-2}, and so on. ``LinearStep`` stores weights by age; ``build_plan`` turns ages into
slots of the ring buffer the scan keeps.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from edt_jax.diffusion.schedules import NoiseScheduleVP

SOLVER_SPACES = ("data", "noise")  # what a multistep solver integrates: the data (x0) or the noise prediction


@dataclasses.dataclass(frozen=True)
class TimeGrid:
    """Schedule quantities on the (S + 1,) time points of a trajectory, float64."""

    t: np.ndarray
    lam: np.ndarray
    log_alpha: np.ndarray
    alpha: np.ndarray
    sigma: np.ndarray

    @classmethod
    def build(cls, ns: NoiseScheduleVP, t: np.ndarray) -> TimeGrid:
        t = np.asarray(t, np.float64)
        return cls(t=t, lam=ns.marginal_lambda(t), log_alpha=ns.marginal_log_mean_coeff(t),
                   alpha=ns.marginal_alpha(t), sigma=ns.marginal_std(t))

    @classmethod
    def from_alpha_sigma(cls, t: np.ndarray, alpha: np.ndarray, sigma: np.ndarray) -> TimeGrid:
        """A grid from explicit (S + 1,) alpha_t and sigma_t, e.g. a discrete scheduler's own tables.

        A point with sigma_t = 0 (the clean end of diffusers' ``final_sigmas_type="zero"``) gets lambda = +inf:
        the first-order data-space step into it is exact (x_coef = 0, m0_coef = alpha_t), while higher orders
        and the noise space have no finite form there, so the callers use order 1 in the data space for it.
        """
        alpha, sigma = np.asarray(alpha, np.float64), np.asarray(sigma, np.float64)
        with np.errstate(divide="ignore"):  # log(0) = -inf is the intended lambda = +inf
            lam = np.log(alpha) - np.log(sigma)
        return cls(t=np.asarray(t, np.float64), lam=lam, log_alpha=np.log(alpha), alpha=alpha, sigma=sigma)

    @property
    def steps(self) -> int:
        return self.t.shape[0] - 1


@dataclasses.dataclass(frozen=True)
class LinearStep:
    """x_out = x_coef * x + hist_coef . [M_age0, M_age1, ...] + new_coef * M_new (+ eps_coef * eps_age0).

    ``eps_coef`` (predictors only) weighs the newest call's noise prediction as the model returned it, untouched
    by the run's x0 transform: diffusers' DDIM with ``clip_sample`` moves the clipped x0 along the unclipped eps,
    which no combination of x and the (clipped) history can express.
    """

    x_coef: float
    hist_coef: np.ndarray
    new_coef: float = 0.0
    eps_coef: float = 0.0


@dataclasses.dataclass(frozen=True)
class FirstOrderTerms:
    """The exponential-integrator pieces every step of step j shares (DDIM is exactly this step).

    ``scale`` multiplies the higher-order residuals: alpha_t for data prediction, sigma_t for noise
    prediction; ``hh`` is -h (data) or h (noise) with h = lambda_t - lambda_s.
    """

    x_coef: float
    m0_coef: float
    scale: float
    h: float
    hh: float


def first_order_terms(grid: TimeGrid, j: int, space: str) -> FirstOrderTerms:
    """DDIM / DPM-Solver-1 from t_{j-1} to t_j: x_t = x_coef x_s + m0_coef M(x_s, s)."""
    s, t = j - 1, j
    h = grid.lam[t] - grid.lam[s]
    if space == "data":
        return FirstOrderTerms(x_coef=grid.sigma[t] / grid.sigma[s], m0_coef=-grid.alpha[t] * np.expm1(-h),
                               scale=grid.alpha[t], h=h, hh=-h)
    return FirstOrderTerms(x_coef=np.exp(grid.log_alpha[t] - grid.log_alpha[s]),
                           m0_coef=-grid.sigma[t] * np.expm1(h), scale=grid.sigma[t], h=h, hh=h)


def age_vector(age: int, size: int) -> np.ndarray:
    """The unit weight vector selecting the history entry of the given age."""
    v = np.zeros(size)
    v[age] = 1.0
    return v


def warmup_orders(steps: int, order: int, lower_order_final: bool) -> np.ndarray:
    """(S,) order of steps 1..S: 1, 2, .., order-1 while the history fills, then ``order``.

    With ``lower_order_final`` the last steps drop to min(order, S + 1 - j), which stabilises
    very short trajectories (the reference behaviour).
    """
    orders = []
    for j in range(1, steps + 1):
        if j < order:
            orders.append(j)
        elif lower_order_final:
            orders.append(min(order, steps + 1 - j))
        else:
            orders.append(order)
    return np.asarray(orders, np.int64)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything the scan needs, as (S,) or (S, P) arrays indexed by iteration k = 0..S-1.

    Iteration k evaluates the model at (x_pred_k, t_k), optionally corrects x_k with it
    (UniC, step k), stores it in history slot ``slot[k]`` and predicts x_{k+1}.
    """

    times: np.ndarray          # (S,) t_k where the model is evaluated
    alphas: np.ndarray         # (S,) alpha(t_k), to turn eps into a data prediction
    sigmas: np.ndarray         # (S,) sigma(t_k)
    slot: np.ndarray           # (S,) ring-buffer slot receiving M_k
    corrector_on: np.ndarray   # (S,) bool, False at k = 0 and when no corrector is used
    corr_x: np.ndarray         # (S,) weight of x_{k-1}
    corr_hist: np.ndarray      # (S, P) weights of the slots before M_k is stored
    corr_new: np.ndarray       # (S,) weight of M_k
    pred_x: np.ndarray         # (S,) weight of x_k
    pred_hist: np.ndarray      # (S, P) weights of the slots after M_k is stored
    space: str                 # "data" | "noise": the solver space, what the history holds
    final_time: float          # t_S
    final_alpha: float
    final_sigma: float
    pred_eps: np.ndarray | None = None  # (S,) weight of the newest raw eps in the predictor; None: all zero

    @property
    def steps(self) -> int:
        return self.times.shape[0]

    @property
    def history_size(self) -> int:
        return self.pred_hist.shape[1]


def _by_slot(age_weights: np.ndarray, newest_slot: int, size: int) -> np.ndarray:
    """Reorder age-indexed weights to ring-buffer slots; age a lives in slot (newest - a) mod P."""
    out = np.zeros(size)
    for age, w in enumerate(age_weights):
        out[(newest_slot - age) % size] += w
    return out


def build_plan(grid: TimeGrid, predictors: list[LinearStep], correctors: list[LinearStep | None],
               space: str, history_size: int) -> Plan:
    """Assemble a Plan from per-step predictor (steps 1..S) and corrector (steps 1..S-1) updates."""
    steps = grid.steps
    if len(predictors) != steps or len(correctors) != steps - 1:
        raise AssertionError("need one predictor per step and one corrector slot per step but the last")
    size = history_size
    corrector_on = np.zeros(steps, bool)
    corr_x, corr_new = np.zeros(steps), np.zeros(steps)
    corr_hist, pred_hist = np.zeros((steps, size)), np.zeros((steps, size))
    pred_x, pred_eps = np.zeros(steps), np.zeros(steps)
    slot = np.arange(steps) % size
    for k in range(steps):
        # Predictor for step k + 1 runs after M_k was stored in slot k mod P (age 0).
        step = predictors[k]
        pred_x[k] = step.x_coef
        pred_eps[k] = step.eps_coef
        pred_hist[k] = _by_slot(step.hist_coef, slot[k], size)
        if k >= 1 and correctors[k - 1] is not None:
            # Corrector for step k runs before M_k is stored: age 0 is M_{k-1} in slot k - 1.
            corr = correctors[k - 1]
            corrector_on[k] = True
            corr_x[k] = corr.x_coef
            corr_hist[k] = _by_slot(corr.hist_coef, (k - 1) % size, size)
            corr_new[k] = corr.new_coef
    return Plan(times=grid.t[:-1], alphas=grid.alpha[:-1], sigmas=grid.sigma[:-1], slot=slot,
                corrector_on=corrector_on, corr_x=corr_x, corr_hist=corr_hist, corr_new=corr_new,
                pred_x=pred_x, pred_hist=pred_hist, space=space,
                final_time=float(grid.t[-1]), final_alpha=float(grid.alpha[-1]),
                final_sigma=float(grid.sigma[-1]), pred_eps=pred_eps if np.any(pred_eps) else None)
