"""DisDiff's quick setting: the closed-form DPM of a finite image set against a brute-force posterior mean, the
3-factor shapes slice, and the quick preset of ``benchmarks.disentanglement`` end to end in a few steps."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import shapes_betavae, shapes_disdiff
from edt_jax.data.ground_truth import SHAPES_HUE_POSITION, ground_truth_for
from edt_jax.diffusion import NoiseScheduleVP
from edt_jax.diffusion.analytic import DatasetDPM, dataset_posterior_mean
from edt_jax.disentangle.build import build_method, closed_form_dpm

NS = NoiseScheduleVP.named("linear")


def _brute_force_x0(images: np.ndarray, x: np.ndarray, abar: np.ndarray) -> np.ndarray:
    """sum_i softmax_i(-|x - sqrt(abar) x_i|^2 / (2 (1 - abar))) x_i in float64, one row at a time."""
    flat = images.reshape(len(images), -1).astype(np.float64)
    out = []
    for row, a in zip(x.reshape(len(x), -1).astype(np.float64), abar, strict=True):
        logits = -np.sum((row[None] - np.sqrt(a) * flat) ** 2, axis=-1) / (2 * (1 - a))
        w = np.exp(logits - logits.max())
        out.append(w @ flat / w.sum())
    return np.asarray(out).reshape(x.shape)


@pytest.mark.parametrize("chunk_size", [1, 7, 1024])  # 37 images: padded chunks, one chunk
def test_closed_form_dpm_is_the_posterior_mean(chunk_size):
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (37, 4, 4, 3)).astype(np.float32)
    t = np.array([0, 5, 100, 400, 700, 999])
    x = rng.normal(size=(6, 4, 4, 3)).astype(np.float32)
    dpm = DatasetDPM(jnp.asarray(images), NS, chunk_size=chunk_size)
    x0 = np.asarray(jax.jit(dpm.x0_predictor())(dpm.params, jnp.asarray(x), jnp.asarray(t)))
    np.testing.assert_allclose(x0, _brute_force_x0(images, x, NS.alphas_cumprod[t]), atol=2e-5)
    # eps and x0 describe the same x_t: x_t = alpha x0 + sigma eps.
    eps = np.asarray(jax.jit(dpm.noise_predictor())(dpm.params, jnp.asarray(x), jnp.asarray(t)))
    a = np.sqrt(NS.alphas_cumprod[t])[:, None, None, None]
    np.testing.assert_allclose(a * x0 + np.sqrt(1 - a ** 2) * eps, x, atol=1e-4)


def test_closed_form_dpm_recovers_its_images_and_rejects_bad_input():
    rng = np.random.default_rng(1)
    images = jnp.asarray(rng.uniform(-1, 1, (5, 4, 4, 3)), jnp.float32)
    dpm = DatasetDPM(images, NS)
    noise = jnp.asarray(rng.normal(size=(5, 4, 4, 3)), jnp.float32)
    a = float(np.sqrt(NS.alphas_cumprod[10]))
    x0 = dpm.x0_predictor()(dpm.params, a * images + np.sqrt(1 - a * a) * noise, jnp.full((5,), 10))
    np.testing.assert_allclose(x0, images, atol=1e-5)  # low noise: the posterior sits on the noised image
    with pytest.raises(ValueError, match=r"images must be a non-empty \(K, H, W, C\) array, got shape \(5, 48\)"):
        DatasetDPM(images.reshape(5, -1), NS)
    with pytest.raises(ValueError, match=r"chunk_size=0 must be a positive integer"):
        DatasetDPM(images, NS, chunk_size=0)
    with pytest.raises(ValueError, match=r"x has 12 entries per item but the images have 48"):
        dataset_posterior_mean(images, jnp.zeros((2, 12)), jnp.ones(2), jnp.ones(2))


def test_the_hue_position_slice_of_shapes():
    gt = ground_truth_for(SHAPES_HUE_POSITION, indices=True)
    assert gt.factor_names == ("object_hue", "x_position", "y_position") and gt.factor_sizes == (6, 8, 8)
    assert gt.num_items == 384
    factors = gt.sample_factors(50, np.random.RandomState(0))
    index = gt.factors_to_index(factors)
    assert len(set(index.tolist())) == len({tuple(f) for f in factors.tolist()})
    images = gt.observations_at(index)
    assert images.shape == (50, 32, 32, 3) and images.min() >= -1 and images.max() <= 1
    base = gt.observations_at(gt.factors_to_index(np.array([[0, 0, 0]])))
    for k in range(3):  # every factor changes the image
        other = np.zeros((1, 3), np.int64)
        other[0, k] = 1
        assert np.abs(gt.observations_at(gt.factors_to_index(other)) - base).max() > 0.5


def test_quick_config_builds_the_closed_form_dpm():
    config = shapes_disdiff.get_config("quick")
    dpm = closed_form_dpm(config)
    assert dpm.params.shape == (384, 32, 32, 3)
    betas = np.linspace(0.0015 ** 0.5, 0.0155 ** 0.5, 1000) ** 2
    np.testing.assert_allclose(dpm.schedule.betas, betas, rtol=1e-12)
    method = build_method(config, with_dpm=True)
    assert method.frozen is dpm.params or method.frozen.shape == (384, 32, 32, 3)
    assert method.num_chunks == 3 and shapes_betavae.get_config("quick").data.source == SHAPES_HUE_POSITION
    bad = shapes_disdiff.get_config("quick")
    bad.dpm.kind = "trained"
    with pytest.raises(ValueError, match=r"dpm.kind"):
        build_method(bad, with_dpm=True)


def test_quick_preset_end_to_end(tmp_path):
    from benchmarks.disentanglement import quick_run

    summary = quick_run("quick_test", 0, tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["num_factors"] == 3 and summary["factors"] == ["object_hue", "x_position", "y_position"]
    for method in ("disdiff", "beta_vae", "random_encoder"):
        assert {"factor_vae", "dci_disentanglement", "mig"} <= set(summary[method])
        assert 0 <= summary[method]["factor_vae"] <= 1 and 0 <= summary[method]["dci_disentanglement"] <= 1
    assert summary["disdiff"]["steps"] == 2 and 1 <= summary["beta_vae"]["steps"] <= 2
    assert np.asarray(summary["swap"]["what_changes"]).shape == (3, 3)
    assert (tmp_path / "disdiff" / "swap.png").is_file()
    again = quick_run("quick_test", 0, tmp_path)  # every stage is done: nothing is redone
    assert again["disdiff"]["train_wall_s"] == summary["disdiff"]["train_wall_s"]


def test_smoothed_dpm_is_the_posterior_mean_of_the_blurred_images():
    # x0 ~ uniform over N(x_i, h^2 I): brute force in float64 over the components.
    rng = np.random.default_rng(3)
    images = rng.uniform(-1, 1, (9, 4, 4, 3)).astype(np.float32)
    t = np.array([0, 50, 300, 700, 999])
    x = rng.normal(size=(5, 4, 4, 3)).astype(np.float32)
    h = 0.3
    dpm = DatasetDPM(jnp.asarray(images), NS, chunk_size=4, bandwidth=h)
    x0 = np.asarray(jax.jit(dpm.x0_predictor())(dpm.params, jnp.asarray(x), jnp.asarray(t)))
    abar = NS.alphas_cumprod[t].astype(np.float64)
    a, var = np.sqrt(abar), (1 - abar) + abar * h * h
    flat, data = x.reshape(5, -1).astype(np.float64), images.reshape(9, -1).astype(np.float64)
    logits = -((flat[:, None] - a[:, None, None] * data[None]) ** 2).sum(-1) / (2 * var[:, None])
    w = np.exp(logits - logits.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    within = data[None] + (a * h * h / var)[:, None, None] * (flat[:, None] - a[:, None, None] * data[None])
    np.testing.assert_allclose(x0.reshape(5, -1), (w[..., None] * within).sum(1), atol=2e-5)
    # Bandwidth 0 is the exact DPM; a negative one is refused.
    exact = DatasetDPM(jnp.asarray(images), NS, bandwidth=0.0)
    np.testing.assert_array_equal(exact.x0_predictor()(exact.params, jnp.asarray(x), jnp.asarray(t)),
                                  DatasetDPM(jnp.asarray(images), NS).x0_predictor()(exact.params, jnp.asarray(x),
                                                                                     jnp.asarray(t)))
    with pytest.raises(ValueError, match=r"bandwidth=-0.1 must be a finite number >= 0"):
        DatasetDPM(images, NS, bandwidth=-0.1)
