"""Datasets with discrete factor labels as disentanglement_lib ``GroundTruthData`` for the disentanglement metrics.

    from edt_jax.data.ground_truth import ground_truth_for
    gt = ground_truth_for("shapes")                    # or shapes:64, shapes:scale=3, tfds:shapes3d, tfds:dsprites
    gt = ground_truth_for(SHAPES_HUE_POSITION)         # 3 factors (object_hue, x_position, y_position), 384 images
    dis.mig(gt, lambda images: encode(images), np.random.RandomState(0))
    gt = ground_truth_for("shapes", indices=True)      # observations are dataset indices, int64 (n,)
    table = encode_all(gt.observations_at(np.arange(gt.num_items)))   # codes of every item, once
    dis.mig(gt, lambda idx: table[idx], np.random.RandomState(0))     # the same numbers, much faster

Every adapter draws as disentanglement_lib's ``SplitDiscreteStateSpace`` (Shapes3D): ``sample_factors(num, rs)``
is int64 (num, F) with column i = ``rs.randint(factors_num_values[i], size=num)``, in factor order, and
``sample_observations_from_factors`` draws nothing. Observations are float32 NHWC images in [-1, 1] (the
pipeline's ``Preprocess`` scaling), or with ``indices=True`` the int64 indices of the items in the source, which
is what DisDiff's ``evaluate.py`` does (its ground-truth "images" are ``np.arange(N)`` indexing a code table).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from edt_jax.data.pixels import to_model_range  # noqa: F401 (re-exported)
from edt_jax.data.shapes import FACTOR_NAMES, ShapesDataset, ShapesSubset
from edt_jax.data.sources import create_source
from edt_jax.data.tfds_source import open_tfds

__all__ = ["DSPRITES_FACTORS", "SHAPES3D_FACTORS", "GROUND_TRUTH_FORMS", "SHAPES_HUE_POSITION", "LabelledGroundTruth",
           "ShapesGroundTruth", "ground_truth_for", "to_model_range"]

# TFDS feature keys and sizes of the factors, in disentanglement_lib's (and DisDiff's) factor order.
SHAPES3D_FACTORS = (("label_floor_hue", 10), ("label_wall_hue", 10), ("label_object_hue", 10), ("label_scale", 8),
                    ("label_shape", 4), ("label_orientation", 15))
# dSprites' colour takes one value, so it is no latent factor (disentanglement_lib drops it too).
DSPRITES_FACTORS = (("label_shape", 3), ("label_scale", 6), ("label_orientation", 40), ("label_x_position", 32),
                    ("label_y_position", 32))
_TFDS_FACTORS = {"shapes3d": SHAPES3D_FACTORS, "dsprites": DSPRITES_FACTORS}
_TFDS_PIXEL_MAX = {"dsprites": 1}  # TFDS stores dSprites' pixels as 0/1, everything else as 0..255
# A 3-factor slice of shapes (object_hue 6 x x_position 8 x y_position 8 = 384 images at 32x32): the square at
# scale 3, orientation 0, on background hue 0. Small enough for an exact closed-form DPM and a CPU budget, with
# factors of two kinds (a colour, two positions) that no pixel change mixes.
SHAPES_HUE_POSITION = "shapes:shape=0,background_hue=0,scale=3,orientation=0"
GROUND_TRUTH_FORMS = ("shapes[:64][:<factor>=<v>[+<v>...],...]", "tfds:shapes3d[:<split>]", "tfds:dsprites[:<split>]",
                      "tfds:<name>[:<split>] with factor_keys")


class _DiscreteGroundTruth:
    """Shared part: factor sampling, factor checks, index or image observations.

    Subclasses set ``factor_names``, ``factor_sizes`` and implement ``factors_to_index`` and ``observations_at``.
    """

    factor_names: tuple[str, ...]
    factor_sizes: tuple[int, ...]
    indices: bool

    @property
    def num_factors(self) -> int:
        return len(self.factor_sizes)

    @property
    def factors_num_values(self) -> list[int]:
        return list(self.factor_sizes)

    def sample_factors(self, num: int, random_state: np.random.RandomState) -> np.ndarray:
        """int64 (num, F): column i = ``random_state.randint(factor_sizes[i], size=num)``, in factor order."""
        if isinstance(num, bool) or not isinstance(num, numbers.Integral) or num < 0:
            raise ValueError(f"{type(self).__name__}: num must be a non-negative integer, got {num!r}")
        factors = np.zeros((int(num), self.num_factors), dtype=np.int64)
        for i, size in enumerate(self.factor_sizes):
            factors[:, i] = random_state.randint(size, size=int(num))
        return factors

    def sample_observations_from_factors(self, factors: Any, random_state: np.random.RandomState) -> np.ndarray:
        """Factors (n, F) -> int64 item indices (n,) in index mode, else float32 images (n, H, W, C) in [-1, 1].
        Draws nothing from ``random_state`` (every factor is latent)."""
        del random_state
        index = self.factors_to_index(factors)
        return index if self.indices else self.observations_at(index)

    def sample(self, num: int, random_state: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
        factors = self.sample_factors(num, random_state)
        return factors, self.sample_observations_from_factors(factors, random_state)

    def sample_observations(self, num: int, random_state: np.random.RandomState) -> np.ndarray:
        return self.sample(num, random_state)[1]

    def _check_factors(self, factors: Any) -> np.ndarray:
        """(n, F) integer factors within their sizes as int64, or a one-line ValueError naming the bad one."""
        f = np.asarray(factors)
        name = type(self).__name__
        if f.ndim != 2 or f.shape[1] != self.num_factors or not np.issubdtype(f.dtype, np.integer):
            raise ValueError(f"{name}: factors must be integers of shape (n, {self.num_factors}), got {f.dtype} "
                             f"{f.shape}")
        for k, size in enumerate(self.factor_sizes):
            bad = (f[:, k] < 0) | (f[:, k] >= size)
            if np.any(bad):
                raise ValueError(f"{name}: factor {self.factor_names[k]!r} = {f[bad, k][0]} is out of range "
                                 f"[0, {size})")
        return f.astype(np.int64)

    def _check_index(self, index: Any) -> np.ndarray:
        idx = np.asarray(index)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"{type(self).__name__}: indices must be a 1-D integer array, got {idx.dtype} "
                             f"{idx.shape}")
        bad = (idx < 0) | (idx >= self.num_items)
        if np.any(bad):
            raise ValueError(f"{type(self).__name__}: index {idx[bad][0]} is out of range [0, {self.num_items})")
        return idx.astype(np.int64)

    @property
    def observation_shape(self) -> list[int]:
        """[H, W, C] of the images, [] (scalars) in index mode."""
        return [] if self.indices else list(self.observations_at(np.zeros(1, np.int64)).shape[1:])

    num_items: int

    def factors_to_index(self, factors: Any) -> np.ndarray:
        raise NotImplementedError

    def observations_at(self, index: Any) -> np.ndarray:
        raise NotImplementedError


class ShapesGroundTruth(_DiscreteGroundTruth):
    """The procedural ``shapes`` dataset (``ShapesDataset``, or a ``ShapesSubset`` slice) as ground-truth data.

    The full dataset has the 7 factors of ``edt_jax.data.shapes`` (sizes 3, 6, 4, 4, 8, 8, 6). For a subset,
    the factors that take several values are the latent factors, value v of factor k meaning the subset's v-th
    allowed value; factors fixed to one value are no factors (like dSprites' colour). Index mode gives the
    positions of the items in ``source`` (``num_items`` = ``len(source)``), images are rendered on demand.
    """

    def __init__(self, source: ShapesDataset | ShapesSubset | None = None, *, indices: bool = False) -> None:
        self.source = ShapesDataset() if source is None else source
        self.indices = bool(indices)
        if isinstance(self.source, ShapesSubset):
            self._base, allowed = self.source.base, self.source.factor_values
        elif isinstance(self.source, ShapesDataset):
            self._base, allowed = self.source, tuple(tuple(range(n)) for n in self.source.factor_sizes)
        else:
            raise ValueError(f"ShapesGroundTruth: source must be a ShapesDataset or ShapesSubset, got "
                             f"{type(self.source).__name__}")
        self._latent = [k for k, values in enumerate(allowed) if len(values) > 1]
        if not self._latent:
            raise ValueError("ShapesGroundTruth: the subset fixes every factor to one value; the metrics need at "
                             "least one factor that varies")
        self._values = [np.asarray(v, dtype=np.int64) for v in allowed]
        self.factor_names = tuple(FACTOR_NAMES[k] for k in self._latent)
        self.factor_sizes = tuple(len(allowed[k]) for k in self._latent)
        self.num_items = len(self.source)

    def _base_factors(self, factors: Any) -> np.ndarray:
        """Latent factors (n, F) -> the base dataset's 7 factors (n, 7), fixed factors filled in."""
        f = self._check_factors(factors)
        full = np.tile(np.array([v[0] for v in self._values], dtype=np.int64), (len(f), 1))
        for pos, k in enumerate(self._latent):
            full[:, k] = self._values[k][f[:, pos]]
        return full

    def factors_to_index(self, factors: Any) -> np.ndarray:
        """Latent factors (n, F) -> int64 (n,) positions in ``source``."""
        index = np.asarray(self._base.factors_to_index(self._base_factors(factors)), dtype=np.int64).reshape(-1)
        if isinstance(self.source, ShapesSubset):  # subset indices are increasing base indices
            index = np.searchsorted(self.source.indices, index)
        return index

    def observations_at(self, index: Any) -> np.ndarray:
        """Positions (n,) in ``source`` -> float32 images (n, H, W, 3) in [-1, 1], rendered."""
        idx = self._check_index(index)
        base_idx = self.source.indices[idx] if isinstance(self.source, ShapesSubset) else idx
        return to_model_range(self._base.images_for(self._base.index_to_factors(base_idx)))


class LabelledGroundTruth(_DiscreteGroundTruth):
    """A random-access source whose items carry integer factor labels (e.g. TFDS shapes3d / dsprites).

    Args:
      source: ``len(source)``, ``source[i]`` -> dict with ``image_key`` and the ``factor_keys`` entries.
      factor_keys: the label keys, in factor order.
      factor_sizes: values per factor; None takes ``max + 1`` of the labels.
      labels: int (len(source), F) labels if known; None scans ``source`` once (for TFDS this decodes every
        image: minutes for shapes3d's 480,000).
      image_key, pixel_max: where the images are and their maximum value (1 for TFDS dsprites).
      indices: observations are item indices instead of images.

    Every combination of the factor values must occur (the first item with it is used), else a ValueError.
    """

    def __init__(self, source: Sequence[dict[str, Any]], factor_keys: Sequence[str],
                 factor_sizes: Sequence[int] | None = None, *, labels: Any = None, image_key: str = "image",
                 pixel_max: float = 255, indices: bool = False) -> None:
        self.source, self.image_key, self.pixel_max = source, image_key, pixel_max
        self.indices = bool(indices)
        self.factor_names = tuple(factor_keys)
        if not self.factor_names:
            raise ValueError("LabelledGroundTruth: factor_keys must name at least one label key")
        self.num_items = len(source)
        if labels is None:
            labels = [[source[i][key] for key in self.factor_names] for i in range(self.num_items)]
        lab = np.asarray(labels)
        if lab.shape != (self.num_items, len(self.factor_names)) or not np.issubdtype(lab.dtype, np.integer):
            raise ValueError(f"LabelledGroundTruth: labels must be integers of shape ({self.num_items}, "
                             f"{len(self.factor_names)}), got {lab.dtype} {lab.shape}")
        if self.num_items == 0:
            raise ValueError("LabelledGroundTruth: the source is empty")
        sizes = lab.max(axis=0) + 1 if factor_sizes is None else np.asarray(factor_sizes, dtype=np.int64)
        if sizes.shape != (len(self.factor_names),) or np.any(sizes < 1):
            raise ValueError(f"LabelledGroundTruth: factor_sizes must be {len(self.factor_names)} positive sizes, "
                             f"got {factor_sizes!r}")
        self.factor_sizes = tuple(int(n) for n in sizes)
        lab = self._check_factors(lab)
        # One scan builds the (prod of sizes,) table from factor tuple to the first item that has it.
        flat = np.ravel_multi_index(tuple(lab.T), self.factor_sizes)
        self._lookup = np.full(int(np.prod(sizes)), -1, dtype=np.int64)
        self._lookup[flat[::-1]] = np.arange(self.num_items, dtype=np.int64)[::-1]
        missing = np.flatnonzero(self._lookup < 0)
        if len(missing):
            combo = ", ".join(f"{k}={v}" for k, v in zip(self.factor_names,
                                                         np.unravel_index(missing[0], self.factor_sizes),
                                                         strict=True))
            raise ValueError(f"LabelledGroundTruth: no item has the factors ({combo}) ({len(missing)} of "
                             f"{len(self._lookup)} combinations missing); the metrics need every combination")

    def factors_to_index(self, factors: Any) -> np.ndarray:
        """Factors (n, F) -> int64 (n,) index of the first item with them."""
        return self._lookup[np.ravel_multi_index(tuple(self._check_factors(factors).T), self.factor_sizes)]

    def observations_at(self, index: Any) -> np.ndarray:
        """Item indices (n,) -> float32 images (n, H, W, C) in [-1, 1]."""
        idx = self._check_index(index)
        return to_model_range(np.stack([np.asarray(self.source[int(i)][self.image_key]) for i in idx]),
                              self.pixel_max)


def ground_truth_for(source_spec: str, *, data_dir: str | None = None, split: str = "train", indices: bool = False,
                     factor_keys: Sequence[str] | None = None) -> ShapesGroundTruth | LabelledGroundTruth:
    """The ground-truth adapter of a data source spec with factor labels (``GROUND_TRUTH_FORMS``).

    ``shapes...`` is rendered on demand; ``tfds:`` datasets must be prepared in ``data_dir`` (nothing is
    downloaded; see ``open_tfds``) and are scanned once for their labels. ``factor_keys`` names the label keys of
    another TFDS dataset (or overrides the known ones). Other sources (mnist5k, photos, folder:) have no factor
    labels: ValueError.
    """
    kind, _, rest = source_spec.partition(":")
    if kind == "shapes":
        return ShapesGroundTruth(create_source(source_spec), indices=indices)
    if kind == "tfds" and rest:
        name, _, tfds_split = rest.partition(":")
        base = name.split("/")[0]
        known = _TFDS_FACTORS.get(base)
        if factor_keys is None and known is None:
            raise ValueError(f"ground_truth_for: no factor labels known for {source_spec!r}; pass factor_keys=... or "
                             f"use one of {', '.join(GROUND_TRUTH_FORMS)}")
        keys = tuple(factor_keys) if factor_keys is not None else tuple(k for k, _ in known)
        sizes = [n for _, n in known] if factor_keys is None else None
        source = open_tfds(name, split=tfds_split or split, data_dir=data_dir)
        return LabelledGroundTruth(source, keys, sizes, pixel_max=_TFDS_PIXEL_MAX.get(base, 255), indices=indices)
    raise ValueError(f"ground_truth_for: data source {source_spec!r} has no factor labels; the disentanglement "
                     f"metrics accept {', '.join(GROUND_TRUTH_FORMS)}")
