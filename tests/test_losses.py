"""Tests for edt_jax.diffusion.losses against a float64 NumPy re-implementation of EDT's training_losses."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from edt_jax.diffusion import DiscreteDiffusion, beta_schedule
from edt_jax.diffusion.losses import (
    discretized_gaussian_log_likelihood,
    mse_loss_weights,
    normal_kl,
    training_losses,
)
from edt_jax.diffusion.predictions import target_of, to_eps, to_x0

B, H, W, C = 8, 4, 4, 3
# t == 0 twice (decoder NLL), the first KL steps, the middle and the noisy end.
T_CASES = np.array([0, 0, 1, 2, 57, 500, 998, 999])


@pytest.fixture(scope="module")
def linear1000() -> DiscreteDiffusion:
    return DiscreteDiffusion.from_betas(beta_schedule("linear", 1000))


# --------------------------------------------------------------------------------- float64 reference
def _ref_tables(betas: np.ndarray) -> dict[str, np.ndarray]:
    """ADM's tables, rebuilt here from the betas (independently of DiscreteDiffusion)."""
    acp = np.cumprod(1.0 - betas)
    acp_prev = np.append(1.0, acp[:-1])
    post_var = betas * (1.0 - acp_prev) / (1.0 - acp)
    return {"betas": betas, "acp": acp, "post_logvar": np.log(np.append(post_var[1], post_var[1:])),
            "coef1": betas * np.sqrt(acp_prev) / (1.0 - acp),
            "coef2": (1.0 - acp_prev) * np.sqrt(1.0 - betas) / (1.0 - acp)}


def _ref_kl(m1, lv1, m2, lv2, exp=np.exp):
    return 0.5 * (-1.0 + lv2 - lv1 + exp(lv1 - lv2) + (m1 - m2) ** 2 * exp(-lv2))


def _ref_dgll(x, means, log_scales):
    def cdf(v):
        return 0.5 * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (v + 0.044715 * v ** 3)))
    inv = np.exp(-log_scales)
    plus, minus = cdf(inv * (x - means + 1 / 255)), cdf(inv * (x - means - 1 / 255))
    return np.where(x < -0.999, np.log(np.maximum(plus, 1e-12)),
                    np.where(x > 0.999, np.log(np.maximum(1 - minus, 1e-12)),
                             np.log(np.maximum(plus - minus, 1e-12))))


def reference_losses(model_np, x0, t, noise, betas, *, learn_sigma, prediction, weighting, gamma=5.0):
    """EDT's GaussianDiffusion.training_losses (loss type MSE, learned range) in float64, channels last."""
    tab = _ref_tables(betas)

    def e(a):
        return a[t][:, None, None, None]

    alpha, sigma = np.sqrt(tab["acp"]), np.sqrt(1.0 - tab["acp"])
    x_t = e(alpha) * x0 + e(sigma) * noise
    out = model_np(x_t, t)
    pred = out[..., :C]
    snr = (alpha[t] / sigma[t]) ** 2
    if weighting == "none":
        weight = np.ones_like(snr)
    else:
        weight = np.minimum(snr, gamma) if prediction == "x0" else np.minimum(snr, gamma) / snr
    # The reference's velocity target, written as it does: (alpha x_t - x0) / sigma.
    target = {"eps": noise, "x0": x0, "v": (e(alpha) * x_t - x0) / e(sigma)}[prediction]
    mse = weight * np.mean((target - pred) ** 2, axis=(1, 2, 3))
    if not learn_sigma:
        return {"loss": mse, "mse": mse, "vb": np.zeros_like(mse)}
    x0_hat = {"eps": (x_t - e(sigma) * pred) / e(alpha), "x0": pred, "v": e(alpha) * x_t - e(sigma) * pred}[prediction]
    mean_p = e(tab["coef1"]) * x0_hat + e(tab["coef2"]) * x_t
    mean_q = e(tab["coef1"]) * x0 + e(tab["coef2"]) * x_t
    frac = (out[..., C:] + 1) / 2
    logvar_p = frac * e(np.log(betas)) + (1 - frac) * e(tab["post_logvar"])
    kl = np.mean(_ref_kl(mean_q, e(tab["post_logvar"]), mean_p, logvar_p), axis=(1, 2, 3)) / np.log(2)
    nll = -np.mean(_ref_dgll(x0, mean_p, 0.5 * logvar_p), axis=(1, 2, 3)) / np.log(2)
    vb = np.where(t == 0, nll, kl)
    return {"loss": mse + vb, "mse": mse, "vb": vb}


# --------------------------------------------------------------------------------- toy model and data
def _params(out_channels: int, seed: int = 1, scale: float = 0.5) -> dict[str, np.ndarray]:
    """A toy network out = x + scale (x wm + bm + 0.1 sin(t / 50)) [, tanh(x wv + cos(t / 70))].

    A small scale keeps an x0 prediction within a few sigma of x0 at t == 0: a grossly wrong one puts
    the decoder NLL in the saturated 1e-12 clamp, where float32 and float64 differ by percents.
    """
    rng = np.random.default_rng(seed)
    return {"wm": rng.normal(scale=0.5, size=(C, C)), "bm": rng.normal(scale=0.1, size=(C,)),
            "wv": rng.normal(scale=0.5, size=(C, out_channels - C)) if out_channels > C else None,
            "scale": np.float64(scale)}


def _model_np(params):
    def f(x, t):
        tt = t.astype(np.float64)[:, None, None, None]
        mean = x + params["scale"] * (x @ params["wm"] + params["bm"] + 0.1 * np.sin(tt / 50.0))
        if params["wv"] is None:
            return mean
        return np.concatenate([mean, np.tanh(x @ params["wv"] + np.cos(tt / 70.0))], axis=-1)
    return f


def _model_jnp(params):
    p = {k: None if v is None else jnp.asarray(v, jnp.float32) for k, v in params.items()}

    def f(x, t):
        tt = t.astype(jnp.float32)[:, None, None, None]
        mean = x + p["scale"] * (x @ p["wm"] + p["bm"] + 0.1 * jnp.sin(tt / 50.0))
        if p["wv"] is None:
            return mean
        return jnp.concatenate([mean, jnp.tanh(x @ p["wv"] + jnp.cos(tt / 70.0))], axis=-1)
    return f


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-1.1, 1.1, size=(B, H, W, C))
    x0[:, 0, 0, :] = -1.0  # exercise the discretised NLL's tail bins
    x0[:, 0, 1, :] = 1.0
    x0 = x0.astype(np.float32).astype(np.float64)
    noise = rng.normal(size=x0.shape).astype(np.float32).astype(np.float64)
    return x0, noise


# --------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("learn_sigma", [True, False])
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("weighting", ["min_snr", "none"])
def test_matches_float64_reference(linear1000, learn_sigma, prediction, weighting):
    params = _params(2 * C if learn_sigma else C, scale=0.02 if prediction == "x0" else 0.5)
    x0, noise = _data()
    got = training_losses(_model_jnp(params), jnp.asarray(x0, jnp.float32), jnp.asarray(T_CASES, jnp.int32),
                          jnp.asarray(noise, jnp.float32), linear1000, learn_sigma=learn_sigma,
                          prediction=prediction, weighting=weighting)
    want = reference_losses(_model_np(params), x0, T_CASES, noise, linear1000.betas, learn_sigma=learn_sigma,
                            prediction=prediction, weighting=weighting)
    assert set(got) == {"loss", "mse", "vb"}
    # The vb term is float32 like the reference: its t == 0 NLL subtracts two near-equal CDFs and the KL
    # near t = N sums O(1) terms to a small one, which costs a few 1e-5 relative against float64.
    for key, rtol in (("mse", 1e-5), ("vb", 1e-4), ("loss", 1e-4)):
        assert got[key].shape == (B,) and got[key].dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(got[key]), want[key], rtol=rtol, atol=1e-6, err_msg=key)
    if not learn_sigma:
        assert np.all(np.asarray(got["vb"]) == 0)


def test_jit_matches_eager_and_bf16_output(linear1000):
    params = _params(2 * C)
    x0, noise = (jnp.asarray(a, jnp.float32) for a in _data(3))
    t = jnp.asarray(T_CASES, jnp.int32)
    model = _model_jnp(params)
    eager = training_losses(model, x0, t, noise, linear1000)
    jitted = jax.jit(lambda x, tt, n: training_losses(model, x, tt, n, linear1000))(x0, t, noise)
    for key in eager:
        np.testing.assert_allclose(jitted[key], eager[key], rtol=1e-5, atol=1e-6)
    # A bf16 network output is accepted and the losses stay float32.
    low = training_losses(lambda x, tt: model(x, tt).astype(jnp.bfloat16), x0, t, noise, linear1000)
    assert all(v.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(v))) for v in low.values())


def test_vb_does_not_train_the_mean_channels(linear1000):
    x0, noise = (jnp.asarray(a, jnp.float32) for a in _data(4))
    t = jnp.asarray(T_CASES, jnp.int32)
    params = {k: jnp.asarray(v, jnp.float32) for k, v in _params(2 * C).items()}

    def model(p):
        # "wm"/"bm" feed only the mean channels, "wv" only the variance channels.
        return lambda x, tt: jnp.concatenate([x @ p["wm"] + p["bm"], jnp.tanh(x @ p["wv"])], axis=-1)

    def term(name):
        return lambda p: jnp.sum(training_losses(model(p), x0, t, noise, linear1000)[name])

    g_vb, g_mse, g_loss = (jax.grad(term(n))(params) for n in ("vb", "mse", "loss"))
    assert np.all(np.asarray(g_vb["wm"]) == 0) and np.all(np.asarray(g_vb["bm"]) == 0)
    assert np.all(np.asarray(g_mse["wv"]) == 0)
    assert np.abs(np.asarray(g_vb["wv"])).max() > 0 and np.abs(np.asarray(g_mse["wm"])).max() > 0
    np.testing.assert_allclose(g_loss["wm"], g_mse["wm"], rtol=1e-6)
    np.testing.assert_allclose(g_loss["wv"], g_vb["wv"], rtol=1e-6)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(g_loss))


def test_mse_weights_formula(linear1000):
    acp = linear1000.alphas_cumprod
    snr = acp / (1 - acp)
    w_eps = mse_loss_weights(linear1000)
    assert w_eps.shape == (1000,) and w_eps.dtype == np.float64
    # snr > 5 only at small t: there the eps weight is 5 / snr, elsewhere 1.
    assert w_eps[0] == pytest.approx(5.0 / snr[0]) and np.all(w_eps[snr <= 5] == 1.0)
    np.testing.assert_allclose(mse_loss_weights(linear1000, prediction="x0"), np.minimum(snr, 5.0))
    np.testing.assert_allclose(mse_loss_weights(linear1000, prediction="v", snr_gamma=2.0),
                               np.minimum(snr, 2.0) / snr)
    assert np.all(mse_loss_weights(linear1000, weighting="none") == 1.0)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_target_and_x0_conversion_invert_each_other(linear1000, prediction):
    """The trained target of each prediction, read back as x0 (and as eps), gives the data (and the noise)."""
    rng = np.random.default_rng(0)
    x0, eps = rng.standard_normal((2, 6, 5))
    t = np.array([0, 10, 200, 500, 900, 999])
    alpha = np.sqrt(linear1000.alphas_cumprod[t])[:, None]
    sigma = np.sqrt(1.0 - linear1000.alphas_cumprod[t])[:, None]
    x_t = alpha * x0 + sigma * eps
    target = target_of(prediction, x0, eps, alpha, sigma)
    np.testing.assert_allclose(to_x0(target, x_t, alpha, sigma, prediction), x0, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(to_eps(target, x_t, alpha, sigma, prediction), eps, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="prediction 'score' has no training target; accepted: eps, x0, v"):
        target_of("score", x0, eps, alpha, sigma)


def test_respaced_diffusion_feeds_the_original_timestep(linear1000):
    spaced = linear1000.respace(range(0, 1000, 10))
    seen = []

    def model(x, t):
        seen.append(t)
        return jnp.zeros(x.shape[:-1] + (2 * C,), jnp.float32)

    x0, noise = (jnp.asarray(a, jnp.float32) for a in _data(5))
    training_losses(model, x0, jnp.arange(B, dtype=jnp.int32), noise, spaced)
    np.testing.assert_array_equal(seen[0], np.arange(B) * 10)


def test_discretized_likelihood_is_normalised_and_kl_is_zero_on_equal_gaussians():
    # The 256 bins (tails included) telescope, so their probabilities sum to one.
    bins = jnp.asarray(-1.0 + 2.0 * np.arange(256) / 255.0, jnp.float32)
    logp = discretized_gaussian_log_likelihood(bins, means=jnp.full_like(bins, 0.1),
                                               log_scales=jnp.full_like(bins, math.log(0.3)))
    assert float(jnp.sum(jnp.exp(logp))) == pytest.approx(1.0, abs=1e-5)
    m, lv = jnp.asarray([0.3, -2.0]), jnp.asarray([-1.0, 0.5])
    np.testing.assert_allclose(normal_kl(m, lv, m, lv), 0.0, atol=1e-7)
    np.testing.assert_allclose(normal_kl(m, lv, 0.0, 0.0), _ref_kl(np.asarray(m), np.asarray(lv), 0.0, 0.0),
                               rtol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"prediction": "epsilon"}, "unknown prediction 'epsilon'; expected one of 'eps', 'x0', 'v'"),
    ({"weighting": "snr"}, "unknown weighting 'snr'; expected one of 'min_snr', 'none'"),
    ({"snr_gamma": 0.0}, "snr_gamma must be a finite number > 0, got 0.0"),
    ({"snr_gamma": float("nan")}, "snr_gamma must be a finite number > 0, got nan"),
    ({"snr_gamma": "5"}, "snr_gamma must be a finite number > 0, got '5'"),
    ({"learn_sigma": "yes"}, "learn_sigma must be True or False, got 'yes'"),
    ({"learn_sigma": False}, r"model output has shape \(8, 4, 4, 6\); learn_sigma=False needs \(8, 4, 4, 3\)"),
    ({"t": np.zeros(5, np.int32)}, r"t must be an integer array of shape \(8,\), got int32 \(5,\)"),
    ({"t": np.zeros(B, np.float32)}, r"t must be an integer array of shape \(8,\), got float32 \(8,\)"),
    ({"noise": np.zeros((B, H, W, 1))}, r"noise must have the shape of x_start \(8, 4, 4, 3\), got \(8, 4, 4, 1\)"),
])
def test_bad_arguments_raise_one_line_errors(linear1000, kwargs, match):
    x0, noise = _data(6)
    args = {"t": T_CASES.astype(np.int32), "noise": noise}
    args.update({k: kwargs.pop(k) for k in list(kwargs) if k in args})
    with pytest.raises(ValueError, match=match) as info:
        training_losses(_model_jnp(_params(2 * C)), x0, args["t"], args["noise"], linear1000, **kwargs)
    assert "\n" not in str(info.value)
    with pytest.raises(TypeError, match="expected a discrete NoiseScheduleVP"):
        training_losses(_model_jnp(_params(2 * C)), x0, T_CASES, noise, linear1000.betas)


def test_matches_torch_reference_nchw(linear1000):
    """EDT's code path in torch float32 (NCHW, split on dim 1, detach, stacked min): eps prediction."""
    th = pytest.importorskip("torch")
    params = _params(2 * C)
    x0, noise = _data(7)
    tab = {k: th.from_numpy(v) for k, v in _ref_tables(np.array(linear1000.betas)).items()}
    t = th.from_numpy(T_CASES).long()

    def ext(a):  # ADM's _extract_into_tensor: float64 table -> float32, broadcast to NCHW
        return a[t].float()[:, None, None, None]

    x0_t = th.from_numpy(x0).float().permute(0, 3, 1, 2)
    noise_t = th.from_numpy(noise).float().permute(0, 3, 1, 2)
    alpha, sigma = tab["acp"].sqrt()[t].float(), (1 - tab["acp"]).sqrt()[t].float()
    snr = (alpha / sigma) ** 2
    weight = th.stack([snr, 5.0 * th.ones_like(snr)], dim=1).min(dim=1)[0] / snr
    x_t = ext(tab["acp"].sqrt()) * x0_t + ext((1 - tab["acp"]).sqrt()) * noise_t
    out = th.from_numpy(_model_np(params)(x_t.permute(0, 2, 3, 1).double().numpy(), T_CASES)).float()
    mean_out, var_out = th.split(out.permute(0, 3, 1, 2), C, dim=1)
    frozen = th.cat([mean_out.detach(), var_out], dim=1)
    eps, v = th.split(frozen, C, dim=1)
    x0_hat = ext((1 / tab["acp"]).sqrt()) * x_t - ext((1 / tab["acp"] - 1).sqrt()) * eps
    mean_p = ext(tab["coef1"]) * x0_hat + ext(tab["coef2"]) * x_t
    mean_q = ext(tab["coef1"]) * x0_t + ext(tab["coef2"]) * x_t
    frac = (v + 1) / 2
    logvar_p = frac * ext(tab["betas"].log()) + (1 - frac) * ext(tab["post_logvar"])
    kl = _ref_kl(mean_q, ext(tab["post_logvar"]), mean_p, logvar_p, exp=th.exp).mean(dim=(1, 2, 3)) / math.log(2)
    nll = -th.from_numpy(_ref_dgll(x0_t.double().numpy(), mean_p.double().numpy(),
                                   0.5 * logvar_p.double().numpy())).mean(dim=(1, 2, 3)) / math.log(2)
    vb = th.where(t == 0, nll.float(), kl)
    mse = weight * ((noise_t - mean_out) ** 2).mean(dim=(1, 2, 3))

    got = training_losses(_model_jnp(params), x0, T_CASES.astype(np.int32), noise, linear1000)
    np.testing.assert_allclose(got["mse"], mse.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got["vb"], vb.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["loss"], (mse + vb).numpy(), rtol=1e-4, atol=1e-5)
