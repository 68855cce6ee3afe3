"""Does a model reproduce its training images? Nearest-training-image distances of samples, for small datasets.

    python benchmarks/nearest.py --samples /tmp/shapes_edt/samples.npz --workdir /tmp/shapes_edt

Reads the samples ``launch.sample`` wrote (``samples``: float (N, H, W, C) in [-1, 1]) and the run's training
source (``data.source`` in ``WORKDIR/config.json``, or ``--source``), renders every distinct training image
(sources of up to ``--max_images``), and prints, in RMS pixel distance on the 0-255 scale, each sample's nearest
and second-nearest training image against the closest pair of distinct training images. A sample nearer its
nearest training image than any two training images are to each other is, by eye, a copy of it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # launch/ lives at the repo root
from bench_utils import md_table  # noqa: E402

from edt_jax.data import create_source  # noqa: E402
from launch.sample import to_uint8  # noqa: E402


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
    args = parser.parse_args()
    if not args.source and not args.workdir:
        parser.error("give --workdir (a launch.train run) or --source (a data source spec)")
    spec = args.source or json.loads((Path(args.workdir) / "config.json").read_text())["data"]["source"]
    train = distinct_images(spec, args.max_images)
    with np.load(args.samples) as data:
        samples = to_uint8(data["samples"]).reshape(len(data["samples"]), -1).astype(np.float32)
    nearest = np.sort(rms_distances(samples, train), axis=1)[:, :2]
    pairs = rms_distances(train, train)
    np.fill_diagonal(pairs, np.inf)
    closest_pair = float(pairs.min())
    rows = [[f"{len(samples)} samples vs {len(train)} distinct training images of `{spec}`",
             f"{np.median(nearest[:, 0]):.1f} ({np.percentile(nearest[:, 0], 10):.1f}-"
             f"{np.percentile(nearest[:, 0], 90):.1f})", f"{np.median(nearest[:, 1]):.1f}", f"{closest_pair:.1f}",
             f"{np.mean(nearest[:, 0] < closest_pair):.2f}"]]
    print(md_table(["", "nearest: median (p10-p90)", "second nearest: median", "closest training pair",
                    "fraction nearer than that pair"], rows))


if __name__ == "__main__":
    main()
