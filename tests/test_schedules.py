"""NoiseScheduleVP: the reference semantics of the discrete, linear and cosine schedules."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from edt_jax.diffusion import NoiseScheduleVP

BETAS = np.linspace(1e-4, 0.02, 1000)


def _all_schedules():
    return [NoiseScheduleVP.discrete(betas=BETAS), NoiseScheduleVP.linear(), NoiseScheduleVP.cosine()]


def test_discrete_knots_are_ddpm_alphas():
    ns = NoiseScheduleVP.discrete(betas=BETAS)
    t_n = (np.arange(1000) + 1) / 1000.0
    acp = np.cumprod(1 - BETAS)
    np.testing.assert_allclose(ns.marginal_alpha(t_n), np.sqrt(acp), rtol=1e-12)
    np.testing.assert_allclose(ns.marginal_std(t_n), np.sqrt(1 - acp), rtol=1e-10)
    # Same schedule from alphas_cumprod.
    ns2 = NoiseScheduleVP.discrete(alphas_cumprod=acp)
    np.testing.assert_allclose(ns2.marginal_log_mean_coeff(t_n), ns.marginal_log_mean_coeff(t_n), rtol=1e-12)
    assert (ns.T, ns.total_N, ns.t_end_default) == (1.0, 1000, 1e-3)


def test_discrete_is_piecewise_linear_in_log_alpha():
    ns = NoiseScheduleVP.discrete(betas=BETAS)
    log_alpha = 0.5 * np.cumsum(np.log(1 - BETAS))
    t = np.array([0.0105, 0.5, 0.7777])
    n = np.floor(t * 1000).astype(int) - 1          # knot at or below t: t_n = (n + 1) / N
    frac = (t - (n + 1) / 1000) * 1000
    expected = log_alpha[n] + frac * (log_alpha[n + 1] - log_alpha[n])
    np.testing.assert_allclose(ns.marginal_log_mean_coeff(t), expected, rtol=1e-12)
    # Below 1/N the first segment is extrapolated, as the reference does.
    t0 = 0.5e-3
    slope = (log_alpha[1] - log_alpha[0]) * 1000
    assert ns.marginal_log_mean_coeff(t0) == pytest.approx(log_alpha[0] - 0.5e-3 * slope, rel=1e-12)


def test_continuous_closed_forms():
    lin = NoiseScheduleVP.linear(0.1, 20.0)
    t = np.array([1e-3, 0.3, 1.0])
    np.testing.assert_allclose(lin.marginal_log_mean_coeff(t), -0.25 * t**2 * 19.9 - 0.05 * t, rtol=1e-14)
    cos = NoiseScheduleVP.cosine()
    s = 0.008
    expected = np.log(np.cos((t + s) / (1 + s) * np.pi / 2)) - math.log(math.cos(s / (1 + s) * math.pi / 2))
    np.testing.assert_allclose(cos.marginal_log_mean_coeff(t), expected, rtol=1e-12)
    assert cos.T == 0.9946 and lin.T == 1.0


@pytest.mark.parametrize("ns", _all_schedules(), ids=lambda ns: ns.schedule)
def test_marginals_consistent_and_lambda_invertible(ns):
    t = np.linspace(ns.t_end_default, ns.T, 57)
    alpha, sigma = ns.marginal_alpha(t), ns.marginal_std(t)
    np.testing.assert_allclose(alpha**2 + sigma**2, 1.0, rtol=1e-12)
    np.testing.assert_allclose(ns.marginal_lambda(t), np.log(alpha) - np.log(sigma), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ns.inverse_lambda(ns.marginal_lambda(t)), t, rtol=1e-9, atol=1e-12)
    assert np.all(np.diff(ns.marginal_lambda(t)) < 0)


@pytest.mark.parametrize("ns", _all_schedules(), ids=lambda ns: ns.schedule)
def test_jax_and_numpy_paths_agree(ns):
    t = np.linspace(ns.t_end_default, ns.T, 9)
    with jax.enable_x64(True):
        for name in ("marginal_log_mean_coeff", "marginal_alpha", "marginal_std", "marginal_lambda"):
            on_host = getattr(ns, name)(t)
            traced = jax.jit(getattr(ns, name))(jnp.asarray(t))
            np.testing.assert_allclose(np.asarray(traced), on_host, rtol=1e-12, atol=1e-14)
        lam = ns.marginal_lambda(t)
        np.testing.assert_allclose(np.asarray(jax.jit(ns.inverse_lambda)(jnp.asarray(lam))), t, rtol=1e-9)
    # Float32 inputs stay float32 (no silent promotion inside compiled models).
    assert ns.marginal_std(jnp.asarray(t, jnp.float32)).dtype == jnp.float32


def test_model_time_convention():
    ns = NoiseScheduleVP.discrete(betas=BETAS)
    np.testing.assert_allclose(ns.model_time(np.array([1e-3, 1.0])), [0.0, 999.0], atol=1e-9)
    lin = NoiseScheduleVP.linear()
    assert lin.model_time(0.25) == 0.25


@pytest.mark.parametrize("ns", _all_schedules(), ids=lambda ns: ns.schedule)
def test_time_grids(ns):
    uniform = ns.time_grid("time_uniform", 10)
    assert uniform.shape == (11,) and uniform[0] == ns.T and uniform[-1] == pytest.approx(ns.t_end_default)
    np.testing.assert_allclose(np.diff(uniform), np.diff(uniform)[0])
    quad = ns.time_grid("time_quadratic", 10, t_start=0.8, t_end=0.01)
    np.testing.assert_allclose(np.diff(np.sqrt(quad)), np.diff(np.sqrt(quad))[0], atol=1e-12)
    assert quad[0] == pytest.approx(0.8) and quad[-1] == pytest.approx(0.01)
    log_snr = ns.time_grid("logSNR", 10)
    lam = ns.marginal_lambda(log_snr)
    np.testing.assert_allclose(np.diff(lam), np.diff(lam)[0], rtol=1e-8)


def test_schedule_errors():
    with pytest.raises(ValueError, match="exactly one of betas"):
        NoiseScheduleVP.discrete(betas=BETAS, alphas_cumprod=np.cumprod(1 - BETAS))
    with pytest.raises(ValueError, match="betas must be"):
        NoiseScheduleVP.discrete(betas=np.array([0.1, 1.5]))
    with pytest.raises(ValueError, match="beta_0 < beta_1"):
        NoiseScheduleVP.linear(beta_0=5.0, beta_1=1.0)
    with pytest.raises(ValueError, match="unknown skip_type 'uniform'"):
        NoiseScheduleVP.linear().time_grid("uniform", 5)
