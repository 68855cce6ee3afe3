"""DP-IR's Gaussian denoiser (``restoration/gaussian.py``, ``networks.GaussianDenoiser``): the exact map from a DPM
state to a Gaussian-noisy image, the noise-level conditioning, shapes, and a falling training loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from edt_jax.diffusion import NoiseScheduleVP
from edt_jax.restoration import gaussian
from edt_jax.restoration.networks import GaussianDenoiser

NET = GaussianDenoiser(width=8, enc_blocks=(1,), middle_blocks=1, dec_blocks=(1,))
APPLY = jax.jit(lambda params, x, sigma: NET.apply({"params": params}, x, sigma))
BETAS = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)  # the configs' linear schedule (config.diffusion)


def schedule() -> NoiseScheduleVP:
    return NoiseScheduleVP.discrete(betas=BETAS)


def test_x0_predictor_calls_the_net_with_x_over_sqrt_abar_and_sigma_tilde():
    abar = np.cumprod(1.0 - BETAS)
    t_input = np.array([0.0, 250.0, 999.0], np.float32)
    x_t = np.random.default_rng(0).normal(size=(3, 4, 4, 2)).astype(np.float32)
    probe = lambda params, x, sigma: (x, sigma)  # noqa: E731 (returns what the net is called with)
    x_seen, sigma_seen = gaussian.x0_predictor(probe, schedule())(None, jnp.asarray(x_t), jnp.asarray(t_input))
    a = abar[t_input.astype(int)]
    np.testing.assert_allclose(sigma_seen, np.sqrt((1 - a) / a), rtol=2e-5)
    np.testing.assert_allclose(x_seen, x_t / np.sqrt(a)[:, None, None, None], rtol=2e-5)
    low, high = gaussian.sigma_range(schedule())  # the levels the chain visits: training covers them
    np.testing.assert_allclose([low, high], np.sqrt((1 - abar[[0, -1]]) / abar[[0, -1]]), rtol=2e-5)
    # A scalar t_input serves the whole batch (as the samplers call it).
    _, sigma_one = gaussian.x0_predictor(probe, schedule())(None, jnp.asarray(x_t), jnp.float32(250.0))
    np.testing.assert_allclose(sigma_one, np.full(3, sigma_seen[1]), rtol=1e-6)


def test_shapes_and_the_noise_level_conditioning():
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    params = jax.jit(NET.init)(jax.random.key(1), x, jnp.ones((2,)))["params"]
    # NAFNet's blocks start as identities (beta = gamma = 0); perturb them so the test sees a trained-like net.
    rng = np.random.default_rng(2)
    params = jax.tree.map(lambda p: p + 0.1 * rng.standard_normal(p.shape).astype(np.float32), params)
    out = APPLY(params, x, jnp.array([0.1, 0.1]))
    assert out.shape == x.shape and out.dtype == jnp.float32

    def inner(sigma):  # F of D = c_skip x + c_out F: what the network itself computes, preconditioning removed
        s = jnp.full((2,), sigma)
        c_skip, c_out = 0.25 / (sigma ** 2 + 0.25), sigma * 0.5 / np.sqrt(sigma ** 2 + 0.25)
        return (APPLY(params, x * np.sqrt(sigma ** 2 + 0.25) / np.sqrt(1.25), s)
                - c_skip * x * np.sqrt(sigma ** 2 + 0.25) / np.sqrt(1.25)) / c_out

    # Same network input c_in x~ at both levels, so any change in F comes from the noise-level map / embedding.
    assert float(jnp.max(jnp.abs(inner(0.1) - inner(3.0)))) > 1e-2
    # At huge sigma the estimate stays bounded (c_out -> sigma_data) instead of following x~'s noise.
    big = APPLY(params, 150.0 * x, jnp.full((2,), 150.0))
    assert float(jnp.max(jnp.abs(big))) < 0.1 * float(jnp.max(jnp.abs(150.0 * x)))


def test_a_tiny_training_run_lowers_the_loss():
    images = jnp.tanh(jax.random.normal(jax.random.key(3), (8, 8, 8, 1)).cumsum(axis=1) / 3)  # smooth-ish
    loss_fn = gaussian.denoiser_loss(APPLY, gaussian.sigma_range(schedule()))
    params = jax.jit(NET.init)(jax.random.key(4), images, jnp.ones((8,)))["params"]
    opt = optax.adam(3e-3)
    state = opt.init(params)

    @jax.jit
    def step(params, state, key):
        loss, grads = jax.value_and_grad(lambda p: loss_fn(p, None, {"image": images}, key)[0])(params)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state, loss

    @jax.jit
    def mean_loss(params):  # over fixed keys: the loss is noisy in sigma and eps
        keys = jax.random.split(jax.random.key(100), 8)
        return jnp.mean(jax.vmap(lambda k: loss_fn(params, None, {"image": images}, k)[0])(keys))

    before = mean_loss(params)
    for i in range(40):
        params, state, _ = step(params, state, jax.random.key(i))
    assert float(mean_loss(params)) < 0.7 * float(before)


def test_bad_sigma_range_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"sigma range must be 0 < low < high \(finite\), got \(1.0, 0.5\)"):
        gaussian.denoiser_loss(lambda p, x, s: x, (1.0, 0.5))
