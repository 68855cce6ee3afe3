"""Frechet distance against the classic scipy formula, streaming statistics and statistics files."""

from __future__ import annotations

import numpy as np
import pytest

from edt_jax.metrics import FeatureStats, StatsAccumulator, frechet_distance, load_stats, save_stats


def _random_spd(rng: np.random.Generator, dim: int) -> np.ndarray:
    a = rng.standard_normal((dim, 2 * dim))
    return a @ a.T / (2 * dim) + 0.01 * np.eye(dim)


def _classic_fd(mu1, sigma1, mu2, sigma2) -> float:
    """pytorch-fid / ADM evaluator formula: tr(sqrtm(S1 S2)) with scipy, real part."""
    scipy_linalg = pytest.importorskip("scipy.linalg")
    covmean = scipy_linalg.sqrtm(sigma1 @ sigma2)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(np.real(covmean)))


def test_distance_to_itself_is_zero():
    rng = np.random.default_rng(0)
    mu, sigma = rng.standard_normal(64), _random_spd(rng, 64)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8


def test_singular_covariance_is_handled():
    # Rank-deficient covariances (fewer samples than dimensions) break plain sqrtm; eigh copes. The
    # ~22 zero eigenvalues each leave a sqrt(round-off) ~ 1e-8 * scale in the trace term, hence the bound.
    rng = np.random.default_rng(1)
    stats = FeatureStats.from_features(rng.standard_normal((10, 32)))
    assert abs(stats.frechet_distance(stats)) < 1e-6 * np.trace(stats.covariance)
    other = FeatureStats.from_features(rng.standard_normal((10, 32)) + 0.5)
    value = stats.frechet_distance(other)
    assert np.isfinite(value) and value > 0


@pytest.mark.parametrize("dim", [16, 64])
def test_agrees_with_scipy_sqrtm(dim):
    rng = np.random.default_rng(dim)
    mu1, mu2 = rng.standard_normal(dim), rng.standard_normal(dim) * 0.3
    sigma1, sigma2 = _random_spd(rng, dim), _random_spd(rng, dim)
    ours = frechet_distance(mu1, sigma1, mu2, sigma2)
    reference = _classic_fd(mu1, sigma1, mu2, sigma2)
    assert abs(ours - reference) <= 1e-6 * abs(reference), (ours, reference)
    assert frechet_distance(mu2, sigma2, mu1, sigma1) == pytest.approx(ours, rel=1e-10)


def test_streaming_equals_one_shot():
    rng = np.random.default_rng(2)
    # A large common offset: the naive E[xx^T] - mu mu^T would lose digits here.
    features = rng.standard_normal((1000, 24)) * 0.5 + 1000.0
    one_shot = FeatureStats.from_features(features)
    np.testing.assert_allclose(one_shot.covariance, np.cov(features, rowvar=False), rtol=1e-12)
    accumulator = StatsAccumulator()
    for batch in np.array_split(features.astype(np.float32), [1, 257, 600]):
        accumulator.add(batch)
    features32 = features.astype(np.float32).astype(np.float64)
    reference = FeatureStats.from_features(features32)
    streamed = accumulator.stats()
    assert streamed.count == 1000
    np.testing.assert_allclose(streamed.mean, reference.mean, rtol=1e-12)
    np.testing.assert_allclose(streamed.covariance, reference.covariance, rtol=1e-9, atol=1e-12)
    assert abs(streamed.frechet_distance(reference)) < 1e-8


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    stats = FeatureStats.from_features(rng.standard_normal((50, 8)))
    save_stats(tmp_path / "stats.npz", stats)
    loaded = load_stats(tmp_path / "stats.npz")
    assert loaded.count == 50
    np.testing.assert_array_equal(loaded.mean, stats.mean)
    np.testing.assert_array_equal(loaded.covariance, stats.covariance)
    with np.load(tmp_path / "stats.npz") as data:
        assert sorted(data.files) == ["count", "mu", "sigma"]


def test_reads_adm_reference_batch_layout(tmp_path):
    # The layout of VIRTUAL_imagenet256_labeled.npz: images, pool3 stats and spatial stats, no count.
    rng = np.random.default_rng(4)
    mu, sigma = rng.standard_normal(6), _random_spd(rng, 6)
    mu_s, sigma_s = rng.standard_normal(5), _random_spd(rng, 5)
    images = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "VIRTUAL_ref.npz", arr_0=images, mu=mu.astype(np.float32), sigma=sigma,
             mu_s=mu_s, sigma_s=sigma_s)
    pool3 = load_stats(tmp_path / "VIRTUAL_ref.npz")
    assert pool3.count is None and pool3.dim == 6
    np.testing.assert_allclose(pool3.mean, mu, rtol=1e-6)
    np.testing.assert_array_equal(pool3.covariance, sigma)
    spatial = load_stats(tmp_path / "VIRTUAL_ref.npz", spatial=True)
    np.testing.assert_array_equal(spatial.mean, mu_s)
    assert spatial.covariance.shape == (5, 5)


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz.*'mu' and 'sigma'"):
        load_stats(tmp_path / "missing.npz")
    np.savez(tmp_path / "images_only.npz", arr_0=np.zeros((2, 4, 4, 3), np.uint8), mu=np.zeros(3))
    with pytest.raises(ValueError, match=r"holds keys \['arr_0', 'mu'\].*'mu' and 'sigma' are expected"):
        load_stats(tmp_path / "images_only.npz")
    np.savez(tmp_path / "bad_shapes.npz", mu=np.zeros(3), sigma=np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"'mu' of shape \(3,\).*expected \(D,\) and \(D, D\)"):
        load_stats(tmp_path / "bad_shapes.npz")
    with pytest.raises(ValueError, match=r"same length; got \(3,\) and \(4,\)"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match=r"covariances must be \(3, 3\)"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))
    with pytest.raises(ValueError, match="NaN or inf"):
        frechet_distance(np.zeros(2), np.eye(2), np.array([0.0, np.nan]), np.eye(2))
    accumulator = StatsAccumulator(dim=4)
    with pytest.raises(ValueError, match="dimension 3, but this accumulator holds 4-d"):
        accumulator.add(np.zeros((2, 3)))
    accumulator.add(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="at least 2 samples, 1 were added"):
        accumulator.stats()
    with pytest.raises(ValueError, match=r"features must be \(N, D\)"):
        FeatureStats.from_features(np.zeros(5))
