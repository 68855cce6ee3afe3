"""Tests for the discrete DDPM tables (edt_jax.diffusion.ddpm) and the ancestral sampler."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from edt_jax.diffusion import (
    DiscreteDiffusion,
    beta_schedule,
    predict_eps_from_x0,
    predict_x0_from_eps,
    q_posterior_mean_variance,
    q_sample,
    space_timesteps,
)
from edt_jax.samplers.ddpm import ddpm


@pytest.fixture(scope="module")
def linear1000() -> DiscreteDiffusion:
    return DiscreteDiffusion.from_betas(beta_schedule("linear", 1000))


# --------------------------------------------------------------------------------- schedules / tables
def test_beta_schedules_match_adm_closed_forms():
    lin = beta_schedule("linear", 1000)
    assert lin.dtype == np.float64 and lin.shape == (1000,)
    np.testing.assert_allclose(lin[[0, -1]], [1e-4, 0.02], rtol=0, atol=1e-15)
    np.testing.assert_allclose(beta_schedule("linear", 250)[[0, -1]], [4e-4, 0.08], rtol=1e-12)
    cos = beta_schedule("cosine", 1000)
    def f(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    np.testing.assert_allclose(cos[10], 1 - f(11 / 1000) / f(10 / 1000), rtol=1e-12)
    assert cos.max() == pytest.approx(0.999)  # the last step is clipped
    sd = beta_schedule("scaled_linear", 1000)  # Stable Diffusion's betas (diffusers' "scaled_linear")
    np.testing.assert_allclose(sd[[0, -1]], [0.00085, 0.012], rtol=1e-12)
    np.testing.assert_allclose(np.sqrt(sd[1]) - np.sqrt(sd[0]), (0.012**0.5 - 0.00085**0.5) / 999, rtol=1e-9)
    assert np.prod(1 - sd) == pytest.approx(0.0046601, rel=1e-4)  # SD's alphas_cumprod[-1]


def test_posterior_matches_gaussian_bayes(linear1000):
    d = linear1000
    acp = np.cumprod(1 - d.betas)
    for t in (1, 7, 500, 999):
        # q(x_t | x_{t-1}) = N(sqrt(1-b) x_{t-1}, b), q(x_{t-1} | x0) = N(sqrt(acp_{t-1}) x0, 1-acp_{t-1}):
        # the posterior precision is the sum of precisions, the mean the precision-weighted mean.
        b, a_prev = d.betas[t], acp[t - 1]
        prec = (1 - b) / b + 1 / (1 - a_prev)
        x0, xt = 0.3, -1.2
        mean = (math.sqrt(1 - b) * xt / b + math.sqrt(a_prev) * x0 / (1 - a_prev)) / prec
        assert d.posterior_variance[t] == pytest.approx(1 / prec, rel=1e-10)
        assert d.posterior_mean_coef1[t] * x0 + d.posterior_mean_coef2[t] * xt == pytest.approx(mean, rel=1e-10)
    assert d.posterior_variance[0] == 0.0
    assert d.posterior_log_variance_clipped[0] == d.posterior_log_variance_clipped[1] == np.log(
        d.posterior_variance[1])
    np.testing.assert_allclose(d.alphas_cumprod, acp, rtol=1e-14)
    np.testing.assert_array_equal(d.timestep_map, np.arange(1000))
    assert d.num_steps == 1000 and not d.is_respaced


def test_jnp_helpers_match_numpy(linear1000):
    d = linear1000
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=(3, 4, 4, 2)).astype(np.float32)
    noise = rng.normal(size=x0.shape).astype(np.float32)
    t = np.array([0, 123, 999])
    xt = q_sample(d, jnp.asarray(x0), jnp.asarray(t), jnp.asarray(noise))
    a = np.sqrt(np.cumprod(1 - d.betas))[t][:, None, None, None]
    np.testing.assert_allclose(xt, a * x0 + np.sqrt(1 - a**2) * noise, rtol=1e-5, atol=1e-6)
    assert xt.dtype == jnp.float32
    eps = predict_eps_from_x0(d, xt, jnp.asarray(t), jnp.asarray(x0))
    np.testing.assert_allclose(eps, noise, atol=2e-3)
    np.testing.assert_allclose(predict_x0_from_eps(d, xt, jnp.asarray(t), jnp.asarray(noise)), x0, atol=2e-3)
    mean, var, logvar = q_posterior_mean_variance(d, jnp.asarray(x0), xt, jnp.asarray(t))
    assert mean.shape == var.shape == logvar.shape == x0.shape
    np.testing.assert_allclose(var[:, 0, 0, 0], d.posterior_variance[t], rtol=1e-6)
    with pytest.raises(ValueError, match=r"\(5,\)"):
        q_sample(d, jnp.asarray(x0), jnp.zeros(5, jnp.int32), jnp.asarray(noise))


def test_space_timesteps_forms():
    s = sorted(space_timesteps(1000, "250"))
    assert len(s) == 250 and s[0] == 0 and s[-1] == 999
    assert space_timesteps(1000, "ddim50") == set(range(0, 1000, 20))
    assert sorted(space_timesteps(300, [10, 15, 20]))[:3] == [0, 11, 22]  # ADM's docstring example
    assert len(space_timesteps(300, "10,15,20")) == 45
    assert space_timesteps(1000, "1") == {0}
    with pytest.raises(ValueError, match="ddim7"):
        space_timesteps(10, "ddim7")
    with pytest.raises(ValueError, match="2000"):
        space_timesteps(1000, "2000")


def test_respace(linear1000):
    d = linear1000
    same = d.respace(range(1000))
    np.testing.assert_allclose(same.betas, d.betas, rtol=1e-12)
    assert not same.is_respaced
    keep = space_timesteps(1000, "250")
    sp = d.respace(keep)
    assert sp.num_steps == 250 and sp.is_respaced
    np.testing.assert_array_equal(sp.timestep_map, sorted(keep))
    np.testing.assert_allclose(sp.alphas_cumprod, d.alphas_cumprod[sorted(keep)], rtol=1e-12)
    assert sp.alphas.flags.writeable is False
    np.testing.assert_allclose(d.to_noise_schedule().marginal_alpha(np.array([0.5])),
                               np.sqrt(d.alphas_cumprod[499]), rtol=1e-12)


def test_table_errors():
    with pytest.raises(ValueError, match="'quadratic'"):
        beta_schedule("quadratic", 10)
    with pytest.raises(ValueError, match="betas"):
        DiscreteDiffusion.from_betas([0.1, 1.5])
    d = DiscreteDiffusion.from_betas(beta_schedule("linear", 50))
    with pytest.raises(ValueError, match="50"):
        d.respace([0, 50])
    with pytest.raises(ValueError, match="un-respaced"):
        d.respace([0, 10, 20]).to_noise_schedule()


# --------------------------------------------------------------------------------- sampler vs numpy
def _toy(x, t, xp, learned):
    """Deterministic eps (and v in [-1, 1]) depending on x and t; xp is np or jnp."""
    # t arrives as float32 (integer-valued, so exact); compute in x's precision like the reference.
    t = xp.reshape(t, (-1,) + (1,) * (x.ndim - 1)).astype(x.dtype)
    eps = xp.tanh(0.5 * x + t / 1000.0)
    if not learned:
        return eps
    return xp.concatenate([eps, 0.9 * xp.sin(1.3 * x + t / 300.0)], axis=-1)


def _adm_reference(x_T, key, betas, steps, variance, prediction, clip):
    """ADM's p_sample_loop over a SpacedDiffusion, in plain float64 NumPy."""
    keep = sorted(space_timesteps(len(betas), str(steps)))
    acp = np.cumprod(1 - np.asarray(betas, np.float64))[keep]
    acp_prev = np.append(1.0, acp[:-1])
    b = 1 - acp / acp_prev
    post_var = b * (1 - acp_prev) / (1 - acp)
    post_logvar = np.log(np.append(post_var[1], post_var[1:]))
    coef1 = b * np.sqrt(acp_prev) / (1 - acp)
    coef2 = (1 - acp_prev) * np.sqrt(1 - b) / (1 - acp)
    c = x_T.shape[-1]
    x = np.asarray(x_T, np.float64)
    for i in reversed(range(steps)):
        out = _toy(x, np.full(x.shape[0], float(keep[i])), np, variance == "learned_range")
        pred = out[..., :c]
        if prediction == "eps":
            x0 = np.sqrt(1 / acp[i]) * x - np.sqrt(1 / acp[i] - 1) * pred
        elif prediction == "v":
            x0 = np.sqrt(acp[i]) * x - np.sqrt(1 - acp[i]) * pred
        else:
            x0 = pred
        if clip:
            x0 = np.clip(x0, -1, 1)
        mean = coef1[i] * x0 + coef2[i] * x
        if variance == "learned_range":
            frac = (out[..., c:] + 1) / 2
            logvar = frac * np.log(b[i]) + (1 - frac) * post_logvar[i]
        elif variance == "fixed_small":
            logvar = post_logvar[i]
        else:
            logvar = np.log(np.append(post_var[1], b[1:]))[i]
        noise = np.asarray(jax.random.normal(jax.random.fold_in(key, i), x.shape, dtype=jnp.asarray(x_T).dtype))
        x = mean + (i != 0) * np.exp(0.5 * logvar) * noise
    return x


CASES = [("learned_range", "eps", False), ("fixed_small", "eps", False), ("fixed_large", "eps", False),
         ("learned_range", "v", True), ("fixed_small", "x0", True)]


@pytest.mark.parametrize("variance,prediction,clip", CASES)
def test_sampler_matches_numpy_loop_x64(variance, prediction, clip):
    betas = beta_schedule("linear", 100)
    d = DiscreteDiffusion.from_betas(betas)
    key = jax.random.key(3)
    learned = variance == "learned_range"
    with jax.enable_x64(True):
        x_T = jax.random.normal(jax.random.key(1), (2, 3, 3, 2), dtype=jnp.float64)
        out = ddpm(lambda x, t: _toy(x, t, jnp, learned), x_T, d, key=key, steps=20, variance=variance,
                   prediction=prediction, clip_denoised=clip)
        assert out.dtype == jnp.float64
        ref = _adm_reference(np.asarray(x_T), key, betas, 20, variance, prediction, clip)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("variance", ["learned_range", "fixed_large"])
def test_sampler_matches_numpy_loop_float32_under_jit(variance):
    betas = beta_schedule("linear", 1000)
    d = DiscreteDiffusion.from_betas(betas)
    key = jax.random.key(4)
    learned = variance == "learned_range"
    x_T = jax.random.normal(jax.random.key(2), (2, 4, 4, 3))

    @jax.jit
    def run(x_T, key):
        return ddpm(lambda x, t: _toy(x, t, jnp, learned), x_T, d, key=key, steps=25, variance=variance)

    out = run(x_T, key)
    assert out.dtype == jnp.float32 and out.shape == x_T.shape
    ref = _adm_reference(np.asarray(x_T), key, betas, 25, variance, "eps", False)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-3, atol=1e-3)


def test_bfloat16_input_keeps_float32_state(linear1000):
    x_T = jnp.ones((2, 2, 2, 1), jnp.bfloat16)
    out = ddpm(lambda x, t: (x * 0.1).astype(jnp.bfloat16), x_T, linear1000, key=jax.random.key(0), steps=3,
               variance="fixed_small")
    assert out.dtype == jnp.float32


# --------------------------------------------------------------------------------- statistics
def test_gaussian_data_statistics(linear1000):
    d = linear1000
    mu, s, n, dim = 0.7, 0.4, 4096, 4
    acp_table = jnp.asarray(d.alphas_cumprod, jnp.float32)

    def exact_eps(x, t_input):
        acp = acp_table[t_input.astype(jnp.int32)][:, None]
        a = jnp.sqrt(acp)
        post_mean = mu + a * s**2 / (acp * s**2 + 1 - acp) * (x - a * mu)  # E[x0 | x_t], Gaussian data
        return (x - a * post_mean) / jnp.sqrt(1 - acp)

    x_T = jax.random.normal(jax.random.key(0), (n, dim))
    samples = np.asarray(jax.jit(lambda x, k: ddpm(exact_eps, x, d, key=k, steps=250, variance="fixed_small"))(
        x_T, jax.random.key(1)))
    count = samples.size

    # The chain is linear-Gaussian, so its exact output law is computable: fixed_small (posterior
    # variance) ignores Var[x0 | x_t] and is known to give a slightly too small spread (~3.4% here).
    sp = d.respace(space_timesteps(1000, "250"))
    m, v = 0.0, 1.0
    for i in reversed(range(250)):
        acp = sp.alphas_cumprod[i]
        k = math.sqrt(acp) * s**2 / (acp * s**2 + 1 - acp)
        lin = sp.posterior_mean_coef1[i] * k + sp.posterior_mean_coef2[i]
        m = lin * m + sp.posterior_mean_coef1[i] * (mu - k * math.sqrt(acp) * mu)
        v = lin**2 * v + sp.posterior_variance[i]
    assert abs(samples.mean() - mu) < 4 * s / math.sqrt(count)
    assert abs(samples.mean() - m) < 4 * s / math.sqrt(count)
    assert abs(samples.std() - math.sqrt(v)) < 4 * s / math.sqrt(2 * count)
    assert abs(samples.std() / s - 1) < 0.05


# --------------------------------------------------------------------------------- calls and errors
def test_model_call_count_under_jit(linear1000):
    calls = []

    def model(x, t):
        jax.debug.callback(lambda: calls.append(1))
        return jnp.zeros(x.shape[:-1] + (2 * x.shape[-1],), x.dtype)

    for steps in (1, 7):
        calls.clear()
        run = jax.jit(lambda x, k, steps=steps: ddpm(model, x, linear1000, key=k, steps=steps))
        out = run(jnp.zeros((2, 2, 2, 1)), jax.random.key(0))
        out.block_until_ready()
        jax.effects_barrier()
        assert len(calls) == steps


@pytest.mark.parametrize("kwargs,match", [
    ({"steps": 0}, "steps=0"),
    ({"steps": 1001}, "steps=1001"),
    ({"steps": 2.5}, "2.5"),
    ({"variance": "learned"}, "'learned'"),
    ({"prediction": "noise_pred"}, "unknown prediction 'noise_pred'"),
])
def test_bad_inputs_raise(linear1000, kwargs, match):
    def model(x, t):
        return x
    with pytest.raises(ValueError, match=match):
        ddpm(model, jnp.zeros((1, 2, 2, 1)), linear1000, key=jax.random.key(0), **kwargs)


def test_respaced_diffusion_and_bad_output_rejected(linear1000):
    spaced = linear1000.respace(space_timesteps(1000, "50"))
    with pytest.raises(ValueError, match="already respaced"):
        ddpm(lambda x, t: x, jnp.zeros((1, 2, 2, 1)), spaced, key=jax.random.key(0), steps=10)
    with pytest.raises(ValueError, match=r"\(1, 2, 2, 2\)"):
        ddpm(lambda x, t: x, jnp.zeros((1, 2, 2, 1)), linear1000, key=jax.random.key(0), steps=10)
