"""Run a compiled function over many rows in fixed-size batches: one compile, any count.

    features = map_in_batches(jax.jit(net_apply), images, batch_size=256)
    out = map_in_batches(encode, images, indices, batch_size=64, sharding=batch_sharding(mesh))

Every batch has exactly ``batch_size`` rows: the last one is padded by repeating its last row (so padded rows
are valid inputs of any dtype, images or indices), and the padded rows' outputs are dropped. With a
``sharding`` each batch is placed on the mesh first (its size must split over the devices:
``round_to_devices``). The outputs, any pytree of arrays with the batch on axis 0, come back as NumPy.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import numpy as np
from absl import logging


def round_up(size: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= ``size`` (and >= ``multiple``)."""
    return max(1, -(-int(size) // int(multiple))) * int(multiple)


def pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    """``x`` (n, ...) with its last row repeated up to ``rows`` rows."""
    x = np.asarray(x)
    missing = rows - len(x)
    return np.concatenate([x, np.repeat(x[-1:], missing, axis=0)]) if missing > 0 else x


def map_in_batches(fn: Callable, *arrays, batch_size: int, sharding: jax.sharding.Sharding | None = None,
                   progress: str | None = None):
    """``fn(*batches)`` over rows of ``arrays`` (each (N, ...)) in batches of ``batch_size``; returns its
    outputs for the N rows, concatenated (NumPy, same pytree structure as one call's output).

    ``progress`` names the work in an INFO line with the rate and ETA after each batch (None: silent).
    """
    num = len(arrays[0])
    if any(len(a) != num for a in arrays):
        raise ValueError(f"map_in_batches needs arrays with the same number of rows, got {[len(a) for a in arrays]}")
    if num == 0:
        raise ValueError("map_in_batches got no rows")
    outputs, start = [], time.time()
    for first in range(0, num, batch_size):
        count = min(batch_size, num - first)
        batch = [pad_rows(a[first:first + count], batch_size) for a in arrays]
        if sharding is not None:
            batch = [jax.device_put(b, sharding) for b in batch]
        out = fn(*batch)
        outputs.append(jax.tree.map(lambda leaf, n=count: np.asarray(leaf)[:n], out))
        if progress:
            done = first + count
            rate = done / max(time.time() - start, 1e-9)
            logging.info("%s: %d / %d (%.1f per s, ETA %.0f s)", progress, done, num, rate, (num - done) / rate)
    return jax.tree.map(lambda *parts: np.concatenate(parts), *outputs)
