"""Adan against independent re-implementations of the official PyTorch code; schedules, factory and EMA."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from edt_jax.training.optimizers import (
    OPTIMIZERS,
    AdanState,
    adan,
    create_optimizer,
    current_learning_rate,
    ema_decay_at,
    ema_update,
    init_ema,
    linear_decay_schedule,
)

SHAPES = {"w": (4, 3), "b": (3,), "s": ()}
STEPS = 20


def _problem(seed: int = 0):
    """A quadratic loss 0.5 * sum(a * (p - c)^2) over arrays of different shapes (params kept away from 0)."""
    rng = np.random.default_rng(seed)
    init = {k: rng.uniform(1.0, 2.0, s) * rng.choice([-1.0, 1.0], s) for k, s in SHAPES.items()}
    curv = {k: rng.uniform(0.5, 3.0, s) for k, s in SHAPES.items()}
    target = {k: rng.uniform(-0.5, 0.5, s) for k, s in SHAPES.items()}
    # float32-representable inputs, so the float64 references start from exactly what JAX sees.
    return tuple({k: np.float32(v).astype(np.float64) for k, v in d.items()} for d in (init, curv, target))


def _grad(params, curv, target):
    return {k: curv[k] * (params[k] - target[k]) for k in params}


def _numpy_adan(init, curv, target, lr, b1, b2, b3, eps, wd, no_prox, steps=STEPS):
    """Line-by-line float64 transcription of sail-sg/Adan ``adan.py`` (``_single_tensor_adan``), no clipping."""
    params = {k: np.array(v, np.float64) for k, v in init.items()}
    state = {k: dict(m=np.zeros_like(v), v=np.zeros_like(v), n=np.zeros_like(v)) for k, v in params.items()}
    pre_grad = {}
    for step in range(1, steps + 1):
        bias_correction1 = 1.0 - b1 ** step
        bias_correction2 = 1.0 - b2 ** step
        bias_correction3 = 1.0 - b3 ** step
        grads = _grad(params, curv, target)
        for k, grad in grads.items():
            st = state[k]
            if step == 1:
                pre_grad[k] = grad.copy()
            diff = grad - pre_grad[k]
            update = grad + b2 * diff
            st["m"] = st["m"] * b1 + (1 - b1) * grad
            st["v"] = st["v"] * b2 + (1 - b2) * diff
            st["n"] = st["n"] * b3 + (1 - b3) * update * update
            denom = np.sqrt(st["n"]) / np.sqrt(bias_correction3) + eps
            update = (st["m"] / bias_correction1 + b2 * st["v"] / bias_correction2) / denom
            if no_prox:
                params[k] = params[k] * (1 - lr * wd)
                params[k] = params[k] - lr * update
            else:
                params[k] = params[k] - lr * update
                params[k] = params[k] / (1 + lr * wd)
            pre_grad[k] = grad.copy()
    return params


def _run_jax(tx, init, curv, target, steps=STEPS, jit=True):
    params = {k: jnp.asarray(v, jnp.float32) for k, v in init.items()}
    curv_j = {k: jnp.asarray(v, jnp.float32) for k, v in curv.items()}
    target_j = {k: jnp.asarray(v, jnp.float32) for k, v in target.items()}

    def step(params, state):
        updates, state = tx.update(_grad(params, curv_j, target_j), state, params)
        return optax.apply_updates(params, updates), state

    step = jax.jit(step) if jit else step
    state = tx.init(params)
    for _ in range(steps):
        params, state = step(params, state)
    return params, state


@pytest.mark.parametrize("no_prox", [False, True])
@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_adan_matches_numpy_reference(no_prox, wd):
    init, curv, target = _problem()
    hp = dict(lr=0.02, b1=0.98, b2=0.92, b3=0.99, eps=1e-8, wd=wd, no_prox=no_prox)
    expected = _numpy_adan(init, curv, target, **hp)
    got, state = _run_jax(adan(hp["lr"], hp["b1"], hp["b2"], hp["b3"], hp["eps"], wd, no_prox), init, curv, target)
    assert int(state.count) == STEPS
    for k in SHAPES:
        np.testing.assert_allclose(np.asarray(got[k]), expected[k], rtol=1e-6, atol=1e-7, err_msg=k)
        assert not np.allclose(expected[k], init[k])   # the optimizer did move every array


def test_adan_non_default_betas_and_schedule():
    """Other betas and a per-step lr (schedule(count), count = updates already applied) against the reference."""
    init, curv, target = _problem(1)
    sched = linear_decay_schedule(0.03, 0.01, decay_steps=10)
    params = {k: np.asarray(v) for k, v in init.items()}
    tx = adan(sched, b1=0.9, b2=0.8, b3=0.95, weight_decay=0.1)
    got, _ = _run_jax(tx, init, curv, target, steps=15)
    lrs = [float(sched(c)) for c in range(15)]
    assert lrs[0] == pytest.approx(0.03) and lrs[12] == pytest.approx(0.01)
    ref = _numpy_adan_sched(params, curv, target, lrs, 0.9, 0.8, 0.95, 1e-8, 0.1)
    for k in SHAPES:
        np.testing.assert_allclose(np.asarray(got[k]), ref[k], rtol=1e-6, atol=1e-7, err_msg=k)


def _numpy_adan_sched(params, curv, target, lrs, b1, b2, b3, eps, wd):
    """The same recursion as ``_numpy_adan`` (proximal decay only), with a per-step lr = lrs[step - 1]."""
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v_ = {k: np.zeros_like(v) for k, v in params.items()}
    n = {k: np.zeros_like(v) for k, v in params.items()}
    prev = None
    for step, lr in enumerate(lrs, start=1):
        g = _grad(params, curv, target)
        prev = g if prev is None else prev
        for k in params:
            d = g[k] - prev[k]
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v_[k] = b2 * v_[k] + (1 - b2) * d
            n[k] = b3 * n[k] + (1 - b3) * (g[k] + b2 * d) ** 2
            denom = np.sqrt(n[k]) / np.sqrt(1 - b3 ** step) + eps
            upd = (m[k] / (1 - b1 ** step) + b2 * v_[k] / (1 - b2 ** step)) / denom
            params[k] = (params[k] - lr * upd) / (1 + lr * wd)
        prev = g
    return params


def test_adan_first_step_has_zero_difference_and_jit_matches_eager():
    init, curv, target = _problem(2)
    tx = adan(0.01, weight_decay=0.02)
    _, state1 = _run_jax(tx, init, curv, target, steps=1, jit=False)
    for k in SHAPES:
        assert np.all(np.asarray(state1.v[k]) == 0.0)          # diff average stays 0 after step 1
        np.testing.assert_allclose(state1.prev_grad[k], _grad(init, curv, target)[k], rtol=1e-6)
    eager, s_eager = _run_jax(tx, init, curv, target, steps=2, jit=False)
    jitted, s_jit = _run_jax(tx, init, curv, target, steps=2, jit=True)
    for k in SHAPES:
        np.testing.assert_allclose(np.asarray(jitted[k]), np.asarray(eager[k]), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(np.asarray(s_jit.n[k]), np.asarray(s_eager.n[k]), rtol=1e-6, atol=1e-12)


def test_adan_state_and_sharding():
    mesh = jax.make_mesh((len(jax.devices()),), ("x",), axis_types=(AxisType.Auto,))
    sharding = NamedSharding(mesh, PartitionSpec("x"))
    params = {"w": jax.device_put(jnp.ones((len(jax.devices()) * 2, 3), jnp.bfloat16), sharding)}
    tx = adan(1e-3, weight_decay=0.1)
    state = tx.init(params)   # eager zeros_like keeps the layout; under jit pass out_shardings as for any optax state
    assert isinstance(state, AdanState) and state.m["w"].dtype == jnp.float32
    assert state.m["w"].sharding.is_equivalent_to(sharding, 2)
    updates, state = jax.jit(tx.update)(params, state, params)
    assert updates["w"].dtype == jnp.bfloat16 and updates["w"].sharding.is_equivalent_to(sharding, 2)
    assert state.n["w"].sharding.is_equivalent_to(sharding, 2)
    with pytest.raises(ValueError, match="needs params"):
        tx.update(params, state)


def test_adan_matches_torch_transcription():
    """The in-place, negated-pre-grad formulation of the current official file, transcribed in torch."""
    torch = pytest.importorskip("torch")
    init, curv, target = _problem(3)
    lr, (b1, b2, b3), eps, wd = 0.02, (0.98, 0.92, 0.99), 1e-8, 0.05
    ps = {k: torch.tensor(v, dtype=torch.float64) for k, v in init.items()}
    st = {k: {} for k in ps}
    for step in range(1, STEPS + 1):
        bc1, bc2, bc3_sqrt = 1 - b1 ** step, 1 - b2 ** step, (1 - b3 ** step) ** 0.5
        for k, p in ps.items():
            grad = torch.tensor(curv[k]) * (p - torch.tensor(target[k]))
            s = st[k]
            if step == 1:
                s.update(m=torch.zeros_like(p), v=torch.zeros_like(p), n=torch.zeros_like(p), neg=-grad.clone())
            s["neg"].add_(grad)
            s["m"].mul_(b1).add_(grad, alpha=1 - b1)
            s["v"].mul_(b2).add_(s["neg"], alpha=1 - b2)
            s["neg"].mul_(b2).add_(grad)
            s["n"].mul_(b3).addcmul_(s["neg"], s["neg"], value=1 - b3)
            denom = (s["n"].sqrt() / bc3_sqrt).add_(eps)
            p.addcdiv_(s["m"], denom, value=-lr / bc1)
            p.addcdiv_(s["v"], denom, value=-lr * b2 / bc2)
            p.div_(1 + lr * wd)
            s["neg"].zero_().add_(grad, alpha=-1.0)
    got, _ = _run_jax(adan(lr, b1, b2, b3, eps, wd), init, curv, target)
    for k in SHAPES:
        np.testing.assert_allclose(np.asarray(got[k]), ps[k].numpy(), rtol=1e-6, atol=1e-7, err_msg=k)


def test_linear_decay_schedule_matches_edt_adjust_lr():
    init, end, total = 5e-4, 5e-5, 400_000
    sched = linear_decay_schedule(init)

    def edt(step):   # EDT's adjust_lr: the lr after `step` updates (kept at min_lr past total)
        return init - (init - end) * min(step, total) / total

    for step in (0, 1, 1000, 200_000, 399_999, 400_000, 400_001, 2_000_000):
        assert float(sched(step)) == pytest.approx(edt(step), rel=1e-6)
    assert float(sched(200_000)) == pytest.approx((init + end) / 2, rel=1e-6)
    assert float(jax.jit(sched)(jnp.int32(400_000))) == pytest.approx(end, rel=1e-6)


def test_linear_decay_schedule_warmup():
    sched = linear_decay_schedule(1e-3, 1e-4, decay_steps=100, warmup_steps=10)
    assert float(sched(0)) == 0.0
    assert float(sched(5)) == pytest.approx(5e-4)
    assert float(sched(10)) == pytest.approx(1e-3)
    assert float(sched(60)) == pytest.approx(5.5e-4)
    assert float(sched(110)) == pytest.approx(1e-4) and float(sched(10_000)) == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="decay_steps"):
        linear_decay_schedule(1e-3, decay_steps=0)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_create_optimizer_runs_a_step(name):
    params = {"w": jnp.ones((3, 2)), "b": jnp.full((2,), 2.0)}
    tx = create_optimizer(name, 1e-2, weight_decay=0.01, schedule="linear_decay", decay_steps=4)
    state = tx.init(params)
    assert current_learning_rate(state) == pytest.approx(1e-2)
    step = jax.jit(lambda p, s: tx.update(jax.tree.map(jnp.ones_like, p), s, p))
    for _ in range(3):
        updates, state = step(params, state)
        params = optax.apply_updates(params, updates)
    assert np.all(np.asarray(params["w"]) < 1.0)
    assert current_learning_rate(state) == pytest.approx(1e-2 - (1e-2 - 5e-5) * 2 / 4, rel=1e-6)  # lr of update 3


def test_create_optimizer_clips_global_norm():
    params = {"a": jnp.zeros((5,)), "b": jnp.zeros((2, 2))}
    grads = {"a": jnp.full((5,), 10.0), "b": jnp.full((2, 2), -10.0)}
    tx = create_optimizer("sgd", 1.0, grad_clip_norm=0.5)
    update = jax.jit(tx.update)
    updates, _ = update(grads, tx.init(params), params)
    assert float(optax.tree.norm(updates)) == pytest.approx(0.5, rel=1e-5)
    small = jax.tree.map(lambda g: g * 1e-3, grads)      # under the threshold: untouched
    updates, _ = update(small, tx.init(params), params)
    np.testing.assert_allclose(np.asarray(updates["a"]), -np.asarray(small["a"]), rtol=1e-6)


def test_create_optimizer_adan_equals_plain_adan():
    init, curv, target = _problem(4)
    a, _ = _run_jax(create_optimizer("adan", 0.02, weight_decay=0.05), init, curv, target, steps=5)
    b, _ = _run_jax(adan(0.02, weight_decay=0.05), init, curv, target, steps=5)
    for k in SHAPES:
        np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), rtol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="lamb"), r"unknown optimizer 'lamb'; expected one of 'adan', 'adamw', 'adam', 'sgd'"),
    (dict(schedule="cosine"), r"unknown schedule 'cosine'; expected one of 'constant', 'linear_decay'"),
    (dict(learning_rate=-1.0), "learning_rate must be"),
    (dict(weight_decay=-0.1), "weight_decay must be"),
    (dict(b1=1.0), "b1 must be"),
    (dict(name="adam", b3=0.9), "b3 does not apply to optimizer 'adam'"),
    (dict(grad_clip_norm=0.0), "grad_clip_norm must be"),
    (dict(learning_rate=lambda c: 0.1, schedule="linear_decay"), "already a schedule"),
])
def test_create_optimizer_bad_values(kwargs, match):
    args = dict(name="adan", learning_rate=1e-3) | kwargs
    with pytest.raises(ValueError, match=match) as err:
        create_optimizer(args.pop("name"), args.pop("learning_rate"), **args)
    assert "\n" not in str(err.value)


def test_ema_update_math():
    ema = init_ema({"w": jnp.array([1.0, 2.0], jnp.bfloat16)})
    assert ema["w"].dtype == jnp.float32
    params = {"w": jnp.array([3.0, -2.0], jnp.bfloat16)}
    out = jax.jit(ema_update)(ema, params, 0.9)
    np.testing.assert_allclose(np.asarray(out["w"]), [0.9 * 1 + 0.1 * 3, 0.9 * 2 - 0.1 * 2], rtol=1e-6)
    assert out["w"].dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(ema_update(ema, params, 0.0)["w"]), [3.0, -2.0])  # decay 0: copy
    assert current_learning_rate(ema) is None


def test_ema_warmup_follows_ldm_litema():
    """LitEma: the n-th update (n = 1, 2, ...) decays by min(decay, (1 + n) / (10 + n)); no warm-up: decay."""
    steps = np.array([0, 1, 8, 98, 100_000])
    want = np.minimum(0.999, (2.0 + steps) / (11.0 + steps))
    np.testing.assert_allclose(np.asarray(jax.jit(lambda s: ema_decay_at(0.999, s, warmup=True))(steps)), want,
                               rtol=1e-6)
    assert ema_decay_at(0.999, 5, warmup=False) == 0.999
    assert float(ema_decay_at(0.999, 0, warmup=True)) == pytest.approx(2.0 / 11.0)


def test_update_step_ema_with_warmup_is_litemas_recurrence():
    """Three SGD steps on a quadratic: the state's EMA equals LitEma's shadow parameter computed by hand."""
    from edt_jax.training.task import make_update_step
    from edt_jax.training.train_state import TrainState

    def loss_fn(params, frozen, batch, key):
        return jnp.sum((params["w"] - batch["target"]) ** 2), {}

    tx = optax.sgd(0.1)
    params = {"w": jnp.array([1.0, -1.0])}
    state = TrainState(step=jnp.int32(0), params=params, ema_params=init_ema(params), opt_state=tx.init(params))
    step = jax.jit(make_update_step(loss_fn, tx, 0.999, ema_warmup=True))
    batch = {"target": jnp.array([3.0, 2.0])}
    w, shadow = np.array([1.0, -1.0]), np.array([1.0, -1.0])
    for n in range(1, 4):
        state, _ = step(state, None, batch, jax.random.key(0))
        w = w - 0.1 * 2 * (w - np.array([3.0, 2.0]))
        decay = min(0.999, (1 + n) / (10 + n))
        shadow = decay * shadow + (1 - decay) * w
    np.testing.assert_allclose(np.asarray(state.params["w"]), w, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(state.ema_params["w"]), shadow, rtol=1e-6)
