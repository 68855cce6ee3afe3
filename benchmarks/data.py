"""Input-pipeline throughput: images/s of each source's grain pipeline at a given batch size.

Run from the repository root:

    python -m benchmarks.data                                   # shapes, mnist5k, a generated folder
    python -m benchmarks.data --sources tfds:cifar10 --data_dir ~/tensorflow_datasets

The folder source is a generated folder of ``--folder_images`` random 64x64 PNGs in 10 classes,
built once into an ArrayRecord TFDS dataset (build time reported separately) and read back with
the ADM centre crop to ``--image_size``. Writes ``benchmarks/results/data_cpu.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.bench_utils import command_line, machine_info, md_table, write_results
from edt_jax.data.pipeline import create_dataset
from edt_jax.data.sources import create_source


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sources", default="shapes,shapes:64,mnist5k,folder", help="comma-separated source specs")
    p.add_argument("--data_dir", default=None, help="TFDS data_dir for tfds: sources")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--batches", type=int, default=20, help="timed batches after 2 warm-up batches")
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--threads", default="1,2,4", help="comma-separated reader thread counts to compare")
    p.add_argument("--workers", default="2", help="comma-separated worker-process counts to compare (1 thread each)")
    p.add_argument("--folder_images", type=int, default=2000)
    p.add_argument("--out_dir", default="benchmarks/results")
    return p.parse_args()


def make_folder(root: Path, count: int) -> Path:
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / "images" / f"class_{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i:06d}.png")
    return root / "images"


def throughput(source, args: argparse.Namespace, threads: int, workers: int) -> float:
    dataset = create_dataset(source, args.batch, seed=0, image_size=args.image_size, random_flip=True,
                             process_index=0, process_count=1, num_threads=threads, num_workers=workers)
    iterator = iter(dataset)
    for _ in range(2):
        next(iterator)
    start = time.perf_counter()
    for _ in range(args.batches):
        next(iterator)
    return args.batch * args.batches / (time.perf_counter() - start)


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    settings = [(int(t), 0) for t in args.threads.split(",") if t] + [(1, int(w)) for w in args.workers.split(",") if w]
    names = [f"{t} thread(s)" if w == 0 else f"{w} workers" for t, w in settings]
    rows, results = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.sources.split(","):
            build_s = None
            if spec == "folder":
                folder = make_folder(Path(tmp), args.folder_images)
                t0 = time.perf_counter()
                source = create_source(f"folder:{folder}", data_dir=str(Path(tmp) / "built"))
                build_s = time.perf_counter() - t0
                label = f"folder ({args.folder_images} PNGs, 64x64)"
            else:
                source = create_source(spec, data_dir=args.data_dir)
                label = spec
            rates = [throughput(source, args, t, w) for t, w in settings]
            results[label] = {"records": len(source), "images_per_s": dict(zip(names, rates, strict=True)),
                              "build_s": build_s}
            rows.append([label, f"{len(source):,}"] + [f"{r:,.0f}" for r in rates]
                        + [f"{build_s:.1f}" if build_s is not None else "-"])
            print(rows[-1], flush=True)
    table = md_table(["source", "records"] + [f"img/s, {n}" for n in names] + ["build s"], rows)
    report = (f"# Input pipeline throughput\n\n- date: {datetime.datetime.now().isoformat(timespec='seconds')}\n"
              f"- machine: {machine_info()}\n- command: `{command_line()}`\n"
              f"- batch {args.batch}, {args.batches} timed batches after 2 warm-up batches, output "
              f"{args.image_size}x{args.image_size} float32 in [-1, 1], random flips, shuffled\n"
              f"- total runtime: {time.perf_counter() - start:.0f} s\n\n{table}\n")
    print(report)
    write_results(args.out_dir, "data_cpu", report, {"args": vars(args), "results": results})


if __name__ == "__main__":
    main()
