"""DP-IR on one task: every method and baseline on the same test images, and the tau sweep (quality vs NFE).

    python -m benchmarks.restoration --config configs/dpir_mnist_sr4.py --workdir /tmp/dpir_mnist \\
        --denoiser_workdir /tmp/mnist_edt --name mnist_sr4

The networks must be trained first (``launch.restore --mode train_ir / train_fusion / train_ir_alt /
train_conditional``). Writes ``benchmarks/results/restoration_<name>_<backend>.{md,json,png}``: PSNR, SSIM,
consistency ||A(x_hat) - y||, diversity (pixel std over the sampling seeds), NFE and wall time per image, mean
and (min-max) over the sampling seeds. The claim under test: starting at tau from x_tau = alpha x0_IR +
sigma eps matches the full chain at >= 4x fewer NFEs.
"""

from __future__ import annotations

import argparse
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
    p.add_argument("--skip", default="", help="methods to leave out, e.g. ddnm (slow with per-image blur kernels)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    return p.parse_args()


def measure(restorer, y, x0, keys, degradation, seeds: list[int]) -> dict:
    """Per-seed means of the metrics, diversity over seeds, seconds per image of a warm call."""
    indices = np.arange(len(y))
    restorer(y[: restorer.batch_size], indices[: restorer.batch_size], seeds[0])  # compile
    score = jax.jit(evaluation.quality, static_argnums=3)
    draws, per_seed, seconds = [], [], []
    for seed in seeds:
        start = time.perf_counter()
        x_hat = restorer(y, indices, seed)
        seconds.append((time.perf_counter() - start) / len(y))
        draws.append(x_hat)
        per_seed.append({k: float(np.mean(v)) for k, v in score(x_hat, x0, y, degradation, keys).items()})
    diversity = float(np.mean(evaluation.diversity(np.stack(draws)))) if len(seeds) > 1 else 0.0
    return {"first_draw": draws[0], "nfe": restorer.nfe, "seconds_per_image": float(np.median(seconds)),
            "diversity": diversity, **{k: [s[k] for s in per_seed] for k in per_seed[0]}}


def plot(rows: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    sweep = sorted((r["nfe"], np.mean(r["psnr"])) for name, r in rows.items()
                   if name == "DP-IR, full chain" or (name.startswith("DP-IR, tau") and "DDPM" not in name))
    ax.plot(*zip(*sweep, strict=True), "o-", label="DP-IR, tau-start (DDIM; tau = 1 at the right)")
    for name, style in (("IR network alone", "k:"), ("DDNM, full chain", "C1--"),
                        ("conditional DPM, full chain", "C2--")):
        if name in rows:
            ax.axhline(np.mean(rows[name]["psnr"]), color=style[:2] if style[0] == "C" else style[0],
                       ls=style[2:] if style[0] == "C" else style[1:], label=f"{name} ({rows[name]['nfe']} NFE)")
    ax.set_xscale("log")
    ax.set_xticks([n for n, _ in sweep], [str(n) for n, _ in sweep])
    ax.minorticks_off()
    ax.set_xlabel("network evaluations per image (NFE)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


FIGURE_ROWS = ("IR network alone", "DDNM, full chain", "conditional DPM, full chain", "DP-IR, full chain",
               "DP-IR, tau 0.25")


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
        axes[r, 0].set_ylabel(name.replace(", ", "\n"), fontsize=6, rotation=0, ha="right", va="center")
    fig.tight_layout(pad=0.2)
    fig.subplots_adjust(left=0.1)  # room for the row names
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    restorers = Restorers(config, Path(args.workdir), degradation, x0.shape[1:])
    full = args.full_steps
    plan = {"IR network alone": ("ir", {}), "IR network alone (ir_alt)": ("ir_alt", {}),
            "DDNM, full chain": ("ddnm", dict(sampler=args.sampler, steps=full, tau=1.0)),
            "conditional DPM, full chain": ("conditional", dict(sampler=args.sampler, steps=full, tau=1.0)),
            "DP-IR, full chain": ("dpir", dict(sampler=args.sampler, steps=full, tau=1.0)),
            "DP-IR, full chain, DDPM": ("dpir", dict(sampler="ddpm", steps=args.ddpm_steps, tau=1.0))}
    for tau in (float(t) for t in args.taus.split(",")):
        steps = max(1, round(full * tau))
        plan[f"DP-IR, tau {tau:g}"] = ("dpir", dict(sampler=args.sampler, steps=steps, tau=tau))
    tau_quarter = dict(sampler=args.sampler, steps=max(1, round(full * 0.25)), tau=0.25)
    plan["DP-IR, tau 0.25, DDPM"] = ("dpir", dict(sampler="ddpm", steps=max(1, round(args.ddpm_steps * 0.25)),
                                                  tau=0.25))
    plan["DP-IR with ir_alt (fusion trained with ir), full chain"] = ("dpir_ir_alt", plan["DP-IR, full chain"][1])
    plan["DP-IR with ir_alt, tau 0.25"] = ("dpir_ir_alt", tau_quarter)
    plan["DDNM, tau 0.25"] = ("ddnm", tau_quarter)
    plan["conditional DPM, tau 0.25"] = ("conditional", tau_quarter)
    skipped = set(filter(None, args.skip.split(",")))
    plan = {name: entry for name, entry in plan.items() if entry[0] not in skipped}
    rows, first_draws = {}, {}
    start = time.perf_counter()
    for i, (name, (method, sampling)) in enumerate(plan.items()):
        deterministic = method in ("ir", "ir_alt")
        result = measure(restorers.get(method, **sampling), y, x0, keys, degradation,
                         seeds[:1] if deterministic else seeds)
        first_draws[name] = result.pop("first_draw")
        rows[name] = {"method": method, **sampling, **result}
        elapsed = time.perf_counter() - start
        print(f"[{i + 1}/{len(plan)}] {name}: PSNR {np.mean(rows[name]['psnr']):.2f} dB, "
              f"ETA {elapsed / (i + 1) * (len(plan) - i - 1):.0f} s", flush=True)
    table = md_table(["method", "NFE", "PSNR (dB)", "SSIM", "consistency", "diversity", "ms / image"],
                     [[name, r["nfe"], spread(r["psnr"], 2), spread(r["ssim"], 3), spread(r["consistency"], 4),
                       f"{r['diversity']:.4f}", f"{1e3 * r['seconds_per_image']:.1f}"] for name, r in rows.items()])
    stem = f"restoration_{args.name}_{jax.default_backend()}"
    full_psnr, quarter_psnr = np.mean(rows["DP-IR, full chain"]["psnr"]), np.mean(rows["DP-IR, tau 0.25"]["psnr"])
    left_out = f" Left out: {', '.join(sorted(skipped))}." if skipped else ""
    report = (f"# DP-IR: {args.name} ({degradation.spec()}), {len(x0)} test images\n\n{machine_info()}\n\n"
              f"Config `{args.config}`, denoiser `{args.denoiser_workdir}`, sampler {args.sampler}; seeds {seeds} "
              f"(mean (min-max) over seeds; IR rows are deterministic). NFE counts every network evaluation per "
              f"image (DP-IR: the IR network + one fused denoiser/fusion call per step). Images in [-1, 1], "
              f"data_range 2; consistency is the RMS of A(x_hat) - y.{left_out}\n\n{table}\n\n"
              f"tau-start claim: DP-IR at tau 0.25 ({rows['DP-IR, tau 0.25']['nfe']} NFE) vs the full chain "
              f"({rows['DP-IR, full chain']['nfe']} NFE): {quarter_psnr - full_psnr:+.2f} dB PSNR.\n")
    write_results(args.out, stem, report, {"machine": machine_info(), "args": vars(args), "rows": rows})
    plot(rows, Path(args.out) / f"{stem}.png", f"DP-IR {args.name}: PSNR vs NFE ({len(x0)} test images)")
    samples_figure(x0, y, first_draws, Path(args.out) / f"{stem}_samples.png")
    print(report)


if __name__ == "__main__":
    main()
