"""Disentanglement tasks on a config: train a method, score its representation, swap DisDiff's factors.

    from edt_jax.disentangle import tasks
    tasks.train(config, workdir, dpm_workdir)        # DisDiff on a frozen launch.train run (the beta-VAE: None)
    tasks.train_for_seconds(config, workdir, 300.0)  # as many steps as fit in a wall-clock budget
    report = tasks.evaluate(config, workdir)         # FactorVAE / DCI / MIG -> workdir/eval.json
    report = tasks.swap(config, workdir)             # workdir/swap.png (+ what_changes.json on 32x32 shapes)

``launch.disentangle`` is these calls behind flags; ``build`` turns the config into the method.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from PIL import Image

from edt_jax import paths, samplers
from edt_jax.data.ground_truth import ground_truth_for
from edt_jax.disentangle import evaluation
from edt_jax.disentangle.build import (
    build_method,
    dpm_dir,
    dpm_kind,
    image_shape,
    load_method_params,
    train_method,
    trained_dpm_workdir,
)
from edt_jax.disentangle.disdiff import ddim_invert, swap_codes
from edt_jax.training.loop import TrainResult
from edt_jax.training.metrics import read_records

__all__ = ["classifier_predict", "evaluate", "swap", "train", "train_for_seconds"]


def train(config: ml_collections.ConfigDict, workdir, dpm_workdir: str | None = None) -> TrainResult:
    """Train the config's method into ``workdir`` (resumable); DisDiff on the frozen DPM of ``dpm_workdir`` (else
    ``config.dpm_workdir``), whose resolved path is recorded as ``config.dpm_workdir`` in the run's config."""
    dpm = None
    if config.model.name == "DisDiff" and dpm_kind(config) == "run":
        dpm = dpm_dir(config, dpm_workdir)
        config.dpm_workdir = str(dpm) if paths.is_url(dpm) or not dpm.exists() else str(dpm.resolve())
    return train_method(config, workdir, build_method(config, dpm, with_dpm=True))


def train_for_seconds(config: ml_collections.ConfigDict, workdir, seconds: float, *, probe_steps: int = 100,
                      dpm_workdir: str | None = None) -> tuple[TrainResult, float]:
    """Train the config's method for about ``seconds`` of wall time (a baseline given another method's budget):
    ``probe_steps`` steps, then, resuming, as many more as the probe's pace fits into what is left, at most
    ``config.total_steps`` in all. Returns the result and the wall seconds spent (compilation included, as in
    the budget it is matched to)."""
    if not seconds > 0 or isinstance(probe_steps, bool) or not isinstance(probe_steps, int) or probe_steps < 1:
        raise ValueError(f"train_for_seconds: seconds={seconds!r} must be > 0 and probe_steps={probe_steps!r} a "
                         f"positive integer")
    start = time.time()
    cap = int(config.total_steps)
    config = ml_collections.ConfigDict(config.to_dict())  # the caller's total_steps stays as it was
    config.total_steps = min(probe_steps, cap)
    result = train(config, workdir, dpm_workdir)
    spent = time.time() - start
    # The pace of the steps themselves (the trainer's last logged step time), not of the whole probe, whose
    # compilation would make the rest of the budget look short.
    logged = paths.as_path(workdir) / "metrics.jsonl"
    times = [r["step_time_s"] for r in (read_records(logged) if logged.is_file() else []) if r.get("step_time_s")]
    per_step = float(times[-1]) if times else spent / config.total_steps
    config.total_steps = min(cap, config.total_steps + max(0, int((seconds - spent) / per_step)))
    if config.total_steps > result.step:
        logging.info("%s: %d more steps to fill %.0f s (%.3f s per step so far)", config.model.name,
                     config.total_steps - result.step, seconds, per_step)
        result = train(config, workdir, dpm_workdir)
    return result, time.time() - start


def evaluate(config: ml_collections.ConfigDict, workdir, untrained: bool = False) -> dict:
    """Scores of the run's encoder (or, ``untrained``, of a fresh one) on the config's ground truth: {"method",
    "step", "untrained", "source", "factors", "code_entries", "num_chunks", "scores"}, also written to
    ``workdir/eval.json`` (``eval_untrained.json``)."""
    workdir = paths.as_path(workdir)
    ground_truth = ground_truth_for(config.data.source, indices=True)  # one-line error without factor labels
    method = build_method(config)
    if untrained:
        params, step = jax.jit(method.init_params)(jax.random.key(config.seed)), 0
    else:
        params, step = load_method_params(workdir, method)
    encode = jax.jit(method.encode)
    start = time.time()
    table = evaluation.encode_all(lambda x: encode(params, jnp.asarray(x)), ground_truth,
                                  config.eval.encode_batch_size)
    logging.info("encoded %d images into %d code entries in %.0f s", *table.shape, time.time() - start)
    args = {name: dict(config.eval[name]) for name in evaluation.METRICS}
    scores = evaluation.score_representation(ground_truth, table, num_chunks=method.num_chunks,
                                             protocols=tuple(config.eval.protocols), seed=config.eval.seed,
                                             metric_args=args, metrics={"raw": tuple(config.eval.raw_metrics)})
    report = {"method": method.name, "step": int(step), "untrained": untrained, "source": config.data.source,
              "factors": list(ground_truth.factor_names), "code_entries": int(table.shape[1]),
              "num_chunks": method.num_chunks, "scores": scores}
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / ("eval_untrained.json" if untrained else "eval.json")).write_text(json.dumps(report, indent=1))
    return report


def classifier_predict(config: ml_collections.ConfigDict) -> Callable | None:
    """{factor: class} of the shipped shapes classifier, or None where it does not apply (not 32x32 shapes).
    The orientation of a circle is invisible, so it is reported as -1 (no change counted)."""
    if not config.data.source.startswith("shapes") or image_shape(config) != (32, 32, 3):
        return None
    from edt_jax.metrics.extractors import load_extractor

    extractor = load_extractor("shapes")

    def predict(images):
        pred = extractor.predict(np.asarray(images))
        pred["orientation"] = np.where(pred["shape"] == 1, -1, pred["orientation"])
        return pred

    return predict


def swap(config: ml_collections.ConfigDict, workdir, dpm_workdir: str | None = None) -> dict:
    """The factor-swap grid (and table): sources regenerated with code chunk c of a donor image.

    The DPM is ``dpm_workdir``, else ``config.dpm_workdir``, else the one the run was trained on. Writes
    ``workdir/swap.png`` (rows: sources, reconstructions, one row per factor, donors) and, on 32x32 shapes,
    ``workdir/what_changes.json``; returns the report.
    """
    workdir = paths.as_path(workdir)
    run_dir = None
    if config.model.name == "DisDiff" and dpm_kind(config) == "run":
        run_dir = dpm_dir(config, dpm_workdir or trained_dpm_workdir(workdir))
    method = build_method(config, run_dir, with_dpm=True)
    if method.disdiff is None:
        raise ValueError(f"--mode swap needs DisDiff's factor codes; model.name={config.model.name!r} has none")
    params, step = load_method_params(workdir, method)
    model, dpm, s = method.disdiff, method.dpm, config.swap
    ground_truth = ground_truth_for(config.data.source, indices=True)
    rng = np.random.default_rng(s.seed)
    picks = rng.choice(ground_truth.num_items, 2 * s.num_images, replace=False)
    sources = ground_truth.observations_at(picks[:s.num_images])
    donors = ground_truth.observations_at(picks[s.num_images:])

    def start_noise(codes, fields_on):
        """x_T of the sources: their DDIM inversion under their own codes (or the same noise for all)."""
        if s.start != "inversion":
            return jax.random.normal(jax.random.key(s.seed), sources.shape, jnp.float32)
        eps_model = model.noise_model(params, dpm.params, codes, dpm.schedule, fields_on)
        return ddim_invert(eps_model, jnp.asarray(sources), dpm.schedule, steps=s.steps)

    @jax.jit
    def generate(codes, x_T, fields_on):
        eps_model = model.noise_model(params, dpm.params, codes, dpm.schedule, fields_on)
        return samplers.sample(s.sampler, eps_model, x_T, dpm.schedule, steps=s.steps, key=jax.random.key(s.seed))

    codes, donor_codes = (jax.jit(model.encode)(params, jnp.asarray(x)) for x in (sources, donors))
    all_on, all_off = jnp.ones(model.num_factors), jnp.zeros(model.num_factors)
    x_T = jax.jit(start_noise)(codes, all_on)
    # The frozen DPM alone (every field off), the reference for how much the fields add to a reconstruction.
    dpm_alone = np.asarray(generate(codes, jax.jit(start_noise)(codes, all_off), all_off))
    start = time.time()
    reconstructions = np.asarray(generate(codes, x_T, all_on))
    swapped = []
    for c in range(model.num_factors):
        swapped.append(np.asarray(generate(swap_codes(codes, donor_codes, c), x_T, all_on)))
        logging.info("factor %d/%d swapped, ETA %.0f s", c + 1, model.num_factors,
                     (time.time() - start) / (c + 2) * (model.num_factors - c - 1))
    workdir.mkdir(parents=True, exist_ok=True)
    k = s.grid_columns
    grid = evaluation.swap_grid(sources[:k], reconstructions[:k], [x[:k] for x in swapped], donors[:k])
    with (workdir / "swap.png").open("wb") as f:
        Image.fromarray(grid.squeeze()).save(f, format="PNG")
    report = {"step": int(step), "num_images": int(s.num_images), "sampler": s.sampler, "steps": int(s.steps),
              "start": s.start, "grid": str(workdir / "swap.png"),
              "reconstruction_rmse": float(np.sqrt(np.mean((reconstructions - sources) ** 2))),
              "dpm_alone_rmse": float(np.sqrt(np.mean((dpm_alone - sources) ** 2)))}
    predict = classifier_predict(config)
    if predict is not None:
        names = list(ground_truth.factor_names)
        table = evaluation.what_changes(predict, reconstructions, swapped, names)
        versus_source = evaluation.what_changes(predict, sources, [reconstructions, dpm_alone], names)
        report.update({"factors": names, "what_changes": table.tolist(),
                       "reconstruction_vs_source": versus_source[0].tolist(),
                       "dpm_alone_vs_source": versus_source[1].tolist()})
        (workdir / "what_changes.json").write_text(json.dumps(report, indent=1))
    return report
