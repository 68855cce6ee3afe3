"""Scores of generated images against a reference: the metrics ``launch.evaluate`` and ``Run.evaluate`` report.

    scores = compute_metrics(images, ["fd_mnist5k", "acc_mnist5k"], labels=labels)   # uint8 (N, H, W, C)

Metrics:

    fd_shapes, fd_mnist5k   Frechet distance in the features of the small classifiers shipped with the
                            package (``edt_jax.metrics.extractors``); the reference is the dataset itself, or,
                            for a run trained on a shapes slice (``shapes:<factor>=<v>,...``), that slice.
                            Works offline on a fresh machine. NOT FID: not comparable to published numbers.
    pr_shapes, pr_mnist5k   precision / recall (k = 3) in those features against as many reference images.
    acc_shapes, acc_mnist5k fraction of samples that the shipped classifier assigns to the class they were
                            generated for (the shape, or the digit): does the model follow its labels?
    fid                     FID: Inception pool3 statistics against ``reference`` (an ``.npz`` with mu/sigma,
                            e.g. the ADM evaluator's reference batches, or a data source such as ``shapes``).
    is                      Inception Score (needs the ``fc`` head of the real weights file).
    pr_inception            precision / recall in Inception pool3 features against ``reference`` images
                            (an ADM reference batch holding ``arr_0``, or a data source).
"""

from __future__ import annotations

import jax
import numpy as np

from edt_jax import data as data_lib
from edt_jax import paths
from edt_jax.batching import map_in_batches
from edt_jax.metrics import extractors
from edt_jax.metrics.frechet import FeatureStats, load_stats
from edt_jax.metrics.scores import inception_score, precision_recall

METRICS = ("fd_shapes", "fd_mnist5k", "pr_shapes", "pr_mnist5k", "acc_shapes", "acc_mnist5k", "fid", "is",
           "pr_inception")


def reference_images(spec: str, num: int, seed: int, data_dir: str | None = None) -> np.ndarray:
    """Up to ``num`` uint8 images (N, H, W, C) of a data source or of an ADM batch ``.npz`` (``arr_0``)."""
    if spec.endswith(".npz"):
        with paths.open_npz(spec) as data:
            if "arr_0" not in data.files:
                raise ValueError(f"{spec!r} holds {sorted(data.files)}, no reference images (arr_0)")
            return data["arr_0"][:num]
    source = data_lib.create_source(spec, data_dir=data_dir)
    indices = np.sort(np.random.default_rng(seed).choice(len(source), min(num, len(source)), replace=False))
    return np.stack([np.asarray(source[int(i)]["image"]) for i in indices])


class Inception:
    """The FID network and its weights, jitted in fixed-size batches; images uint8 (N, H, W, 3)."""

    def __init__(self, weights: str | None, batch_size: int = 100):
        if not weights:
            raise ValueError("fid, is and pr_inception need the Inception weights (inception_weights=, "
                             "--inception_weights): the local pt_inception-2015-12-05-6726825d.pth; nothing is "
                             "downloaded")
        from edt_jax.metrics.inception import load_fid_inception

        net, self.variables = load_fid_inception(weights)
        self.batch_size = batch_size
        self.with_logits = "fc" in self.variables["params"]
        method = "pool3_and_logits" if self.with_logits else "__call__"
        self._apply = jax.jit(lambda v, x: net.apply(v, x, method=method))

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(pool3 features (N, 2048), logits (N, 1008) or None without the fc head)."""
        if images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        out = map_in_batches(lambda chunk: self._apply(self.variables, chunk.astype(np.float32) / 255.0), images,
                             batch_size=self.batch_size, progress="Inception features" if len(images) > 5000 else None)
        return out if self.with_logits else (out, None)


def shapes_slice_images(spec: str | None, limit: int = 10_000) -> np.ndarray | None:
    """Up to ``limit`` uint8 images (N, H, W, 3) of a shapes slice source, or None for anything else (the whole
    dataset included), whose reference is the whole dataset."""
    if not spec or not spec.startswith("shapes:") or "=" not in spec:
        return None
    return reference_images(spec, limit, seed=0)


def compute_metrics(images: np.ndarray, metrics: list[str], *, labels: np.ndarray | None = None,
                    reference: str | None = None, inception_weights: str | None = None, seed: int = 0,
                    data_dir: str | None = None, shapes_source: str | None = None) -> dict:
    """The requested ``metrics`` of uint8 samples (N, H, W, C) generated for ``labels`` (N,); see the module
    docstring for the names. ``shapes_source`` is the run's data source: a shapes slice is the reference of
    fd_shapes and pr_shapes in place of the whole dataset."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; accepted: {', '.join(METRICS)}")
    results = {}
    for name in ("shapes", "mnist5k"):
        if not {f"fd_{name}", f"pr_{name}", f"acc_{name}"} & set(metrics):
            continue
        extractor = extractors.load_extractor(name)
        features = extractor.features(images)
        slice_images = shapes_slice_images(shapes_source) if name == "shapes" else None
        if slice_images is not None and {f"fd_{name}", f"pr_{name}"} & set(metrics):
            results[f"reference_{name}"] = shapes_source
        if f"fd_{name}" in metrics:
            fake = FeatureStats.from_features(features)
            real_stats = (extractor.stats(slice_images) if slice_images is not None
                          else extractors.dataset_stats(name, extractor=extractor))
            results[extractor.metric_name] = fake.frechet_distance(real_stats)
        if f"pr_{name}" in metrics:
            rng = np.random.default_rng(seed)
            if slice_images is not None:
                real_images = slice_images[np.sort(rng.choice(len(slice_images), min(len(images), len(slice_images)),
                                                              replace=False))]
            else:
                real_images = extractors.labelled_examples(name, np.sort(
                    rng.choice(extractor.spec.num_examples, len(images), replace=False)))[0]
            real = extractor.features(real_images)
            results[f"precision_{name}"], results[f"recall_{name}"] = precision_recall(real, features)
        if f"acc_{name}" in metrics:
            if labels is None:
                raise ValueError(f"acc_{name} needs the labels the samples were generated for")
            class_head = extractor.spec.heads[0][0]  # the dataset's class: shape or digit
            results[f"class_accuracy_{name}"] = float(np.mean(extractor.predict(images)[class_head] == labels))
    if not {"fid", "is", "pr_inception"} & set(metrics):
        return results
    # Fixed-size batches keep one compiled shape; small sets use their own size (no padding to 100 at 299x299).
    inception = Inception(inception_weights, batch_size=min(100, len(images)))
    if "is" in metrics and not inception.with_logits:  # before any image goes through the network
        raise ValueError("is needs the fc head of the real weights file (fc.weight, fc.bias)")
    pool3, logits = inception(images)
    real_features = None

    def reference_features() -> np.ndarray:
        nonlocal real_features
        if real_features is None:
            if not reference:
                raise ValueError("fid and pr_inception need a reference (reference=, --reference): a statistics "
                                 ".npz with mu/sigma, an ADM batch .npz with arr_0, or a data source")
            real_features = inception(reference_images(reference, len(images), seed, data_dir))[0]
        return real_features

    if "fid" in metrics:
        stats_file = False
        if reference and reference.endswith(".npz"):
            with paths.open_npz(reference) as data:
                stats_file = "mu" in data.files
        real = load_stats(reference) if stats_file else FeatureStats.from_features(reference_features())
        results["fid"] = FeatureStats.from_features(pool3).frechet_distance(real)
    if "is" in metrics:
        results["inception_score"], results["inception_score_std"] = inception_score(logits)
    if "pr_inception" in metrics:
        results["precision_inception"], results["recall_inception"] = precision_recall(reference_features(), pool3)
    return results
