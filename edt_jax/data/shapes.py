"""Procedural "coloured shape on a coloured background" dataset with discrete generative factors.

Nothing is downloaded: every image is rendered on the fly (numpy only, deterministic, no RNG) from an integer
index, like 3dshapes/dSprites. Factors, in index order (the first is the most significant mixed-radix digit):

==============  ====  ==============================================================================
factor          size  values
==============  ====  ==============================================================================
shape              3  0 square, 1 circle, 2 triangle (equilateral); also the class ``label``
object_hue         6  HSV hue 0, 60, ..., 300 deg at saturation 0.8, value 1.0 (bright, saturated)
background_hue     4  HSV hue 45, 135, 225, 315 deg at saturation 0.5, value 0.45 (dark, muted), so the
                      object always stands out from the background whatever the two hues are
scale              4  circumradius 0.11, 0.14, 0.17, 0.20 of the image side (times a per-shape factor that
                      roughly equalises areas: square 1.0, circle 0.8, triangle 1.2)
x_position         8  centre x evenly from 0.28 to 0.72 of the image side (left to right)
y_position         8  centre y evenly from 0.28 to 0.72 of the image side (top to bottom)
orientation        6  rotation 0, 15, ..., 75 deg. This lies within one symmetry period of the square (90 deg)
                      and of the triangle (120 deg), so every step changes them; the circle is rotation
                      invariant, so for circles ``orientation`` does NOT change the image.
==============  ====  ==============================================================================

That is 3 * 6 * 4 * 4 * 8 * 8 * 6 = 110,592 images. The largest shape at the extreme positions keeps a margin of
0.28 - 1.2 * 0.20 = 0.04 of the side (over one pixel at 32x32), so no shape is clipped or touches the border.

Edges are anti-aliased by 4x4 supersampling: each sub-pixel sample is tested for being inside the shape and
the hits are averaged into a coverage ``alpha`` that blends object and background colours.
"""

from __future__ import annotations

import colorsys
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

FACTOR_NAMES = ("shape", "object_hue", "background_hue", "scale", "x_position", "y_position", "orientation")
FACTOR_SIZES = (3, 6, 4, 4, 8, 8, 6)
SHAPE_NAMES = ("square", "circle", "triangle")
IMAGE_SIZES = (32, 64)

_OBJECT_HUES = tuple(h / 360.0 for h in (0, 60, 120, 180, 240, 300))
_BACKGROUND_HUES = tuple(h / 360.0 for h in (45, 135, 225, 315))
_SCALES = (0.11, 0.14, 0.17, 0.20)
_POSITIONS = tuple(np.linspace(0.28, 0.72, FACTOR_SIZES[4]).tolist())
_ORIENTATIONS_DEG = tuple(15.0 * k for k in range(FACTOR_SIZES[6]))
# Per-shape circumradius multipliers so the three shapes have roughly equal area at the same scale.
_SHAPE_RADIUS = (1.0, 0.8, 1.2)
_SUPERSAMPLE = 4

# Mixed-radix strides, first factor most significant: index = sum(factor[k] * _STRIDES[k]).
_STRIDES = np.array([int(np.prod(FACTOR_SIZES[k + 1:])) for k in range(len(FACTOR_SIZES))], dtype=np.int64)
_SIZES = np.array(FACTOR_SIZES, dtype=np.int64)
_RADIX = tuple(zip(_STRIDES.tolist(), FACTOR_SIZES, strict=True))  # (stride, size) per factor, plain ints


def _hsv(hue: float, saturation: float, value: float) -> np.ndarray:
    """RGB in [0, 1], shape (3,), float32."""
    return np.array(colorsys.hsv_to_rgb(hue, saturation, value), dtype=np.float32)


_OBJECT_RGB = np.stack([_hsv(h, 0.8, 1.0) for h in _OBJECT_HUES])  # (6, 3)
_BACKGROUND_RGB = np.stack([_hsv(h, 0.5, 0.45) for h in _BACKGROUND_HUES])  # (4, 3)
# Every pixel is a linear blend bg + alpha * (fg - bg) with alpha = hits / 16, so there are only 17 possible
# colours per (object hue, background hue) pair: precompute them, uint8 of shape (6, 4, 17, 3).
_ALPHAS = np.arange(_SUPERSAMPLE**2 + 1, dtype=np.float32)[:, None] / np.float32(_SUPERSAMPLE**2)
_PALETTE = np.rint(
    255.0 * (_BACKGROUND_RGB[None, :, None] + _ALPHAS * (_OBJECT_RGB[:, None, None] - _BACKGROUND_RGB[None, :, None]))
).astype(np.uint8)


def _edges(shape: int, radius: float, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Outward unit normals (E, 2) and offsets (E,) of a convex polygon centred at the origin, rotated by angle.

    A point p is inside iff p . n_e <= h_e for every edge e. Rotating the normals instead of the sample points
    keeps the per-sample work at one multiply-add per edge and axis.
    """
    if shape == 0:  # square: normals every 90 deg, offset = inradius = R / sqrt(2)
        normal_deg, offset = np.arange(4) * 90.0, radius / np.sqrt(2.0)
    else:  # equilateral triangle pointing up (y grows downwards), offset = inradius = R / 2
        normal_deg, offset = np.array([90.0, 210.0, 330.0]), radius / 2.0
    theta = np.deg2rad(normal_deg + angle_deg)
    normals = np.stack([np.cos(theta), np.sin(theta)], axis=-1)
    return normals.astype(np.float32), np.full(len(theta), offset, dtype=np.float32)


class ShapesDataset:
    """Random-access source (``len`` and ``[index]``) of rendered shapes, usable with grain's MapDataset.source.

    ``ds[i]`` returns ``{"image": uint8 (H, W, 3), "label": int32 scalar (shape factor), "factors": int32 (7,)}``.
    """

    factor_names: tuple[str, ...] = FACTOR_NAMES
    factor_sizes: tuple[int, ...] = FACTOR_SIZES
    num_classes: int = FACTOR_SIZES[0]

    def __init__(self, image_size: int = 32) -> None:
        if image_size not in IMAGE_SIZES:
            raise ValueError(f"ShapesDataset: image_size={image_size!r} is not supported; use one of {IMAGE_SIZES}")
        self.image_size = int(image_size)
        n = self.image_size * _SUPERSAMPLE
        # Sub-pixel sample centres in [0, 1]; x and y share one axis since images are square. Cached once per
        # dataset because it's the same for every image.
        self._samples = ((np.arange(n, dtype=np.float32) + 0.5) / n).astype(np.float32)

    def __len__(self) -> int:
        return int(np.prod(_SIZES))

    def __getitem__(self, index: Any) -> dict[str, np.ndarray]:
        i = operator.index(index)  # accepts Python and numpy ints, rejects floats
        if not 0 <= i < len(self):
            raise IndexError(f"ShapesDataset: index {i} is out of range [0, {len(self)})")
        # Plain-int mixed-radix decoding: the vectorised, validating path costs more than the render itself here.
        digits = [(i // stride) % size for stride, size in _RADIX]
        factors = np.array(digits, dtype=np.int32)
        return {"image": self._render(factors), "label": np.int32(digits[0]), "factors": factors}

    # ---- factor enumeration -------------------------------------------------------------------------------

    def index_to_factors(self, index: Any) -> np.ndarray:
        """Index, scalar or array of shape (...), -> int32 factors of shape (..., 7)."""
        idx = np.asarray(index)
        if not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"ShapesDataset: index must be an integer, got dtype {idx.dtype}")
        idx = idx.astype(np.int64)
        bad = (idx < 0) | (idx >= len(self))
        if np.any(bad):
            raise IndexError(f"ShapesDataset: index {idx[bad].flat[0]} is out of range [0, {len(self)})")
        return ((idx[..., None] // _STRIDES) % _SIZES).astype(np.int32)

    def factors_to_index(self, factors: Any) -> np.ndarray | int:
        """Factors of shape (..., 7) -> int64 index of shape (...); a single (7,) vector gives a Python int."""
        f = self._check_factors(factors)
        index = (f * _STRIDES).sum(axis=-1)
        return int(index) if index.ndim == 0 else index

    @staticmethod
    def _check_factors(factors: Any) -> np.ndarray:
        """Validate and return factors as int64 of shape (..., 7); raise ValueError naming the bad factor."""
        f = np.asarray(factors)
        if f.ndim == 0 or f.shape[-1] != len(FACTOR_NAMES):
            raise ValueError(f"ShapesDataset: factors must have shape (..., {len(FACTOR_NAMES)}), got {f.shape}")
        if not np.issubdtype(f.dtype, np.integer):
            raise ValueError(f"ShapesDataset: factors must be integers, got dtype {f.dtype}")
        f = f.astype(np.int64)
        for k, (name, size) in enumerate(zip(FACTOR_NAMES, FACTOR_SIZES, strict=True)):
            col = f[..., k]
            bad = (col < 0) | (col >= size)
            if np.any(bad):
                raise ValueError(f"ShapesDataset: factor {name!r} = {col[bad].flat[0]} is out of range [0, {size})")
        return f

    def sample_factors(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` factor vectors drawn independently and uniformly, int32 of shape (n, 7)."""
        return rng.integers(0, _SIZES, size=(int(n), len(FACTOR_SIZES))).astype(np.int32)

    # ---- rendering ----------------------------------------------------------------------------------------

    def images_for(self, factors: Any) -> np.ndarray:
        """Render factors of shape (n, 7) -> uint8 images of shape (n, H, W, 3)."""
        f = self._check_factors(factors)
        if f.ndim != 2:
            raise ValueError(f"ShapesDataset: images_for expects factors of shape (n, 7), got {f.shape}")
        out = np.empty((len(f), self.image_size, self.image_size, 3), dtype=np.uint8)
        for j, row in enumerate(f):
            out[j] = self._render(row)
        return out

    def render(self, factors: Any) -> np.ndarray:
        """Render one factor vector of shape (7,) -> uint8 image of shape (H, W, 3)."""
        f = self._check_factors(factors)
        if f.ndim != 1:
            raise ValueError(f"ShapesDataset: render expects factors of shape (7,), got {f.shape}")
        return self._render(f)

    def _hits(self, factors: np.ndarray) -> np.ndarray:
        """Number of the 4x4 sub-samples of each pixel inside the shape, uint8 in [0, 16] of shape (H, W)."""
        shape, _, _, scale, xi, yi, oi = (int(v) for v in factors)
        radius = _SCALES[scale] * _SHAPE_RADIUS[shape]
        n, s = self.image_size, _SUPERSAMPLE
        hits = np.zeros((n, n), dtype=np.uint8)
        # Only the pixels of the shape's bounding box (the circumscribed circle's) can be hit: testing just those
        # is several times faster than testing the whole image.
        cx, cy = _POSITIONS[xi], _POSITIONS[yi]
        x0, x1 = max(0, int(np.floor((cx - radius) * n))), min(n, int(np.ceil((cx + radius) * n)))
        y0, y1 = max(0, int(np.floor((cy - radius) * n))), min(n, int(np.ceil((cy + radius) * n)))
        # Sample coordinates relative to the shape centre: separable, so x only varies along columns, y along rows.
        dx = self._samples[x0 * s:x1 * s] - np.float32(cx)
        dy = self._samples[y0 * s:y1 * s] - np.float32(cy)
        if shape == 1:  # circle: inside iff |p|^2 <= r^2 (rotation invariant)
            inside = (dy[:, None] ** 2 + dx[None, :] ** 2) <= np.float32(radius**2)
        else:
            normals, offsets = _edges(shape, radius, _ORIENTATIONS_DEG[oi])
            signed = None
            for (nx, ny), h in zip(normals, offsets, strict=True):
                # Signed distance to the edge line; the maximum over edges is <= 0 exactly inside the polygon.
                d = (dy * ny)[:, None] + (dx * nx - h)[None, :]
                signed = d if signed is None else np.maximum(signed, d, out=signed)
            inside = signed <= 0
        h, w = y1 - y0, x1 - x0
        # Count the s x s sub-samples of every pixel in two cheap integer reductions (rows, then columns).
        rows = inside.view(np.uint8).reshape(h, s, w * s).sum(axis=1, dtype=np.uint8)
        hits[y0:y1, x0:x1] = rows.reshape(h, w, s).sum(axis=-1, dtype=np.uint8)
        return hits

    def _render(self, factors: np.ndarray) -> np.ndarray:
        # Blending object over background by coverage = hits / 16 is a lookup in the precomputed 17-level palette.
        return _PALETTE[factors[1], factors[2]][self._hits(factors)]


class ShapesSubset:
    """The images of a ``ShapesDataset`` whose factors take only the given values (a slice, as dSprites users
    take), e.g. ``ShapesSubset(ShapesDataset(), {"scale": (3,), "x_position": (3, 4)})``.

    Factors not named keep all their values. ``ds[i]`` is ``base[indices[i]]`` with ``indices`` in the base's
    order, so items, labels (the shape factor) and ``num_classes`` keep the base dataset's meaning.
    """

    factor_names: tuple[str, ...] = FACTOR_NAMES
    factor_sizes: tuple[int, ...] = FACTOR_SIZES
    num_classes: int = FACTOR_SIZES[0]

    def __init__(self, base: ShapesDataset, factor_values: Mapping[str, Sequence[int]]) -> None:
        allowed = [tuple(range(size)) for size in FACTOR_SIZES]
        for name, values in factor_values.items():
            if name not in FACTOR_NAMES:
                raise ValueError(f"ShapesSubset: unknown factor {name!r}; the factors are {', '.join(FACTOR_NAMES)}")
            k = FACTOR_NAMES.index(name)
            chosen = sorted({operator.index(v) for v in values})
            if not chosen or chosen[0] < 0 or chosen[-1] >= FACTOR_SIZES[k]:
                raise ValueError(f"ShapesSubset: {name}={tuple(values)!r} must be one or more values in "
                                 f"[0, {FACTOR_SIZES[k]})")
            allowed[k] = tuple(chosen)
        self.base = base
        self.image_size = base.image_size
        self.factor_values: tuple[tuple[int, ...], ...] = tuple(allowed)
        grid = np.stack(np.meshgrid(*allowed, indexing="ij"), axis=-1).reshape(-1, len(FACTOR_NAMES))
        self.indices: np.ndarray = np.asarray(base.factors_to_index(grid), dtype=np.int64)  # (N,), increasing

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: Any) -> dict[str, np.ndarray]:
        i = operator.index(index)
        if not 0 <= i < len(self):
            raise IndexError(f"ShapesSubset: index {i} is out of range [0, {len(self)})")
        return self.base[int(self.indices[i])]
