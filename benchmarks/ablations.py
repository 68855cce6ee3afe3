"""EDT's claims at CPU scale: EDT vs DiT and MDTv2 at equal steps and equal training FLOPs, masking, AMM.

    python -m benchmarks.ablations --workroot /tmp/ablations --steps 3000 --train_seeds 0,1 --sample_seeds 0,1

Variants, all on the whole embedded shapes dataset with ``configs/shapes_edt_tiny.py:full``'s recipe (FD_shapes
compares with the whole dataset, so the shapes_edt_tiny slice would not fit it):

    edt        the tiny EDT, plain pass                       (configs/shapes_edt_tiny.py:full)
    edt_mask   the same with EDT's token-masking training      (--config.loss.masked_pass=True)
    dit        the tiny DiT, as many steps                     (configs/shapes_dit_tiny.py:full)
    dit_flops  the tiny DiT with ``edt``'s training FLOPs       (steps x EDT MACs / DiT MACs)
    mdt        the tiny MDTv2 with its masked pass, as many steps (configs/shapes_mdt_tiny.py:full)
    mdt_flops  the tiny MDTv2 with ``edt_mask``'s training FLOPs (both train with a masked pass)

Each (variant, training seed) trains with ``python -m launch.train`` in its own process under
``--workroot/<variant>_s<seed>``; a finished run there is reused and an unfinished one resumes. Every model is
then scored with FD_shapes (the shipped classifier's features; NOT FID; the report also scores as many real
images, the floor) and its class accuracy, for each sampling seed, with AMM off and, for EDT, AMM on.
Writes ``benchmarks/results/ablations_shapes_<backend>[_<tag>].md/.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import edt_jax
from benchmarks.bench_utils import command_line, load_config, machine_info, md_table, spread, write_results
from benchmarks.quality import data_floor, score_samples
from edt_jax.metrics import extractors
from edt_jax.models.flops import count_macs
from edt_jax.runs import build
from edt_jax.training.checkpoint import Checkpointer

REPO = Path(__file__).resolve().parents[1]

# name -> (config file:arg, launch.train overrides, passes per step: the masked pass costs a second full pass)
VARIANTS = {
    "edt": ("configs/shapes_edt_tiny.py:full", (), 1),
    "edt_mask": ("configs/shapes_edt_tiny.py:full", ("--config.loss.masked_pass=True",), 2),
    "dit": ("configs/shapes_dit_tiny.py:full", (), 1),
    "dit_flops": ("configs/shapes_dit_tiny.py:full", (), 1),
    "mdt": ("configs/shapes_mdt_tiny.py:full", (), 2),
    "mdt_flops": ("configs/shapes_mdt_tiny.py:full", (), 2),
}
# Variants trained for the FLOPs of another: variant -> (the variant whose FLOPs it matches, its model's variant).
FLOPS_MATCHED = {"dit_flops": ("edt", "dit"), "mdt_flops": ("edt_mask", "mdt")}


def training_macs(variant: str) -> int:
    """Multiply-adds of one forward pass per image of the variant's model (``edt_jax.models.flops``)."""
    return count_macs(build.build_model(load_config(VARIANTS[variant][0])))


def variant_steps(variant: str, steps: int) -> int:
    """Training steps: ``steps``, or for a ``FLOPS_MATCHED`` variant as many as give its reference's FLOPs."""
    if variant not in FLOPS_MATCHED:
        return steps
    reference, model_variant = FLOPS_MATCHED[variant]
    per_step = {v: training_macs(v) * VARIANTS[v][2] for v in (reference, model_variant)}
    return max(1, round(steps * per_step[reference] / per_step[model_variant]))


def train(variant: str, seed: int, steps: int, workdir: Path) -> float | None:
    """Train (or finish training) one model; returns the wall seconds, or None when it was already done."""
    done = (workdir / "checkpoints").exists() and Checkpointer(workdir / "checkpoints").latest_step() == steps
    if done:
        print(f"{workdir.name}: reusing the finished run ({steps} steps)", flush=True)
        return None
    config, overrides, _ = VARIANTS[variant]
    command = [sys.executable, "-m", "launch.train", "--config", config, f"--workdir={workdir}",
               f"--config.total_steps={steps}", f"--config.seed={seed}", "--config.checkpoint_every_steps=1000",
               *overrides]  # the recipe's learning-rate decay spans total_steps
    print(f"{workdir.name}: {' '.join(command[1:])}", flush=True)
    start = time.time()
    subprocess.run(command, cwd=REPO, check=True)  # launch.train prints its own progress and ETA
    return time.time() - start


def training_rate(workdir: Path) -> float:
    """Median logged images/s, leaving out the first record (it includes compilation)."""
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r["images_per_s"] for r in records[1:] or records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workroot", required=True, help="where the runs are trained (and reused from)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--steps", type=int, default=3000, help="training steps of every variant but the *_flops ones")
    parser.add_argument("--train_seeds", default="0")
    parser.add_argument("--sample_seeds", default="0,1")
    parser.add_argument("--num_samples", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--sampler", default="unipc", choices=["unipc", "dpm_solver", "ddim"])
    parser.add_argument("--nfe", type=int, default=20)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--tag", default="", help="appended to the results' file names")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    train_seeds = [int(s) for s in args.train_seeds.split(",")]
    sample_seeds = [int(s) for s in args.sample_seeds.split(",")]

    start = time.time()
    extractor = extractors.load_extractor("shapes")
    reference = extractors.dataset_stats("shapes", extractor=extractor)
    floor = data_floor("shapes", extractor, reference, args.num_samples)
    results = []
    for variant in variants:
        steps = variant_steps(variant, args.steps)
        images_per_step = load_config(VARIANTS[variant][0]).batch_size
        gflops = 3 * 2 * training_macs(variant) * VARIANTS[variant][2] / 1e9  # backward ~ 2x forward
        for seed in train_seeds:
            workdir = Path(args.workroot) / f"{variant}_s{seed}"
            wall = train(variant, seed, steps, workdir)
            run = edt_jax.load_run(workdir)
            for amm in ([False, True] if run.config.model.name.startswith("EDT") else [False]):
                scores = score_samples(run, extractor, reference, args.num_samples, args.batch_size, sample_seeds,
                                       sampler=args.sampler, steps=args.nfe, order=2, variant="bh2",
                                       guidance_scale=1.0, amm=amm)
                results.append(dict(variant=variant, train_seed=seed, steps=steps, amm=amm,
                                    images_per_s=training_rate(workdir), train_wall_s=wall,
                                    train_tflops=gflops * steps * images_per_step / 1e3, **scores))
                print(f"{variant} seed {seed} AMM {'on' if amm else 'off'}: FD {spread(scores['fd'], 1)}, "
                      f"class accuracy {spread(scores['accuracy'], 3)}", flush=True)

    rows = []
    for variant in variants:
        for amm in (False, True):
            cells = [r for r in results if r["variant"] == variant and r["amm"] == amm]
            if not cells:
                continue
            fd = [x for r in cells for x in r["fd"]]
            acc = [x for r in cells for x in r["accuracy"]]
            rows.append([variant, "on" if amm else "off", str(cells[0]["steps"]),
                         f"{cells[0]['train_tflops']:.1f}", spread([r["images_per_s"] for r in cells]),
                         spread(fd, 1), spread(acc, 3)])
    header = ["variant", "AMM", "steps", "train TFLOPs", "train img/s", "FD_shapes", "class accuracy"]
    report = "\n".join([
        "# EDT ablations at CPU scale (shapes, FD_shapes: lower is better; not FID)", "",
        f"- machine: {machine_info()}",
        f"- command: `{command_line()}`",
        f"- training seeds {train_seeds}, sampling seeds {sample_seeds}; cells: mean (min-max) over all "
        f"(training seed, sampling seed) pairs",
        f"- sampling: {args.sampler} {args.nfe} steps, EMA parameters, no guidance, {args.num_samples} samples "
        f"with random labels; {args.num_samples} real images score {floor:.1f}; chance class accuracy is 0.333",
        "- train TFLOPs: 3 x 2 x the analytic multiply-adds per image x images seen (the masked pass counted "
        "as a second full pass)",
        f"- total runtime: {time.time() - start:.0f} s", "", md_table(header, rows), ""])
    print(report)
    import jax

    stem = f"ablations_shapes_{jax.default_backend()}{'_' + args.tag if args.tag else ''}"
    write_results(args.out, stem, report, dict(results=results))


if __name__ == "__main__":
    main()
