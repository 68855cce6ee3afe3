"""The small text-to-image model on captioned shapes: how well it follows prompts, and the four working-mechanism
experiments of Yi et al. on it.

    python -m launch.train --config configs/shapes_t2i.py --workdir /tmp/t2i_run       # about 96 minutes on 2 CPU cores
    python -m benchmarks.t2i_shapes --workdir /tmp/t2i_run

Quality: every one of the 72 (shape, object hue, background hue) prompts ("a red circle on a dark blue
background"), ``--per_prompt`` samples each, drawn with the run's scheduler at ``--steps`` and each guidance scale
of ``--scales``; the shipped shapes classifier reads the three factors of every sample, and the table gives the
fraction it reads as prompted (per factor and all three at once), mean and spread over the sampling seeds; and
the network's denoising error by timestep on its training images against the images' mean image.
Then ``analysis.text``'s reverse, switch, eos and guidance experiments on ``--num_prompts`` prompts. Writes
``benchmarks/results/t2i_shapes_<backend>[_<tag>].{md,json}`` (with a grid of one sample per prompt,
``..._grid.png``) and the experiments' reports into ``benchmarks/results/t2i_working_mechanism[_<tag>]/``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import numpy as np

import edt_jax
from benchmarks.bench_utils import command_line, machine_info, md_table, write_results
from edt_jax.analysis import experiments, text
from edt_jax.analysis.prompts import FACTORS, read_factors
from edt_jax.data.pixels import save_grid
from edt_jax.data.shapes import FACTOR_NAMES, FACTOR_SIZES, ShapesDataset
from edt_jax.diffusion.predictions import target_of, to_x0
from edt_jax.mesh import create_mesh
from edt_jax.reporting import spread
from edt_jax.runs import build
from edt_jax.t2i import captions
from edt_jax.training.metrics import read_records

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True, help="the launch.train run of configs/shapes_t2i.py")
    p.add_argument("--steps", type=int, default=10, help="scheduler steps (model calls) per sample")
    p.add_argument("--scales", default="1,3", help="guidance scales of the quality table")
    p.add_argument("--guidance_scale", type=float, default=3.0, help="the experiments' guidance scale")
    p.add_argument("--per_prompt", type=int, default=4, help="quality: samples per prompt and seed")
    p.add_argument("--seeds", default="0,1", help="sampling seeds")
    p.add_argument("--num_prompts", type=int, default=8, help="experiments: prompts (of the 72)")
    p.add_argument("--experiments", default=",".join(text.TEXT_EXPERIMENTS), help="which experiments to run")
    p.add_argument("--denoise_images", type=int, default=64, help="captioned images of the denoising table")
    p.add_argument("--tag", default="", help="results stem suffix: t2i_shapes_<backend>_<tag>")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    return p.parse_args()


DENOISE_TIMESTEPS = (50, 200, 400, 600, 800, 950)


def denoising(pipe, source: str, *, num_images: int, seed: int = 0) -> list[dict]:
    """x0 RMSE of the UNet on captioned images of ``source`` (the run's data) noised to each of ``DENOISE_TIMESTEPS``.

    Each row: ``{"t", "x0_rmse", "mean_image_rmse", "output_mse"}``: the RMSE of the network's x0 estimate (from its
    eps / v / x0 output) against the clean images, in [-1, 1] pixels; that of the images' mean image (what a
    network that learnt nothing but the data's mean would give at high noise); and the MSE of the raw output
    against its own target (the training loss at that t). The sampler's first steps see the x0 estimates of high t.
    """
    import jax.numpy as jnp

    from edt_jax import data as data_lib

    source = captions.CaptionedShapes(data_lib.create_source(source), tokenizer=pipe.tokenizer, seed=seed)
    rng = np.random.default_rng(seed)
    items = [source[int(i)] for i in rng.choice(len(source), num_images, replace=False)]
    x0 = np.stack([item["image"] for item in items]).astype(np.float32) / 127.5 - 1.0
    context = pipe.encode_prompt(np.stack([item["input_ids"] for item in items]))
    abar = np.asarray(pipe.schedule.alphas_cumprod, np.float64)
    rows = []
    for t in DENOISE_TIMESTEPS:
        a, s = np.sqrt(abar[t]), np.sqrt(1.0 - abar[t])
        eps = rng.standard_normal(x0.shape).astype(np.float32)
        x_t = (a * x0 + s * eps).astype(np.float32)
        out = np.asarray(pipe.unet.apply({"params": pipe.unet_params}, jnp.asarray(x_t),
                                         jnp.full((num_images,), t, jnp.float32), context), np.float64)
        estimate = to_x0(out, x_t, a, s, pipe.prediction)
        target = target_of(pipe.prediction, x0, eps, a, s)
        rows.append({"t": t, "x0_rmse": float(np.sqrt(np.mean((estimate - x0) ** 2))),
                     "mean_image_rmse": float(np.sqrt(np.mean((x0 - x0.mean(0)) ** 2))),
                     "output_mse": float(np.mean((out - target) ** 2))})
    return rows


SENSITIVITY_TIMESTEPS = (200, 600)


def sensitivity(pipe, source: str, *, num_noise: int = 4, seed: int = 0) -> list[dict]:
    """How much the UNet listens to each prompted factor: for every one of the 72 prompts and each factor, the RMS
    change of the network's output when only that factor's word changes (to the next value), on the same x_t
    (``num_noise`` Gaussian draws, standard normal: the model's view at high noise) at each of
    ``SENSITIVITY_TIMESTEPS``. Rows ``{"t", "factor", "output_rms_change", "output_rms"}``: mean over prompts; the
    rows of t = "image" are the RMS change of the image itself under the same change, the factors no prompt names
    at the first value ``source`` (the run's data, a shapes slice) holds.
    """
    import jax.numpy as jnp

    from edt_jax import data as data_lib

    shapes = data_lib.create_source(source)
    held = getattr(shapes, "factor_values", [range(size) for size in FACTOR_SIZES])  # the whole dataset: all
    unnamed = {name: values[0] for name, values in zip(FACTOR_NAMES, held, strict=True) if name not in FACTORS}

    records = captions.prompt_records(72)
    x = np.random.default_rng(seed).standard_normal((num_noise, *pipe.latent_shape())).astype(np.float32)

    def outputs(prompts: list[str], t: int) -> np.ndarray:  # (P, num_noise, H, W, C)
        ctx = np.asarray(pipe.encode_prompt(prompts))
        batch_ctx = jnp.asarray(np.repeat(ctx, num_noise, axis=0))
        batch_x = jnp.asarray(np.tile(x, (len(prompts), 1, 1, 1)))
        out = pipe.unet.apply({"params": pipe.unet_params}, batch_x, jnp.full((len(batch_x),), t, jnp.float32),
                              batch_ctx)
        return np.asarray(out, np.float64).reshape(len(prompts), num_noise, *x.shape[1:])

    def images(values: list[dict]) -> np.ndarray:  # the prompted factors drawn in the run's slice, in [-1, 1]
        full = [[{**unnamed, **v}[name] for name in FACTOR_NAMES] for v in values]
        return ShapesDataset(x.shape[1]).images_for(np.array(full)).astype(np.float64) / 127.5 - 1.0

    prompted = [r["factors"] for r in records]
    # Each factor moved to its next value in every prompt: the same change for the images and for the captions.
    moved = {f: [{**v, f: (v[f] + 1) % FACTOR_SIZES[FACTOR_NAMES.index(f)]} for v in prompted] for f in FACTORS}
    rows = []
    for factor in FACTORS:  # how much the images themselves change: what a network that listened would follow
        delta = images(moved[factor]) - images(prompted)
        rows.append({"t": "image", "factor": factor, "output_rms": None,
                     "output_rms_change": float(np.sqrt(np.mean(delta ** 2)))})
    for t in SENSITIVITY_TIMESTEPS:
        base = outputs([r["prompt"] for r in records], t)
        for factor in FACTORS:
            delta = outputs([captions.caption_of(**v) for v in moved[factor]], t) - base
            rows.append({"t": t, "factor": factor, "output_rms": float(np.sqrt(np.mean(base ** 2))),
                         "output_rms_change": float(np.sqrt(np.mean(delta ** 2)))})
    return rows


def training(workdir: str, *, last: int = 10) -> dict | None:
    """The run's training as its ``metrics.jsonl`` logged it: steps, the median step time and images/s, and the
    mean loss of the ``last`` logged records; None for a workdir without one (a copied checkpoint)."""
    path = Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return None
    records = read_records(path)
    return {"steps": records[-1]["step"], "median_step_time_s": float(np.median([r["step_time_s"] for r in records])),
            "median_images_per_s": float(np.median([r["images_per_s"] for r in records])),
            "final_loss": float(np.mean([r["loss"] for r in records[-last:]]))}


def quality(pipe, reader, *, steps: int, scales: list[float], per_prompt: int, seeds: list[int]) -> dict:
    """{scale: {factor or "all": {"per_seed": [...], "mean", "min", "max"}}} of the 72 prompts, and one grid."""
    records = captions.prompt_records(72)
    prompts = [r["prompt"] for r in records for _ in range(per_prompt)]
    targets = {f: np.array([r["factors"][f] for r in records for _ in range(per_prompt)]) for f in FACTORS}
    cond, uncond = pipe.encode_prompt(prompts), pipe.encode_prompt([""] * len(prompts))
    out, grid = {}, None
    for scale in scales:
        per_seed = {f: [] for f in (*FACTORS, "all")}
        for seed in seeds:
            images = pipe.sample(cond, uncond, num_inference_steps=steps, guidance_scale=scale, seed=seed)["images"]
            seen = read_factors(reader, images, FACTORS)
            hits = np.stack([seen[f] == targets[f] for f in FACTORS])
            for f, row in zip(FACTORS, hits, strict=True):
                per_seed[f].append(float(row.mean()))
            per_seed["all"].append(float(hits.all(axis=0).mean()))
            if grid is None and scale == max(scales):
                grid = images[::per_prompt]
        out[str(scale)] = {f: {"per_seed": v, **_summary(v)} for f, v in per_seed.items()}
    return {"by_scale": out, "grid": grid}


def _summary(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "min": float(np.min(values)), "max": float(np.max(values))}


def main() -> None:
    a = parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    scales = [float(s) for s in a.scales.split(",")]
    # One device: the samples are few and small; a multi-device CPU mesh would only split them.
    pipe = edt_jax.load_run(a.workdir, mesh=create_mesh(devices=jax.devices()[:1]))
    reader = text.default_reader()
    start = time.time()
    q = quality(pipe, reader, steps=a.steps, scales=scales, per_prompt=a.per_prompt, seeds=seeds)
    seconds = time.time() - start
    suffix = f"_{a.tag}" if a.tag else ""  # of the quality files and the experiments' folder alike
    stem = f"t2i_shapes_{jax.default_backend()}{suffix}"
    config = build.read_config(a.workdir)
    source, trained = config.data.source, training(a.workdir)
    denoise = denoising(pipe, source, num_images=a.denoise_images)
    denoise_rows = [[r["t"], f"{r['output_mse']:.4f}", f"{r['x0_rmse']:.3f}", f"{r['mean_image_rmse']:.3f}"]
                    for r in denoise]
    listens = sensitivity(pipe, source)
    listen_rows = [[t, *[f"{r['output_rms_change']:.3f}" for f in FACTORS for r in listens
                         if r["t"] == t and r["factor"] == f]] for t in ("image", *SENSITIVITY_TIMESTEPS)]
    rows = [[scale, *[spread(q["by_scale"][scale][f]["per_seed"], 3) for f in (*FACTORS, "all")]]
            for scale in q["by_scale"]]
    lines = [f"# A small text-to-image model on captioned shapes, {machine_info()}", "",
             f"`{command_line()}`", "",
             *([] if trained is None else [
                 f"The run: {trained['steps']} steps of {config.batch_size} on `{source}`, a median "
                 f"{trained['median_step_time_s']:.2f} s a step ({trained['median_images_per_s']:.1f} images/s) as "
                 f"its metrics.jsonl logged it; loss {trained['final_loss']:.4f} over the last 10 logged steps.", ""]),
             f"The 72 (shape, object hue, background hue) prompts x {a.per_prompt} samples x seeds {seeds}, "
             f"{a.steps} steps of the run's scheduler; the fraction of samples the shipped shapes classifier reads "
             f"as prompted (mean (min-max) over the seeds). {seconds:.0f} s.", "",
             md_table(["guidance scale", *FACTORS, "all three"], rows), "",
             f"One sample per prompt (scale {max(scales):g}, seed {seeds[0]}): `{stem}_grid.png`.", "",
             f"## Denoising by timestep ({pipe.prediction} prediction)", "",
             f"{a.denoise_images} captioned training images (`{source}`) noised to x_t, their own captions: the MSE "
             f"of the network's output against its target (the training loss at t), the RMSE of its x0 estimate, "
             f"and that of the images' mean image (what knowing only the data's mean gives), pixels in [-1, 1].", "",
             md_table(["t", f"{pipe.prediction} MSE", "x0 RMSE", "mean-image RMSE"], denoise_rows), "",
             "## What the network listens to", "",
             f"The RMS change of the UNet's {pipe.prediction} output when one factor's word of a prompt changes (to "
             f"the next value), on the same x_t (standard normal), mean over the 72 prompts; the output's own RMS is "
             f"about {np.mean([r['output_rms'] for r in listens if r['output_rms']]):.2f}. Row `image`: the RMS "
             f"change of the image itself (the prompted factors drawn in the run's slice; pixels in [-1, 1]) under the "
             f"same change of the factor.", "",
             md_table(["t", *[f"{f} word" for f in FACTORS]], listen_rows)]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    save_grid(q["grid"] * 2 - 1, out / f"{stem}_grid.png")
    write_results(out, stem, "\n".join(lines) + "\n", {"machine": machine_info(), "steps": a.steps,
                                                       "per_prompt": a.per_prompt, "seeds": seeds,
                                                       "quality": q["by_scale"], "seconds": seconds,
                                                       "prediction": pipe.prediction, "denoising": denoise,
                                                       "sensitivity": listens, "training": trained})
    print("\n".join(lines))
    records = captions.prompt_records(a.num_prompts)
    options = dict(steps=a.steps, guidance_scale=a.guidance_scale, seeds=seeds, num_per_prompt=a.per_prompt,
                   reader=reader)
    for kind in [k for k in a.experiments.split(",") if k]:  # --experiments "": the quality table alone
        start = time.time()
        report = text.run_text_experiment(kind, pipe, records, **options)
        experiments.write_report(report, kind, out / f"t2i_working_mechanism{suffix}", time.time() - start)
        print(report.markdown)


if __name__ == "__main__":
    main()
