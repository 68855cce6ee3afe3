"""The working mechanism of a diffusion model (Yi et al., NeurIPS 2024), measured on data and on a trained run.

    python -m launch.analyze --analysis forward --source mnist5k --output_dir /tmp/analysis
    python -m launch.analyze --workdir /tmp/mnist_edt --analysis reverse    # which band settles first
    python -m launch.analyze --workdir /tmp/mnist_edt --analysis switch     # label A, then B after a fraction
    python -m launch.analyze --workdir /tmp/mnist_edt --analysis guidance   # guidance windows: FD, accuracy, L1

forward   the forward process on real data (``--source``, default the run's; ``--vae`` encodes it to SD-VAE
          latents first): per frequency band the RMS of the signal, the noise and x_t, the band SNR and where it
          falls to 1 (high frequencies are swamped first, the low ones only in the last stage).
reverse   along a sampler trajectory of the run (``launch.sample``'s flags): the distance of each call's data
          prediction to the final sample, low vs high band, and the call from which each stays within
          ``--tolerance`` of its final value (shape first, details later).
switch    start with label A and switch to B after a fraction of the calls; the shipped classifier says
          whether the samples show A or B (needs a run on mnist5k or shapes).
guidance  classifier-free guidance on the first fraction of the calls only (then conditional or unconditional
          alone) and on time intervals: FD, class accuracy and the mean L1 distance to the full-guidance sample
          from the same noise. ``benchmarks/guidance_windows.py`` adds the measured time.

``--analysis`` takes several, comma-separated (the run is loaded once). Each writes ``<output_dir>/<analysis>.json``,
``.md`` and ``.png`` (default output_dir: WORKDIR/analysis).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging

from edt_jax import data as data_lib
from edt_jax import samplers
from edt_jax.analysis import forward, label_switch, plots, reverse
from edt_jax.diffusion import BETA_SCHEDULES, DiscreteDiffusion, beta_schedule
from edt_jax.metrics import extractors
from launch import builders
from launch import evaluate as evaluate_lib  # also defines the sampling flags of launch.sample
from launch import sample as sample_lib
from launch.tables import md_table, spread

ANALYSES = ("forward", "reverse", "switch", "guidance")
builders.define_flag(flags.DEFINE_list, "analysis", None, f"what to measure, one or more of {', '.join(ANALYSES)}")
builders.define_flag(flags.DEFINE_string, "workdir", None, "a launch.train run (needed by all but forward)")
builders.define_flag(flags.DEFINE_string, "output_dir", None, "where the results go (default WORKDIR/analysis)")
builders.define_flag(flags.DEFINE_list, "cutoffs", ["0.125", "0.25", "0.5"],
                     "low-band cutoffs, fractions of the Nyquist radius")
builders.define_flag(flags.DEFINE_string, "source", None, "forward: data source (default: the run's data.source)")
builders.define_flag(flags.DEFINE_integer, "num_images", 256, "forward: number of data images")
builders.define_flag(flags.DEFINE_enum, "beta_schedule", None, list(BETA_SCHEDULES),
                     "forward: the noise schedule (default: the run's, else linear; scaled_linear: Stable Diffusion's)")
builders.define_flag(flags.DEFINE_float, "tolerance", 0.1, "reverse: a band has settled within this relative distance")
builders.define_flag(flags.DEFINE_list, "fractions", None,
                     "switch: fractions of the calls with the first label (default 0,0.1,...,1); guidance: guided "
                     "fractions (default 1,0.8,0.6,0.4,0.2,0)")
builders.define_flag(flags.DEFINE_list, "intervals", ["300:700", "0:500"],
                     "guidance: t_lo:t_hi intervals in training timesteps")
builders.define_flag(flags.DEFINE_list, "seeds", ["0", "1"], "switch / guidance: sampling seeds")


@dataclasses.dataclass
class Result:
    """What an analysis writes: a Markdown report, a JSON payload and figures (name -> function(path))."""

    markdown: str
    payload: dict
    figures: dict


def _cutoffs() -> list[float]:
    return [float(c) for c in flags.FLAGS.cutoffs]


def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


# ----------------------------------------------------------------------------------------------------- forward
def forward_data(spec: str, num: int, seed: int, config: ml_collections.ConfigDict | None,
                 vae_path: str | None) -> tuple[np.ndarray, str]:
    """(x0 (N, H, W, C) float32 as the model sees it, a description): images in [-1, 1], or latents for a latent
    source or when a VAE is given (its posterior mean times the latent scale)."""
    d = builders.to_plain(config.data) if config is not None else {}
    source = data_lib.create_source(spec, data_dir=d.get("data_dir"))
    preprocess = data_lib.Preprocess(image_size=d.get("image_size"), channels=d.get("channels"),
                                     latent_scale=d.get("latent_scale", 1.0))
    indices = np.sort(np.random.default_rng(seed).choice(len(source), min(num, len(source)), replace=False))
    records = [preprocess(source[int(i)]) for i in indices]
    key = next(k for k in ("image", "latent", "latent_mean") if k in records[0])
    x0 = np.stack([r[key] for r in records]).astype(np.float32)
    if key != "image" or not vae_path:
        return x0, f"{spec} ({len(x0)} {'images' if key == 'image' else 'latents'})"
    vae = builders.build_vae(config if config is not None else ml_collections.ConfigDict({"vae": {}}), vae_path)
    vae_model, params, scale = vae
    encode = jax.jit(lambda p, x: vae_model.apply({"params": p}, x, method=vae_model.encode)[0] * scale)
    if x0.shape[-1] == 1:
        x0 = np.repeat(x0, 3, -1)
    latents = np.concatenate([np.asarray(encode(params, x0[i:i + 32])) for i in range(0, len(x0), 32)])
    return latents, f"{spec} ({len(x0)} images) encoded by the VAE at {vae_path}"


def run_forward(config, diffusion: DiscreteDiffusion) -> Result:
    f = flags.FLAGS
    spec = f.source or (config.data.source if config is not None else None)
    if not spec:
        raise ValueError("--analysis forward needs --source (a data source) or --workdir (a run)")
    vae_path = f.vae or (config.get("vae", {}).get("path") if config is not None else None)
    x0, what = forward_data(spec, f.num_images, f.seed, config, vae_path)
    if f.beta_schedule:
        diffusion = DiscreteDiffusion.from_betas(beta_schedule(f.beta_schedule, diffusion.num_steps))
    betas = f.beta_schedule or (config.diffusion.get("beta_schedule", "linear") if config else "linear")
    what += f", {betas} betas"
    timesteps = np.unique(np.r_[np.arange(0, diffusion.num_steps, 20), diffusion.num_steps - 1])
    by_cutoff = {c: forward.forward_bands(x0, diffusion.alphas_cumprod, timesteps, c, jax.random.key(f.seed))
                 for c in _cutoffs()}
    rows, crossings = [], {}
    for c, stats in by_cutoff.items():
        crossings[c] = {b: forward.crossing_timestep(timesteps, stats[f"snr_{b}"]) for b in ("low", "high", "low_ac")}
        t_high = crossings[c]["high"]
        rows.append([f"{c:g}", f"{stats['low_power_fraction']:.3f}", _fmt(t_high, 4), _fmt(crossings[c]["low"], 4),
                     _fmt(crossings[c]["low_ac"], 4),
                     f"{np.interp(t_high, timesteps, stats['similarity_low_ac']):.2f}" if t_high else "-"])
    picks = [t for t in (0, 100, 240, 500, 760, 900, 999) if t in set(timesteps.tolist())]
    mid = by_cutoff[_cutoffs()[len(_cutoffs()) // 2]]
    detail = [[t, *(f"{mid[k][list(timesteps).index(t)]:.3g}" for k in
                    ("signal_low", "snr_low", "snr_low_ac", "similarity_low_ac", "signal_high", "snr_high",
                     "similarity_high"))] for t in picks]
    markdown = "\n".join([
        f"# Forward process by frequency band: {what}", "",
        f"x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, {diffusion.num_steps} timesteps; bands from the centred "
        f"circular low-pass (cutoff a fraction of the Nyquist radius); one noise draw for every t. SNR = signal power "
        f"/ noise power in the band; 'similarity' = mean cosine similarity of band(x_t) with band(x0).", "",
        "## Where each band's SNR falls to 1", "",
        md_table(["cutoff", "x0 power in the low band", "high band: SNR 1 at t", "low band: SNR 1 at t",
                  "low band without the mean: SNR 1 at t", "its similarity when the high band's SNR is 1"], rows), "",
        f"## Per band at a few timesteps (cutoff {_cutoffs()[len(_cutoffs()) // 2]:g}; RMS per element)", "",
        md_table(["t", "signal low", "SNR low", "SNR low without the mean", "its similarity", "signal high",
                  "SNR high", "similarity high"], detail), ""])
    payload = {"what": what, "crossings": {str(c): v for c, v in crossings.items()},
               "by_cutoff": {str(c): {k: np.asarray(v).tolist() for k, v in s.items()} for c, s in by_cutoff.items()}}
    return Result(markdown, payload, {"forward.png": lambda path: plots.forward_figure(
        by_cutoff, path, f"band SNR of x_t: {spec}, {betas} betas")})


# ----------------------------------------------------------------------------------------------------- reverse
def run_reverse(run, step: int) -> Result:
    f = flags.FLAGS
    config, model, diffusion, params, mesh = run
    sampling = sample_lib.sampling_options(config, diffusion)
    if sampling["sampler"] == "ddpm":
        raise ValueError("--analysis reverse needs an ODE sampler (--sampler unipc, dpm_solver or ddim)")
    num = f.num_samples or 256
    labels = np.random.default_rng(f.seed).integers(0, model.num_classes, num)
    generate = sample_lib.make_generator(model, diffusion, mesh=mesh, prediction=config.loss.prediction,
                                         return_trajectory=True, **sampling)
    start = time.time()
    final, traj = generate(params, labels, f.seed)
    logging.info("sampled %d trajectories in %.1f s", num, time.time() - start)
    timesteps = sample_lib.model_time_of_calls(diffusion, sampling["steps"], sampling["skip_type"])
    by_cutoff = {c: reverse.band_distances(traj.denoised, final, c) for c in _cutoffs()}
    settle = {c: {b: reverse.settling_call(d[b], f.tolerance) for b in ("low", "high", "total")}
              for c, d in by_cutoff.items()}
    rows = [[f"{c:g}", *("not by the last call" if settle[c][b] is None else settle[c][b]
                         for b in ("low", "high", "total"))] for c in by_cutoff]
    mid = _cutoffs()[len(_cutoffs()) // 2]
    agreement = class_agreement(config, traj.denoised, final)
    per_call = [[k, f"{timesteps[k]:.0f}", f"{by_cutoff[mid]['low'][k]:.3f}", f"{by_cutoff[mid]['high'][k]:.3f}",
                 f"{by_cutoff[mid]['total'][k]:.3f}"] + ([] if agreement is None else [f"{agreement[k]:.3f}"])
                for k in range(len(timesteps))]
    class_column = [] if agreement is None else ["same class as the sample"]
    describe = (f"{sampling['sampler']} {sampling['steps']} steps, guidance "
                f"{np.asarray(sampling['guidance_scale']).tolist()}, AMM {sampling['amm']}")
    markdown = "\n".join([
        f"# Reverse process by frequency band: `{f.workdir}` step {step}", "",
        f"{num} samples ({describe}). For each model call k, the data prediction x0_k against the final sample, "
        f"per band: ||band(x0_k - sample)|| / ||band(sample)||, mean over samples. A band has settled at the first "
        f"call from which it stays within {f.tolerance:g}.", "",
        "## Settling call per band (of calls 0 to " + str(len(timesteps) - 1) + ")", "",
        md_table(["cutoff", "low band", "high band", "whole image"], rows), "",
        f"## Per call (cutoff {mid:g})", "",
        md_table(["call k", "timestep", "low band", "high band", "whole image"] + class_column, per_call),
        "" if agreement is None else f"'same class as the sample': the fraction of samples whose x0_k the shipped "
                                     f"{dataset_of(config)} classifier puts in the class it gives the final sample.",
        ""])
    payload = {"describe": describe, "timesteps": timesteps.tolist(),
               "settling": {str(c): v for c, v in settle.items()},
               "class_agreement": None if agreement is None else agreement.tolist(),
               "by_cutoff": {str(c): {k: v.tolist() for k, v in d.items()} for c, d in by_cutoff.items()}}
    strip_calls = np.unique(np.linspace(0, len(timesteps) - 1, min(8, len(timesteps))).round().astype(int))
    figures = {"reverse.png": lambda path: plots.reverse_figure(
        by_cutoff, timesteps, f.tolerance, path, f"x0 of each call vs the sample ({sampling['sampler']} "
                                                 f"{sampling['steps']} steps)")}
    if model.in_channels in (1, 3):
        columns = np.concatenate([traj.denoised[strip_calls, :6], final[None, :6]])
        titles = [f"x0 of call {k}\nt = {timesteps[k]:.0f}" for k in strip_calls] + ["sample"]
        figures["reverse_strip.png"] = lambda path: plots.trajectory_strip(columns, titles, path)
    return Result(markdown, payload, figures)


def class_agreement(config, denoised: np.ndarray, final: np.ndarray) -> np.ndarray | None:
    """(S,) per call, the share of samples whose data prediction the shipped classifier puts in the class of the
    final sample; None for runs on other data than shapes / mnist5k, or latent runs."""
    try:
        extractor = extractors.load_extractor(dataset_of(config))
    except ValueError:
        return None
    if final.shape[1:] != extractor.spec.image_shape:
        return None
    head = extractor.spec.heads[0][0]
    target = extractor.predict(sample_lib.to_uint8(final))[head]
    return np.array([np.mean(extractor.predict(sample_lib.to_uint8(d))[head] == target) for d in denoised])


# ------------------------------------------------------------------------------------------ switch, guidance
def dataset_of(config) -> str:
    """The shipped classifier that scores a run: ``shapes`` or ``mnist5k``."""
    source = config.data.source
    name = "shapes" if source.startswith("shapes") else source
    if name not in extractors.SPECS:
        raise ValueError(f"this analysis needs a run on mnist5k or shapes (the shipped classifiers), got data.source "
                         f"{source!r}")
    return name


def _fractions(default: str) -> list[float]:
    values = [float(v) for v in (flags.FLAGS.fractions or default.split(","))]
    if any(not 0 <= v <= 1 for v in values):
        raise ValueError(f"--fractions must lie in [0, 1], got {values}")
    return values


def run_switch(run, step: int) -> Result:
    f = flags.FLAGS
    config, model, diffusion, params, mesh = run
    name = dataset_of(config)
    extractor = extractors.load_extractor(name)
    head = extractor.spec.heads[0][0]
    sampling = sample_lib.sampling_options(config, diffusion)
    steps, num = sampling["steps"], f.num_samples or 512
    times = sample_lib.model_time_of_calls(diffusion, steps, sampling["skip_type"])
    rows, payload = [], []
    for fraction in _fractions("0,0.1,0.2,0.3,0.4,0.5,0.6,0.8,1"):
        calls = int(np.floor(fraction * steps + 0.5))
        generate = sample_lib.make_generator(model, diffusion, mesh=mesh, prediction=config.loss.prediction,
                                             label_switch_calls=calls, **sampling)
        shows = {"a": [], "b": []}
        for seed in (int(s) for s in f.seeds):
            rng = np.random.default_rng([seed, 7])
            first = rng.integers(0, model.num_classes, num)
            second = (first + rng.integers(1, model.num_classes, num)) % model.num_classes
            images = evaluate_lib.sample_in_batches(generate, params, np.stack([first, second], -1), f.batch_size,
                                                    seed, mesh)
            predicted = extractor.predict(images)[head]
            shows["a"].append(float(np.mean(predicted == first)))
            shows["b"].append(float(np.mean(predicted == second)))
        a, b = np.mean(shows["a"]), np.mean(shows["b"])
        at = label_switch.switch_threshold(times, calls)
        rows.append([f"{fraction:g}", calls, f"{at:.0f}" if np.isfinite(at) else "-", f"{a:.3f}", f"{b:.3f}",
                     f"{1 - a - b:.3f}"])
        payload.append(dict(fraction=fraction, calls_with_a=calls, switch_timestep=at if np.isfinite(at) else None,
                            shows_a=shows["a"], shows_b=shows["b"]))
        logging.info("switch after %d of %d calls: %.3f show A, %.3f show B", calls, steps, a, b)
    markdown = "\n".join([
        f"# Label switch: `{f.workdir}` step {step} ({name})", "",
        f"Label A for the first calls, then label B (B != A, both random); {sampling['sampler']} {steps} steps, "
        f"guidance {sampling['guidance_scale']}; {num} samples per seed, seeds {f.seeds}. The shipped {name} "
        f"classifier decides what each sample shows (mean over seeds).", "",
        md_table(["fraction with A", "calls with A", "switch at t", "shows A", "shows B", "neither"], rows), ""])
    fractions = np.array([p["fraction"] for p in payload])
    series = {"shows A": (fractions, [np.mean(p["shows_a"]) for p in payload]),
              "shows B": (fractions, [np.mean(p["shows_b"]) for p in payload])}
    return Result(markdown, {"rows": payload, "steps": steps}, {"switch.png": lambda path: plots.panels_figure(
        [{"ylabel": "fraction of samples", "series": series}], path, xlabel="fraction of calls with label A",
        title=f"label A, then B ({name}, {sampling['sampler']} {steps} steps)")})


def guidance_rows(scale: float, steps: int, fractions: list[float], intervals: list[tuple[float, float]],
                  diffusion, skip_type: str | None) -> list[dict]:
    """The guidance windows compared: full guidance first, then every fraction with both ``after`` modes (fraction 1
    once) and the intervals; each row has ``name``, ``scales`` (steps,) and the ``guided`` share of calls."""
    rows = [dict(name="full guidance", kind="full", fraction=1.0, after="cond",
                 scales=samplers.guidance_schedule(scale, steps, 1.0))]
    for after in ("cond", "uncond"):
        for fraction in fractions:
            if fraction < 1.0:
                rows.append(dict(name=f"first {fraction:g}, then {after}", kind="fraction", fraction=fraction,
                                 after=after, scales=samplers.guidance_schedule(scale, steps, fraction, after=after)))
    times = sample_lib.model_time_of_calls(diffusion, steps, skip_type)
    for lo, hi in intervals:
        rows.append(dict(name=f"t in [{lo:g}, {hi:g}]", kind="interval", interval=[lo, hi],
                         scales=samplers.guidance_interval(scale, times, lo, hi)))
    for row in rows:
        row["guided"] = float(np.mean((row["scales"] != 0) & (row["scales"] != 1)))
    return rows


def parse_intervals(values: list[str]) -> list[tuple[float, float]]:
    try:
        intervals = [tuple(float(v) for v in item.split(":")) for item in values]
    except ValueError:
        intervals = [()]
    if any(len(i) != 2 for i in intervals):
        raise ValueError(f"--intervals must be t_lo:t_hi items in training timesteps, got {','.join(values)!r}")
    return intervals


def score_guidance_rows(run, rows: list[dict], sampling: dict, num: int, batch_size: int, seeds: list[int]) -> None:
    """Adds ``fd``, ``accuracy`` and ``l1`` (per seed) to each row: one compiled sampler serves every row (the
    scales are its argument), and each seed draws the same noise in every row."""
    config, model, diffusion, params, mesh = run
    name = dataset_of(config)
    metrics = [f"fd_{name}", f"acc_{name}"]
    sampling = dict(sampling, guidance_scale=rows[0]["scales"])
    generate = sample_lib.make_generator(model, diffusion, mesh=mesh, prediction=config.loss.prediction, **sampling)
    full = {}
    for i, row in enumerate(rows):
        row.update(fd=[], accuracy=[], l1=[])
        for seed in seeds:
            labels = np.random.default_rng([seed, 3]).integers(0, model.num_classes, num)
            images = evaluate_lib.sample_in_batches(generate, params, labels, batch_size, seed, mesh,
                                                    guidance_scale=row["scales"])
            scores = evaluate_lib.compute_metrics(images, metrics, labels=labels, seed=seed,
                                                  shapes_source=config.data.source)
            full.setdefault(seed, images)
            row["fd"].append(scores[next(k for k in scores if k.startswith("FD_"))])
            row["accuracy"].append(scores[f"class_accuracy_{name}"])
            row["l1"].append(float(np.mean(np.abs(images.astype(np.float32) - full[seed]) / 255.0)))
        logging.info("guidance row %d / %d (%s): FD %.1f, accuracy %.3f, L1 %.4f", i + 1, len(rows), row["name"],
                     np.mean(row["fd"]), np.mean(row["accuracy"]), np.mean(row["l1"]))


def guidance_figure(rows: list[dict], path: Path, title: str) -> None:
    panels = []
    for metric, ylabel in (("fd", "FD (shipped classifier features)"), ("accuracy", "class accuracy"),
                           ("l1", "mean L1 to the full-guidance sample")):
        series = {}
        for after in ("cond", "uncond"):
            line = [r for r in rows if r["kind"] == "full" or (r["kind"] == "fraction" and r["after"] == after)]
            line.sort(key=lambda r: r["fraction"])
            series[f"then {after}"] = ([r["fraction"] for r in line], [np.mean(r[metric]) for r in line])
        points = {r["name"]: (r["guided"], np.mean(r[metric])) for r in rows if r["kind"] == "interval"}
        panels.append({"ylabel": ylabel, "series": series, "points": points})
    plots.panels_figure(panels, path, xlabel="share of guided calls", title=title)


def run_guidance(run, step: int) -> Result:
    f = flags.FLAGS
    config, model, diffusion, params, mesh = run
    sampling = sample_lib.sampling_options(config, diffusion)
    scale = float(np.max(sampling["guidance_scale"]))
    if scale == 1.0:
        raise ValueError("--analysis guidance needs --guidance_scale other than 1 (or a run config that guides)")
    steps, num, seeds = sampling["steps"], f.num_samples or 512, [int(s) for s in f.seeds]
    rows = guidance_rows(scale, steps, _fractions("1,0.8,0.6,0.4,0.2,0"), parse_intervals(f.intervals), diffusion,
                         sampling["skip_type"])
    score_guidance_rows(run, rows, sampling, num, f.batch_size, seeds)
    table = [[r["name"], f"{r['guided']:.2f}", spread(r["fd"], 1), spread(r["accuracy"], 3), spread(r["l1"], 4)]
             for r in rows]
    markdown = "\n".join([
        f"# Guidance windows: `{f.workdir}` step {step} ({dataset_of(config)})", "",
        f"{sampling['sampler']} {steps} steps, guidance scale {scale:g} on the guided calls; the others run the "
        f"conditional (then cond) or the unconditional (then uncond) prediction alone. {num} samples per seed, "
        f"mean (min-max) over seeds {seeds}; L1 is against the full-guidance sample from the same noise (pixels in "
        f"[0, 1]).", "", md_table(["schedule", "guided calls", "FD", "class accuracy", "L1 to full"], table), ""])
    payload = [{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in r.items()} for r in rows]
    return Result(markdown, {"rows": payload, "scale": scale, "steps": steps}, {"guidance.png": lambda path: (
        guidance_figure(rows, path, f"guidance windows ({sampling['sampler']} {steps} steps, scale {scale:g})"))})


# -------------------------------------------------------------------------------------------------------- main
def analyze(kinds: list[str]):
    """Yields (name, Result) for each analysis in ``kinds``, loading the run (if any) once."""
    f = flags.FLAGS
    unknown = [k for k in kinds if k not in ANALYSES]
    if unknown or not kinds:
        raise ValueError(f"unknown --analysis {','.join(unknown) or '(none)'}; accepted: {', '.join(ANALYSES)}")
    if not f.workdir:
        if kinds != ["forward"]:
            raise ValueError(f"--analysis {','.join(kinds)} needs --workdir (a launch.train run)")
        yield "forward", run_forward(None, DiscreteDiffusion.from_betas(beta_schedule("linear", 1000)))
        return
    config, model, diffusion, state, step, mesh = sample_lib.load_run(Path(f.workdir), f.step)
    use_ema = sample_lib.option("use_ema", config)
    run = (config, model, diffusion, state.ema_params if use_ema else state.params, mesh)
    for kind in kinds:
        if kind == "forward":
            yield kind, run_forward(config, diffusion)
        else:
            yield kind, {"reverse": run_reverse, "switch": run_switch, "guidance": run_guidance}[kind](run, step)


def write(result: Result, kind: str, output: Path, seconds: float) -> None:
    """<output>/<kind>.md, .json (with the seconds it took) and the figures."""
    output.mkdir(parents=True, exist_ok=True)
    result.payload["seconds"] = round(seconds, 1)
    (output / f"{kind}.md").write_text(result.markdown)
    (output / f"{kind}.json").write_text(json.dumps(result.payload, indent=1) + "\n")
    for name, draw in result.figures.items():
        try:
            draw(output / name)
        except ImportError as err:
            logging.warning("no figure %s: %s", name, err)
    logging.info("wrote %s (%.0f s)", ", ".join(str(output / n) for n in [f"{kind}.md", f"{kind}.json",
                                                                         *result.figures]), seconds)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    builders.quiet_library_logs()
    f = flags.FLAGS
    if not f.output_dir and not f.workdir:
        print("error: --analysis forward without --workdir needs --output_dir", file=sys.stderr)
        sys.exit(2)
    output = Path(f.output_dir) if f.output_dir else Path(f.workdir) / "analysis"
    start = time.time()
    try:
        for kind, result in analyze(list(f.analysis)):
            write(result, kind, output, time.time() - start)
            print(result.markdown)
            start = time.time()
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    flags.mark_flag_as_required("analysis")
    app.run(main)
