"""Restoration data: degraded test sets fixed per image index, and banks of (x0, y, x0_IR) training crops.

DP-IR trains its fusion network with the IR network frozen, so x0_IR is computed once per training
crop (``build_bank``) instead of at every step. Both the bank and the test sets degrade image ``i``
with ``image_keys(seed, [i])``: the same kernel and noise on every run and machine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from edt_jax.batching import map_in_batches
from edt_jax.data.pixels import to_model_range
from edt_jax.restoration.degradations import image_keys


class ArraySource:
    """Random-access records over equal-length arrays: ``src[i] = {name: array[i]}`` (for grain)."""

    def __init__(self, **arrays: np.ndarray):
        lengths = {len(a) for a in arrays.values()}
        if len(lengths) != 1:
            raise ValueError(f"arrays of an ArraySource need one length, got {sorted(lengths)}")
        self.arrays = arrays

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def __getitem__(self, index: int) -> dict:
        return {name: a[index] for name, a in self.arrays.items()}


def load_images(source: Sequence, count: int | None = None) -> np.ndarray:
    """The first ``count`` (default all) images of a data source, (N, H, W, C) uint8."""
    count = len(source) if count is None else min(count, len(source))
    if count == 0:
        raise ValueError("the source has no images")
    images = [np.asarray(source[i]["image"]) for i in range(count)]
    return np.stack([im[..., None] if im.ndim == 2 else im for im in images])


def degrade(images: np.ndarray, degradation, seed: int, indices: Sequence[int] | None = None,
            batch_size: int = 64) -> np.ndarray:
    """y of ``images`` (N, H, W, C) in [-1, 1]; image k uses ``image_keys(seed, [indices[k]])``."""
    indices = np.arange(len(images)) if indices is None else np.asarray(indices)
    apply = jax.jit(degradation.apply)
    out = [np.asarray(apply(jnp.asarray(images[i:i + batch_size]), image_keys(seed, indices[i:i + batch_size])))
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out)


def check_estimate_shape(estimate_shape: Sequence[int], image_shape: Sequence[int],
                         what: str = "the IR network") -> None:
    """One-line error when an estimator's output is not image-shaped."""
    if tuple(estimate_shape) != tuple(image_shape):
        raise ValueError(f"{what} returns shape {tuple(estimate_shape)} but the images have shape "
                         f"{tuple(image_shape)}; it must map y to an image of the clean image's shape")


def build_bank(images: np.ndarray, degradation, ir_fn: Callable[[jax.Array], jax.Array], seed: int,
               batch_size: int = 64) -> ArraySource:
    """Training records {"image": uint8 x0, "y": float32, "x0_ir": float32} with y and x0_IR computed once.

    ``images`` (N, H, W, C) uint8; ``ir_fn(y) -> x0_IR`` (jitted here) must return the image shape.
    """
    x0 = to_model_range(images)
    y = degrade(x0, degradation, seed, batch_size=batch_size)
    check_estimate_shape(jax.eval_shape(ir_fn, jax.ShapeDtypeStruct((1,) + y.shape[1:], jnp.float32)).shape,
                         (1,) + x0.shape[1:])
    x0_ir = map_in_batches(jax.jit(ir_fn), y, batch_size=batch_size, progress="x0_IR of the training bank")
    return ArraySource(image=images, y=y, x0_ir=x0_ir.astype(np.float32))
