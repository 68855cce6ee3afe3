"""Full-reference image metrics, PSNR and SSIM, per image of NHWC batches, as scikit-image 0.26 computes them.

    from edt_jax.metrics import image
    image.psnr(clean, degraded, data_range=1.0)  # (B,) dB, images in [0, 1]
    image.ssim(clean, degraded, data_range=2.0, gaussian_weights=True, use_sample_covariance=False)  # (B,), Wang et al.

Both are pure JAX and jit-able: the settings (data_range, win_size, ...) are static Python values, the images
may be traced. They compute in float32, or in float64 when jax_enable_x64 is on and an input is float64.
"""

from __future__ import annotations

import functools
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["psnr", "ssim"]

_K1, _K2 = 0.01, 0.03  # skimage's (and Wang et al.'s) stabilising constants: C1 = (K1 R)^2, C2 = (K2 R)^2
_TRUNCATE = 3.5  # skimage's SSIM truncates its Gaussian at 3.5 sigma: 11 taps at sigma 1.5, Wang et al.'s window


def _as_pair(name: str, a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Both images as arrays, checked to be NHWC batches of one shape."""
    a, b = jnp.asarray(a), jnp.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"{name}: the two image batches must have the same shape, got {a.shape} and {b.shape}")
    if a.ndim != 4:
        raise ValueError(f"{name}: expected NHWC image batches of shape (B, H, W, C), got shape {a.shape}")
    for x in (a, b):
        if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)):
            raise ValueError(f"{name}: expected real (float or integer) images, got dtype {x.dtype}")
    return a, b


def _positive(name: str, what: str, value: object, hint: str) -> float:
    """``value`` as a positive finite float; a one-line ValueError otherwise (tracers included: it must be static)."""
    try:
        number = math.nan if isinstance(value, bool) else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):  # non-numbers, arrays of several values, tracers (ConcretizationTypeError)
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name}: {what} must be a positive finite Python number ({hint}), got {value!r}")
    return number


def _compute_dtype(*xs: jax.Array) -> jnp.dtype:
    # float64 only exists when x64 is on; everything else (half floats, integers) is promoted to float32
    return jnp.dtype(jnp.float64) if any(x.dtype == jnp.float64 for x in xs) else jnp.dtype(jnp.float32)


def psnr(a: jax.Array, b: jax.Array, data_range: float) -> jax.Array:
    """Peak signal-to-noise ratio in dB of each image pair, 10 log10(data_range^2 / MSE).

    Args:
      a, b: (B, H, W, C) images (reference and test; PSNR is symmetric), any real dtype.
      data_range: max - min of the value range (1.0 for [0, 1] images, 2.0 for [-1, 1], 255 for uint8); static.

    Returns:
      (B,) float32 (float64 under x64 with float64 input) values equal to
      ``skimage.metrics.peak_signal_noise_ratio(a[i], b[i], data_range=data_range)``; +inf for identical images.
    """
    a, b = _as_pair("psnr", a, b)
    return _psnr(a, b, _positive("psnr", "data_range", data_range, "max - min of the image values, e.g. 1.0 or 2.0"))


@functools.partial(jax.jit, static_argnames=("data_range",))
def _psnr(a: jax.Array, b: jax.Array, data_range: float) -> jax.Array:
    dtype = _compute_dtype(a, b)
    mse = jnp.mean(jnp.square(a.astype(dtype) - b.astype(dtype)), axis=(1, 2, 3))
    # the constant term in Python float64, so only the MSE carries the compute dtype's rounding
    return 20 * math.log10(data_range) - 10 * jnp.log10(mse)


def ssim(
    a: jax.Array,
    b: jax.Array,
    data_range: float,
    gaussian_weights: bool = False,
    sigma: float = 1.5,
    win_size: int | None = None,
    use_sample_covariance: bool = True,
) -> jax.Array:
    """Mean structural similarity of each image pair, averaged over channels (skimage's ``channel_axis=-1``).

    Per channel: local means ux, uy, variances vx, vy and covariance vxy from a win_size x win_size uniform
    window, or with ``gaussian_weights`` a normalised Gaussian of std ``sigma`` truncated at radius
    r = int(3.5 sigma + 0.5) (win_size then defaults to 2 r + 1); borders are reflected (scipy.ndimage 'reflect').
    The variances are scaled by N / (N - 1), N = win_size^2, when ``use_sample_covariance``. The map
    (2 ux uy + C1)(2 vxy + C2) / ((ux^2 + uy^2 + C1)(vx + vy + C2)), C1 = (0.01 R)^2, C2 = (0.03 R)^2, is
    averaged over the pixels at least (win_size - 1) // 2 from every border.

    Args:
      a, b: (B, H, W, C) images with H, W >= win_size, any real dtype.
      data_range: R, max - min of the value range (1.0 for [0, 1] images, 2.0 for [-1, 1]); static.
      gaussian_weights: Gaussian instead of uniform window (Wang et al.: True, sigma 1.5, no sample covariance).
      sigma: std of the Gaussian window in pixels.
      win_size: odd window side >= 3; default 7, or 2 r + 1 with gaussian_weights. As in skimage, an explicit
        win_size with gaussian_weights sets only N and the border crop; the Gaussian's extent comes from sigma.
      use_sample_covariance: normalise by N - 1 instead of N.

    Returns:
      (B,) float32 (float64 under x64 with float64 input) values equal to ``skimage.metrics.structural_similarity(
      a[i], b[i], data_range=..., channel_axis=-1, gaussian_weights=..., sigma=..., win_size=...,
      use_sample_covariance=...)``.
    """
    a, b = _as_pair("ssim", a, b)
    data_range = _positive("ssim", "data_range", data_range, "max - min of the image values, e.g. 1.0 or 2.0")
    sigma = _positive("ssim", "sigma", sigma, "the Gaussian window's standard deviation in pixels, e.g. 1.5")
    if win_size is None:
        # skimage's defaults: 7 (backwards compatibility), or the Gaussian's own support, radius as in scipy.ndimage
        win_size = 2 * int(_TRUNCATE * sigma + 0.5) + 1 if gaussian_weights else 7
        if win_size < 3:
            raise ValueError(f"ssim: sigma={sigma!r} gives a {win_size}-pixel Gaussian window (2 int(3.5 sigma + 0.5)"
                             " + 1); use sigma >= 1/7 or pass an odd win_size >= 3")
    elif isinstance(win_size, bool) or not isinstance(win_size, numbers.Integral) or win_size < 3 or win_size % 2 == 0:
        raise ValueError(f"ssim: win_size must be an odd integer >= 3 (or None for the default), got {win_size!r}")
    height, width = a.shape[1:3]
    if min(height, width) < win_size:
        raise ValueError(f"ssim: images of {height}x{width} pixels are smaller than the {win_size}x{win_size} window;"
                         f" pass an odd win_size <= {min(height, width)} (and >= 3) or use larger images")
    return _ssim(a, b, data_range, bool(gaussian_weights), sigma, int(win_size), bool(use_sample_covariance))


def _reflect_indices(n: int, radius: int) -> np.ndarray:
    """Indices of an axis of length n extended by ``radius`` on both sides the way scipy.ndimage mode 'reflect'
    does (d c b a | a b c d | d c b a): the extension is 2n-periodic, so this also holds for radius > n."""
    i = np.arange(-radius, n + radius) % (2 * n)
    return np.where(i < n, i, 2 * n - 1 - i)


def _filter_axis(x: jax.Array, taps: np.ndarray, axis: int) -> jax.Array:
    """Correlate ``x`` along ``axis`` with the symmetric ``taps``, reflect borders, same size out.

    A sum of shifted slices rather than lax.conv: exact elementwise float arithmetic on every backend (GPU
    convolutions may run in TF32), and the windows are a few taps wide.
    """
    n, radius = x.shape[axis], (len(taps) - 1) // 2
    padded = jnp.take(x, _reflect_indices(n, radius), axis=axis)
    out = jnp.zeros_like(x)
    for k, weight in enumerate(taps):
        out = out + float(weight) * jax.lax.slice_in_dim(padded, k, k + n, axis=axis)
    return out


@functools.partial(
    jax.jit, static_argnames=("data_range", "gaussian_weights", "sigma", "win_size", "use_sample_covariance")
)
def _ssim(
    a: jax.Array,
    b: jax.Array,
    data_range: float,
    gaussian_weights: bool,
    sigma: float,
    win_size: int,
    use_sample_covariance: bool,
) -> jax.Array:
    dtype = _compute_dtype(a, b)
    x, y = a.astype(dtype), b.astype(dtype)
    if gaussian_weights:
        # scipy.ndimage.gaussian_filter's kernel; its radius comes from sigma even when win_size was given
        radius = int(_TRUNCATE * sigma + 0.5)
        taps = np.exp(-0.5 / (sigma * sigma) * np.arange(-radius, radius + 1) ** 2)
        taps /= taps.sum()
    else:
        taps = np.full(win_size, 1.0 / win_size)
    # E[x^2] - E[x]^2 cancels badly in float32 on bright flat regions; variances and covariance are invariant to
    # shifting x and y by constants, so filter images centred on their per-image, per-channel means. The means
    # themselves are not shift-invariant in the luminance term: the centre is added back to them below.
    mx, my = x.mean(axis=(1, 2), keepdims=True), y.mean(axis=(1, 2), keepdims=True)
    xc, yc = x - mx, y - my
    maps = jnp.stack([xc, yc, xc * xc, yc * yc, xc * yc])  # (5, B, H, W, C): one separable pass for all five
    ux, uy, uxx, uyy, uxy = _filter_axis(_filter_axis(maps, taps, axis=2), taps, axis=3)
    n = win_size**2  # skimage uses win_size, not the Gaussian's extent, for N (and the crop)
    cov_norm = n / (n - 1) if use_sample_covariance else 1.0
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    ux, uy = ux + mx, uy + my
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    s = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = (win_size - 1) // 2  # the filter's border strip is left out of the mean
    s = s[:, pad : s.shape[1] - pad, pad : s.shape[2] - pad, :]
    # every channel keeps the same number of pixels, so the mean of the channel means is this plain mean
    return s.mean(axis=(1, 2, 3))
