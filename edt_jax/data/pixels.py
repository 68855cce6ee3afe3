"""Pixels <-> the model range: the one conversion between uint8 images and the [-1, 1] floats models see."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np


def to_model_range(images: Any, pixel_max: float = 255) -> np.ndarray:
    """Images (N, H, W, C) -> float32 in [-1, 1].

    Integer (or bool) pixels in [0, pixel_max] map by x / (pixel_max / 2) - 1, the arithmetic of the data
    pipeline's ``Preprocess``; floats are taken to be in the model range already and clipped to [-1, 1] (a
    sampler's overshoot would otherwise probe a network where it never saw data, as a uint8 save clips too).
    """
    images = np.asarray(images)
    if np.issubdtype(images.dtype, np.floating):
        return np.clip(images.astype(np.float32), -1.0, 1.0)
    return images.astype(np.float32) / np.float32(pixel_max / 2) - 1.0


def to_uint8(images: Any) -> np.ndarray:
    """Floats in [-1, 1] (N, H, W, C) -> uint8 pixels, rounded and clipped."""
    return np.clip(np.round((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def image_grid(images: Any, columns: int | None = None) -> np.ndarray:
    """(N, H, W, C) in [-1, 1] -> one uint8 (rows H, columns W, C) grid, near-square unless ``columns`` is given."""
    n, h, w, c = np.shape(images)
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    pixels = to_uint8(images)
    grid = np.zeros((rows * h, columns * w, c), np.uint8)
    for i in range(n):
        r, q = divmod(i, columns)
        grid[r * h:(r + 1) * h, q * w:(q + 1) * w] = pixels[i]
    return grid


def save_grid(images: Any, path: str | os.PathLike, columns: int | None = None) -> None:
    """Write ``image_grid(images, columns)`` as a PNG (grey for one channel) to ``path`` (local or any epath)."""
    from PIL import Image

    from edt_jax import paths

    grid = image_grid(images, columns)
    with paths.as_path(path).open("wb") as f:
        Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(f, format="PNG")
