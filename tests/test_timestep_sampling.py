"""Tests for the host-side timestep samplers (edt_jax.diffusion.timestep_sampling), ADM's resample.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edt_jax.diffusion.timestep_sampling import (
    LossSecondMomentResampler,
    UniformSampler,
    create_timestep_sampler,
)

N = 20


def _fill(sampler: LossSecondMomentResampler, rng: np.random.Generator, rounds: int, skip: int | None = None):
    """Feed `rounds` losses to every timestep (but `skip`); the loss scale grows with t so p_t is non-uniform."""
    ts = np.array([t for _ in range(rounds) for t in range(N) if t != skip])
    sampler.update_with_local_losses(ts, (1.0 + ts) * rng.uniform(0.5, 1.5, size=ts.shape))
    return ts


def test_uniform_sampler():
    sampler = create_timestep_sampler("uniform", N)
    assert isinstance(sampler, UniformSampler) and not sampler.loss_aware
    t, w = sampler.sample(np.random.default_rng(0), 4096)
    assert t.dtype == np.int32 and t.shape == (4096,) and w.dtype == np.float32 and w.shape == (4096,)
    assert t.min() == 0 and t.max() == N - 1 and np.all(w == 1.0)
    np.testing.assert_array_equal(sampler.weights(), np.ones(N))
    sampler.update_with_local_losses(np.arange(3), np.ones(3))  # a no-op, accepted for a uniform interface
    sampler.load_state_dict(json.loads(json.dumps(sampler.state_dict())))


def test_second_moment_warm_up_then_rms_weights():
    rng = np.random.default_rng(1)
    sampler = create_timestep_sampler("loss-second-moment", N)
    assert isinstance(sampler, LossSecondMomentResampler) and not isinstance(sampler, UniformSampler)
    assert sampler.loss_aware
    # Nine full rounds, then a tenth missing t = 3: still uniform (warm-up needs 10 losses for every t).
    _fill(sampler, rng, 9)
    _fill(sampler, rng, 1, skip=3)
    assert not sampler.warmed_up()
    np.testing.assert_array_equal(sampler.weights(), np.ones(N))
    assert np.all(sampler.sample(rng, 64)[1] == 1.0)

    sampler.update_with_local_losses(np.array([3]), np.array([4.0]))
    assert sampler.warmed_up()
    history = np.array(sampler.state_dict()["loss_history"])
    rms = np.sqrt(np.mean(history ** 2, axis=1))
    expected = (1 - 0.001) * rms / rms.sum() + 0.001 / N
    p = sampler.weights()
    np.testing.assert_allclose(p, expected, rtol=1e-12)
    assert p.sum() == pytest.approx(1.0)
    t, w = sampler.sample(rng, 20000)
    np.testing.assert_allclose(w, (1.0 / (N * p[t])).astype(np.float32), rtol=1e-7)
    # The draws follow p (a loose frequency check) and the importance weights are unbiased: E[w] = 1.
    np.testing.assert_allclose(np.bincount(t, minlength=N) / t.size, p, atol=0.01)
    assert w.mean() == pytest.approx(1.0, abs=0.05)


def test_history_keeps_the_last_losses_in_order():
    sampler = LossSecondMomentResampler(N, history_per_term=3)
    # Repeated timesteps in one call shift the history in call order.
    sampler.update_with_local_losses(np.array([5, 5, 5, 5, 5]), np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    state = sampler.state_dict()
    assert state["loss_history"][5] == [3.0, 4.0, 5.0] and state["loss_counts"][5] == 3
    assert state["loss_counts"][4] == 0


def test_state_round_trip_continues_exactly():
    rng = np.random.default_rng(2)
    a = LossSecondMomentResampler(N)
    _fill(a, rng, 12)
    # JSON text, as the trainer checkpoints it; the rng state is the caller's to save.
    state = json.loads(json.dumps(a.state_dict()))
    assert isinstance(state["loss_history"][0][0], float) and isinstance(state["loss_counts"][0], int)
    b = LossSecondMomentResampler(N)
    b.load_state_dict(state)
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    for _ in range(3):
        (ta, wa), (tb, wb) = a.sample(rng_a, 32), b.sample(rng_b, 32)
        np.testing.assert_array_equal(ta, tb)
        np.testing.assert_array_equal(wa, wb)
        losses = rng.uniform(size=32)
        a.update_with_local_losses(ta, losses)
        b.update_with_local_losses(tb, losses)
    np.testing.assert_array_equal(a.weights(), b.weights())


def test_zero_losses_fall_back_to_uniform():
    sampler = LossSecondMomentResampler(4, history_per_term=1)
    sampler.update_with_local_losses(np.arange(4), np.zeros(4))
    assert sampler.warmed_up()
    np.testing.assert_array_equal(sampler.weights(), np.ones(4))


@pytest.mark.parametrize("make, match", [
    (lambda: create_timestep_sampler("importance", N),
     "unknown timestep sampler 'importance'; expected one of 'uniform', 'loss-second-moment'"),
    (lambda: UniformSampler(0), "num_timesteps must be an integer >= 1, got 0"),
    (lambda: LossSecondMomentResampler(N, history_per_term=0), "history_per_term must be an integer >= 1, got 0"),
    (lambda: LossSecondMomentResampler(N, uniform_prob=1.5), r"uniform_prob must be a number in \[0, 1\], got 1.5"),
    (lambda: UniformSampler(N).sample(np.random.default_rng(0), 0), "batch_size must be an integer >= 1, got 0"),
    (lambda: LossSecondMomentResampler(N).update_with_local_losses(np.array([0, N]), np.ones(2)),
     r"ts must be integers in \[0, 20\), got int64 values in \[0, 20\]"),
    (lambda: LossSecondMomentResampler(N).update_with_local_losses(np.array([0, 1]), np.ones(3)),
     r"ts and losses must be 1-D of the same length, got shapes \(2,\) and \(3,\)"),
    (lambda: LossSecondMomentResampler(N).update_with_local_losses(np.array([0]), np.array([np.nan])),
     "losses must be finite, got 1 non-finite values"),
    (lambda: LossSecondMomentResampler(N).load_state_dict(LossSecondMomentResampler(N + 1).state_dict()),
     "state num_timesteps=21 does not match this sampler's num_timesteps=20"),
    (lambda: LossSecondMomentResampler(N).load_state_dict(UniformSampler(N).state_dict()),
     "state history_per_term=None does not match this sampler's history_per_term=10"),
])
def test_bad_arguments_raise_one_line_errors(make, match):
    with pytest.raises(ValueError, match=match) as info:
        make()
    assert "\n" not in str(info.value)
