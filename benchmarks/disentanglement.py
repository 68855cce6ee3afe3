"""DisDiff against its baselines on shapes: FactorVAE / DCI / MIG over training seeds, factor swaps.

    python -m benchmarks.disentanglement --dpm_workdir /tmp/shapes_full_dpm --workdir /tmp/dis_bench

Every method is trained and scored by ``launch.disentangle`` (one subprocess per run, each resumable: a run
with its eval.json is not redone) into ``WORKDIR/<method>/seed<k>``:
  disdiff_n7 (N = 7, the true number of factors), disdiff_n6 (N = 6, the official default), disdiff_lambda0
  (reconstruction only), random_encoder (DisDiff's encoder at initialisation), betavae, and disdiff_n7_2000
  (3.3x the steps, seed 0 only: does a longer budget change the picture?).
Writes ``benchmarks/results/disentanglement_shapes_<backend>.{md,json}``: mean and std over the seeds of every
metric under DisDiff's PCA(1)-per-chunk protocol and on the raw codes, the wall time of each run, the swap
grids of seed 0 (``..._swap_<method>.png``) and the "what changes" table. The claim under test: DisDiff beats
the VAE baselines on FactorVAE and DCI.

The quick preset is the smallest honest run of that claim, built from nothing (no DPM to train):

    python -m benchmarks.disentanglement --preset quick --seed 0 --workdir /tmp/dis_quick
    python -m benchmarks.disentanglement --preset quick --seeds 0,1,2 --workdir /tmp/dis_quick   # + results files

It trains DisDiff (``configs/shapes_disdiff.py:quick``: the 3-factor ``SHAPES_HUE_POSITION`` slice of shapes and
the exact closed-form DPM of its images) and a beta-VAE for the same wall time (``configs/shapes_betavae.py:quick``,
DisDiff's encoder convs), scores both and DisDiff's encoder at initialisation, swaps DisDiff's codes, and writes
``WORKDIR/summary.json`` (one seed) or ``WORKDIR/seed<k>/summary.json`` per seed plus
``benchmarks/results/disentanglement_shapes_hue_position_<backend>.{md,json}`` and the seed-0 swap grid.
Every step resumes: a finished part is not redone. ``--preset quick_smoothed`` is the same against the DPM of
the images blurred by N(0, 0.3^2) (``configs/shapes_disdiff.py:quick_smoothed``; results ``..._smoothed_<backend>``).
``--preset quick_test`` runs the same code paths in a few steps (the tests').
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

from benchmarks.bench_utils import machine_info, md_table, write_results
from configs import shapes_betavae, shapes_disdiff
from edt_jax.training.metrics import read_records

ROOT = Path(__file__).resolve().parents[1]
METHODS = {  # name: (config, config overrides, trained?, seeds (None: --seeds))
    "disdiff_n7": ("configs/shapes_disdiff.py", [], True, None),
    "disdiff_n6": ("configs/shapes_disdiff.py:n6", [], True, None),
    "disdiff_lambda0": ("configs/shapes_disdiff.py:lambda0", [], True, None),
    "random_encoder": ("configs/shapes_disdiff.py", [], False, None),
    "betavae": ("configs/shapes_betavae.py", [], True, None),
    # A budget probe: 3.3x the training steps, one seed.
    "disdiff_n7_2000": ("configs/shapes_disdiff.py", ["--config.total_steps=2000"], True, [0]),
}
COLUMNS = [("factor_vae", "eval_accuracy", "FactorVAE"), ("dci", "disentanglement", "DCI D"),
           ("dci", "completeness", "DCI C"), ("dci", "informativeness_test", "DCI I"), ("mig", "discrete_mig", "MIG")]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=PRESETS, default=None,
                   help="the quick run on the 3-factor slice with the closed-form DPM (no --dpm_workdir)")
    p.add_argument("--seed", type=int, default=None, help="--preset: one training seed, summary in WORKDIR")
    p.add_argument("--dpm_workdir", default=None, help="the frozen shapes DPM (launch.train on shapes, 32x32); "
                   "required without --preset")
    p.add_argument("--workdir", required=True, help="where the runs go")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    p.add_argument("--seeds", default="0,1,2", help="training seeds")
    p.add_argument("--steps", type=int, default=None, help="DisDiff training steps (default: the config's)")
    p.add_argument("--vae_steps", type=int, default=None, help="beta-VAE training steps (default: the config's)")
    p.add_argument("--eval_overrides", default="", help="extra --config.eval.* flags for every evaluation, "
                   "e.g. '--config.eval.dci.num_train=2000'")
    p.add_argument("--swap_methods", default="disdiff_n7,disdiff_n6,disdiff_n7_2000",
                   help="methods whose seed-0 run is swapped")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    return p.parse_args()


def run(args: list[str], log: Path) -> float:
    """Run ``python -m launch.disentangle ARGS`` (output appended to ``log``); wall seconds."""
    start = time.time()
    with log.open("a") as f:
        code = subprocess.call([sys.executable, "-m", "launch.disentangle", *args], cwd=ROOT, stdout=f, stderr=f)
    if code:
        raise SystemExit(f"launch.disentangle {' '.join(args)} failed with exit code {code}; see {log}")
    return time.time() - start


def run_method(name: str, seed: int, a: argparse.Namespace) -> dict:
    config, overrides, trained, _ = METHODS[name]
    workdir = Path(a.workdir) / name / f"seed{seed}"
    workdir.mkdir(parents=True, exist_ok=True)
    common = ["--config", config, "--workdir", str(workdir), f"--config.seed={seed}", *overrides]
    steps = a.vae_steps if name == "betavae" else a.steps
    if steps is not None and not overrides:
        common.append(f"--config.total_steps={steps}")
    timing_path = workdir / "timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    eval_name = "eval.json" if trained else "eval_untrained.json"
    if trained and "train_s" not in timing:
        timing["train_s"] = run([*common, "--mode", "train", "--dpm_workdir", a.dpm_workdir], workdir / "log.txt")
        timing_path.write_text(json.dumps(timing))
    if not (workdir / eval_name).is_file():
        extra = [] if trained else ["--untrained"]
        timing["eval_s"] = run([*common, "--mode", "evaluate", *extra, *a.eval_overrides.split()],
                               workdir / "log.txt")
        timing_path.write_text(json.dumps(timing))
    if name in a.swap_methods.split(",") and seed == 0 and not (workdir / "swap.png").is_file():
        timing["swap_s"] = run([*common, "--mode", "swap", "--dpm_workdir", a.dpm_workdir], workdir / "log.txt")
        timing_path.write_text(json.dumps(timing))
    report = json.loads((workdir / eval_name).read_text())
    report["timing"] = timing
    if trained:  # the last logged training metrics and the median throughput
        logged = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
        report["last_train_metrics"] = logged[-1]
        report["median_images_per_s"] = float(np.median([m["images_per_s"] for m in logged]))
    if (workdir / "what_changes.json").is_file():
        report["swap"] = json.loads((workdir / "what_changes.json").read_text())
    return report


def summarise(results: dict[str, list[dict]], protocol: str) -> list[list]:
    rows = []
    for name, runs in results.items():
        scored = [r["scores"][protocol] for r in runs if protocol in r["scores"]]
        if not scored:
            continue
        cells = []
        for metric, key, _ in COLUMNS:
            if metric not in scored[0]:  # not run on this protocol (DCI on DisDiff's raw codes)
                cells.append("-")
                continue
            values = np.array([s[metric][key] for s in scored])
            cells.append(f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0:.3f}")
        train_s = [r["timing"].get("train_s", 0.0) for r in runs]
        codes = runs[0]["code_entries"] if protocol == "raw" else runs[0]["num_chunks"]
        rows.append([name, len(scored), codes, *cells, f"{np.mean(train_s):.0f}"])
    return rows


def main() -> None:
    a = parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    if a.preset:
        return quick_main(a, seeds)
    if not a.dpm_workdir:
        raise SystemExit("--dpm_workdir is required without --preset (the frozen shapes DPM)")
    results: dict[str, list[dict]] = {}
    for name in a.methods.split(","):
        if name not in METHODS:
            raise SystemExit(f"unknown method {name!r}; accepted: {', '.join(METHODS)}")
        results[name] = []
        for seed in METHODS[name][3] or seeds:
            print(f"{name} seed {seed} ...", flush=True)
            results[name].append(run_method(name, seed, a))
    header = ["method", "seeds", "codes", *[c[2] for c in COLUMNS], "train s (shared CPU)"]
    stem = f"disentanglement_shapes_{jax.default_backend()}"
    lines = [f"# Disentanglement on shapes (7 factors), {machine_info()}", "",
             f"Frozen DPM: `{a.dpm_workdir}`; mean ± std over training seeds {a.seeds}. FactorVAE = eval accuracy; "
             "DCI I = test accuracy.", "", "## DisDiff's protocol: PCA(1) per code chunk", "",
             md_table(header, summarise(results, "pca")), "", "## Raw codes", "",
             md_table(header, summarise(results, "raw"))]
    loss_rows = []
    for name, runs in results.items():
        if "last_train_metrics" not in runs[0]:
            continue
        last = [r["last_train_metrics"] for r in runs]
        cells = [f"{np.mean([m[k] for m in last]):.4g}" if k in last[0] else "-"
                 for k in ("step", "reconstruction", "dis_invariant", "dis_variant", "dis_total", "kl")]
        loss_rows.append([name, *cells, f"{np.mean([r['median_images_per_s'] for r in runs]):.0f}"])
    lines += ["", "## Training: the last logged step (mean over seeds)", "",
              "One batch of 32 each; ln 7 = 1.946 is chance for the cross-entropies. img/s: median over the logged "
              "steps, on a machine shared with other jobs.", "",
              md_table(["method", "step", "reconstruction", "dis invariant", "dis variant", "dis total", "KL",
                        "img/s"], loss_rows)]
    for name, runs in results.items():
        swap = runs[0].get("swap")
        if not swap:
            continue
        src = Path(swap["grid"])
        shutil.copy(src, Path(a.out) / f"{stem}_swap_{name}.png")
        names = swap["factors"]
        rows = [[f"code {c}", *[f"{v:.2f}" for v in row]] for c, row in enumerate(swap["what_changes"])]
        rows.append(["reconstruction vs source", *[f"{v:.2f}" for v in swap["reconstruction_vs_source"]]])
        rows.append(["frozen DPM alone vs source", *[f"{v:.2f}" for v in swap["dpm_alone_vs_source"]]])
        lines += ["", f"## What changes when one code chunk is swapped ({name}, seed 0)", "",
                  f"Fraction of {swap['num_images']} images whose true factor (shipped shapes classifier) differs "
                  f"from the unswapped reconstruction; {swap['sampler']} {swap['steps']} steps from the "
                  f"{swap['start']}; reconstruction RMSE {swap['reconstruction_rmse']:.3f} (the frozen DPM alone, "
                  f"inverted and regenerated without the fields: {swap['dpm_alone_rmse']:.3f}). Grid: "
                  f"`{stem}_swap_{name}.png`.", "", md_table(["swapped", *names], rows)]
    report = "\n".join(lines) + "\n"
    print(report)
    write_results(a.out, stem, report, {"machine": machine_info(), "seeds": seeds, "results": results})


# ----------------------------------------------------------------------------------------------- quick preset
PRESETS = ("quick", "quick_smoothed", "quick_test")
SUMMARY_METRICS = (("factor_vae", "factor_vae", "eval_accuracy"), ("dci_disentanglement", "dci", "disentanglement"),
                   ("dci_completeness", "dci", "completeness"), ("dci_informativeness", "dci", "informativeness_test"),
                   ("mig", "mig", "discrete_mig"))


def _scores(report: dict, protocol: str) -> dict:
    scores = report["scores"][protocol]
    return {key: float(scores[metric][field]) for key, metric, field in SUMMARY_METRICS if metric in scores}


def _stage(workdir: Path, name: str, fn):
    """Run ``fn()`` once per workdir: its JSON result and wall seconds are kept in ``workdir/<name>.done.json``."""
    done = workdir / f"{name}.done.json"
    if done.is_file():
        return json.loads(done.read_text())
    print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
    start = time.time()
    out = {"result": fn(), "wall_s": 0.0}
    out["wall_s"] = time.time() - start
    done.write_text(json.dumps(out))
    print(f"[{time.strftime('%H:%M:%S')}] {name} done in {out['wall_s']:.0f} s", flush=True)
    return out


def quick_run(preset: str, seed: int, workdir: Path) -> dict:
    """One seed of the quick preset into ``workdir``; returns (and writes) ``workdir/summary.json``."""
    from edt_jax.disentangle import tasks

    workdir.mkdir(parents=True, exist_ok=True)
    # quick_smoothed changes DisDiff's frozen DPM only; the beta-VAE baseline is the quick one.
    dis = shapes_disdiff.get_config(preset)
    vae = shapes_betavae.get_config("quick" if preset == "quick_smoothed" else preset)
    dis.seed = vae.seed = seed
    trained = _stage(workdir, "train_disdiff",
                     lambda: int(tasks.train(dis, workdir / "disdiff").step))
    budget = trained["wall_s"]
    vae_run = _stage(workdir, "train_beta_vae", lambda: int(tasks.train_for_seconds(
        vae, workdir / "beta_vae", budget, probe_steps=vae.probe_steps)[0].step))
    reports = {
        "disdiff": _stage(workdir, "evaluate_disdiff", lambda: tasks.evaluate(dis, workdir / "disdiff")),
        "beta_vae": _stage(workdir, "evaluate_beta_vae", lambda: tasks.evaluate(vae, workdir / "beta_vae")),
        "random_encoder": _stage(workdir, "evaluate_random_encoder",
                                 lambda: tasks.evaluate(dis, workdir / "random_encoder", untrained=True)),
    }
    swap = _stage(workdir, "swap_disdiff", lambda: tasks.swap(dis, workdir / "disdiff"))["result"]
    logged = read_records(workdir / "disdiff" / "metrics.jsonl")
    summary = {
        "preset": preset, "seed": seed, "source": dis.data.source, "bandwidth": float(dis.dpm.bandwidth),
        "dis_weight": float(dis.model.dis_weight),
        "factors": reports["disdiff"]["result"]["factors"], "num_factors": len(reports["disdiff"]["result"]["factors"]),
        "disdiff": {**_scores(reports["disdiff"]["result"], "pca"), "protocol": "pca",
                    "raw_factor_vae": reports["disdiff"]["result"]["scores"]["raw"]["factor_vae"]["eval_accuracy"],
                    "steps": trained["result"], "batch_size": dis.batch_size, "train_wall_s": budget,
                    "last_train_metrics": logged[-1]},
        "beta_vae": {**_scores(reports["beta_vae"]["result"], "raw"), "protocol": "raw",
                     "steps": vae_run["result"], "batch_size": vae.batch_size, "train_wall_s": vae_run["wall_s"]},
        "random_encoder": {**_scores(reports["random_encoder"]["result"], "pca"), "protocol": "pca"},
        "swap": {k: swap[k] for k in ("factors", "what_changes", "reconstruction_rmse", "dpm_alone_rmse",
                                      "reconstruction_vs_source", "num_images", "grid") if k in swap},
        "eval_wall_s": {name: r["wall_s"] for name, r in reports.items()},
        # The stages' own wall seconds (a resumed run adds what the earlier calls spent), compiling included.
        "wall_s": sum(json.loads(p.read_text())["wall_s"] for p in workdir.glob("*.done.json")),
    }
    (workdir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def quick_main(a: argparse.Namespace, seeds: list[int]) -> None:
    root = Path(a.workdir)
    if a.seed is not None:  # one seed: the summary in WORKDIR itself
        print(json.dumps(quick_run(a.preset, a.seed, root), indent=1))
        return
    summaries = [quick_run(a.preset, seed, root / f"seed{seed}") for seed in seeds]
    report, payload = quick_report(summaries)
    print(report)
    if a.preset != "quick_test":  # the tests' few-step runs write no results files
        smoothed = "_smoothed" if a.preset == "quick_smoothed" else ""
        stem = f"disentanglement_shapes_hue_position{smoothed}_{jax.default_backend()}"
        Path(a.out).mkdir(parents=True, exist_ok=True)
        shutil.copy(summaries[0]["swap"]["grid"], Path(a.out) / f"{stem}_swap_disdiff.png")
        write_results(a.out, stem, report, payload)


def quick_report(summaries: list[dict]) -> tuple[str, dict]:
    """The Markdown report and JSON payload of the quick preset over seeds."""
    def cell(method: str, key: str, digits: int = 3) -> str:
        values = np.array([s[method][key] for s in summaries if key in s[method]])
        spread = values.std(ddof=1) if len(values) > 1 else 0.0
        return f"{values.mean():.{digits}f} ± {spread:.{digits}f}" if len(values) else "-"

    first = summaries[0]
    blurred = f" blurred by N(0, {first['bandwidth']:g}^2) (dpm.bandwidth)" if first.get("bandwidth") else ""
    names = {"disdiff": "DisDiff (PCA)", "beta_vae": "beta-VAE (raw)", "random_encoder": "random encoder (PCA)"}
    rows = [[names[m], len(summaries), *[cell(m, key) for key, _, _ in SUMMARY_METRICS],
             cell(m, "train_wall_s", 0) if m != "random_encoder" else "-"] for m in names]
    per_seed = [[s["seed"], *[f"{s[m]['factor_vae']:.3f} / {s[m]['dci_disentanglement']:.3f}" for m in names],
                 f"{s['disdiff']['train_wall_s']:.0f}", f"{s['wall_s']:.0f}"] for s in summaries]
    swap = first["swap"]
    swap_rows = [[f"code {c}", *[f"{v:.2f}" for v in row]] for c, row in enumerate(swap["what_changes"])]
    swap_rows.append(["reconstruction vs source", *[f"{v:.2f}" for v in swap["reconstruction_vs_source"]]])
    lines = [f"# DisDiff quick preset: {first['num_factors']} factors of shapes ({', '.join(first['factors'])}), "
             f"{machine_info()}", "",
             f"Source `{first['source']}`; the frozen DPM is the exact closed-form DPM of its images{blurred}. "
             f"Mean ± std over "
             f"training seeds {[s['seed'] for s in summaries]}. FactorVAE = eval accuracy; DCI I = test accuracy. "
             "Wall seconds include compilation; other work on the machine inflates them.", "",
             md_table(["method", "seeds", "FactorVAE", "DCI D", "DCI C", "DCI I", "MIG", "train s"], rows), "",
             "## Per seed: FactorVAE / DCI disentanglement", "",
             md_table(["seed", *names.values(), "DisDiff train s", "whole run s"], per_seed), "",
             "## DisDiff's training: the last logged step", "",
             "ln 3 = 1.099 is chance for the cross-entropies; weight = the official per-example weight (the "
             "squared difference of the two x0 estimates), averaged over the batch.", "",
             md_table(["seed", "step", "reconstruction L1", "CE invariant", "CE variant", "weight", "dis total"],
                      [[s["seed"], *[f"{s['disdiff']['last_train_metrics'][k]:.4g}" for k in
                                     ("step", "reconstruction", "dis_invariant", "dis_variant", "dis_weight",
                                      "dis_total")]] for s in summaries]), "",
             f"## What changes when one code chunk is swapped (seed {first['seed']})", "",
             f"Fraction of {swap['num_images']} images whose true factor (shipped shapes classifier) differs from the "
             f"unswapped reconstruction; reconstruction RMSE {swap['reconstruction_rmse']:.4f} (the closed-form DPM "
             f"alone, inverted and regenerated: {swap['dpm_alone_rmse']:.4f}). DDIM, 20 steps, from the DDIM "
             "inversion of the sources under their own codes.", "",
             md_table(["swapped", *swap["factors"]], swap_rows)]
    for s in summaries[1:]:
        rows = [[f"code {c}", *[f"{v:.2f}" for v in row]] for c, row in enumerate(s["swap"]["what_changes"])]
        lines += ["", f"Seed {s['seed']}:", "", md_table(["swapped", *s["swap"]["factors"]], rows)]
    return "\n".join(lines) + "\n", {"machine": machine_info(), "summaries": summaries}


if __name__ == "__main__":
    main()
