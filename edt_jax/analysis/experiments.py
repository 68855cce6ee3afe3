"""The working-mechanism measurements (Yi et al., NeurIPS 2024) on data and on trained runs, as reports.

    report = forward_experiment("mnist5k", num_images=256, cutoffs=(0.125, 0.25, 0.5))   # no run needed
    run = edt_jax.load_run(workdir)
    report = reverse_experiment(run, sampling=dict(steps=20), cutoffs=(0.25,))   # which band settles first
    report = switch_experiment(run, sampling=dict(steps=20))                    # label A, then B
    report = guidance_experiment(run, sampling=dict(steps=20, guidance_scale=3.0))   # guidance windows
    write_report(report, "guidance", "/tmp/analysis")          # guidance.md, .json and the figures

forward   the forward process on real data: per frequency band the RMS of the signal, the noise and x_t, the band
          SNR and where it falls to 1 (high frequencies are swamped first, the low ones only in the last stage).
reverse   along a sampler trajectory of the run: the distance of each call's data prediction to the final sample,
          low vs high band, and the call from which each stays within ``tolerance`` of its final value.
switch    start with label A and switch to B after a fraction of the calls; the shipped classifier says whether
          the samples show A or B (runs on mnist5k or shapes).
guidance  classifier-free guidance on the first fraction of the calls only (then conditional or unconditional
          alone) and on time intervals: FD, class accuracy and the mean L1 distance to the full-guidance sample.

``sampling`` holds ``Run.sample``'s options (sampler, steps, guidance_scale, ...); None values take the run
config's defaults. ``launch.analyze`` is the command line of these functions.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging

from edt_jax import data as data_lib
from edt_jax import paths, samplers
from edt_jax.analysis import forward, plots, reverse
from edt_jax.data.pixels import to_uint8
from edt_jax.diffusion import NoiseScheduleVP
from edt_jax.metrics import extractors
from edt_jax.metrics.evaluation import compute_metrics
from edt_jax.reporting import md_table, spread
from edt_jax.runs import Run, build
from edt_jax.runs.generate import sample_in_batches
from edt_jax.samplers import label_switch

EXPERIMENTS = ("forward", "reverse", "switch", "guidance")
SWITCH_FRACTIONS = (0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1)
GUIDED_FRACTIONS = (1, 0.8, 0.6, 0.4, 0.2, 0)


@dataclasses.dataclass
class Report:
    """What an experiment writes: a Markdown report, a JSON payload and figures (name -> function(path))."""

    markdown: str
    payload: dict
    figures: dict[str, Callable]


def write_report(report: Report, kind: str, output_dir, seconds: float | None = None) -> list[str]:
    """``<output_dir>/<kind>.md``, ``.json`` (with the seconds it took) and the figures; returns the paths."""
    output = paths.as_path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    if seconds is not None:
        report.payload["seconds"] = round(seconds, 1)
    (output / f"{kind}.md").write_text(report.markdown)
    (output / f"{kind}.json").write_text(json.dumps(report.payload, indent=1) + "\n")
    written = [str(output / f"{kind}.md"), str(output / f"{kind}.json")]
    for name, draw in report.figures.items():
        try:
            draw(output / name)
            written.append(str(output / name))
        except ImportError as err:
            logging.warning("no figure %s: %s", name, err)
    return written


def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _check_fractions(values: Sequence[float]) -> list[float]:
    values = [float(v) for v in values]
    if not values or any(not 0 <= v <= 1 for v in values):
        raise ValueError(f"fractions must lie in [0, 1], got {values}")
    return values


# ----------------------------------------------------------------------------------------------------- forward
def forward_data(spec: str, num: int, seed: int, config: ml_collections.ConfigDict | None = None,
                 vae_path: str | None = None) -> tuple[np.ndarray, str]:
    """(x0 (N, H, W, C) float32 as the model sees it, a description): images in [-1, 1], or latents for a latent
    source or when a VAE is given (its posterior mean times the latent scale). ``config`` (a run's) sets the
    preprocessing and the VAE's architecture."""
    d = build.to_plain(config.data) if config is not None else {}
    source = data_lib.create_source(spec, data_dir=d.get("data_dir") or None)
    preprocess = data_lib.Preprocess(image_size=d.get("image_size"), channels=d.get("channels"),
                                     latent_scale=d.get("latent_scale", 1.0))
    indices = np.sort(np.random.default_rng(seed).choice(len(source), min(num, len(source)), replace=False))
    records = [preprocess(source[int(i)]) for i in indices]
    key = next(k for k in ("image", "latent", "latent_mean") if k in records[0])
    x0 = np.stack([r[key] for r in records]).astype(np.float32)
    if key != "image" or not vae_path:
        return x0, f"{spec} ({len(x0)} {'images' if key == 'image' else 'latents'})"
    vae_model, params, scale = build.build_vae(config or ml_collections.ConfigDict({"vae": {}}), vae_path)
    encode = jax.jit(lambda p, x: vae_model.apply({"params": p}, x, method=vae_model.encode)[0] * scale)
    if x0.shape[-1] == 1:
        x0 = np.repeat(x0, 3, -1)
    latents = np.concatenate([np.asarray(encode(params, x0[i:i + 32])) for i in range(0, len(x0), 32)])
    return latents, f"{spec} ({len(x0)} images) encoded by the VAE at {vae_path}"


def forward_experiment(source: str, *, config: ml_collections.ConfigDict | None = None, num_images: int = 256,
                       seed: int = 0, cutoffs: Sequence[float] = (0.125, 0.25, 0.5), vae_path: str | None = None,
                       beta_schedule: str | None = None) -> Report:
    """The forward process on ``num_images`` of data ``source``, per frequency band; ``config`` (a run's) gives
    the preprocessing, the VAE and the schedule (``beta_schedule`` overrides it; default linear, 1000 steps)."""
    cutoffs = [float(c) for c in cutoffs]
    x0, what = forward_data(source, num_images, seed, config, vae_path)
    d = config.get("diffusion", {}) if config is not None else {}
    betas = beta_schedule or d.get("beta_schedule", "linear")
    tables = NoiseScheduleVP.named(betas, d.get("num_timesteps", 1000)).tables
    what += f", {betas} betas"
    timesteps = np.unique(np.r_[np.arange(0, tables.num_steps, 20), tables.num_steps - 1])
    by_cutoff = {c: forward.forward_bands(x0, tables.alphas_cumprod, timesteps, c, jax.random.key(seed))
                 for c in cutoffs}
    rows, crossings = [], {}
    for c, stats in by_cutoff.items():
        crossings[c] = {b: forward.crossing_timestep(timesteps, stats[f"snr_{b}"]) for b in ("low", "high", "low_ac")}
        t_high = crossings[c]["high"]
        rows.append([f"{c:g}", f"{stats['low_power_fraction']:.3f}", _fmt(t_high, 4), _fmt(crossings[c]["low"], 4),
                     _fmt(crossings[c]["low_ac"], 4),
                     f"{np.interp(t_high, timesteps, stats['similarity_low_ac']):.2f}" if t_high else "-"])
    picks = [t for t in (0, 100, 240, 500, 760, 900, 999) if t in set(timesteps.tolist())]
    mid_cutoff = cutoffs[len(cutoffs) // 2]
    mid = by_cutoff[mid_cutoff]
    detail = [[t, *(f"{mid[k][list(timesteps).index(t)]:.3g}" for k in
                    ("signal_low", "snr_low", "snr_low_ac", "similarity_low_ac", "signal_high", "snr_high",
                     "similarity_high"))] for t in picks]
    markdown = "\n".join([
        f"# Forward process by frequency band: {what}", "",
        f"x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, {tables.num_steps} timesteps; bands from the centred "
        f"circular low-pass (cutoff a fraction of the Nyquist radius); one noise draw for every t. SNR = signal power "
        f"/ noise power in the band; 'similarity' = mean cosine similarity of band(x_t) with band(x0).", "",
        "## Where each band's SNR falls to 1", "",
        md_table(["cutoff", "x0 power in the low band", "high band: SNR 1 at t", "low band: SNR 1 at t",
                  "low band without the mean: SNR 1 at t", "its similarity when the high band's SNR is 1"], rows), "",
        f"## Per band at a few timesteps (cutoff {mid_cutoff:g}; RMS per element)", "",
        md_table(["t", "signal low", "SNR low", "SNR low without the mean", "its similarity", "signal high",
                  "SNR high", "similarity high"], detail), ""])
    payload = {"what": what, "crossings": {str(c): v for c, v in crossings.items()},
               "by_cutoff": {str(c): {k: np.asarray(v).tolist() for k, v in s.items()} for c, s in by_cutoff.items()}}
    return Report(markdown, payload, {"forward.png": lambda path: plots.forward_figure(
        by_cutoff, path, f"band SNR of x_t: {source}, {betas} betas")})


# ----------------------------------------------------------------------------------------------------- reverse
def _describe(options: dict) -> str:
    return (f"{options['sampler']} {options['steps']} steps, guidance "
            f"{np.asarray(options['guidance_scale']).tolist()}, AMM {options['amm']}")


def reverse_experiment(run: Run, *, sampling: dict | None = None, num_samples: int = 256, seed: int = 0,
                       cutoffs: Sequence[float] = (0.125, 0.25, 0.5), tolerance: float = 0.1) -> Report:
    """Along ``num_samples`` trajectories of ``run``: how far each call's data prediction is from the final
    sample, per band, and the call from which each band stays within ``tolerance``."""
    sampling = dict(sampling or {})
    options = run.sampling_options(**sampling)
    if options["sampler"] == "ddpm":
        raise ValueError("the reverse analysis needs an ODE sampler (unipc, dpm_solver or ddim), got ddpm")
    cutoffs = [float(c) for c in cutoffs]
    start = time.time()
    final, traj = run.sample(run.draw_labels(num_samples, seed), seed=seed, decode=False, return_trajectory=True,
                             **sampling)
    logging.info("sampled %d trajectories in %.1f s", num_samples, time.time() - start)
    timesteps = samplers.call_timesteps(run.schedule, options["steps"], options["skip_type"])
    by_cutoff = {c: reverse.band_distances(traj.denoised, final, c) for c in cutoffs}
    settle = {c: {b: reverse.settling_call(d[b], tolerance) for b in ("low", "high", "total")}
              for c, d in by_cutoff.items()}
    rows = [[f"{c:g}", *("not by the last call" if settle[c][b] is None else settle[c][b]
                         for b in ("low", "high", "total"))] for c in by_cutoff]
    mid = cutoffs[len(cutoffs) // 2]
    agreement = class_agreement(run.config, traj.denoised, final)
    per_call = [[k, f"{timesteps[k]:.0f}", f"{by_cutoff[mid]['low'][k]:.3f}", f"{by_cutoff[mid]['high'][k]:.3f}",
                 f"{by_cutoff[mid]['total'][k]:.3f}"] + ([] if agreement is None else [f"{agreement[k]:.3f}"])
                for k in range(len(timesteps))]
    class_column = [] if agreement is None else ["same class as the sample"]
    describe = _describe(options)
    markdown = "\n".join([
        f"# Reverse process by frequency band: `{run.workdir}` step {run.step}", "",
        f"{num_samples} samples ({describe}). For each model call k, the data prediction x0_k against the final "
        f"sample, per band: ||band(x0_k - sample)|| / ||band(sample)||, mean over samples. A band has settled at the "
        f"first call from which it stays within {tolerance:g}.", "",
        "## Settling call per band (of calls 0 to " + str(len(timesteps) - 1) + ")", "",
        md_table(["cutoff", "low band", "high band", "whole image"], rows), "",
        f"## Per call (cutoff {mid:g})", "",
        md_table(["call k", "timestep", "low band", "high band", "whole image"] + class_column, per_call),
        "" if agreement is None else f"'same class as the sample': the fraction of samples whose x0_k the shipped "
                                     f"{dataset_of(run.config)} classifier puts in the class it gives the final "
                                     f"sample.",
        ""])
    payload = {"describe": describe, "timesteps": timesteps.tolist(),
               "settling": {str(c): v for c, v in settle.items()},
               "class_agreement": None if agreement is None else agreement.tolist(),
               "by_cutoff": {str(c): {k: v.tolist() for k, v in d.items()} for c, d in by_cutoff.items()}}
    strip_calls = np.unique(np.linspace(0, len(timesteps) - 1, min(8, len(timesteps))).round().astype(int))
    figures = {"reverse.png": lambda path: plots.reverse_figure(
        by_cutoff, timesteps, tolerance, path, f"x0 of each call vs the sample ({options['sampler']} "
                                               f"{options['steps']} steps)")}
    if not run.is_latent:
        columns = np.concatenate([traj.denoised[strip_calls, :6], final[None, :6]])
        titles = [f"x0 of call {k}\nt = {timesteps[k]:.0f}" for k in strip_calls] + ["sample"]
        figures["reverse_strip.png"] = lambda path: plots.trajectory_strip(columns, titles, path)
    return Report(markdown, payload, figures)


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
    target = extractor.predict(to_uint8(final))[head]
    return np.array([np.mean(extractor.predict(to_uint8(d))[head] == target) for d in denoised])


# ------------------------------------------------------------------------------------------ switch, guidance
def dataset_of(config) -> str:
    """The shipped classifier that scores a run: ``shapes`` or ``mnist5k``."""
    source = config.data.source
    name = "shapes" if source.startswith("shapes") else source
    if name not in extractors.SPECS:
        raise ValueError(f"this analysis needs a run on mnist5k or shapes (the shipped classifiers), got data.source "
                         f"{source!r}")
    return name


def switch_experiment(run: Run, *, sampling: dict | None = None, num_samples: int = 512, seeds: Sequence[int] = (0, 1),
                      fractions: Sequence[float] = SWITCH_FRACTIONS, batch_size: int = 256) -> Report:
    """Label A for the first ``fraction`` of the calls, then B (random, B != A): which one the samples show."""
    sampling = dict(sampling or {})
    options = run.sampling_options(**sampling)
    name = dataset_of(run.config)
    extractor = extractors.load_extractor(name)
    head = extractor.spec.heads[0][0]
    steps, num = options["steps"], num_samples
    times = samplers.call_timesteps(run.schedule, steps, options["skip_type"], sampler=options["sampler"])
    rows, payload = [], []
    for fraction in _check_fractions(fractions):
        calls = int(np.floor(fraction * steps + 0.5))
        generate = run.generator(label_switch_calls=calls, **sampling)
        shows = {"a": [], "b": []}
        for seed in seeds:
            rng = np.random.default_rng([seed, 7])
            first = rng.integers(0, run.num_classes, num)
            second = (first + rng.integers(1, run.num_classes, num)) % run.num_classes
            images = sample_in_batches(generate, run.params, np.stack([first, second], -1), batch_size, seed,
                                       run.mesh)
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
        f"# Label switch: `{run.workdir}` step {run.step} ({name})", "",
        f"Label A for the first calls, then label B (B != A, both random); {options['sampler']} {steps} steps, "
        f"guidance {options['guidance_scale']}; {num} samples per seed, seeds {[str(s) for s in seeds]}. The shipped "
        f"{name} classifier decides what each sample shows (mean over seeds).", "",
        md_table(["fraction with A", "calls with A", "switch at t", "shows A", "shows B", "neither"], rows), ""])
    fractions_done = np.array([p["fraction"] for p in payload])
    series = {"shows A": (fractions_done, [np.mean(p["shows_a"]) for p in payload]),
              "shows B": (fractions_done, [np.mean(p["shows_b"]) for p in payload])}
    return Report(markdown, {"rows": payload, "steps": steps}, {"switch.png": lambda path: plots.panels_figure(
        [{"ylabel": "fraction of samples", "series": series}], path, xlabel="fraction of calls with label A",
        title=f"label A, then B ({name}, {options['sampler']} {steps} steps)")})


def parse_intervals(items) -> list[tuple[float, float]]:
    """``"300:700,0:500"`` (or ``["300:700", "0:500"]``) -> [(300.0, 700.0), (0.0, 500.0)], training timesteps."""
    items = items.split(",") if isinstance(items, str) else list(items)
    try:
        intervals = [tuple(float(v) for v in item.split(":")) for item in items]
    except ValueError:
        intervals = [()]
    if not items or any(len(i) != 2 for i in intervals):
        raise ValueError(f"intervals must be t_lo:t_hi items in training timesteps, got {','.join(items)!r}")
    return intervals


def guidance_rows(scale: float, steps: int, fractions: Sequence[float], intervals: Sequence[tuple[float, float]],
                  schedule: NoiseScheduleVP, skip_type: str = "time_uniform", sampler: str = "unipc") -> list[dict]:
    """The guidance windows compared: full guidance first, then every fraction with both ``after`` modes (fraction 1
    once) and the intervals (training timesteps); each row has ``name``, ``scales`` (steps,) and the ``guided``
    share of calls."""
    rows = [dict(name="full guidance", kind="full", fraction=1.0, after="cond",
                 scales=samplers.guidance_schedule(scale, steps, 1.0))]
    for after in ("cond", "uncond"):
        for fraction in _check_fractions(fractions):
            if fraction < 1.0:
                rows.append(dict(name=f"first {fraction:g}, then {after}", kind="fraction", fraction=fraction,
                                 after=after, scales=samplers.guidance_schedule(scale, steps, fraction, after=after)))
    times = samplers.call_timesteps(schedule, steps, skip_type, sampler=sampler)
    for lo, hi in intervals:
        rows.append(dict(name=f"t in [{lo:g}, {hi:g}]", kind="interval", interval=[lo, hi],
                         scales=samplers.guidance_interval(scale, times, lo, hi)))
    for row in rows:
        row["guided"] = float(np.mean((row["scales"] != 0) & (row["scales"] != 1)))
    return rows


def score_guidance_rows(run: Run, rows: list[dict], sampling: dict, num: int, batch_size: int,
                        seeds: Sequence[int]) -> None:
    """Adds ``fd``, ``accuracy`` and ``l1`` (per seed) to each row: one compiled sampler serves every row (the
    scales are its argument), and each seed draws the same noise in every row."""
    name = dataset_of(run.config)
    metrics = [f"fd_{name}", f"acc_{name}"]
    generate = run.generator(**dict(sampling, guidance_scale=rows[0]["scales"], guided_fraction=1.0,
                                    guidance_interval=None))
    full = {}
    for i, row in enumerate(rows):
        row.update(fd=[], accuracy=[], l1=[])
        for seed in seeds:
            labels = np.random.default_rng([seed, 3]).integers(0, run.num_classes, num)
            images = sample_in_batches(generate, run.params, labels, batch_size, seed, run.mesh,
                                       guidance_scale=row["scales"])
            scores = compute_metrics(images, metrics, labels=labels, seed=seed, shapes_source=run.config.data.source)
            full.setdefault(seed, images)
            row["fd"].append(scores[next(k for k in scores if k.startswith("FD_"))])
            row["accuracy"].append(scores[f"class_accuracy_{name}"])
            row["l1"].append(float(np.mean(np.abs(images.astype(np.float32) - full[seed]) / 255.0)))
        logging.info("guidance row %d / %d (%s): FD %.1f, accuracy %.3f, L1 %.4f", i + 1, len(rows), row["name"],
                     np.mean(row["fd"]), np.mean(row["accuracy"]), np.mean(row["l1"]))


def guidance_figure(rows: list[dict], path, title: str) -> None:
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


def guidance_experiment(run: Run, *, sampling: dict | None = None, num_samples: int = 512,
                        seeds: Sequence[int] = (0, 1), fractions: Sequence[float] = GUIDED_FRACTIONS,
                        intervals: Sequence[tuple[float, float]] = ((300, 700), (0, 500)),
                        batch_size: int = 256) -> Report:
    """Guidance on the first fractions of the calls and on time intervals against guidance on every call."""
    sampling = dict(sampling or {})
    options = run.sampling_options(**sampling)
    scale = float(np.max(options["guidance_scale"]))
    if scale == 1.0:
        raise ValueError("the guidance analysis needs a guidance scale other than 1 (or a run config that guides)")
    steps, seeds = options["steps"], [int(s) for s in seeds]
    rows = guidance_rows(scale, steps, fractions, intervals, run.schedule, options["skip_type"], options["sampler"])
    score_guidance_rows(run, rows, sampling, num_samples, batch_size, seeds)
    table = [[r["name"], f"{r['guided']:.2f}", spread(r["fd"], 1), spread(r["accuracy"], 3), spread(r["l1"], 4)]
             for r in rows]
    markdown = "\n".join([
        f"# Guidance windows: `{run.workdir}` step {run.step} ({dataset_of(run.config)})", "",
        f"{options['sampler']} {steps} steps, guidance scale {scale:g} on the guided calls; the others run the "
        f"conditional (then cond) or the unconditional (then uncond) prediction alone. {num_samples} samples per "
        f"seed, mean (min-max) over seeds {seeds}; L1 is against the full-guidance sample from the same noise (pixels "
        f"in [0, 1]).", "", md_table(["schedule", "guided calls", "FD", "class accuracy", "L1 to full"], table), ""])
    payload = [{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in r.items()} for r in rows]
    return Report(markdown, {"rows": payload, "scale": scale, "steps": steps}, {"guidance.png": lambda path: (
        guidance_figure(rows, path, f"guidance windows ({options['sampler']} {steps} steps, scale {scale:g})"))})
