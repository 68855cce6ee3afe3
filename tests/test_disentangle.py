"""DisDiff's loss pieces against the official expressions (``disentanglement_reference.npz``, ``disdiff/``), and
the invariants of the model: zero fields at init, one field per factor code, the frozen encoder copy."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference_fixtures import load_npz

from edt_jax import disentangle, samplers
from edt_jax.diffusion import NoiseScheduleVP
from edt_jax.disentangle.baselines import beta_vae_loss
from edt_jax.disentangle.losses import distance_logits


@pytest.fixture(scope="module")
def ref() -> dict:
    data = load_npz("disentanglement_reference.npz")
    return {k[len("disdiff/"):]: v for k, v in data.items() if k.startswith("disdiff/")}


@pytest.mark.parametrize("case", ["a", "b"])
def test_orthogonal_embedding_is_expm_of_wt_minus_w(ref, case):
    weight = ref[f"orth_weight_{case}"]
    with jax.enable_x64(True):
        p = np.asarray(disentangle.orthogonal_embedding(jnp.asarray(weight, jnp.float64)))
    np.testing.assert_allclose(p, ref[f"orth_embedding_{case}"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(p @ p.T, np.eye(len(p)), atol=1e-10)
    assert not np.allclose(p, p.T, atol=1e-3)  # expm(W - W^T) would be the transpose: other rows
    p32 = np.asarray(disentangle.orthogonal_embedding(jnp.asarray(weight, jnp.float32)))
    np.testing.assert_allclose(p32, ref[f"orth_embedding_{case}_f32"], rtol=0, atol=2e-5)


def test_orthogonal_embedding_rejects_non_square():
    with pytest.raises(ValueError, match=r"square \(D, D\) matrix, got shape \(3, 4\)"):
        disentangle.orthogonal_embedding(jnp.zeros((3, 4)))


def test_shift_coefficients(ref):
    with jax.enable_x64(True):
        abar = jnp.asarray(ref["alphas_cumprod"])
        train = np.asarray(disentangle.train_shift_coef(abar, jnp.asarray(ref["train_t"])))
        sample = np.asarray(disentangle.sample_shift_coef(abar, jnp.asarray(ref["sample_t"])))
    np.testing.assert_allclose(train, ref["train_coef"], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(sample, ref["sample_coef"], rtol=1e-12, atol=1e-15)
    assert train[ref["train_t"] == 0] == 0.0  # abar_{-1} = 1: no shift at t = 0
    abar32 = jnp.asarray(ref["alphas_cumprod"], jnp.float32)
    np.testing.assert_allclose(disentangle.train_shift_coef(abar32, ref["train_t"]), ref["train_coef_f32"],
                               rtol=2e-5, atol=1e-7)
    # The official buffers are float64 results cast to float32; 1 - abar_t in float32 loses ~4e-6 at t = 1.
    np.testing.assert_allclose(disentangle.sample_shift_coef(abar32, ref["sample_t"]), ref["sample_coef_f32"],
                               rtol=5e-6, atol=1e-7)


def test_shifted_x0(ref):
    with jax.enable_x64(True):
        args = [jnp.asarray(ref[k]) for k in ("x_t", "t", "eps_pred", "shift", "alphas_cumprod")]
        x0_pred, x0_shifted = (np.asarray(a) for a in disentangle.shifted_x0(*args))
    np.testing.assert_allclose(x0_pred, ref["x0_pred"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(x0_shifted, ref["x0_shifted"], rtol=1e-12, atol=1e-12)


def _loss_args(ref):
    return [jnp.asarray(ref[k]) for k in ("codes_pred", "codes_shifted", "codes_true", "factor", "loss_x0_pred",
                                          "loss_x0_shifted")]


def test_disentangling_loss_values_and_gradient(ref):
    scale = float(ref["loss_weight_scale"])
    with jax.enable_x64(True):
        args = _loss_args(ref)
        out = disentangle.disentangling_loss(*args, weight_scale=scale)
        logits_in, logits_va = distance_logits(*args[:3])
        total = lambda *a: jnp.sum(disentangle.disentangling_loss(*a, weight_scale=scale)["total"])  # noqa: E731
        grads = jax.grad(total, argnums=(0, 1, 2, 4, 5))(*args)
    assert set(out) == {"invariant", "variant", "weight", "total"}
    for key in out:
        np.testing.assert_allclose(out[key], ref[f"loss_{key}"], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(logits_in, ref["loss_logits_invariant"], rtol=1e-12)
    np.testing.assert_allclose(logits_va, ref["loss_logits_variant"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grads[1], ref["loss_grad_codes_shifted"], rtol=1e-8, atol=1e-16)
    for g in (grads[0], grads[2], grads[3], grads[4]):  # no-grad block / detached in the official code
        assert not np.any(np.asarray(g))


def test_disentangling_loss_gradient_is_finite_when_codes_coincide():
    codes = jnp.ones((2, 3, 4))  # step 0: every field is 0, so the shifted codes equal the predicted ones
    x0 = jnp.zeros((2, 4, 4, 1))
    grad = jax.grad(lambda c: jnp.sum(disentangle.disentangling_loss(codes, c, codes + 1, jnp.array([0, 2]), x0,
                                                                     x0 + 0.1)["total"]))(codes)
    assert np.isfinite(np.asarray(grad)).all()


BETAS = np.linspace(1e-4, 2e-2, 1000)


def _model(dis_weight=0.05, n=3):
    eps_fn = lambda p, x, t: p["scale"] * x  # noqa: E731  (a stand-in frozen DPM)
    return disentangle.DisDiff(disentangle.Encoder(n, 4, (8, 8)), disentangle.SubGradientDecoder(n, (8, 8), 8, 2),
                               eps_fn, np.cumprod(1 - BETAS), dis_weight)


@pytest.fixture(scope="module")
def model_and_params():
    model = _model()
    params = jax.jit(model.init_params((8, 8, 3)))(jax.random.key(0))
    return model, params


@jax.jit
def _perturbed(params):
    """The decoder with noise added to every weight (its zero-initialised convs included), so the fields are
    not all zero and every code reaches its field."""
    leaves, tree = jax.tree_util.tree_flatten(params["decoder"])
    keys = jax.random.split(jax.random.key(1), len(leaves))
    noisy = [w + 0.1 * jax.random.normal(k, w.shape) for w, k in zip(leaves, keys, strict=True)]
    return {**params, "decoder": jax.tree_util.tree_unflatten(tree, noisy)}


def _images(b=4, seed=0):
    return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, (b, 8, 8, 3)), jnp.float32)


def test_fields_start_at_zero_and_each_reads_only_its_code(model_and_params):
    model, params = model_and_params
    x, t = _images(), jnp.array([0, 10, 500, 999])
    codes = jax.jit(model.encode)(params, x)
    assert codes.shape == (4, 3, 4)
    fields_fn = jax.jit(model.fields)
    fields = fields_fn(params, x, 0.5 * x, t, codes)
    assert fields.shape == (3, 4, 8, 8, 3) and not np.any(np.asarray(fields))  # zero-initialised output
    params = _perturbed(params)
    base = fields_fn(params, x, 0.5 * x, t, codes)
    changed = fields_fn(params, x, 0.5 * x, t, codes.at[:, 1].add(1.0))
    np.testing.assert_array_equal(changed[0], base[0])
    np.testing.assert_array_equal(changed[2], base[2])
    assert not np.allclose(changed[1], base[1])
    # The N evaluations are one folded batch in which images do not mix: reversing the batch reverses the fields.
    flipped = fields_fn(params, x[::-1], 0.5 * x[::-1], t[::-1], codes[::-1])
    np.testing.assert_allclose(flipped[:, ::-1], base, atol=1e-5)


def test_loss_starts_from_the_frozen_model(model_and_params):
    model, params = model_and_params
    frozen = {"scale": jnp.float32(0.3)}
    batch, key = {"image": _images()}, jax.random.key(3)
    loss, metrics = jax.jit(model.loss_fn)(params, frozen, batch, key)
    # G = 0: the loss is the frozen model's L1 noise error and the disentangling weight is 0.
    k_t, k_noise, _ = jax.random.split(key, 3)
    abar = jnp.asarray(model.alphas_cumprod, jnp.float32)
    t = jax.random.randint(k_t, (4,), 0, 1000)
    noise = jax.random.normal(k_noise, batch["image"].shape)
    a = abar[t][:, None, None, None]
    x_t = jnp.sqrt(a) * batch["image"] + jnp.sqrt(1 - a) * noise
    np.testing.assert_allclose(loss, jnp.mean(jnp.abs(noise - 0.3 * x_t)), rtol=1e-6)
    # Zero up to rounding: XLA may round the two x0 estimates' identical expressions differently (emitters, FMA).
    assert float(metrics["dis_weight"]) < 1e-10 and float(metrics["dis_total"]) < 1e-10
    # reconstruction="x0": the same error read in x0 units, sqrt((1 - abar) / abar) times the noise error.
    in_x0 = dataclasses.replace(model, reconstruction="x0")
    loss_x0, _ = jax.jit(in_x0.loss_fn)(params, frozen, batch, key)
    np.testing.assert_allclose(loss_x0, jnp.mean(jnp.sqrt((1 - a) / a) * jnp.abs(noise - 0.3 * x_t)), rtol=1e-5)
    with pytest.raises(ValueError, match=r"reconstruction='v'; accepted: eps, x0"):
        dataclasses.replace(model, reconstruction="v")


def test_frozen_encoder_copy_passes_no_gradient(model_and_params):
    """The encoder that reads x0_pred / x0_shifted in the disentangling loss is a frozen copy: with fields that
    ignore the codes (code embedding zeroed), the only way left into the encoder is that copy, and its gradient
    must be exactly 0 while the disentangling loss is not (the official ``eval_encoder`` deepcopy)."""
    model, params = model_and_params
    params = _perturbed(params)
    code_emb = jax.tree_util.tree_map(jnp.zeros_like, params["decoder"]["code_emb"])
    params = {**params, "decoder": {**params["decoder"], "code_emb": code_emb}}
    frozen, batch, key = {"scale": jnp.float32(0.3)}, {"image": _images()}, jax.random.key(5)
    grads, metrics = jax.jit(jax.grad(model.loss_fn, has_aux=True))(params, frozen, batch, key)
    assert float(metrics["dis_total"]) > 0
    assert not any(np.any(np.asarray(g)) for g in jax.tree_util.tree_leaves(grads["encoder"]))
    assert any(np.any(np.asarray(g)) for g in jax.tree_util.tree_leaves(grads["decoder"]))


def test_encoder_trained_by_the_dis_loss_and_unit_weighting(model_and_params):
    """The official ``train_enc_flag``: the disentangling loss reads the live encoder, so the encoder's gradient is
    not 0 even when the fields ignore the codes; weighting "none" weighs every example 1."""
    model, params = model_and_params
    params = _perturbed(params)
    code_emb = jax.tree_util.tree_map(jnp.zeros_like, params["decoder"]["code_emb"])
    params = {**params, "decoder": {**params["decoder"], "code_emb": code_emb}}
    frozen, batch, key = {"scale": jnp.float32(0.3)}, {"image": _images()}, jax.random.key(5)
    live = disentangle.DisDiff(model.encoder, model.decoder, model.eps_fn, model.alphas_cumprod, 0.05,
                               "none", True)
    grads, metrics = jax.jit(jax.grad(live.loss_fn, has_aux=True))(params, frozen, batch, key)
    assert float(metrics["dis_weight"]) == 1.0
    assert any(np.any(np.asarray(g)) for g in jax.tree_util.tree_leaves(grads["encoder"]))
    with pytest.raises(ValueError, match=r"dis_weighting='im'; accepted: x0, none"):
        disentangle.DisDiff(model.encoder, model.decoder, model.eps_fn, model.alphas_cumprod, 0.05, "im")


def test_noise_model_swaps_and_samplers(model_and_params):
    model, params = model_and_params
    frozen = {"scale": jnp.float32(0.3)}
    ns = NoiseScheduleVP.discrete(betas=BETAS)
    x = _images(2)
    codes = jax.jit(model.encode)(params, x)
    eps_model = model.noise_model(params, frozen, codes, ns)
    t = jnp.array([3.0, 700.0])
    np.testing.assert_allclose(jax.jit(eps_model)(x, t), 0.3 * x, atol=1e-6)  # zero fields: the frozen prediction
    noisy = _perturbed(params)
    shifted = jax.jit(model.noise_model(noisy, frozen, codes, ns))(x, t)
    g = jax.jit(model.fields)(noisy, x, 0.3 * x, t, codes).sum(0)
    s = -np.sqrt(1 - np.cumprod(1 - BETAS)[[3, 700]])[:, None, None, None]
    np.testing.assert_allclose(shifted, 0.3 * x + s * g, atol=1e-5)
    swapped = disentangle.swap_codes(codes, codes[::-1], 1)
    np.testing.assert_array_equal(swapped[:, 0], codes[:, 0])
    np.testing.assert_array_equal(swapped[0, 1], codes[1, 1])
    with pytest.raises(ValueError, match=r"factor=3 is not a factor index; the codes have N=3 factors"):
        disentangle.swap_codes(codes, codes, 3)
    for sampler in ("ddim", "ddpm"):  # unipc / dpm_solver share ddim's model_wrapper path
        out = jax.jit(lambda x_T, s=sampler: samplers.sample(s, eps_model, x_T, ns, steps=3,
                                                             key=jax.random.key(0)))(x)
        assert out.shape == x.shape and np.isfinite(np.asarray(out)).all()
    with pytest.raises(ValueError, match="sampler"):
        samplers.sample("euler", eps_model, x, ns, steps=3)


def test_ddim_inversion_round_trip():
    """With an exact model of a point mass at x0 (eps = (x - alpha x0) / sigma) inversion then DDIM returns x0."""
    ns = NoiseScheduleVP.discrete(betas=BETAS)
    target = _images(2)

    def model(x, t_input):
        t = ns.continuous_time(t_input)[:, None, None, None]
        return (x - ns.marginal_alpha(t) * target) / ns.marginal_std(t)

    x_T = disentangle.ddim_invert(model, target, ns, steps=10)
    back = samplers.sample("ddim", model, x_T, ns, steps=10)
    np.testing.assert_allclose(back, target, atol=1e-3)


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match=r"dis_weight=-0.1 must be >= 0"):
        _model(-0.1)
    with pytest.raises(ValueError, match=r"embed_dim=2 must be >= num_factors=3"):
        disentangle.SubGradientDecoder(3, (8,), 2).init(jax.random.key(0), *[jnp.zeros((1, 4, 4, 1))] * 2,
                                                        jnp.zeros((1,)), jnp.zeros((1, 3, 2)))
    with pytest.raises(ValueError, match=r"beta=-1 must be >= 0"):
        beta_vae_loss(disentangle.BetaVAE(2, (8, 8, 3), (8,)), -1)


def test_beta_vae_loss_is_reconstruction_plus_beta_kl():
    vae = disentangle.BetaVAE(3, (8, 8, 3), (8, 8))
    x = _images(2)
    params = vae.init(jax.random.key(0), x, jnp.zeros((2, 3)))["params"]
    key = jax.random.key(1)
    (l0, m0), (l4, m4) = (beta_vae_loss(vae, b)(params, None, {"image": x}, key) for b in (0.0, 4.0))
    np.testing.assert_allclose(l0, m0["reconstruction"], rtol=1e-6)
    np.testing.assert_allclose(l4, m4["reconstruction"] + 4.0 * m4["kl"], rtol=1e-6)
    mean, log_variance = vae.apply({"params": params}, x, method="encode")
    kl = 0.5 * np.sum(np.exp(log_variance) + mean ** 2 - 1 - log_variance, axis=-1).mean()
    np.testing.assert_allclose(m4["kl"], kl, rtol=1e-5)
