"""DisDiff and its baselines: train, score the representation, swap factors (``configs/shapes_disdiff.py``).

    python -m launch.disentangle --config configs/shapes_disdiff.py --workdir DIR --mode train \\
        --dpm_workdir /tmp/shapes_full_dpm
    python -m launch.disentangle --config configs/shapes_disdiff.py --workdir DIR --mode evaluate
    python -m launch.disentangle --config configs/shapes_disdiff.py --workdir DIR --mode swap
    python -m launch.disentangle --config configs/shapes_betavae.py --workdir DIR --mode train

train: the library's one trainer (resumable, kill -9 safe) into DIR. evaluate: FactorVAE / DCI / MIG on the
config's ground-truth data (DisDiff's PCA(1)-per-chunk protocol and the raw codes) -> DIR/eval.json
(``--untrained``: the encoder at initialisation, the random-encoder baseline -> DIR/eval_untrained.json).
swap: regenerate images with one factor's code taken from another image -> DIR/swap.png (rows: sources,
reconstructions, one row per factor, donors) and, on 32x32 shapes, DIR/what_changes.json: for each swapped
factor, the fraction of images whose true factors (read by the shipped shapes classifier) changed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from PIL import Image

from edt_jax import disentangle
from edt_jax.data.ground_truth import ground_truth_for
from edt_jax.disentangle import evaluation
from edt_jax.training.checkpoint import CONFIG_FILENAME, UnreadableCheckpointError
from launch import builders
from launch.disentangle_builders import build_method, dpm_dir, image_shape, load_params, train_method

MODES = ("train", "evaluate", "swap")

builders.define_config_flag()
builders.define_flag(flags.DEFINE_string, "workdir", None, "directory of the run")
builders.define_flag(flags.DEFINE_enum, "mode", None, MODES, "what to do")
builders.define_flag(flags.DEFINE_string, "dpm_workdir", None, "the frozen DPM (a launch.train run); default: "
                     "config.dpm_workdir, or the one the run was trained on")
builders.define_flag(flags.DEFINE_bool, "untrained", False, "evaluate: score the encoder at initialisation")


def _trained_dpm_workdir(workdir: Path) -> str:
    """The DPM a DisDiff run was trained on, from its saved config ('' when unknown)."""
    path = workdir / CONFIG_FILENAME
    return json.loads(path.read_text()).get("dpm_workdir", "") if path.is_file() else ""


def train_mode(config, workdir: Path, dpm_flag: str | None):
    dpm = None
    if config.model.name == "DisDiff":
        dpm = dpm_dir(config, dpm_flag)
        config.dpm_workdir = str(dpm.resolve()) if dpm.exists() else str(dpm)
    return train_method(config, workdir, build_method(config, dpm))


def evaluate_mode(config, workdir: Path, untrained: bool) -> dict:
    """Scores of the run's encoder (or of a fresh one) on the config's ground truth, written as JSON."""
    ground_truth = ground_truth_for(config.data.source, indices=True)  # one-line error without factor labels
    method = build_method(config)
    if untrained:
        params, step = jax.jit(method.init_params)(jax.random.key(config.seed)), 0
    else:
        params, step = load_params(config, workdir, method)
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


def _classifier_predict(config):
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


def swap_mode(config, workdir: Path, dpm_flag: str | None) -> dict:
    """The factor-swap grid (and table): sources regenerated with code chunk c of a donor image."""
    method = build_method(config, dpm_dir(config, dpm_flag or _trained_dpm_workdir(workdir)))
    if method.disdiff is None:
        raise ValueError(f"--mode swap needs DisDiff's factor codes; model.name={config.model.name!r} has none")
    params, step = load_params(config, workdir, method)
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
        eps_model = model.noise_model(params, dpm.params, codes, dpm.ns, fields_on)
        return disentangle.ddim_invert(eps_model, jnp.asarray(sources), dpm.ns, steps=s.steps)

    @jax.jit
    def generate(codes, x_T, fields_on):
        eps_model = model.noise_model(params, dpm.params, codes, dpm.ns, fields_on)
        return disentangle.sample(eps_model, x_T, jax.random.key(s.seed), dpm.ns, dpm.diffusion,
                                  sampler=s.sampler, steps=s.steps)

    codes, donor_codes = (jax.jit(model.encode)(params, jnp.asarray(x)) for x in (sources, donors))
    all_on, all_off = jnp.ones(model.num_factors), jnp.zeros(model.num_factors)
    x_T = jax.jit(start_noise)(codes, all_on)
    # The frozen DPM alone (every field off), the reference for how much the fields add to a reconstruction.
    dpm_alone = np.asarray(generate(codes, jax.jit(start_noise)(codes, all_off), all_off))
    start = time.time()
    reconstructions = np.asarray(generate(codes, x_T, all_on))
    swapped = []
    for c in range(model.num_factors):
        swapped.append(np.asarray(generate(disentangle.swap_codes(codes, donor_codes, c), x_T, all_on)))
        logging.info("factor %d/%d swapped, ETA %.0f s", c + 1, model.num_factors,
                     (time.time() - start) / (c + 2) * (model.num_factors - c - 1))
    workdir.mkdir(parents=True, exist_ok=True)
    k = s.grid_columns
    grid = evaluation.swap_grid(sources[:k], reconstructions[:k], [x[:k] for x in swapped], donors[:k])
    Image.fromarray(grid.squeeze()).save(workdir / "swap.png")
    report = {"step": int(step), "num_images": int(s.num_images), "sampler": s.sampler, "steps": int(s.steps),
              "start": s.start, "grid": str(workdir / "swap.png"),
              "reconstruction_rmse": float(np.sqrt(np.mean((reconstructions - sources) ** 2))),
              "dpm_alone_rmse": float(np.sqrt(np.mean((dpm_alone - sources) ** 2)))}
    predict = _classifier_predict(config)
    if predict is not None:
        names = list(ground_truth.factor_names)
        table = evaluation.what_changes(predict, reconstructions, swapped, names)
        versus_source = evaluation.what_changes(predict, sources, [reconstructions, dpm_alone], names)
        report.update({"factors": names, "what_changes": table.tolist(),
                       "reconstruction_vs_source": versus_source[0].tolist(),
                       "dpm_alone_vs_source": versus_source[1].tolist()})
        (workdir / "what_changes.json").write_text(json.dumps(report, indent=1))
    return report


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    builders.quiet_library_logs()
    f = flags.FLAGS
    config, workdir = f.config, Path(f.workdir).expanduser()
    try:
        if f.mode == "train":
            result = train_mode(config, workdir, f.dpm_workdir)
            logging.info("stopped at step %d%s", result.step, " (preempted)" if result.preempted else "")
        elif f.mode == "evaluate":
            print(json.dumps(evaluate_mode(config, workdir, f.untrained)["scores"], indent=1))
        else:
            print(json.dumps(swap_mode(config, workdir, f.dpm_workdir), indent=1))
    except (ValueError, FileNotFoundError, UnreadableCheckpointError) as err:
        builders.exit_with_error(err)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "workdir", "mode"])
    app.run(main)
