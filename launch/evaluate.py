"""Evaluate a training run: generate N samples with a chosen sampler and measure them against a reference.

    python -m launch.evaluate --workdir /tmp/shapes_edt --num_samples 2000 --sampler unipc --steps 10 \\
        --metrics fd_shapes,pr_shapes
    python -m launch.evaluate --workdir DIR --num_samples 50000 --guidance_scale 1.5 --vae ~/sd-vae-ft-ema \\
        --metrics fid,is,pr_inception --inception_weights ~/pt_inception-2015-12-05-6726825d.pth \\
        --reference ~/VIRTUAL_imagenet256_labeled.npz --save_samples DIR/samples_50k.npz

Metrics (``--metrics``, comma-separated):

    fd_shapes, fd_mnist5k   Frechet distance in the features of the small classifiers shipped with the
                            package (``edt_jax.metrics.extractors``); the reference is the dataset itself, or,
                            for a run trained on a shapes slice (``shapes:<factor>=<v>,...``), that slice.
                            Works offline on a fresh machine. NOT FID: not comparable to published numbers.
    pr_shapes, pr_mnist5k   precision / recall (k = 3) in those features against as many reference images.
    acc_shapes, acc_mnist5k fraction of samples that the shipped classifier assigns to the class they were
                            generated for (the shape, or the digit): does the model follow its labels?
    fid                     FID: Inception pool3 statistics against ``--reference`` (an ``.npz`` with mu/sigma,
                            e.g. the ADM evaluator's reference batches, or a data source such as ``shapes``).
    is                      Inception Score (needs the ``fc`` head of the real weights file).
    pr_inception            precision / recall in Inception pool3 features against ``--reference`` images
                            (an ADM reference batch holding ``arr_0``, or a data source).

Sampling flags are those of ``launch.sample`` (``--sampler --steps --order --variant --skip_type --algorithm
--guidance_scale --guided_fraction --guidance_after --guidance_interval --amm --use_ema --labels --seed --step
--vae``). Writes a JSON report (``--report``, default
``WORKDIR/eval_<sampler>_<steps>.json``) and optionally the samples in the ADM evaluator's ``.npz`` layout.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import jax
import numpy as np
from absl import app, flags, logging

from edt_jax import data as data_lib
from edt_jax.metrics import extractors
from edt_jax.metrics.frechet import FeatureStats, load_stats
from edt_jax.metrics.scores import inception_score, precision_recall
from launch import builders
from launch import sample as sample_lib  # defines the sampling flags shared with launch.sample

METRICS = ("fd_shapes", "fd_mnist5k", "pr_shapes", "pr_mnist5k", "acc_shapes", "acc_mnist5k", "fid", "is",
           "pr_inception")
builders.define_flag(flags.DEFINE_list, "metrics", ["fd_shapes"], f"metrics to compute: {', '.join(METRICS)}")
builders.define_flag(flags.DEFINE_integer, "batch_size", 256,
                     "samples generated per sampler call (split over the devices)")
builders.define_flag(flags.DEFINE_string, "reference", None,
                     "FID / pr_inception reference: statistics or ADM batch .npz, or a data source (shapes, "
                     "mnist5k, tfds:<name>, folder:<dir>)")
builders.define_flag(flags.DEFINE_string, "inception_weights", None,
                     "local pt_inception-2015-12-05-6726825d.pth (or .npz) for fid/is")
builders.define_flag(flags.DEFINE_string, "report", None,
                     "JSON report path (default WORKDIR/eval_<sampler>_<steps>.json)")
builders.define_flag(flags.DEFINE_string, "save_samples", None,
                     "also write the samples as an ADM-evaluator .npz (arr_0 uint8, arr_1 labels)")


def generate_samples(run, num: int, batch_size: int, *, labels: np.ndarray | None, seed: int, vae=None,
                     **sampling) -> tuple[np.ndarray, np.ndarray]:
    """``num`` uint8 images (N, H, W, C) and their labels (N,), in batches of ``batch_size`` with progress.

    ``run`` is (config, model, diffusion, params, mesh) of a loaded run; ``sampling`` holds
    ``sample.make_generator``'s keyword arguments. Every batch has the same shape (the last one is padded),
    so the sampler compiles once.
    """
    config, model, diffusion, params, mesh = run
    rng = np.random.default_rng(seed)
    if labels is None:
        labels = rng.integers(0, model.num_classes, num)
    labels = np.resize(labels, num)
    sampling.setdefault("prediction", config.loss.prediction)
    generate_batch = sample_lib.make_generator(model, diffusion, mesh=mesh, **sampling)
    decode = sample_lib.make_decoder(*vae, mesh) if vae is not None else None
    return sample_in_batches(generate_batch, params, labels, batch_size, seed, mesh, decode=decode), labels


def sample_in_batches(generate_batch, params, labels: np.ndarray, batch_size: int, seed: int, mesh, *,
                      decode=None, **call_kwargs) -> np.ndarray:
    """uint8 images (N, H, W, C) for ``labels`` (N, ...) from ``make_generator``'s ``generate_batch`` (given
    ``call_kwargs``), in batches of ``batch_size`` rounded up to the devices, the last one padded; batch i draws
    its noise from (seed, i), so the same seed gives the same noise whatever the guidance. Logs progress."""
    num = len(labels)
    devices = mesh.shape["data"] * mesh.shape["fsdp"]
    batch_size = -(-batch_size // devices) * devices
    images, start = [], time.time()
    for i, first in enumerate(range(0, num, batch_size)):
        batch = np.take(labels, np.arange(first, first + batch_size) % num, axis=0)
        x = generate_batch(params, batch, int(np.random.default_rng([seed, i]).integers(2**31)), **call_kwargs)
        if decode is not None:
            x = decode(x)
        images.append(sample_lib.to_uint8(x[:min(batch_size, num - first)]))
        done = first + len(images[-1])
        rate = done / (time.time() - start)
        logging.info("generated %d / %d samples (%.1f img/s, ETA %.0f s)", done, num, rate, (num - done) / rate)
    return np.concatenate(images)


def reference_images(spec: str, num: int, seed: int, data_dir: str | None = None) -> np.ndarray:
    """Up to ``num`` uint8 images (N, H, W, C) of a data source or of an ADM batch ``.npz`` (``arr_0``)."""
    if spec.endswith(".npz"):
        with np.load(Path(spec).expanduser(), allow_pickle=False) as data:
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
            raise ValueError("fid, is and pr_inception need --inception_weights (the local "
                             "pt_inception-2015-12-05-6726825d.pth; nothing is downloaded)")
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
        pools, logits = [], []
        for first in range(0, len(images), self.batch_size):
            chunk = images[first:first + self.batch_size].astype(np.float32) / 255.0
            padded = np.pad(chunk, ((0, self.batch_size - len(chunk)), (0, 0), (0, 0), (0, 0)))
            out = self._apply(self.variables, padded)
            pool, logit = out if self.with_logits else (out, None)
            pools.append(np.asarray(pool)[:len(chunk)])
            if logit is not None:
                logits.append(np.asarray(logit)[:len(chunk)])
        return np.concatenate(pools), (np.concatenate(logits) if logits else None)


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
    pool3, logits = inception(images)
    real_features = None

    def reference_features() -> np.ndarray:
        nonlocal real_features
        if real_features is None:
            if not reference:
                raise ValueError("fid and pr_inception need --reference (a statistics .npz with mu/sigma, an ADM "
                                 "batch .npz with arr_0, or a data source)")
            real_features = inception(reference_images(reference, len(images), seed, data_dir))[0]
        return real_features

    if "fid" in metrics:
        stats_file = reference and reference.endswith(".npz") and "mu" in np.load(Path(reference).expanduser()).files
        real = load_stats(Path(reference).expanduser()) if stats_file else FeatureStats.from_features(
            reference_features())
        results["fid"] = FeatureStats.from_features(pool3).frechet_distance(real)
    if "is" in metrics:
        if logits is None:
            raise ValueError("is needs the fc head of the real weights file (fc.weight, fc.bias)")
        results["inception_score"], results["inception_score_std"] = inception_score(logits)
    if "pr_inception" in metrics:
        results["precision_inception"], results["recall_inception"] = precision_recall(reference_features(), pool3)
    return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    builders.quiet_library_logs()
    f = flags.FLAGS
    workdir = Path(f.workdir)
    try:
        config, model, diffusion, state, step, mesh = sample_lib.load_run(workdir, f.step)
        sampling = sample_lib.sampling_options(config, diffusion)
        use_ema, num = sample_lib.option("use_ema", config), sample_lib.option("num_samples", config)
        vae = builders.build_vae(config, f.vae) if model.in_channels not in (1, 3) else None
        labels = np.array([int(v) for v in f.labels.split(",")]) if f.labels else None
        start = time.time()
        images, labels = generate_samples((config, model, diffusion, state.ema_params if use_ema else state.params,
                                           mesh), num, f.batch_size, labels=labels, seed=f.seed, vae=vae, **sampling)
        generation_s = time.time() - start
        start = time.time()
        results = compute_metrics(images, list(f.metrics), labels=labels, reference=f.reference,
                                  inception_weights=f.inception_weights, seed=f.seed,
                                  shapes_source=config.data.get("source"))
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    sampling["guidance_scale"] = np.asarray(sampling["guidance_scale"]).tolist()  # per-call arrays as lists
    report = dict(workdir=str(workdir), step=int(step), num_samples=int(num), seed=f.seed, use_ema=bool(use_ema),
                  **sampling, metrics=results, seconds=dict(generation=round(generation_s, 1),
                                                            metrics=round(time.time() - start, 1)))
    output = Path(f.report) if f.report else workdir / f"eval_{sampling['sampler']}_{sampling['steps']}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    if f.save_samples:
        np.savez(f.save_samples, arr_0=images, arr_1=labels)
    logging.info("%s: %s", output, json.dumps(results))
    print(json.dumps(report))


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir"])
    app.run(main)
