"""Patches of the real colour photos shipped inside the scikit-image package: a small, offline, natural-image
dataset for restoration (super-resolution, deblurring, denoising).

The photos are read from the directory of ``skimage.data`` with PIL; nothing is downloaded (scikit-image's
fetchers are never called). Needs ``pip install 'edt_jax[restoration]'``.

=====================  ===========  =====  =========  =========  ======================================
photo                  native W x H split  downscale  used W x H content
=====================  ===========  =====  =========  =========  ======================================
astronaut.png          512 x 512    train  2          256 x 256  portrait, flag, suit, shuttle
rocket.jpg             640 x 427    train  2          320 x 213  launch pad at dusk (flat sky dropped)
hubble_deep_field.jpg  1000 x 872   train  3          333 x 290  galaxies on black
ihc.png                512 x 512    train  2          256 x 256  stained tissue (microscopy)
retina.jpg             1411 x 1411  train  6          235 x 235  fundus photo, vessels
motorcycle_left.png    741 x 500    train  2          370 x 250  garage scene (a stereo pair ...
motorcycle_right.png   741 x 500    train  2          370 x 250  ... with the left one)
chelsea.png            451 x 300    test   1          451 x 300  cat's face: fur, whiskers, eyes
coffee.png             600 x 400    test   2          300 x 200  cup, saucer, spoon on wood grain
=====================  ===========  =====  =========  =========  ======================================

The split is by photo, not by patch: overlapping patches of one photo share pixels, so a patch split would put
near-copies of the test patches in the training set. The test photos are the two consumer photos whose
content (fur, glazed ceramics, wood grain) no training photo has, with no flat regions, so a test score
measures generalisation to new scenes; the stereo pair stays together in train, as its two photos are
near-duplicates. Skipped: the grayscale, binary, synthetic (color wheel, phantom, chessboard) and RGBA logo
images.

By default each photo is downscaled by an integer factor, max(1, round(short side / 256)), so every photo
contributes comparably (retina would otherwise give half the training set) and a 64x64 patch holds
structure, not flat colour. Downscaling is PIL's Lanczos (antialiased, sharper than a box average, so the
high-resolution targets keep their detail). Patches are a row-major grid with stride ``size // 2`` in each
photo, in ``PHOTOS`` order; near-flat patches (the largest per-channel std below ``min_std`` grey levels,
e.g. rocket's sky) are dropped.

Patches per split (default downscale, stride and ``min_std``): size 32: train 1740, test 643; size 64:
train 371, test 144; size 128: train 58, test 24.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np
from PIL import Image

from edt_jax.checks import check_choice, check_int

PHOTOS = ("astronaut.png", "rocket.jpg", "hubble_deep_field.jpg", "ihc.png", "retina.jpg",
          "motorcycle_left.png", "motorcycle_right.png", "chelsea.png", "coffee.png")
SPLITS = {"train": tuple(range(7)), "test": (7, 8)}  # indices into PHOTOS, which are also the labels
MIN_STD = 5.0  # grey levels (0..255); sky gradients measure 3-5, the smoothest real texture kept ~5-6
_TARGET_SHORT_SIDE = 256


def _skimage_data_dir() -> str:
    try:
        import skimage.data
    except ImportError:
        raise ImportError("the photos source needs scikit-image: pip install 'edt_jax[restoration]'") from None
    return os.path.dirname(skimage.data.__file__)


def default_downscale(width: int, height: int) -> int:
    """The integer factor that brings the short side nearest to 256 pixels (at least 1)."""
    return max(1, round(min(width, height) / _TARGET_SHORT_SIDE))


@functools.lru_cache(maxsize=32)
def load_photo(name: str, downscale: int | None = None) -> np.ndarray:
    """One photo of ``PHOTOS`` as read-only uint8 (H, W, 3), downscaled by ``downscale`` (None: the default).

    The photo is first cropped to a multiple of the factor (at most factor - 1 pixels off the right and
    bottom) so the factor is exact.
    """
    check_choice("photo", name, PHOTOS)
    path = os.path.join(_skimage_data_dir(), name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{name} is not in this scikit-image's data directory {os.path.dirname(path)}")
    with Image.open(path) as image:
        image = image.convert("RGB")
        factor = default_downscale(*image.size) if downscale is None else check_int("downscale", downscale, 1)
        if factor > 1:
            width, height = image.width // factor, image.height // factor
            image = image.crop((0, 0, width * factor, height * factor)).resize(
                (width, height), Image.Resampling.LANCZOS)
        pixels = np.asarray(image, dtype=np.uint8).copy()
    pixels.flags.writeable = False  # cached and shared between callers
    return pixels


@functools.lru_cache(maxsize=8)
def _patches(split: str, size: int, downscale: int | None, stride: int,
             min_std: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    images, labels, positions = [], [], []
    for label in SPLITS[split]:
        photo = load_photo(PHOTOS[label], downscale)
        height, width = photo.shape[:2]
        for top in range(0, height - size + 1, stride):
            for left in range(0, width - size + 1, stride):
                patch = photo[top:top + size, left:left + size]
                if patch.reshape(-1, 3).std(axis=0).max() < min_std:
                    continue
                images.append(patch)
                labels.append(label)
                positions.append((top, left))
    if not images:
        raise ValueError(f"photos: no {size}x{size} patch of the {split} photos has std >= {min_std}; use a "
                         f"smaller size or min_std")
    arrays = (np.stack(images), np.asarray(labels, np.int32), np.asarray(positions, np.int32))
    for array in arrays:
        array.flags.writeable = False
    return arrays


class PhotoPatches:
    """Random-access source: ``src[i]`` -> {"image": uint8 (size, size, 3), "label": np.int32 photo index}.

    Args:
      size: patch side in pixels (>= 8).
      split: "train" or "test" (disjoint photos, see the module docstring).
      downscale: integer factor for every photo; None gives each photo its own (short side ~256).
      stride: grid step in pixels (default ``size // 2``).
      min_std: patches whose largest per-channel std (grey levels) is below it are dropped.

    ``positions`` is the (N, 2) int32 (top, left) of each patch in its downscaled photo, for stitching.
    """

    num_classes: int = len(PHOTOS)

    def __init__(self, size: int = 64, split: str = "train", *, downscale: int | None = None,
                 stride: int | None = None, min_std: float = MIN_STD) -> None:
        check_choice("photos split", split, tuple(SPLITS))
        self.size = check_int("photos patch size", size, 8)
        self.split = split
        self.downscale = None if downscale is None else check_int("downscale", downscale, 1)
        self.stride = check_int("stride", self.size // 2 if stride is None else stride, 1)
        if not min_std >= 0:
            raise ValueError(f"min_std must be a number >= 0, got {min_std!r}")
        self.min_std = float(min_std)
        self._images, self._labels, self.positions = _patches(split, self.size, self.downscale, self.stride,
                                                              self.min_std)

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, index: Any) -> dict[str, Any]:
        # Copy: records are handed to pipelines that may modify them in place; the cache is read-only.
        return {"image": self._images[index].copy(), "label": np.int32(self._labels[index])}

    def __repr__(self) -> str:
        return f"PhotoPatches(size={self.size}, split={self.split!r}, len={len(self)})"
