"""PSNR and SSIM against scikit-image 0.26: the stored references, live skimage, jit, and the input checks."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from reference_fixtures import load_npz

from edt_jax.metrics import image

FIXTURE = "image_metrics_reference.npz"


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    return load_npz(FIXTURE)


def _pairs(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A smooth-ish image in [0, 1] and a noisy copy, float32: structure for SSIM to find."""
    a = rng.random(shape).cumsum(axis=1).cumsum(axis=2)
    a = (a - a.min()) / (a.max() - a.min())
    b = np.clip(a + 0.1 * rng.standard_normal(shape), 0, 1)
    return a.astype(np.float32), b.astype(np.float32)


def test_psnr_matches_reference(reference):
    deviations = {}
    for group in json.loads(str(reference["groups_json"])):
        name = group["name"]
        ours = np.asarray(image.psnr(reference[f"a/{name}"], reference[f"b/{name}"], group["data_range"]))
        assert ours.dtype == np.float32 and ours.shape == (group["shape"][0],)
        deviations[name] = float(np.abs(ours - reference[f"psnr/{name}"]).max())
    assert max(deviations.values()) < 1e-4, deviations


def test_ssim_matches_reference(reference):
    deviations = {}
    for case in json.loads(str(reference["ssim_cases_json"])):
        group = case["group"]
        ours = np.asarray(
            image.ssim(
                reference[f"a/{group}"],
                reference[f"b/{group}"],
                case["data_range"],
                gaussian_weights=case["gaussian_weights"],
                sigma=case["sigma"],
                win_size=case["win_size"],
                use_sample_covariance=case["use_sample_covariance"],
            )
        )
        assert ours.dtype == np.float32
        deviations[case["name"]] = float(np.abs(ours - reference[f"ssim/{case['name']}"]).max())
    assert max(deviations.values()) < 1e-5, deviations


def test_inside_jit_gives_the_same_numbers():
    a, b = _pairs(np.random.default_rng(1), (2, 12, 10, 3))

    @jax.jit
    def both(a, b):
        return image.psnr(a, b, 1.0), image.ssim(a, b, 1.0, gaussian_weights=True, sigma=1.0)

    jit_psnr, jit_ssim = both(a, b)
    np.testing.assert_allclose(jit_psnr, image.psnr(a, b, 1.0), rtol=0, atol=1e-5)
    np.testing.assert_allclose(jit_ssim, image.ssim(a, b, 1.0, gaussian_weights=True, sigma=1.0), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "settings",
    [
        dict(win_size=5),
        dict(gaussian_weights=True, sigma=1.0, use_sample_covariance=False),
        # skimage's quirk: with gaussian weights an explicit win_size sets N and the crop, sigma the filter
        dict(gaussian_weights=True, sigma=1.5, win_size=5),
    ],
    ids=["uniform5", "gauss1.0_population", "gauss1.5_win5"],
)
def test_matches_live_skimage(settings):
    metrics = pytest.importorskip("skimage.metrics", reason="scikit-image is a test dependency")
    a, b = _pairs(np.random.default_rng(2), (3, 16, 13, 2))
    a, b = 2 * a - 1, 2 * b - 1  # a [-1, 1] range, data_range 2
    expected_ssim = [
        metrics.structural_similarity(a[i].astype(np.float64), b[i].astype(np.float64), data_range=2.0,
                                      channel_axis=-1, **settings)
        for i in range(len(a))
    ]
    expected_psnr = [metrics.peak_signal_noise_ratio(a[i].astype(np.float64), b[i], data_range=2.0) for i in range(3)]
    np.testing.assert_allclose(image.ssim(a, b, 2.0, **settings), expected_ssim, rtol=0, atol=1e-5)
    np.testing.assert_allclose(image.psnr(a, b, 2.0), expected_psnr, rtol=0, atol=1e-4)


def test_float64_under_x64_matches_skimage_closely():
    metrics = pytest.importorskip("skimage.metrics", reason="scikit-image is a test dependency")
    a, b = (x.astype(np.float64) for x in _pairs(np.random.default_rng(3), (2, 9, 11, 1)))
    expected = [metrics.structural_similarity(a[i], b[i], data_range=1.0, channel_axis=-1) for i in range(2)]
    with jax.enable_x64(True):
        ours = np.asarray(image.ssim(a, b, 1.0))
    assert ours.dtype == np.float64
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)


def test_identical_images():
    a, _ = _pairs(np.random.default_rng(4), (2, 8, 8, 1))
    assert np.all(np.isposinf(np.asarray(image.psnr(a, a, 1.0))))
    np.testing.assert_allclose(image.ssim(a, a, 1.0), 1.0, atol=1e-6)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda a: image.psnr(a, a[:, :7], 1.0), r"same shape, got \(2, 8, 8, 1\) and \(2, 7, 8, 1\)"),
        (lambda a: image.ssim(a[0], a[0], 1.0), r"expected NHWC .* got shape \(8, 8, 1\)"),
        (lambda a: image.psnr(a, a, 0), r"data_range must be a positive finite Python number .* got 0"),
        (lambda a: image.ssim(a, a, -2.0), r"data_range must be a positive .* got -2.0"),
        (lambda a: image.ssim(a, a, None), r"data_range .* got None"),
        (lambda a: image.ssim(a, a, 1.0, win_size=4), r"win_size must be an odd integer >= 3 .* got 4"),
        (lambda a: image.ssim(a, a, 1.0, win_size=1), r"win_size must be an odd integer >= 3 .* got 1"),
        (lambda a: image.ssim(a, a, 1.0, win_size=9), r"images of 8x8 pixels are smaller than the 9x9 window"),
        (lambda a: image.ssim(a, a, 1.0, gaussian_weights=True), r"8x8 pixels are smaller than the 11x11 window"),
        (lambda a: image.ssim(a, a, 1.0, sigma=-1.0), r"sigma must be a positive .* got -1.0"),
        (lambda a: image.ssim(a, a, 1.0, gaussian_weights=True, sigma=0.1), r"sigma=0.1 gives a 1-pixel"),
    ],
)
def test_bad_inputs(call, match):
    a = np.zeros((2, 8, 8, 1), np.float32)
    with pytest.raises(ValueError, match=match):
        call(a)


def test_traced_data_range_is_refused():
    a = np.zeros((1, 8, 8, 1), np.float32)
    with pytest.raises(ValueError, match="data_range must be a positive finite Python number"):
        jax.jit(lambda r: image.psnr(a, a, r))(1.0)
