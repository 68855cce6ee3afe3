"""EDT vs MDTv2 vs DiT, side by side in one process: inference and full training steps, with the paper's ratios.

    python -m benchmarks.speed                                       # CPU: S and B at batch 8, float32
    python -m benchmarks.speed --batch 256 --dtype bfloat16 --models EDT-S/2,MDTv2-S/2,DiT-S/2,EDT-B/2,\
MDTv2-B/2,DiT-B/2,EDT-XL/2,MDTv2-XL/2,DiT-XL/2                       # one GPU (docs/mdt.md)
    python -m benchmarks.speed --before_after REV --models EDT-S/2 --steps 5       # training step vs a commit

Inference: the jitted eval forward (EDT with its AMM blocks). Training: one jitted step of the library's
trainer (losses, gradients, AdamW, EMA), EDT and MDTv2 with their masked second pass (MDTv2's encoder
on its padded kept tokens), DiT plain. On 32x32x4 latents (ImageNet 256), synthetic data. Achieved FLOP/s
count 2 x the analytic MACs of ``count_macs`` per pass (x 3 for training). ``--before_after REV`` times the
training step of this checkout and of commit REV (a git worktree) in alternating subprocesses: this checkout's
benchmark code on each side's library (``PYTHONPATH=<that root>``); REV must have ``edt_jax/runs/build.py``.
Writes ``benchmarks/results/speed_<backend>[_<tag>].md/.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax

import edt_jax
from benchmarks.bench_utils import command_line, machine_info, md_table, random_model_inputs, time_call, write_results
from benchmarks.models import device_peak_tflops
from benchmarks.train import measure, paper_config
from edt_jax.models import count_macs, create_model

REPO = Path(__file__).resolve().parents[1]

CPU_MODELS = ("EDT-S/2", "MDTv2-S/2", "DiT-S/2", "EDT-B/2", "MDTv2-B/2", "DiT-B/2")
# EDT's speed-ups over MDTv2 in the paper (Table 1: training / inference speed, S, B, XL).
PAPER_EDT_OVER_MDT = {"S": (3.93, 2.29), "B": (2.84, 2.29), "XL": (1.92, 2.22)}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(CPU_MODELS))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--dtype", default="float32", help="compute dtype (parameters stay float32)")
    p.add_argument("--steps", type=int, default=5, help="timed runs after the warm-up")
    p.add_argument("--train_only", action="store_true")
    p.add_argument("--before_after", default=None, metavar="REV",
                   help="time the training step and inference against commit REV")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds of --before_after")
    p.add_argument("--json_out", default=None, help="(internal) write the raw results here and stop")
    p.add_argument("--peak_tflops", type=float, default=None)
    p.add_argument("--out_dir", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--tag", default="")
    return p.parse_args()


def size_of(name: str) -> str:
    return name.split("-")[1].split("/")[0]


def inference(name: str, batch: int, dtype: str, steps: int) -> dict:
    model = create_model(name, dtype=dtype)
    variables, x, t, y = random_model_inputs(model, batch)
    compile_s, runs = time_call(lambda v, x, t, y: model.apply(v, x, t, y, train=False), (variables, x, t, y), steps)
    seconds = statistics.median(runs)
    return {"compile_s": compile_s, "step_s": seconds, "images_per_s": batch / seconds,
            "tflops": 2 * count_macs(model) * batch / seconds / 1e12}


def training(name: str, batch: int, dtype: str, steps: int, peak: float | None) -> dict:
    config = paper_config(name, batch, dtype)
    config.loss.masked_pass = not name.startswith("DiT")
    config.optimizer.update(dict(name="adamw", learning_rate=1e-4))  # what the issue's PyTorch numbers used
    return measure(name, config, steps, peak)


def peak_memory_gb() -> float | None:
    stats = jax.devices()[0].memory_stats() or {}
    return stats["peak_bytes_in_use"] / 2 ** 30 if "peak_bytes_in_use" in stats else None


def run_models(args, names: list[str], peak: float | None) -> dict:
    results = {}
    for name in names:
        r = {}
        if not args.train_only:
            r["inference"] = inference(name, args.batch, args.dtype, args.steps)
            print(f"{name} inference: {r['inference']['images_per_s']:,.1f} img/s", flush=True)
        r["train"] = training(name, args.batch, args.dtype, args.steps, peak)
        r["peak_memory_gb"] = peak_memory_gb()
        print(f"{name} train: {r['train']['images_per_s']:,.2f} img/s", flush=True)
        results[name] = r
    return results


def ratio(results: dict, a: str, b: str, mode: str) -> float | None:
    if a in results and b in results and mode in results[a] and mode in results[b]:
        return results[a][mode]["images_per_s"] / results[b][mode]["images_per_s"]
    return None


def fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def report_tables(results: dict) -> str:
    rows = []
    for name, r in results.items():
        inf, tr = r.get("inference"), r["train"]
        rows.append([name, fmt(inf and inf["images_per_s"], ",.1f"), fmt(tr["images_per_s"], ",.2f"),
                     fmt(inf and inf["tflops"] * 1e3, ",.0f"), fmt(tr["tflops"] * 1e3, ",.0f"),
                     fmt(tr["mfu"] and 100 * tr["mfu"], ".1f", " %"), fmt(r["peak_memory_gb"], ".1f"),
                     f"{fmt(inf and inf['compile_s'], '.0f')} / {tr['compile_s']:.0f}"])
    table = md_table(["model", "inference img/s", "train img/s", "inference GFLOP/s", "train GFLOP/s", "train MFU",
                      "peak GB", "compile s (inf / train)"], rows)
    ratio_rows = []
    for size in ("S", "B", "XL"):
        edt, mdt, dit = f"EDT-{size}/2", f"MDTv2-{size}/2", f"DiT-{size}/2"
        if edt not in results:
            continue
        paper_train, paper_inf = PAPER_EDT_OVER_MDT[size]
        ratio_rows.append([size, fmt(ratio(results, edt, mdt, "train"), ".2f", "x"), f"{paper_train:.2f}x",
                           fmt(ratio(results, edt, mdt, "inference"), ".2f", "x"), f"{paper_inf:.2f}x",
                           fmt(ratio(results, edt, dit, "train"), ".2f", "x"),
                           fmt(ratio(results, edt, dit, "inference"), ".2f", "x")])
    ratios = md_table(["size", "EDT/MDTv2 train", "paper", "EDT/MDTv2 inference", "paper", "EDT/DiT train",
                       "EDT/DiT inference"], ratio_rows)
    return f"{table}\n\nSpeed ratios (images/s of EDT over the baseline):\n\n{ratios}\n"


def time_sides(args, roots: dict[str, Path], tmp: Path) -> dict[str, list[dict]]:
    """``--rounds`` alternating ``--json_out`` runs per side: each a fresh ``python -m benchmarks.speed`` of THIS
    checkout's benchmark code on the library (``edt_jax``, ``configs``) of that side's root. The process starts in
    a folder holding only a link to this checkout's ``benchmarks`` (``-m`` puts the working directory first on
    ``sys.path``), with ``PYTHONPATH=<root>`` after it."""
    harness = tmp / "harness"
    harness.mkdir(exist_ok=True)
    if not (harness / "benchmarks").exists():
        (harness / "benchmarks").symlink_to(REPO / "benchmarks", target_is_directory=True)
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    times = {label: [] for label in roots}
    for _ in range(args.rounds):
        for label, root in roots.items():
            out = tmp / f"{label}.json"
            cmd = [sys.executable, "-m", "benchmarks.speed", "--models", args.models, "--batch", str(args.batch),
                   "--dtype", args.dtype, "--steps", str(args.steps), "--json_out", str(out)]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), *inherited])}
            subprocess.run(cmd, check=True, cwd=harness, env=env)
            times[label].append(json.loads(out.read_text()))
    return times


def before_after(args) -> tuple[str, dict]:
    """Training steps of this checkout and of ``args.before_after``, alternating subprocesses."""
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(old), args.before_after],
                       check=True, capture_output=True)
        try:
            if not (old / "edt_jax" / "runs" / "build.py").is_file():
                raise SystemExit(f"--before_after {args.before_after}: that revision has no edt_jax/runs/build.py, "
                                 f"which this benchmark builds its training step with; compare against a revision "
                                 f"that has it")
            times = time_sides(args, {"before": old, "after": REPO}, Path(tmp))
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)], check=False)
    rows, payload = [], {}
    for name in args.models.split(","):
        for mode in ("train", "inference"):
            cell = {label: [run[name][mode]["step_s"] for run in runs] for label, runs in times.items()}
            before, after = statistics.median(cell["before"]), statistics.median(cell["after"])
            payload[f"{name} {mode}"] = {**cell, "speedup": before / after}
            rows.append([name, mode, f"{1000 * before:.0f}", f"{1000 * after:.0f}", f"{args.batch / before:.2f}",
                         f"{args.batch / after:.2f}", f"{before / after:.2f}x"])
    table = md_table(["model", "pass", f"ms @ {args.before_after}", "ms now", "img/s before", "img/s now",
                      "speed-up"], rows)
    return table, payload


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    peak = device_peak_tflops(args.peak_tflops)
    backend = jax.default_backend()
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    if args.json_out:
        print(f"library: {Path(edt_jax.__file__).parent}", flush=True)
        Path(args.json_out).write_text(json.dumps(run_models(args, names, peak)))
        return
    header = (f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}\n- machine: {machine_info()}\n"
              f"- command: `{command_line()}`\n- batch {args.batch}, 32x32x4 latents, compute "
              f"{args.dtype}, float32 parameters; median of {args.steps} runs after a warm-up\n")
    if args.before_after:
        table, payload = before_after(args)
        stem = f"speed_before_after_{backend}"
        threads = len(os.sched_getaffinity(0))
        report = (f"# Training step and inference against commit {args.before_after} ({backend})\n\n{header}"
                  f"- {args.rounds} alternating rounds per side, each a fresh process, on {threads} core(s) "
                  f"(`taskset` pins fewer); train = losses (masked pass for EDT) + grads + AdamW + EMA, inference = "
                  f"eval forward (EDT with AMM); cells: median over the rounds\n"
                  f"- total runtime: {time.perf_counter() - start:.0f} s\n\n{table}\n")
    else:
        results = run_models(args, names, peak)
        payload = {"args": vars(args), "results": results}
        stem = f"speed_{backend}"
        report = (f"# EDT vs MDTv2 vs DiT speed ({backend})\n\n{header}"
                  f"- training step: losses (EDT and MDTv2 with their masked pass) + grads + AdamW + EMA; inference: "
                  f"eval forward, EDT with its AMM blocks\n- peak GB: the device's peak bytes in use (n/a on CPU)\n"
                  f"- total runtime: {time.perf_counter() - start:.0f} s\n\n{report_tables(results)}")
    stem += f"_{args.tag}" if args.tag else ""
    print(report)
    print(f"wrote {write_results(args.out_dir, stem, report, payload)}")


if __name__ == "__main__":
    main()
