"""Degradation operators y = A(x) + n for image restoration, on NHWC float batches in [-1, 1].

Each degradation is a frozen (hashable) dataclass, so it can be a static argument of ``jax.jit``:

    d = create_degradation("gaussian_blur:sigma=1.0+sr4+noise:sigma=0.02")
    keys = image_keys(seed=0, indices=jnp.arange(8))   # image i always gets the same kernel and noise
    y = jax.jit(d.apply)(x, keys)                      # (8, 64, 64, 3) -> (8, 16, 16, 3)
    x_rs = pseudo_inverse(d, y, keys, x.shape)         # A^+ y, the minimum-norm least-squares solution

``operator(x, key)`` is the noiseless part (linear in x for a fixed key), ``apply(x, key)`` adds the noise.
``key`` is one PRNG key (split into one key per image) or a (B,) array of keys, one per image. From each
image's key the kernel is drawn with ``fold_in(key, 0)`` and the noise with ``fold_in(key, 1)``, so the two
are independent and ``operator`` and ``apply`` see the same kernel; the stages of a ``Compose`` get
``fold_in(key, stage)`` first.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from edt_jax.checks import check_choice, check_int
from edt_jax.restoration.motion_kernels import motion_kernels

DEGRADATION_FORMS = ("sr<scale>", "sr:scale=<int>", "gaussian_blur:sigma=<float>[,size=<odd int>]",
                     "motion_blur:size=<odd int>,intensity=<float in [0, 1]>", "noise:sigma=<float>",
                     "<part>+<part>+...")


def image_keys(seed: int, indices: Any) -> jax.Array:
    """(B,) per-image keys ``fold_in(key(seed), index)``: image ``index`` always gets the same degradation."""
    base = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(indices, jnp.uint32))


def _per_image_keys(key: Any, batch: int) -> jax.Array:
    """One typed key, or (B,) keys, typed or raw uint32 (B, 2) -> (B,) typed keys."""
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    if key.ndim == 0:
        return jax.random.split(key, batch)
    if key.shape != (batch,):
        raise ValueError(f"got keys of shape {key.shape} for a batch of {batch} images; pass one key or ({batch},)")
    return key


def _fold(keys: jax.Array, data: int) -> jax.Array:
    return jax.vmap(lambda k: jax.random.fold_in(k, data))(keys)


def _per_image_draws(draw, keys: jax.Array) -> jax.Array:
    """``draw(key)`` for each of the (B,) keys, stacked. A sequential ``lax.map``, not ``vmap``: batched
    threefry compiles ~5x slower on CPU (2.5 s vs 0.5 s measured), and B small draws cost little."""
    return lax.map(draw, keys)


def _check_float(name: str, value: Any, low: float, high: float | None = None, *, open_low: bool = False) -> float:
    bad = isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
    if not bad:
        bad = value <= low if open_low else value < low
        bad = bad or (high is not None and value > high)
    if bad:
        bound = f"> {low}" if open_low else f">= {low}"
        bound += f" and <= {high}" if high is not None else ""
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


def _check_odd(name: str, value: Any, low: int) -> int:
    value = check_int(name, value, low)
    if value % 2 == 0:
        raise ValueError(f"{name} must be odd (the kernel is centred on the pixel), got {value}")
    return value


def _check_images(name: str, x: jax.Array) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name}: expected an NHWC batch of shape (B, H, W, C), got shape {x.shape}")


def _depthwise(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Correlate (B, H, W, C) with one (kh, kw) kernel per channel after reflect padding; same output size.

    numpy/jnp ``reflect`` (d c b | a b c d | c b a, edge not repeated) is scipy.ndimage's ``mirror`` mode.
    HIGHEST precision keeps float32 accuracy on GPUs, whose default may round convolutions to TF32.
    """
    kh, kw = kernel.shape
    x = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)), mode="reflect")
    channels = x.shape[-1]
    rhs = jnp.broadcast_to(kernel.astype(x.dtype)[:, :, None, None], (kh, kw, 1, channels))
    return lax.conv_general_dilated(x, rhs, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    feature_group_count=channels, precision=lax.Precision.HIGHEST)


def _shift_sum(x: jax.Array, kernels: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
    """Valid correlation of each image of ``x`` (B, H', W', C) with its own kernel of ``kernels`` (B, kh, kw):
    out[b, p, q] = sum_ij k[b, i, j] x[b, p + i, q + j], (B, *out_hw, C).

    Why not a convolution: per-image kernels make it a grouped conv of B*C groups (what ``vmap`` of a depthwise
    conv lowers to), which XLA's CPU backend runs slowly. For 9x9 kernels on 64 RGB 32x32 images (2 loaded CPU
    cores): forward 10 ms here, 48 ms as one grouped conv on a (1, H, W, B*C) layout, 102 ms as vmap over a
    depthwise conv; 100 damped CG iterations of the pseudo-inverse 1.5 s here (with ``MotionBlur._adjoint``),
    16 s grouped, 11.6 s vmap. Plain float32 multiply-adds: no TF32 rounding on GPUs either.
    """
    h, w = out_hw
    kh, kw = kernels.shape[1:]
    out = jnp.zeros((x.shape[0], h, w, x.shape[-1]), x.dtype)
    for i in range(kh):
        for j in range(kw):
            out = out + kernels[:, i, j, None, None, None].astype(x.dtype) * x[:, i:i + h, j:j + w, :]
    return out


class _Degradation:
    """Shared behaviour. Subclasses define ``_params(keys)`` (key-dependent parameters such as kernels, drawn
    once so the pseudo-inverse does not redraw them every CG step) and ``_forward(x, params)`` (the operator);
    ``_adjoint(z, params, x_shape)`` is ``jax.linear_transpose`` of ``_forward`` unless a subclass has a faster one."""

    name: str
    linear: ClassVar[bool] = True

    @property
    def noise_std(self) -> float:
        return 0.0

    def config(self) -> dict[str, Any]:
        """The spec as a JSON-serialisable dict, ``{"name": ..., <param>: <value>, ...}``."""
        params = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "name"}
        return {"name": self.name, **params}

    def spec(self) -> str:
        """The spec string, ``create_degradation(d.spec()) == d``."""
        params = ",".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{self.name}:{params}"

    def output_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(shape)

    def operator(self, x: jax.Array, key: Any) -> jax.Array:
        """The noiseless degradation A(x): (B, H, W, C) -> ``output_shape``; linear in x for a fixed key."""
        _check_images(self.name, x)
        return self._forward(x, self._params(_per_image_keys(key, x.shape[0])))

    def apply(self, x: jax.Array, key: Any) -> jax.Array:
        """A(x) plus this degradation's noise, drawn from keys independent of the kernel's."""
        _check_images(self.name, x)
        return self._apply_keys(x, _per_image_keys(key, x.shape[0]))

    def _params(self, keys: jax.Array) -> Any:
        return None

    def _forward(self, x: jax.Array, params: Any) -> jax.Array:
        raise NotImplementedError

    def _adjoint(self, z: jax.Array, params: Any, x_shape: tuple[int, ...]) -> jax.Array:
        """A^T z for the operator with ``params``; ``x_shape`` the operator's input shape."""
        transpose = jax.linear_transpose(lambda x: self._forward(x, params), jax.ShapeDtypeStruct(x_shape, z.dtype))
        return transpose(z)[0]

    def _apply_keys(self, x: jax.Array, keys: jax.Array) -> jax.Array:
        return self._forward(x, self._params(keys))


@dataclasses.dataclass(frozen=True)
class SuperResolution(_Degradation):
    """Antialiased bicubic down-sampling by ``scale`` (``jax.image.resize``): (B, H, W, C) -> (B, H/s, W/s, C)."""

    scale: int
    name: str = dataclasses.field(default="sr", init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", check_int("sr scale", self.scale, 2))

    def spec(self) -> str:
        return f"sr{self.scale}"

    def output_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        b, h, w, c = shape
        if h % self.scale or w % self.scale:
            raise ValueError(f"sr{self.scale}: the image size {h}x{w} is not divisible by the scale {self.scale}")
        return (b, h // self.scale, w // self.scale, c)

    def _forward(self, x: jax.Array, params: Any) -> jax.Array:
        return jax.image.resize(x, self.output_shape(x.shape), method="bicubic", antialias=True)


@dataclasses.dataclass(frozen=True)
class GaussianBlur(_Degradation):
    """Separable Gaussian blur of std ``sigma`` pixels, odd ``size`` (default 2 ceil(3 sigma) + 1), reflect
    padding, same output size. Equals ``scipy.ndimage.gaussian_filter(mode="mirror", radius=size // 2)``."""

    sigma: float
    size: int | None = None
    name: str = dataclasses.field(default="gaussian_blur", init=False, repr=False)

    def __post_init__(self) -> None:
        sigma = _check_float("gaussian_blur sigma", self.sigma, 0.0, open_low=True)
        size = 2 * math.ceil(3 * sigma) + 1 if self.size is None else self.size
        object.__setattr__(self, "sigma", sigma)
        object.__setattr__(self, "size", _check_odd("gaussian_blur size", size, 3))

    def kernel(self) -> np.ndarray:
        """The 1-D kernel, float32 (size,), summing to 1; the 2-D kernel is its outer product."""
        t = np.arange(self.size, dtype=np.float64) - self.size // 2
        k = np.exp(-0.5 * (t / self.sigma) ** 2)
        return (k / k.sum()).astype(np.float32)

    def _forward(self, x: jax.Array, params: Any) -> jax.Array:
        k = jnp.asarray(self.kernel())
        return _depthwise(_depthwise(x, k[:, None]), k[None, :])


@dataclasses.dataclass(frozen=True)
class MotionBlur(_Degradation):
    """Random camera-shake blur: one ``motion_kernel`` of odd ``size`` per image (from its key; see
    ``motion_kernels`` for the generator and what ``intensity`` means), applied as a
    true convolution (the PSF, flipped for ``lax`` correlation) with reflect padding; same output size."""

    size: int
    intensity: float = 0.5
    name: str = dataclasses.field(default="motion_blur", init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _check_odd("motion_blur size", self.size, 3))
        object.__setattr__(self, "intensity", _check_float("motion_blur intensity", self.intensity, 0.0, 1.0))

    def kernels(self, key: Any, batch: int) -> jax.Array:
        """The (B, size, size) kernels that ``operator(x, key)`` uses for a batch of ``batch`` images."""
        return self._params(_per_image_keys(key, batch))

    def _params(self, keys: jax.Array) -> jax.Array:
        return motion_kernels(_fold(keys, 0), self.size, self.intensity)

    def _forward(self, x: jax.Array, params: jax.Array) -> jax.Array:
        # A true convolution: correlate with the flipped PSF, after reflect padding (see ``_shift_sum``).
        r = self.size // 2
        padded = jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode="reflect")
        return _shift_sum(padded, params[:, ::-1, ::-1], x.shape[1:3])

    def _adjoint(self, z: jax.Array, params: jax.Array, x_shape: tuple[int, ...]) -> jax.Array:
        # Each tap scatters its weighted z back onto the padded image, then the reflect padding's adjoint
        # folds the border back in. ``linear_transpose`` of ``_forward`` gives the same within float32 rounding
        # but runs ~4x slower on XLA-CPU (kh*kw separate pads of z).
        flipped, (h, w), size = params[:, ::-1, ::-1].astype(z.dtype), z.shape[1:3], self.size
        grad = jnp.zeros((z.shape[0], h + size - 1, w + size - 1, z.shape[-1]), z.dtype)
        for i in range(size):
            for j in range(size):
                grad = grad.at[:, i:i + h, j:j + w, :].add(flipped[:, i, j, None, None, None] * z)
        return _reflect_pad_adjoint(grad, size // 2)


def _reflect_pad_adjoint(grad: jax.Array, r: int) -> jax.Array:
    """The adjoint of ``jnp.pad(x, r, mode="reflect")`` on axes 1 and 2: (B, H + 2r, W + 2r, C) -> (B, H, W, C).
    Padded row -k (k = 1..r) is a copy of row k, padded row H - 1 + k a copy of row H - 1 - k; their
    gradients are added back there (the corners by folding one axis after the other)."""
    for axis in (1, 2):
        g = jnp.moveaxis(grad, axis, 0)
        n = g.shape[0] - 2 * r
        inner = g[r:r + n].at[1:r + 1].add(g[:r][::-1]).at[n - 1 - r:n - 1].add(g[r + n:][::-1])
        grad = jnp.moveaxis(inner, 0, axis)
    return grad


@dataclasses.dataclass(frozen=True)
class GaussianNoise(_Degradation):
    """Additive white Gaussian noise of std ``sigma`` in [-1, 1] units (one 8-bit level is 2/255), drawn per
    image; the operator is the identity."""

    sigma: float
    name: str = dataclasses.field(default="noise", init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sigma", _check_float("noise sigma", self.sigma, 0.0, open_low=True))

    @property
    def noise_std(self) -> float:
        return self.sigma

    def _forward(self, x: jax.Array, params: Any) -> jax.Array:
        return x

    def _apply_keys(self, x: jax.Array, keys: jax.Array) -> jax.Array:
        noise = _per_image_draws(lambda k: jax.random.normal(k, x.shape[1:], x.dtype), _fold(keys, 1))
        return x + jnp.asarray(self.sigma, x.dtype) * noise


@dataclasses.dataclass(frozen=True)
class Compose(_Degradation):
    """The parts applied in order; operators compose, each noise is added at its stage. Nested compositions
    are flattened. ``noise_std`` is the root of the summed noise variances: the std of the noise in y when
    every noise comes after the last non-identity operator (otherwise later operators colour it)."""

    parts: tuple[_Degradation, ...]
    name: str = dataclasses.field(default="compose", init=False, repr=False)

    def __post_init__(self) -> None:
        flat = []
        for part in self.parts:
            if not isinstance(part, _Degradation):
                raise ValueError(f"Compose parts must be degradations, got {part!r}")
            flat.extend(part.parts if isinstance(part, Compose) else (part,))
        if not flat:
            raise ValueError("Compose needs at least one part")
        object.__setattr__(self, "parts", tuple(flat))

    @property
    def linear(self) -> bool:  # type: ignore[override]
        return all(p.linear for p in self.parts)

    @property
    def noise_std(self) -> float:
        return math.sqrt(sum(p.noise_std**2 for p in self.parts))

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "parts": [p.config() for p in self.parts]}

    def spec(self) -> str:
        return "+".join(p.spec() for p in self.parts)

    def output_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        for part in self.parts:
            shape = part.output_shape(shape)
        return tuple(shape)

    def _params(self, keys: jax.Array) -> tuple:
        return tuple(p._params(_fold(keys, j)) for j, p in enumerate(self.parts))

    def _forward(self, x: jax.Array, params: tuple) -> jax.Array:
        for part, p in zip(self.parts, params, strict=True):
            x = part._forward(x, p)
        return x

    def _adjoint(self, z: jax.Array, params: tuple, x_shape: tuple[int, ...]) -> jax.Array:
        shapes = [tuple(x_shape)]
        for part in self.parts[:-1]:
            shapes.append(part.output_shape(shapes[-1]))
        for part, p, shape in reversed(list(zip(self.parts, params, shapes, strict=True))):
            z = part._adjoint(z, p, shape)
        return z

    def _apply_keys(self, x: jax.Array, keys: jax.Array) -> jax.Array:
        for j, part in enumerate(self.parts):
            x = part._apply_keys(x, _fold(keys, j))
        return x


_KINDS: dict[str, tuple[type, tuple[str, ...]]] = {
    "sr": (SuperResolution, ("scale",)),
    "gaussian_blur": (GaussianBlur, ("sigma", "size")),
    "motion_blur": (MotionBlur, ("size", "intensity")),
    "noise": (GaussianNoise, ("sigma",)),
}


def _build(name: Any, params: dict[str, Any]) -> _Degradation:
    check_choice("degradation", name, tuple(_KINDS))
    cls, accepted = _KINDS[name]
    for key in params:
        check_choice(f"{name} parameter", key, accepted)
    required = [f.name for f in dataclasses.fields(cls) if f.init and f.default is dataclasses.MISSING]
    if missing := [k for k in required if k not in params]:
        raise ValueError(f"{name} needs the parameter {missing[0]!r}; its parameters are {', '.join(accepted)}")
    return cls(**params)


def _parse_value(text: str) -> Any:
    text = text.strip()
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text  # left for the parameter's check, whose message names it


def _parse_part(text: str) -> _Degradation:
    text = text.strip()
    if match := re.fullmatch(r"sr(\d+)", text):
        return SuperResolution(int(match.group(1)))
    name, _, rest = (s.strip() for s in text.partition(":"))
    params: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = (s.strip() for s in item.partition("="))
        if not eq:
            raise ValueError(f"bad degradation parameter {item!r} in {text!r}; expected <name>=<value>, one of "
                             f"the forms {', '.join(DEGRADATION_FORMS)}")
        params[key] = _parse_value(value)
    return _build(name, params)


def create_degradation(spec: str | dict[str, Any] | _Degradation) -> _Degradation:
    """The degradation named by a string (``DEGRADATION_FORMS``, parts joined by ``+``) or a ``config()`` dict.

    Raises a one-line ``ValueError`` naming the bad name, parameter or value and what is accepted.
    """
    if isinstance(spec, _Degradation):
        return spec
    if isinstance(spec, dict):
        spec = dict(spec)
        name = spec.pop("name", None)
        if name == "compose":
            check_choice("compose key", next(iter(set(spec) - {"parts"}), "parts"), ("parts",))
            return Compose(tuple(create_degradation(p) for p in spec.get("parts", ())))
        return _build(name, spec)
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"degradation spec must be a non-empty string or dict, got {spec!r}; expected one of "
                         f"the forms {', '.join(DEGRADATION_FORMS)}")
    parts = [_parse_part(p) for p in spec.split("+")]
    return parts[0] if len(parts) == 1 else Compose(tuple(parts))


def _linear_maps(degradation: _Degradation, key: Any, x_shape: Sequence[int]):
    """(A, A^T) for a fixed key, the key-dependent kernels drawn once."""
    if not degradation.linear:
        raise ValueError(f"{degradation.spec()} is not linear; the pseudo-inverse needs a linear operator")
    x_shape = tuple(x_shape)
    params = degradation._params(_per_image_keys(key, x_shape[0]))

    def forward(x):
        return degradation._forward(x, params)

    return forward, lambda z: degradation._adjoint(z, params, x_shape)


def _conjugate_gradients(matvec, b: jax.Array, iters: int, tol: float) -> jax.Array:
    """``iters`` CG steps on matvec(z) = b, one independent system per image (per-image inner products: the
    operators never mix images, so each image converges at its own rate and its result does not depend on
    the rest of the batch). Guarded divisions: a converged system (zero residual) stays put instead of
    turning into 0/0 = NaN, which a fixed iteration count would otherwise hit."""
    def dot(u, v):
        return jnp.sum(u * v, axis=tuple(range(1, u.ndim)))

    def per_image(s):
        return s.reshape((-1,) + (1,) * (b.ndim - 1))

    def safe_div(num, den):
        return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)

    stop = tol**2 * dot(b, b)

    def step(_, state):
        z, r, p, rr = state
        ap = matvec(p)
        # A converged image stops (alpha = 0): past float32's floor, more steps lose orthogonality and diverge.
        alpha = per_image(jnp.where(rr > stop, safe_div(rr, dot(p, ap)), 0.0))
        z, r = z + alpha * p, r - alpha * ap
        rr_new = jnp.where(rr > stop, dot(r, r), rr)
        return z, r, r + per_image(jnp.where(rr > stop, safe_div(rr_new, rr), 1.0)) * p, rr_new

    return lax.fori_loop(0, iters, step, (jnp.zeros_like(b), b, b, dot(b, b)))[0]


def pseudo_inverse(degradation: _Degradation, y: jax.Array, key: Any, x_shape: Sequence[int], iters: int = 50,
                   damping: float = 0.0, tol: float = 1e-7) -> jax.Array:
    """A^+ y, the minimum-norm least-squares solution of operator(x, key) = y: (B, h, w, C) -> ``x_shape``.

    Conjugate gradients on (A A^T + damping I) z = y, then x = A^T z, with A^T from ``jax.linear_transpose``;
    ``damping`` > 0 gives the Tikhonov-regularised A^T (A A^T + damping I)^-1. Each image's CG stops once its
    residual is below ``tol`` ||y_i|| (or after ``iters`` steps). Jit it with ``degradation``, ``x_shape``
    and ``iters`` static.

    Accuracy, float32 on CPU (the first two are checked in tests/test_restoration_degradations.py):

    - sr4 (and sr2) on 32x32: ||A(A^+ y) - y|| / ||y|| = 1.5e-7, the float32 floor, from 20 iterations
      on (1e-5 after 10): A A^T is well conditioned (condition ~1.5-1.8).
    - Against numpy's pinv of the explicit matrix of an 8x8 single-channel image, max |error| / max |pinv y|:
      1.3e-7 (sr2), 2.8e-7 (sr4), 7e-7 (gaussian_blur:sigma=1.0+sr2), within 20 iterations.
    - Square blurs are ill-conditioned (8x8 gaussian_blur:sigma=1.0: condition 5.5e3, so 3e7 for A A^T;
      motion_blur:size=5: 1e3): undamped CG does not reach A^+ in float32 (30-100 % error after 300
      iterations), and the exact A^+ would amplify noise by the condition number anyway. Use
      ``damping``: against the explicit A^T (A A^T + d I)^-1 y the error is 1.2e-6 (d = 1e-2, 50 iterations)
      and 4e-6 (d = 1e-3, 200 iterations). motion_blur:size=7+sr2 on 32x32 (undamped): residual 1.5e-2
      after 50 iterations, 5e-5 after 200.
    """
    forward, adjoint = _linear_maps(degradation, key, x_shape)
    return _solve(forward, adjoint, y, iters, damping, tol)


def _solve(forward, adjoint, y: jax.Array, iters: int, damping: float, tol: float) -> jax.Array:
    check_int("pseudo_inverse iters", iters, 1)
    if isinstance(damping, numbers.Real):  # may also be traced
        _check_float("pseudo_inverse damping", damping, 0.0)
    y = jnp.asarray(y, jnp.float32)
    return adjoint(_conjugate_gradients(lambda v: forward(adjoint(v)) + damping * v, y, iters, tol))


def null_space_project(degradation: _Degradation, x0: jax.Array, y: jax.Array, key: Any, iters: int = 50,
                       damping: float = 0.0, tol: float = 1e-7) -> jax.Array:
    """DDNM's range/null-space step A^+ y + (I - A^+ A) x0 = x0 + A^+ (y - A x0), for x0 of shape (B, H, W, C).

    The result agrees with y where A sees (A x = y to the pseudo-inverse's accuracy, see ``pseudo_inverse``)
    and keeps x0's null-space part. One CG solve, as A^+ is linear; the kernels are drawn once.
    """
    forward, adjoint = _linear_maps(degradation, key, x0.shape)
    return x0 + _solve(forward, adjoint, y - forward(x0), iters, damping, tol)
