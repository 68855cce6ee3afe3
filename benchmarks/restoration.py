"""DP-IR on one task: every method and baseline on the same test images, and the tau sweep (quality vs NFE).

    python -m benchmarks.restoration --config configs/dpir_mnist_sr4.py --workdir /tmp/dpir_mnist \\
        --denoiser_workdir /tmp/mnist_edt --name mnist_sr4

The networks must be trained first (``launch.restore --mode train_ir / train_fusion / train_ir_alt /
train_conditional``; for the Gaussian-denoiser rows ``--mode train_denoiser`` and ``train_fusion
--config.denoiser=gaussian``, else ``--skip gaussian``). Writes ``benchmarks/results/restoration_<name>_<backend>.
{md,json,png}``: PSNR, SSIM, LPIPS (AlexNet), consistency ||A(x_hat) - y||, diversity (pixel std over the sampling
seeds), NFE and wall time per image, mean and (min-max) over the sampling seeds; the figure has PSNR against NFE
and the perception-distortion plane. The claims under test: starting at tau from x_tau = alpha x0_IR + sigma eps
matches the full chain at >= 4x fewer NFEs (in PSNR and LPIPS), and DP-IR has the best LPIPS at competitive PSNR.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

from benchmarks.bench_utils import load_config, machine_info, md_table, spread, write_results
from edt_jax.data.pixels import to_model_range, to_uint8
from edt_jax.restoration import evaluation, image_keys
from edt_jax.restoration.build import Restorers
from edt_jax.restoration.data import degrade
from edt_jax.restoration.tasks import config_degradation, source_images
from edt_jax.training.metrics import read_records


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="a configs/dpir_*.py file[:arg]")
    p.add_argument("--workdir", required=True, help="the launch.restore workdir with the trained networks")
    p.add_argument("--denoiser_workdir", required=True, help="the launch.train run of the denoiser")
    p.add_argument("--name", required=True, help="task name in the result files, e.g. mnist_sr4")
    p.add_argument("--sampler", default="ddim", help="ODE sampler of the rows (ddim, unipc, dpm_solver)")
    p.add_argument("--full_steps", type=int, default=20, help="NFE of the full chains (from T)")
    p.add_argument("--ddpm_steps", type=int, default=40, help="ancestral DDPM steps of the full chain")
    p.add_argument("--taus", default="0.5,0.25,0.1,0.05", help="tau-start fractions of T; steps scale with tau")
    p.add_argument("--seeds", default="0,1,2", help="sampling seeds")
    p.add_argument("--num_test", type=int, default=None, help="test images (default: config.eval.num_test)")
    p.add_argument("--skip", default="", help="row groups to leave out: ir, ddnm, conditional, dpir, gaussian "
                   "(DP-IR with the Gaussian denoiser), ir_alt, ddpm, baselines_tau (the baselines at tau 0.25)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    return p.parse_args()


def measure(restorer, y, x0, keys, degradation, seeds: list[int]) -> dict:
    """Per-seed means of the metrics, diversity over seeds, seconds per image of a warm call."""
    indices = np.arange(len(y))
    restorer(y[: restorer.batch_size], indices[: restorer.batch_size], seeds[0])  # compile
    draws, per_seed, seconds = [], [], []
    for seed in seeds:
        start = time.perf_counter()
        x_hat = restorer(y, indices, seed)
        seconds.append((time.perf_counter() - start) / len(y))
        draws.append(x_hat)
        per_seed.append({k: float(np.mean(v)) for k, v in
                         evaluation.quality(x_hat, x0, y, degradation, keys).items()})
    diversity = float(np.mean(evaluation.diversity(np.stack(draws)))) if len(seeds) > 1 else 0.0
    return {"first_draw": draws[0], "nfe": restorer.nfe, "seconds_per_image": float(np.median(seconds)),
            "diversity": diversity, **{k: [s[k] for s in per_seed] for k in per_seed[0]}}


DENOISER_NAMES = {"dpm": "EDT denoiser", "gaussian": "Gaussian CNN"}
BASELINES = (("IR network alone", "k", "s"), ("DDNM, full chain", "C1", "^"),
             ("conditional DPM, full chain", "C2", "v"))


def plot(rows: dict, path: Path, title: str) -> None:
    """Left: PSNR against NFE (each denoiser's tau sweep, the baselines as lines); right: the perception-distortion
    plane (PSNR, LPIPS; lower right is better), one point per row: each DP-IR sweep joined and its points labelled
    with tau, the ancestral-DDPM and baseline tau-0.25 rows as crosses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    ticks = set()
    for k, label in enumerate(DENOISER_NAMES.values()):
        sweep = sorted((r["nfe"], np.mean(r["psnr"]), np.mean(r["lpips"]), r["tau"]) for name, r in rows.items()
                       if name.startswith(f"DP-IR ({label}), ") and r.get("sampler") != "ddpm" and "lpips" in r)
        if not sweep:
            continue
        nfe, psnr, lpips, taus = zip(*sweep, strict=True)
        ticks.update(nfe)
        left.plot(nfe, psnr, "o-", color=f"C{3 + k}", label=f"DP-IR ({label}): tau-start, DDIM")
        right.plot(psnr, lpips, "o-", color=f"C{3 + k}", ms=4, label=f"DP-IR ({label}), tau-start (tau labelled)")
        for x, y, tau in zip(psnr, lpips, taus, strict=True):
            right.annotate(f"{tau:g}", (x, y), fontsize=6, color=f"C{3 + k}", xytext=(2, 3 - 9 * k),
                           textcoords="offset points")
    for name, r in rows.items():  # the remaining rows (ancestral DDPM, the baselines at tau 0.25): one point each
        if "lpips" in r and (r.get("sampler") == "ddpm" or name.endswith("tau 0.25") and not name.startswith("DP-IR")):
            label = next((i for i, n in enumerate(DENOISER_NAMES.values()) if f"({n})" in name), None)
            color = f"C{3 + label}" if label is not None else dict((n, c) for n, c, _ in BASELINES).get(
                name.replace("tau 0.25", "full chain"), "C7")
            right.scatter(np.mean(r["psnr"]), np.mean(r["lpips"]), color=color, marker="x", s=24)
            right.annotate(name.replace("DP-IR ", "").replace(", full chain", "").replace(" denoiser", ""),
                           (np.mean(r["psnr"]), np.mean(r["lpips"])), fontsize=5.5, color=color,
                           xytext=(3, -7), textcoords="offset points")
    for name, color, marker in BASELINES:
        if name in rows:
            r = rows[name]
            left.axhline(np.mean(r["psnr"]), color=color, ls=":", label=f"{name} ({r['nfe']} NFE)")
            if "lpips" in r:
                right.scatter(np.mean(r["psnr"]), np.mean(r["lpips"]), color=color, marker=marker, s=30,
                              label=f"{name} ({r['nfe']} NFE)")
    left.set_xscale("log")
    left.set_xticks(sorted(ticks), [str(n) for n in sorted(ticks)])
    left.minorticks_off()
    left.set_xlabel("network evaluations per image (NFE)")
    left.set_ylabel("PSNR (dB)")
    left.legend(fontsize=7)
    right.set_xlabel("PSNR (dB), higher is better")
    right.set_ylabel("LPIPS (AlexNet), lower is better")
    right.set_title("perception-distortion plane", fontsize=8)
    right.legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


FIGURE_ROWS = ("IR network alone", "DDNM, full chain", "conditional DPM, full chain",
               "DP-IR (EDT denoiser), full chain", "DP-IR (EDT denoiser), tau 0.25", "DP-IR (Gaussian CNN), full chain",
               "DP-IR (Gaussian CNN), tau 0.25")


def samples_figure(x0: np.ndarray, y: np.ndarray, draws: dict, path: Path, count: int = 8) -> None:
    """Rows: y (nearest-neighbour up-sampled), each method's seed-0 restoration, the clean image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale = x0.shape[1] // y.shape[1]
    rows = [("y", np.repeat(np.repeat(y, scale, 1), scale, 2))] + [(n, draws[n]) for n in FIGURE_ROWS if n in draws]
    rows.append(("clean", x0))
    fig, axes = plt.subplots(len(rows), count, figsize=(1.1 * count, 1.15 * len(rows)))
    for r, (name, images) in enumerate(rows):
        for c in range(count):
            image = to_uint8(images[c])
            axes[r, c].imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(name.replace(", ", "\n").replace(" (", "\n("), fontsize=5, rotation=0, ha="right",
                              va="center")
    fig.tight_layout(pad=0.2)
    fig.subplots_adjust(left=0.14)  # room for the row names
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_plan(args: argparse.Namespace, kinds: list[str]) -> dict:
    """{row name: (denoiser kind, method, sampling options, group)} in table order."""
    full = args.full_steps
    chain = dict(sampler=args.sampler, steps=full, tau=1.0)
    quarter = dict(sampler=args.sampler, steps=max(1, round(full * 0.25)), tau=0.25)
    plan = {"IR network alone": ("dpm", "ir", {}, "ir"), "IR network alone (ir_alt)": ("dpm", "ir_alt", {}, "ir_alt"),
            "DDNM, full chain": ("dpm", "ddnm", chain, "ddnm"),
            "conditional DPM, full chain": ("dpm", "conditional", chain, "conditional")}
    for kind in kinds:
        label, group = DENOISER_NAMES[kind], "dpir" if kind == "dpm" else "gaussian"
        plan[f"DP-IR ({label}), full chain"] = (kind, "dpir", chain, group)
        plan[f"DP-IR ({label}), full chain, DDPM"] = (kind, "dpir", dict(sampler="ddpm", steps=args.ddpm_steps,
                                                                          tau=1.0), "ddpm")
        for tau in (float(t) for t in args.taus.split(",")):
            sampling = dict(sampler=args.sampler, steps=max(1, round(full * tau)), tau=tau)
            plan[f"DP-IR ({label}), tau {tau:g}"] = (kind, "dpir", sampling, group)
    plan["DP-IR (EDT denoiser) with ir_alt (fusion trained with ir), full chain"] = ("dpm", "dpir_ir_alt", chain,
                                                                                     "ir_alt")
    plan["DDNM, tau 0.25"] = ("dpm", "ddnm", quarter, "baselines_tau")
    plan["conditional DPM, tau 0.25"] = ("dpm", "conditional", quarter, "baselines_tau")
    return plan


def training_summary(workdir: Path) -> str:
    """"ir 400 x 16, fusion 400 x 16, ...": the steps and batch each trained network of ``workdir`` ran (from its
    run's metrics.jsonl and config.json, so the report states what was trained, overrides included)."""
    parts = []
    for name in ("ir", "ir_alt", "fusion", "fusion_gaussian", "conditional", "denoiser"):
        run = workdir / name
        if (run / "metrics.jsonl").is_file() and (run / "config.json").is_file():
            records = read_records(run / "metrics.jsonl")
            step = records[-1]["step"] if records else 0
            config = json.loads((run / "config.json").read_text())
            part = config["gaussian" if name == "denoiser" else name.removesuffix("_gaussian")]
            parts.append(f"{name} {step} x {part['batch_size']}")
    return ", ".join(parts) or "none found"


def claims(rows: dict) -> list[str]:
    """The two claims, tested on the rows: lines of the report."""
    lines = []
    for label in DENOISER_NAMES.values():
        full, quarter = rows.get(f"DP-IR ({label}), full chain"), rows.get(f"DP-IR ({label}), tau 0.25")
        if not (full and quarter):
            continue
        dp, dl = np.mean(quarter["psnr"]) - np.mean(full["psnr"]), np.mean(quarter["lpips"]) - np.mean(full["lpips"])
        # No loss: within the full chain's spread over the sampling seeds, in both metrics.
        held = np.mean(quarter["psnr"]) >= min(full["psnr"]) and np.mean(quarter["lpips"]) <= max(full["lpips"])
        lines.append(f"- tau-start, DP-IR ({label}): tau 0.25 ({quarter['nfe']} NFE) vs the full chain ({full['nfe']} "
                     f"NFE): {dp:+.2f} dB PSNR, {dl:+.4f} LPIPS: {'no loss' if held else 'a loss'} (no loss = "
                     f"PSNR >= the full chain's lowest seed and LPIPS <= its highest).")
    scored = {name: (np.mean(r["psnr"]), np.mean(r["lpips"])) for name, r in rows.items() if "lpips" in r}
    if scored:
        best_lpips = min(scored, key=lambda n: scored[n][1])
        best_psnr = max(scored, key=lambda n: scored[n][0])
        gap = scored[best_psnr][0] - scored[best_lpips][0]
        lines.append(f"- best LPIPS: {best_lpips} ({scored[best_lpips][1]:.4f}, {scored[best_lpips][0]:.2f} dB), "
                     f"{gap:.2f} dB below the best PSNR ({best_psnr}, {scored[best_psnr][0]:.2f} dB, LPIPS "
                     f"{scored[best_psnr][1]:.4f}).")
    return lines


def main() -> None:
    args = parse_args()
    config = load_config(args.config)
    config.denoiser_workdir = args.denoiser_workdir
    num_test = args.num_test or config.eval.num_test
    seeds = [int(s) for s in args.seeds.split(",")]
    degradation = config_degradation(config)
    x0 = to_model_range(source_images(config, "test")[:num_test])
    y = degrade(x0, degradation, config.seed)
    keys = image_keys(config.seed, np.arange(len(x0)))
    skipped = set(filter(None, args.skip.split(",")))
    kinds = ["dpm"] + (["gaussian"] if "gaussian" in config and "gaussian" not in skipped else [])
    restorers = {}
    for kind in kinds:
        c = config.copy_and_resolve_references()
        c.denoiser = kind
        restorers[kind] = Restorers(c, Path(args.workdir), degradation, x0.shape[1:])
    plan = {name: entry for name, entry in build_plan(args, kinds).items() if entry[3] not in skipped}
    rows, first_draws = {}, {}
    start = time.perf_counter()
    for i, (name, (kind, method, sampling, _)) in enumerate(plan.items()):
        deterministic = method in ("ir", "ir_alt")
        result = measure(restorers[kind].get(method, **sampling), y, x0, keys, degradation,
                         seeds[:1] if deterministic else seeds)
        first_draws[name] = result.pop("first_draw")
        rows[name] = {"method": method, "denoiser": kind, **sampling, **result}
        elapsed = time.perf_counter() - start
        print(f"[{i + 1}/{len(plan)}] {name}: PSNR {np.mean(rows[name]['psnr']):.2f} dB, LPIPS "
              f"{np.mean(rows[name].get('lpips', [np.nan])):.4f}, ETA {elapsed / (i + 1) * (len(plan) - i - 1):.0f} s",
              flush=True)
    table = md_table(["method", "NFE", "PSNR (dB)", "SSIM", "LPIPS", "consistency", "diversity", "ms / image"],
                     [[name, r["nfe"], spread(r["psnr"], 2), spread(r["ssim"], 3), spread(r["lpips"], 4),
                       spread(r["consistency"], 4), f"{r['diversity']:.4f}", f"{1e3 * r['seconds_per_image']:.1f}"]
                      for name, r in rows.items()])
    stem = f"restoration_{args.name}_{jax.default_backend()}"
    left_out = f" Left out: {', '.join(sorted(skipped))}." if skipped else ""
    report = (f"# DP-IR: {args.name} ({degradation.spec()}), {len(x0)} test images\n\n{machine_info()}\n\n"
              f"Config `{args.config}`, EDT denoiser `{args.denoiser_workdir}`, Gaussian CNN denoiser "
              f"`{args.workdir}/denoiser`, sampler {args.sampler}; seeds {seeds} (mean (min-max) over seeds; IR rows "
              f"are deterministic). NFE counts every network evaluation per image (DP-IR: the IR network + one fused "
              f"denoiser/fusion call per step). Images in [-1, 1], data_range 2; LPIPS v0.1 AlexNet at 32x32; "
              f"consistency is the RMS of A(x_hat) - y. Wall times: one warm call.{left_out}\n\n"
              f"Trained networks (steps x batch): {training_summary(Path(args.workdir))}.\n\n{table}\n\n"
              f"Claims:\n\n" + "\n".join(claims(rows)) + "\n")
    write_results(args.out, stem, report, {"machine": machine_info(), "args": vars(args), "rows": rows})
    plot(rows, Path(args.out) / f"{stem}.png", f"DP-IR {args.name} ({len(x0)} test images)")
    samples_figure(x0, y, first_draws, Path(args.out) / f"{stem}_samples.png")
    print(report)


if __name__ == "__main__":
    main()
