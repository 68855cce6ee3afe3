"""The README's main job, timed: its four commands as a user runs them, once per training seed.

    python -m benchmarks.main_job --workroot /tmp/main_job --seeds 0,1

For each seed it runs, in a fresh ``WORKROOT/seed<S>``, exactly ``COMMANDS`` (the README's main-job block; a test
keeps the two equal) with ``--config.seed=S`` added to the training command, times each command from process
start to exit (imports and compilation included), and reads back the evaluation report and the nearest-image
distances. Writes ``benchmarks/results/main_job_<backend>.{md,json}`` and, from the first seed, the README's
picture ``docs/mnist_edt_quick_samples.png``. Runs the commands one after another: on a 2-core machine nothing
else should run beside them, or the times mean little.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jax

from benchmarks.bench_utils import command_line, machine_info, md_table, spread, write_results
from edt_jax.metrics import extractors

REPO = Path(__file__).resolve().parents[1]
WORKDIR = "/tmp/mnist_quick"  # as the README writes it; replaced by each seed's directory
COMMANDS = (
    "python -m launch.train --config configs/mnist_edt_quick.py --workdir /tmp/mnist_quick",
    "python -m launch.sample --workdir /tmp/mnist_quick --guidance_scale 3 --num_samples 100 "
    "--labels 0,1,2,3,4,5,6,7,8,9",
    "python -m launch.evaluate --workdir /tmp/mnist_quick --guidance_scale 3 --num_samples 512 "
    "--metrics acc_mnist5k,fd_mnist5k",
    "python -m benchmarks.nearest --samples /tmp/mnist_quick/samples.npz --workdir /tmp/mnist_quick",
)
STAGES = ("train", "sample", "evaluate", "nearest")


def commands_for(workdir: Path, seed: int) -> list[list[str]]:
    """``COMMANDS`` as argument lists for ``workdir``, the training one with ``--config.seed=seed``; the
    evaluation report and the nearest-image numbers go to JSON files beside the run."""
    argvs = [shlex.split(c.replace(WORKDIR, str(workdir))) for c in COMMANDS]
    argvs[0].append(f"--config.seed={seed}")
    argvs[2].append(f"--report={workdir / 'eval.json'}")
    argvs[3].append(f"--json={workdir / 'nearest.json'}")
    return [[sys.executable if a[0] == "python" else a[0], *a[1:]] for a in argvs]


def run_seed(workroot: Path, seed: int) -> dict:
    workdir = workroot / f"seed{seed}"
    if workdir.exists():
        shutil.rmtree(workdir)  # a fresh run each time: a resumed one would time nothing
    seconds = {}
    for stage, argv in zip(STAGES, commands_for(workdir, seed), strict=True):
        print(f"seed {seed}, {stage}: {shlex.join(argv)}", flush=True)
        start = time.perf_counter()
        done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
        seconds[stage] = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"seed {seed}, {stage} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        print(f"  {seconds[stage]:.0f} s", flush=True)
    report = json.loads((workdir / "eval.json").read_text())
    log = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {"seed": seed, "workdir": str(workdir), "seconds": seconds, "metrics": report["metrics"],
            "nearest": json.loads((workdir / "nearest.json").read_text()), "last_loss": log[-1]["loss"],
            "median_images_per_s": sorted(r["images_per_s"] for r in log)[len(log) // 2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workroot", default="/tmp/main_job")
    parser.add_argument("--seeds", default="0,1", help="comma-separated training seeds")
    parser.add_argument("--out_dir", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--picture", default=str(REPO / "docs" / "mnist_edt_quick_samples.png"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    start = time.perf_counter()
    runs = [run_seed(Path(args.workroot), seed) for seed in seeds]
    shutil.copyfile(Path(runs[0]["workdir"]) / "samples.png", args.picture)
    floor = real_images_floor(seeds)

    rows = [[str(r["seed"]), *(f"{r['seconds'][s]:.0f}" for s in STAGES), f"{r['median_images_per_s']:.0f}",
             f"{r['last_loss']:.3f}", f"{r['metrics']['class_accuracy_mnist5k']:.3f}",
             f"{r['metrics']['FD_mnist5k']:.1f}", f"{r['nearest']['nearest_median']:.1f}",
             f"{r['nearest']['training_nearest_median']:.1f}", f"{r['nearest']['closest_training_pair']:.1f}"]
            for r in runs]
    if len(runs) > 1:
        rows.append(["mean (min-max)", *(spread([r["seconds"][s] for r in runs]) for s in STAGES), "", "",
                     spread([r["metrics"]["class_accuracy_mnist5k"] for r in runs], 3),
                     spread([r["metrics"]["FD_mnist5k"] for r in runs], 1), "", "", ""])
    table = md_table(["training seed", "train s", "sample s", "evaluate s", "nearest s", "train img/s",
                      "last loss", "class accuracy (512)", "FD_mnist5k", "sample's nearest training image",
                      "training image's nearest other", "closest training pair"], rows)
    report = (f"# The README's main job ({datetime.datetime.now().isoformat(timespec='seconds')})\n\n"
              f"- machine: {machine_info()}\n- command: `{command_line()}`\n"
              "- each command timed from process start to exit (imports, data loading and compilation included)\n"
              "- distances: RMS over pixels on the 0-255 scale, medians over the 100 grid samples\n"
              f"- FD_mnist5k of 512 real mnist5k images (drawn with seeds {seeds}) against the same reference: "
              f"{spread(floor, 1)}\n"
              f"- total runtime: {time.perf_counter() - start:.0f} s\n\n"
              + "\n".join(f"    {c}" for c in COMMANDS) + f"\n\n{table}\n")
    print(report)
    write_results(args.out_dir, f"main_job_{jax.default_backend()}", report,
                  {"runs": runs, "real_images_fd_mnist5k_512": floor})


def real_images_floor(seeds: list[int]) -> list[float]:
    """FD_mnist5k of 512 real images against all 5,000 (launch.evaluate's reference): what a perfect model scores."""
    extractor = extractors.load_extractor("mnist5k")
    reference = extractors.dataset_stats("mnist5k", extractor=extractor)
    return [extractors.dataset_stats("mnist5k", 512, seed=100 + s, extractor=extractor).frechet_distance(reference)
            for s in seeds]


if __name__ == "__main__":
    main()
