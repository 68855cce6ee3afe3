"""Optimizers, EDT's learning-rate schedule and the parameter EMA.

``adan`` is a transcription of the official PyTorch Adan (github.com/sail-sg/Adan, ``adan.py``,
single-tensor path). Its betas are *averaging* coefficients, as in that file (``m = b1 * m + (1 - b1) * g``,
defaults 0.98 / 0.92 / 0.99); the paper writes the same optimizer with ``1 - beta`` (0.02 / 0.08 / 0.01).
At step ``t`` (1-based), with ``g`` the gradient and ``g_prev`` the previous one (``g_prev = g`` at ``t = 1``,
so the first difference is zero)::

    diff = g - g_prev
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * diff
    n = b3 * n + (1 - b3) * (g + b2 * diff) ** 2
    denom = sqrt(n) / sqrt(1 - b3**t) + eps
    step = (m / (1 - b1**t) + b2 * v / (1 - b2**t)) / denom
    proximal (default): param = (param - lr * step) / (1 + lr * wd)
    no_prox:            param = param * (1 - lr * wd) - lr * step

Typical use (the trainer logs ``current_learning_rate(opt_state)``)::

    tx = create_optimizer("adan", 1e-4, schedule="linear_decay")
    opt_state = tx.init(params)
    updates, opt_state = tx.update(grads, opt_state, params)      # params are required
    params = optax.apply_updates(params, updates)
    ema = ema_update(ema, params, 0.9999)
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from edt_jax.checks import check_choice, check_int

OPTIMIZERS = ("adan", "adamw", "adam", "sgd")
SCHEDULES = ("constant", "linear_decay")
# Per-optimizer defaults for (b1, b2, b3, eps); b3 only exists for Adan, b2 not for SGD (b1 is its momentum).
_DEFAULTS = {
    "adan": (0.98, 0.92, 0.99, 1e-8),
    "adamw": (0.9, 0.999, None, 1e-8),
    "adam": (0.9, 0.999, None, 1e-8),
    "sgd": (None, None, None, None),
}

ScalarOrSchedule = float | Callable[[jax.Array], jax.Array]


def _check_real(name: str, value, low: float, high: float | None = None, low_open: bool = False) -> float:
    """One-line ``ValueError`` unless ``value`` is a real number in [low, high) (or (low, high) if ``low_open``)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value
    ok = ok and (value > low if low_open else value >= low) and (high is None or value < high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high if high is not None else 'inf'})"
        raise ValueError(f"{name} must be a real number in {interval}, got {value!r}")
    return float(value)


class AdanState(NamedTuple):
    """Adan's state; every tree mirrors the params (float32) so it shards exactly like them."""

    count: jax.Array          # int32, number of updates applied so far
    m: optax.Updates          # average of gradients
    v: optax.Updates          # average of gradient differences
    n: optax.Updates          # average of squared (gradient + b2 * difference)
    prev_grad: optax.Updates  # gradient of the previous step


def adan(learning_rate: ScalarOrSchedule, b1: float = 0.98, b2: float = 0.92, b3: float = 0.99, eps: float = 1e-8,
         weight_decay: float = 0.0, no_prox: bool = False) -> optax.GradientTransformation:
    """Adan, matching the official PyTorch implementation step for step (see the module docstring).

    ``learning_rate`` is a float or an optax schedule evaluated at the number of updates already applied
    (0 for the first step). The proximal weight decay divides the parameter, which no additive function of the
    gradient alone can express, so ``update(grads, state, params)`` needs ``params`` and returns the delta
    ``new_param - param`` (for ``optax.apply_updates``); it is computed in closed form rather than by
    subtraction so it does not lose precision. Everything is an elementwise tree map: jit- and sharding-friendly
(an eager ``init`` keeps each param's layout; a jitted one needs ``out_shardings``, as any optax state).
    """
    for name, value in (("b1", b1), ("b2", b2), ("b3", b3)):
        _check_real(name, value, 0.0, 1.0)
    _check_real("eps", eps, 0.0)
    _check_real("weight_decay", weight_decay, 0.0)
    if isinstance(learning_rate, numbers.Real):   # traced / injected values are checked by their creator
        _check_real("learning_rate", learning_rate, 0.0)

    def init_fn(params: optax.Params) -> AdanState:
        def zeros():
            return jax.tree.map(lambda p: jnp.zeros_like(p, dtype=jnp.float32), params)

        return AdanState(count=jnp.zeros([], jnp.int32), m=zeros(), v=zeros(), n=zeros(), prev_grad=zeros())

    def update_fn(updates: optax.Updates, state: AdanState, params: optax.Params | None = None):
        if params is None:
            raise ValueError("adan needs params in update(grads, state, params): its weight decay rescales them")
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        lr = jnp.asarray(lr, jnp.float32)
        step = optax.safe_int32_increment(state.count)
        t = step.astype(jnp.float32)
        bc1, bc2, bc3 = (1.0 - jnp.power(jnp.float32(b), t) for b in (b1, b2, b3))
        first = state.count == 0

        grads = jax.tree.map(lambda g: g.astype(jnp.float32), updates)
        # The reference sets pre_grad = grad on step 1, so the first difference is exactly zero.
        diff = jax.tree.map(lambda g, q: jnp.where(first, 0.0, g - q), grads, state.prev_grad)
        m = jax.tree.map(lambda m, g: b1 * m + (1.0 - b1) * g, state.m, grads)
        v = jax.tree.map(lambda v, d: b2 * v + (1.0 - b2) * d, state.v, diff)
        n = jax.tree.map(lambda n, g, d: b3 * n + (1.0 - b3) * jnp.square(g + b2 * d), state.n, grads, diff)

        def delta(p, m, v, n):
            denom = jnp.sqrt(n) / jnp.sqrt(bc3) + eps
            direction = (m / bc1 + b2 * v / bc2) / denom
            p32 = p.astype(jnp.float32)
            # no_prox:  p * (1 - lr wd) - lr s - p      = -lr (s + wd p)
            # proximal: (p - lr s) / (1 + lr wd) - p    = -lr (s + wd p) / (1 + lr wd)
            d = -lr * (direction + weight_decay * p32)
            if not no_prox:
                d = d / (1.0 + lr * weight_decay)
            return d.astype(p.dtype)

        new_updates = jax.tree.map(delta, params, m, v, n)
        return new_updates, AdanState(count=step, m=m, v=v, n=n, prev_grad=grads)

    return optax.GradientTransformation(init_fn, update_fn)


def linear_decay_schedule(init_value: float, end_value: float = 5e-5, decay_steps: int = 400_000,
                          warmup_steps: int = 0) -> Callable[[jax.Array], jax.Array]:
    """EDT's learning rate: linear decay from ``init_value`` to ``end_value`` over ``decay_steps``, then constant.

    EDT's ``train_mask_adan.py`` runs ``adjust_lr`` after every optimizer step, setting
    ``lr = init - (init - min) * train_steps / 400000`` while ``train_steps <= 400000`` (and leaving it at
    ``min`` afterwards), with ``train_steps`` the number of steps already taken; the first step uses ``init``.
    In optax terms that is this function of ``count`` (updates already applied), i.e.
    ``optax.linear_schedule(init, end, decay_steps)``. The optional warmup (not in EDT) ramps linearly from 0
    at ``count = 0`` to ``init_value`` at ``count = warmup_steps`` (optax's convention); the decay follows it.
    """
    _check_real("init_value", init_value, 0.0)
    _check_real("end_value", end_value, 0.0)
    decay_steps = check_int("decay_steps", decay_steps, 1)
    warmup_steps = check_int("warmup_steps", warmup_steps, 0)

    def schedule(count: jax.Array) -> jax.Array:
        count = jnp.asarray(count, jnp.float32)
        frac = jnp.clip((count - warmup_steps) / decay_steps, 0.0, 1.0)
        lr = init_value + (end_value - init_value) * frac
        if warmup_steps:
            lr = jnp.where(count < warmup_steps, init_value * count / warmup_steps, lr)
        return lr

    return schedule


def create_optimizer(name: str, learning_rate: ScalarOrSchedule, *, weight_decay: float = 0.0,
                     b1: float | None = None, b2: float | None = None, b3: float | None = None,
                     eps: float | None = None, grad_clip_norm: float | None = None, schedule: str = "constant",
                     end_learning_rate: float = 5e-5, decay_steps: int = 400_000,
                     warmup_steps: int = 0) -> optax.GradientTransformation:
    """Build an optimizer by name: ``"adan" | "adamw" | "adam" | "sgd"``.

    Unset betas/eps take each optimizer's usual defaults (Adan: 0.98/0.92/0.99, 1e-8; Adam(W): 0.9/0.999,
    1e-8; SGD: ``b1`` is the momentum, none by default). Weight decay is decoupled for adamw, proximal for adan
    and coupled L2 (added to the gradient, like ``torch.optim.Adam`` / ``SGD``) for adam and sgd.
    ``schedule="linear_decay"`` applies ``linear_decay_schedule``; a callable ``learning_rate`` with
    ``schedule="constant"`` is used as given. With ``grad_clip_norm`` the raw gradients are clipped to that
    global norm first. The result is wrapped in ``optax.inject_hyperparams`` so ``current_learning_rate`` can
    read the rate from the state; ``update`` must be given ``params``.
    """
    check_choice("optimizer", name, OPTIMIZERS)
    check_choice("schedule", schedule, SCHEDULES)
    _check_real("weight_decay", weight_decay, 0.0)
    if grad_clip_norm is not None:
        _check_real("grad_clip_norm", grad_clip_norm, 0.0, low_open=True)
    if callable(learning_rate):
        if schedule != "constant":
            raise ValueError(f"learning_rate is already a schedule; schedule must be 'constant', got {schedule!r}")
        lr: ScalarOrSchedule = learning_rate
    else:
        _check_real("learning_rate", learning_rate, 0.0, low_open=True)
        lr = float(learning_rate) if schedule == "constant" else linear_decay_schedule(
            learning_rate, end_learning_rate, decay_steps, warmup_steps)

    d1, d2, d3, d_eps = _DEFAULTS[name]
    for arg, value, default in (("b1", b1, d1), ("b2", b2, d2), ("b3", b3, d3), ("eps", eps, d_eps)):
        if value is not None and default is None and not (name == "sgd" and arg == "b1"):
            raise ValueError(f"{arg} does not apply to optimizer {name!r}; leave it None")
    b1 = d1 if b1 is None else _check_real("b1", b1, 0.0, 1.0)
    b2 = d2 if b2 is None else _check_real("b2", b2, 0.0, 1.0)
    b3 = d3 if b3 is None else _check_real("b3", b3, 0.0, 1.0)
    eps = d_eps if eps is None else _check_real("eps", eps, 0.0)

    def factory(learning_rate: jax.Array) -> optax.GradientTransformation:
        if name == "adan":
            tx = adan(learning_rate, b1, b2, b3, eps, weight_decay)
        elif name == "adamw":
            tx = optax.adamw(learning_rate, b1, b2, eps, weight_decay=weight_decay)
        elif name == "adam":
            tx = optax.adam(learning_rate, b1, b2, eps)
        else:
            tx = optax.sgd(learning_rate, momentum=b1)
        if name in ("adam", "sgd") and weight_decay:
            tx = optax.chain(optax.add_decayed_weights(weight_decay), tx)
        if grad_clip_norm is not None:
            tx = optax.chain(optax.clip_by_global_norm(grad_clip_norm), tx)
        return tx

    # float32 hyperparameters: a bf16 model must not round its learning rate.
    return optax.inject_hyperparams(factory, hyperparam_dtype=jnp.float32)(learning_rate=lr)


def learning_rate_of(opt_state: Any) -> jax.Array | None:
    """The learning rate array in an ``inject_hyperparams`` state (works under jit), else ``None``.

    optax stores the rate used by the latest update (before any update: the one the first update will use).
    """
    if hasattr(opt_state, "hyperparams") and "learning_rate" in opt_state.hyperparams:
        return opt_state.hyperparams["learning_rate"]
    if isinstance(opt_state, (tuple, list)):
        for sub in opt_state:
            lr = learning_rate_of(sub)
            if lr is not None:
                return lr
    return None


def current_learning_rate(opt_state: Any) -> float | None:
    """``learning_rate_of`` as a host float (for logging), else ``None``."""
    lr = learning_rate_of(opt_state)
    return None if lr is None else float(lr)


def ema_update(ema_params: optax.Params, params: optax.Params, decay: float | jax.Array) -> optax.Params:
    """One EMA step in float32: ``ema = decay * ema + (1 - decay) * params``.

    DiT and EDT keep ``ema`` as a copy of the model made at step 0 (``update_ema(ema, model, decay=0)``, which
    is ``init_ema`` here) and call this with ``decay=0.9999`` after every optimizer step; sampling and FID use
    the EMA weights.
    """
    return jax.tree.map(lambda e, p: decay * e.astype(jnp.float32) + (1.0 - decay) * p.astype(jnp.float32),
                        ema_params, params)


def ema_decay_at(decay: float, step: jax.Array | int, *, warmup: bool) -> jax.Array | float:
    """The EMA decay of the update made at optimizer step ``step`` (0 for the first update).

    ``warmup=False``: ``decay`` throughout (DiT, EDT). ``warmup=True``: LDM's ``LitEma``, which DisDiff trains
    with: ``min(decay, (1 + n) / (10 + n))`` for the n-th update (n = step + 1), so a short run's EMA is not
    mostly its initialisation (at 0.999 without it, 74% of the EMA is still the initialisation after 300 steps).
    """
    if not warmup:
        return decay
    n = jnp.asarray(step, jnp.float32) + 1.0
    return jnp.minimum(jnp.float32(decay), (1.0 + n) / (10.0 + n))


def init_ema(params: optax.Params) -> optax.Params:
    """The EMA at step 0: a float32 copy of ``params``."""
    return jax.tree.map(lambda p: jnp.asarray(p, jnp.float32).copy(), params)
