"""What guiding only some model calls saves, and what it costs in quality, on a model trained here.

    python -m benchmarks.guidance_windows --workdir /tmp/mnist_edt --num_samples 512 --seeds 0,1 --repeats 7

Rows (``edt_jax.analysis.experiments.guidance_rows``, those of ``launch.analyze --analysis guidance``): full
classifier-free guidance; guidance on the first fraction 0.8 ... 0 of the calls, then the conditional (``cond``) or
the unconditional (``uncond``) prediction alone; and guidance only on the calls inside two timestep intervals. For
each row:

- time: the sampler's wall time for one batch (median of ``--repeats``, rows interleaved so that drift hits
  every row alike). Every row runs the SAME compiled sampler: the per-call scales are its argument and a
  ``lax.switch`` inside the scan skips the unneeded half of the batch, so the saving is what the running
  program does, not what a specialised compile would do. One more line times full guidance with a plain scalar
  scale (no switch), to show what the switch itself costs.
- the saving vs full guidance, against the ideal (a batched call costing exactly twice a single pass: half the
  unguided share) and against the linear prediction from the measured full and unguided rows.
- FD and class accuracy in the shipped classifier's features, and the mean L1 distance to the full-guidance
  sample from the same noise, mean (min-max) over ``--seeds``.

Writes ``benchmarks/results/guidance_windows_<dataset>_<backend>.md/.json/.png``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import edt_jax
from benchmarks.bench_utils import command_line, machine_info, md_table, spread, write_results
from edt_jax import samplers
from edt_jax.analysis import experiments


def time_rows(generate, scalar_generate, params, labels: np.ndarray, rows: list[dict], repeats: int) -> None:
    """Adds ``seconds`` (list over repeats) to every row and returns the scalar-scale timings."""
    for row in rows:  # warm-up: compile once, touch every branch
        generate(params, labels, 0, guidance_scale=row["scales"])
    scalar_generate(params, labels, 0)
    scalar = []
    for row in rows:
        row["seconds"] = []
    for r in range(repeats):
        order = rows[r % len(rows):] + rows[:r % len(rows)]
        for row in order:
            start = time.perf_counter()
            generate(params, labels, r, guidance_scale=row["scales"])  # returns numpy: the work is done
            row["seconds"].append(time.perf_counter() - start)
        start = time.perf_counter()
        scalar_generate(params, labels, r)
        scalar.append(time.perf_counter() - start)
        print(f"repeat {r + 1} / {repeats}: full {rows[0]['seconds'][-1]:.2f} s", flush=True)
    return scalar


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a launch.train run on mnist5k or shapes that follows labels")
    parser.add_argument("--sampler", default="unipc", choices=samplers.ODE_SAMPLERS)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--order", type=int, default=2)
    parser.add_argument("--variant", default="bh2", help="UniPC variant (bh2 is the one for guidance)")
    parser.add_argument("--scale", type=float, default=None, help="guidance scale (default: the run's sample one)")
    parser.add_argument("--fractions", default="1,0.8,0.6,0.4,0.2,0")
    parser.add_argument("--intervals", default="300:700,0:500", help="t_lo:t_hi in training timesteps")
    parser.add_argument("--num_samples", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args()

    start = time.time()
    run = edt_jax.load_run(args.workdir)
    config, step = run.config, run.step
    scale = float(config.sample.guidance_scale if args.scale is None else args.scale)
    if scale == 1.0:
        parser.error("the guidance scale is 1: pass --scale")
    sampling = dict(sampler=args.sampler, steps=args.steps, order=args.order, variant=args.variant, amm=True,
                    skip_type="time_uniform", algorithm="dpmsolver++")
    rows = experiments.guidance_rows(scale, args.steps, [float(f) for f in args.fractions.split(",")],
                                     experiments.parse_intervals(args.intervals), run.schedule, sampling["skip_type"],
                                     args.sampler)
    seeds = [int(s) for s in args.seeds.split(",")]

    # Timing: one compiled sampler for every row; labels of one batch.
    labels = np.random.default_rng(0).integers(0, run.num_classes, args.batch_size)
    generate = run.generator(**sampling, guidance_scale=rows[0]["scales"])
    scalar_generate = run.generator(**sampling, guidance_scale=scale)
    scalar = time_rows(generate, scalar_generate, run.params, labels, rows, args.repeats)
    experiments.score_guidance_rows(run, rows, sampling, args.num_samples, args.batch_size, seeds)

    full = float(np.median(rows[0]["seconds"]))
    unguided = next(r for r in rows if r["kind"] == "fraction" and r["fraction"] == 0 and r["after"] == "cond")
    single = float(np.median(unguided["seconds"]))
    table = []
    for row in rows:
        median = float(np.median(row["seconds"]))
        row.update(median_s=median, saving=1 - median / full, ideal=(1 - row["guided"]) / 2,
                   predicted=1 - (row["guided"] * full + (1 - row["guided"]) * single) / full)
        table.append([row["name"], f"{row['guided']:.2f}", f"{median:.3f} ({min(row['seconds']):.3f})",
                      f"{100 * row['saving']:.1f}%", f"{100 * row['ideal']:.1f}%", f"{100 * row['predicted']:.1f}%",
                      spread(row["fd"], 1), spread(row["accuracy"], 3), spread(row["l1"], 4)])
    dataset = experiments.dataset_of(config)
    report = "\n".join([
        f"# Guidance windows: time saved and quality ({dataset})", "",
        f"- machine: {machine_info()}",
        f"- command: `{command_line()}`",
        f"- model: `{args.workdir}` step {step} ({config.model.name}, EMA parameters, AMM on); {args.sampler} "
        f"order {args.order} ({args.variant}), {args.steps} steps, guidance scale {scale:g}",
        f"- time: one batch of {args.batch_size} samples, median (min) of {args.repeats} repeats, rows interleaved, "
        f"one compiled sampler for all rows; full guidance with a scalar scale (no lax.switch): "
        f"{np.median(scalar):.3f} s ({min(scalar):.3f}) against {full:.3f} s through the switch",
        f"- one guided call costs {full / single:.2f}x an unguided one here (full vs unguided row)",
        "- ideal: a guided call costs exactly 2 single passes; predicted: linear in the guided share between the "
        "measured full and unguided rows",
        f"- quality: {args.num_samples} samples per seed, mean (min-max) over seeds {seeds}; L1 to the full-guidance "
        f"sample from the same noise, pixels in [0, 1]",
        f"- total runtime: {time.time() - start:.0f} s", "",
        md_table(["schedule", "guided calls", "time s", "saving", "ideal", "predicted", "FD", "class accuracy",
                  "L1 to full"], table), ""])
    print(report)
    import jax

    payload = dict(step=step, scale=scale, seeds=seeds, scalar_seconds=scalar, rows=[
        {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in r.items()} for r in rows])
    path = write_results(args.out, f"guidance_windows_{dataset}_{jax.default_backend()}", report, payload)
    figure(rows, path.with_suffix(".png"), f"guidance windows ({dataset}, {args.sampler} {args.steps} steps, "
                                           f"scale {scale:g})")


def figure(rows: list[dict], path: Path, title: str) -> None:
    """Measured and ideal saving vs the share of guided calls, and FD / class accuracy beside them."""
    from edt_jax.analysis import plots

    panels = []
    for metric, ylabel in (("saving", "time saved vs full guidance"), ("fd", "FD"), ("accuracy", "class accuracy")):
        series = {}
        for after in ("cond", "uncond"):
            line = sorted([r for r in rows if r["kind"] == "full" or (r["kind"] == "fraction" and r["after"] == after)],
                          key=lambda r: r["guided"])
            series[f"then {after}"] = ([r["guided"] for r in line], [np.mean(r[metric]) for r in line])
        if metric == "saving":
            shares = np.linspace(0, 1, 11)
            series["ideal (guided call = 2 passes)"] = (shares, (1 - shares) / 2)
        points = {r["name"]: (r["guided"], np.mean(r[metric])) for r in rows if r["kind"] == "interval"}
        panels.append({"ylabel": ylabel, "series": series, "points": points})
    plots.panels_figure(panels, path, xlabel="share of guided calls", title=title)


if __name__ == "__main__":
    main()
