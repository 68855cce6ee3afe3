"""Does a model reproduce its training images? Nearest-training-image distances of samples, for small datasets.

    python -m benchmarks.nearest --samples /tmp/shapes_edt/samples.npz --workdir /tmp/shapes_edt

Reads the samples ``launch.sample`` wrote (``samples``: float (N, H, W, C) in [-1, 1]) and the run's training
source (``data.source`` in ``WORKDIR/config.json``, or ``--source``), renders every distinct training image
(sources of up to ``--max_images``), and prints, in RMS pixel distance on the 0-255 scale, each sample's nearest
and second-nearest training image against the closest pair of distinct training images. A sample nearer its
nearest training image than any two training images are to each other is, by eye, a copy of it; the median
distance of a training image to its nearest other training image says what "near" means for this dataset.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.bench_utils import md_table
from edt_jax.data import create_source
from edt_jax.data.pixels import to_uint8


def distinct_images(spec: str, max_images: int) -> np.ndarray:
    """The distinct images of a source as float32 (M, H*W*C) in 0-255."""
    source = create_source(spec)
    if len(source) > max_images:
        raise ValueError(f"source {spec!r} holds {len(source)} images, more than --max_images={max_images}")
    images = np.stack([np.asarray(source[i]["image"]) for i in range(len(source))])
    return np.unique(images.reshape(len(images), -1), axis=0).astype(np.float32)


def rms_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) RMS distances between rows, from the expanded square to keep memory at one matrix."""
    squared = (a**2).sum(1)[:, None] + (b**2).sum(1)[None] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(squared, 0.0) / a.shape[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", required=True, help="a launch.sample .npz")
    parser.add_argument("--workdir", help="the training run (its config.json names the data source)")
    parser.add_argument("--source", help="the training data source, instead of --workdir's")
    parser.add_argument("--max_images", type=int, default=20_000)
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    args = parser.parse_args()
    if not args.source and not args.workdir:
        parser.error("give --workdir (a launch.train run) or --source (a data source spec)")
    spec = args.source or json.loads((Path(args.workdir) / "config.json").read_text())["data"]["source"]
    with np.load(args.samples) as data:
        samples = data["samples"]
    result = nearest_distances(samples, spec, args.max_images)
    print(md_table(["", "nearest: median (p10-p90)", "second nearest: median", "closest training pair",
                    "a training image's nearest other: median", "fraction nearer than the closest pair"],
                   [[f"{len(samples)} samples vs {result['training_images']} distinct training images of `{spec}`",
                     f"{result['nearest_median']:.1f} ({result['nearest_p10']:.1f}-{result['nearest_p90']:.1f})",
                     f"{result['second_nearest_median']:.1f}", f"{result['closest_training_pair']:.1f}",
                     f"{result['training_nearest_median']:.1f}", f"{result['fraction_nearer_than_pair']:.2f}"]]))
    if args.json:
        Path(args.json).write_text(json.dumps({"source": spec, "samples": args.samples, **result}, indent=1))


def nearest_distances(samples: np.ndarray, spec: str, max_images: int) -> dict:
    """Samples (N, H, W, C) in [-1, 1] against the distinct images of source ``spec``, in RMS 0-255 distances."""
    train = distinct_images(spec, max_images)
    flat = to_uint8(samples).reshape(len(samples), -1).astype(np.float32)
    nearest = np.sort(rms_distances(flat, train), axis=1)[:, :2]
    pairs = rms_distances(train, train)
    np.fill_diagonal(pairs, np.inf)
    closest_pair = float(pairs.min())
    return {"training_images": len(train), "nearest_median": float(np.median(nearest[:, 0])),
            "nearest_p10": float(np.percentile(nearest[:, 0], 10)),
            "nearest_p90": float(np.percentile(nearest[:, 0], 90)),
            "second_nearest_median": float(np.median(nearest[:, 1])), "closest_training_pair": closest_pair,
            "training_nearest_median": float(np.median(pairs.min(axis=1))),
            "fraction_nearer_than_pair": float(np.mean(nearest[:, 0] < closest_pair))}


if __name__ == "__main__":
    main()
