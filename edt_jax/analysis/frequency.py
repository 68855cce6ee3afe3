"""Low / high frequency bands of NHWC image batches through the centred 2-D discrete Fourier transform.

Radii are measured as a fraction of the Nyquist radius: a frequency (f_y, f_x) in cycles per pixel, each in
[-1/2, 1/2), has radius rho = sqrt(f_y^2 + f_x^2) / (1/2). rho = 0 is the mean (DC), rho = 1 a wave of period
2 pixels along one axis, and the corners of the spectrum (both axes at Nyquist, a checkerboard) reach sqrt(2).

Everything here is linear, jit-able and runs per channel on whatever device holds x.
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

MAX_RADIUS = math.sqrt(2.0)  # the corner of the spectrum, in Nyquist fractions


def _check_batch(x) -> None:
    if jnp.ndim(x) != 4:
        raise ValueError(f"x must be an NHWC batch (B, H, W, C), got shape {tuple(jnp.shape(x))}")


def _check_cutoff(cutoff) -> None:
    bad = isinstance(cutoff, bool | str) or np.ndim(cutoff) != 0
    if bad or not 0.0 <= float(cutoff) <= 1.0:  # NaN fails the comparison too
        raise ValueError(f"cutoff must be a fraction of the Nyquist radius in [0, 1], got {cutoff!r}")


def radius(height: int, width: int) -> np.ndarray:
    """(H, W) float64 radius of every DFT frequency (numpy's unshifted order) as a fraction of Nyquist."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.fftfreq(width)[None, :]
    return np.sqrt(fy**2 + fx**2) / 0.5


def split(x: jax.Array, cutoff: float) -> tuple[jax.Array, jax.Array]:
    """(low, high) of x (B, H, W, C): the ideal circular low-pass at ``cutoff`` and the rest, per channel.

    ``low`` keeps the frequencies of radius rho <= cutoff (cutoff a fraction of the Nyquist radius, in [0, 1]),
    ``high = x - low`` everything else, so ``low + high == x`` and both are real, in x's float dtype. cutoff 0
    keeps only the mean of each channel; cutoff 1 keeps the whole Nyquist disc, but never the corners of the
    spectrum (rho > 1, e.g. a checkerboard), which always count as high. ``cutoff`` may be traced.
    """
    _check_batch(x)
    if not isinstance(cutoff, jax.core.Tracer):
        _check_cutoff(cutoff)
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    mask = jnp.asarray(radius(x.shape[1], x.shape[2]), x.dtype) <= cutoff
    spectrum = jnp.fft.fft2(x, axes=(1, 2))
    low = jnp.fft.ifft2(spectrum * mask[None, :, :, None], axes=(1, 2)).real.astype(x.dtype)
    return low, x - low


def radial_bin_edges(num_bins: int) -> np.ndarray:
    """(num_bins + 1,) edges of ``radial_power``'s bands: equal widths from 0 to sqrt(2) (Nyquist fractions)."""
    return np.linspace(0.0, MAX_RADIUS, num_bins + 1)


def radial_power(x: jax.Array, num_bins: int, per_channel: bool = False) -> jax.Array:
    """Power of x (B, H, W, C) per radial frequency band: (B, num_bins), or (B, num_bins, C) with ``per_channel``.

    Band k holds the frequencies with radius in [edges[k], edges[k + 1]) of ``radial_bin_edges(num_bins)`` (the
    last band includes the corner). The DFT is orthonormal, so the bands sum to sum(x^2) (Parseval).
    """
    _check_batch(x)
    if isinstance(num_bins, bool) or not isinstance(num_bins, numbers.Integral) or num_bins < 1:
        raise ValueError(f"num_bins must be an integer >= 1, got {num_bins!r}")
    x = jnp.asarray(x)
    dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    rho = radius(x.shape[1], x.shape[2])
    band = np.minimum((rho / MAX_RADIUS * num_bins).astype(np.int64), num_bins - 1)
    onehot = jnp.asarray(np.eye(num_bins)[band], dtype)                 # (H, W, num_bins)
    power = jnp.abs(jnp.fft.fft2(x.astype(dtype), axes=(1, 2), norm="ortho")) ** 2
    per_band = jnp.einsum("bhwc,hwk->bkc", power.astype(dtype), onehot)
    return per_band if per_channel else per_band.sum(-1)
