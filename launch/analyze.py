"""The working mechanism of a diffusion model (Yi et al., NeurIPS 2024), measured on data and on a trained run.

    python -m launch.analyze --analysis forward --source mnist5k --output_dir /tmp/analysis
    python -m launch.analyze --workdir /tmp/mnist_edt --analysis reverse    # which band settles first
    python -m launch.analyze --workdir /tmp/mnist_edt --analysis switch     # label A, then B after a fraction
    python -m launch.analyze --workdir /tmp/mnist_edt --analysis guidance   # guidance windows: FD, accuracy, L1
    python -m launch.analyze --pipeline /data/sd-folder --prompts prompts.jsonl --analysis reverse,switch,eos,guidance \
        --output_dir /tmp/t2i_analysis --steps 25 --guidance_scale 7.5 --seeds 0,1 --num_per_prompt 4

What each analysis measures: ``edt_jax.analysis.experiments``, and with ``--pipeline`` (a local diffusers Stable
Diffusion folder; the prompts file has one ``{"prompt": ..., "factors": {...}}`` record per line)
``edt_jax.analysis.text``. The sampling flags are ``launch.sample``'s (``--pipeline``: --sampler defaults to the
folder's scheduler, --steps to 25, --guidance_scale to 7.5, --batch_size to 8).
``--analysis`` takes several, comma-separated (the run is loaded once). Each writes ``<output_dir>/<analysis>.json``,
``.md`` and ``.png`` (default output_dir: WORKDIR/analysis).
"""

from __future__ import annotations

import time

from absl import app, flags, logging

import edt_jax
from edt_jax import paths
from edt_jax.analysis import experiments, text
from edt_jax.analysis.prompts import load_prompts
from edt_jax.diffusion import BETA_SCHEDULES
from launch import common

common.define_sampling_flags()
common.define_flag(flags.DEFINE_list, "analysis", None,
                   f"what to measure, one or more of {', '.join(experiments.EXPERIMENTS)}")
common.define_flag(flags.DEFINE_string, "output_dir", None, "where the results go (default WORKDIR/analysis)")
common.define_flag(flags.DEFINE_list, "cutoffs", ["0.125", "0.25", "0.5"],
                   "low-band cutoffs, fractions of the Nyquist radius")
common.define_flag(flags.DEFINE_string, "source", None, "forward: data source (default: the run's data.source)")
common.define_flag(flags.DEFINE_integer, "num_images", 256, "forward: number of data images")
common.define_flag(flags.DEFINE_enum, "beta_schedule", None, list(BETA_SCHEDULES),
                   "forward: the noise schedule (default: the run's, else linear; scaled_linear: Stable Diffusion's)")
common.define_flag(flags.DEFINE_float, "tolerance", 0.1, "reverse: a band has settled within this relative distance")
common.define_flag(flags.DEFINE_list, "fractions", None,
                   "switch: fractions of the calls with the first label (default 0,0.1,...,1); guidance: guided "
                   "fractions (default 1,0.8,0.6,0.4,0.2,0; with --pipeline the switch runs every k = 0..S)")
common.define_flag(flags.DEFINE_list, "intervals", ["300:700", "0:500"],
                   "guidance: t_lo:t_hi intervals in training timesteps")
common.define_flag(flags.DEFINE_list, "seeds", ["0", "1"], "switch / guidance: sampling seeds")
common.define_flag(flags.DEFINE_integer, "batch_size", 256,
                   "switch / guidance: samples per sampler call (--pipeline: default 8)")
common.define_flag(flags.DEFINE_string, "pipeline", None,
                   f"a local diffusers Stable Diffusion folder instead of --workdir: the text-to-image analyses "
                   f"{', '.join(text.TEXT_EXPERIMENTS)} with --prompts")
common.define_flag(flags.DEFINE_string, "prompts", None,
                   "--pipeline: JSON-lines prompts file, one {\"prompt\": ..., \"factors\": {...}} record per line")
common.define_flag(flags.DEFINE_integer, "num_per_prompt", 4, "--pipeline: samples per prompt and seed")
common.define_flag(flags.DEFINE_string, "negative_prompt", "", "--pipeline: the negative prompt (unconditional branch)")
common.define_flag(flags.DEFINE_enum, "dtype", "float32", ["float32", "bfloat16"],
                   "--pipeline: compute dtype of the networks")


def analyze_pipeline(kinds: list[str]):
    """Yields (name, Report) for each text-to-image analysis in ``kinds`` on the --pipeline folder."""
    from edt_jax.t2i import SCHEDULER, StableDiffusion

    f = flags.FLAGS
    unknown = [k for k in kinds if k not in text.TEXT_EXPERIMENTS]
    if unknown or not kinds:
        raise ValueError(f"unknown --analysis {','.join(unknown) or '(none)'} with --pipeline; accepted: "
                         f"{', '.join(text.TEXT_EXPERIMENTS)}")
    if f.workdir:
        raise ValueError("give one of --workdir (a training run) and --pipeline (a diffusers folder), not both")
    if not f.prompts:
        raise ValueError("--pipeline needs --prompts (a JSON-lines file of {\"prompt\": ..., \"factors\": ...})")
    records = load_prompts(f.prompts)
    pipe = StableDiffusion.from_pretrained(f.pipeline, dtype=f.dtype)
    options = dict(steps=f.steps or 25, sampler=f.sampler or SCHEDULER,
                   guidance_scale=7.5 if f.guidance_scale is None else f.guidance_scale,
                   seeds=[int(s) for s in f.seeds], num_per_prompt=f.num_per_prompt, negative_prompt=f.negative_prompt,
                   batch_size=f.batch_size if f["batch_size"].present else 8,
                   cutoffs=[float(c) for c in f.cutoffs], tolerance=f.tolerance)
    if f.fractions:
        options["fractions"] = [float(v) for v in f.fractions]
    for kind in kinds:
        yield kind, text.run_text_experiment(kind, pipe, records, **options)


def analyze(kinds: list[str]):
    """Yields (name, Report) for each analysis in ``kinds``, loading the run (if any) once."""
    f = flags.FLAGS
    if f.pipeline:
        yield from analyze_pipeline(kinds)
        return
    unknown = [k for k in kinds if k not in experiments.EXPERIMENTS]
    if unknown or not kinds:
        raise ValueError(f"unknown --analysis {','.join(unknown) or '(none)'}; accepted: "
                         f"{', '.join(experiments.EXPERIMENTS)}")
    if not f.workdir and kinds != ["forward"]:
        raise ValueError(f"--analysis {','.join(kinds)} needs --workdir (a launch.train run)")
    run = edt_jax.load_run(f.workdir, f.step, f.use_ema) if f.workdir else None
    sampling, cutoffs = common.sampling_options(), [float(c) for c in f.cutoffs]
    seeds = [int(s) for s in f.seeds]
    fractions = dict(fractions=[float(v) for v in f.fractions]) if f.fractions else {}
    for kind in kinds:
        if kind == "forward":
            config = run.config if run is not None else None
            source = f.source or (config.data.source if config is not None else None)
            if not source:
                raise ValueError("--analysis forward needs --source (a data source) or --workdir (a run)")
            yield kind, experiments.forward_experiment(
                source, config=config, num_images=f.num_images, seed=f.seed, cutoffs=cutoffs,
                vae_path=f.vae or (config.get("vae", {}).get("path") if config is not None else None),
                beta_schedule=f.beta_schedule)
        elif kind == "reverse":
            yield kind, experiments.reverse_experiment(run, sampling=sampling, num_samples=f.num_samples or 256,
                                                       seed=f.seed, cutoffs=cutoffs, tolerance=f.tolerance)
        elif kind == "switch":
            yield kind, experiments.switch_experiment(run, sampling=sampling, num_samples=f.num_samples or 512,
                                                      seeds=seeds, batch_size=f.batch_size, **fractions)
        else:
            yield kind, experiments.guidance_experiment(run, sampling=sampling, num_samples=f.num_samples or 512,
                                                        seeds=seeds, intervals=experiments.parse_intervals(f.intervals),
                                                        batch_size=f.batch_size, **fractions)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    common.quiet_library_logs()
    f = flags.FLAGS
    if not f.output_dir and not f.workdir:
        common.exit_with_error(ValueError(f"{'--pipeline' if f.pipeline else '--analysis forward without --workdir'} "
                                          f"needs --output_dir"))
    output = paths.as_path(f.output_dir) if f.output_dir else paths.as_path(f.workdir) / "analysis"
    start = time.time()
    try:
        for kind, report in analyze(list(f.analysis)):
            written = experiments.write_report(report, kind, output, time.time() - start)
            logging.info("wrote %s (%.0f s)", ", ".join(written), time.time() - start)
            print(report.markdown)
            start = time.time()
    except common.USER_ERRORS as err:
        common.exit_with_error(err)


if __name__ == "__main__":
    flags.mark_flag_as_required("analysis")
    app.run(main)
