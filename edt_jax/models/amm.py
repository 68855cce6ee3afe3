"""The training-free Attention Modulation Matrix (AMM) of EDT, and its relative-position helpers.

For an n x n token grid with Euclidean grid distances d_ij, T = 4 (n - 1) sqrt(2) and

    M_ij = 0.5 exp(cos(2 pi d_ij / T)),

with every entry below the value at token pair (0, 3n - 1) (distance sqrt((n - 1)^2 + 4)) set to 0.
M multiplies the post-softmax attention weights of the configured blocks at inference; rows are not
renormalised, exactly as in the official code.
"""

from __future__ import annotations

import functools

import numpy as np


def grid_distances(n: int) -> np.ndarray:
    """(n^2, n^2) Euclidean distances between the tokens of an n x n grid (row-major), float64."""
    rows, cols = np.divmod(np.arange(n * n), n)
    return np.sqrt((rows[:, None] - rows[None]) ** 2 + (cols[:, None] - cols[None]) ** 2)


@functools.cache
def _modulation_matrix(n: int) -> np.ndarray:
    matrix = np.exp(np.cos(2 * np.pi / (4 * (n - 1) * np.sqrt(2)) * grid_distances(n))) / 2
    bound = matrix[0, 3 * n - 1]
    matrix[matrix < bound] = 0.0
    matrix.flags.writeable = False
    return matrix


def modulation_matrix(n: int) -> np.ndarray:
    """The AMM for an n x n grid, (n^2, n^2) float64 (read-only; cached).

    Needs n >= 3: the bound is taken at token 3n - 1, which must exist.
    """
    if n < 3:
        raise ValueError(f"the Attention Modulation Matrix needs a token grid of at least 3x3, got {n}x{n}")
    return _modulation_matrix(int(n))


def relative_position_index(n: int) -> np.ndarray:
    """(n^2, n^2) int index into a BEiT relative-position table of (2n - 1)^2 rows for an n x n grid."""
    rows, cols = np.divmod(np.arange(n * n), n)
    d_row = rows[:, None] - rows[None] + n - 1
    d_col = cols[:, None] - cols[None] + n - 1
    return d_row * (2 * n - 1) + d_col
