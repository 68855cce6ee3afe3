"""launch.evaluate end to end on a tiny checkpoint (offline FD / precision-recall, FID, ADM .npz) and the generator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from reference_fixtures import inception_recipe_state_dict, load_npz

from configs import shapes_edt_tiny
from edt_jax.metrics.evaluation import compute_metrics, shapes_slice_images

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_run(tiny_shapes_run):
    return tiny_shapes_run


def evaluate(workdir: Path, *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "2", "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "launch.evaluate", f"--workdir={workdir}", *flags], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)


def test_evaluate_writes_offline_metrics_and_adm_samples(tiny_run, tmp_path):
    out = evaluate(tiny_run, "--num_samples=12", "--batch_size=8", "--sampler=ddim", "--steps=2",
                   "--metrics=fd_shapes,pr_shapes,acc_shapes", f"--report={tmp_path / 'eval.json'}",
                   f"--save_samples={tmp_path / 'samples.npz'}")
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["step"] == 2 and report["num_samples"] == 12 and report["sampler"] == "ddim"
    metrics = report["metrics"]
    # Two steps of training: samples are noise-like, far from the shapes data, so FD is large.
    assert np.isfinite(metrics["FD_shapes"]) and metrics["FD_shapes"] > 0
    assert 0 <= metrics["precision_shapes"] <= 1 and 0 <= metrics["recall_shapes"] <= 1
    assert 0 <= metrics["class_accuracy_shapes"] <= 1
    saved = np.load(tmp_path / "samples.npz")
    assert saved["arr_0"].shape == (12, 32, 32, 3) and saved["arr_0"].dtype == np.uint8
    assert saved["arr_1"].shape == (12,)


def test_evaluate_rejects_unknown_metrics_in_one_line(tiny_run, tmp_path):
    out = evaluate(tiny_run, "--num_samples=2", "--batch_size=2", "--steps=1", "--sampler=ddim",
                   "--metrics=fid_shapes", f"--report={tmp_path / 'eval.json'}")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == ("error: unknown metrics ['fid_shapes']; accepted: fd_shapes, "
                                                   "fd_mnist5k, pr_shapes, pr_mnist5k, acc_shapes, acc_mnist5k, "
                                                   "fid, is, pr_inception")


def test_dataset_images_score_better_than_noise():
    from edt_jax.metrics.extractors import labelled_examples

    indices = np.sort(np.random.default_rng(1).choice(110_592, 400, replace=False))  # a representative draw
    real, factors = labelled_examples("shapes", indices)
    noise = np.random.default_rng(0).integers(0, 256, real.shape, dtype=np.uint8)
    good, bad = (compute_metrics(x, ["fd_shapes", "acc_shapes"], labels=factors["shape"]) for x in (real, noise))
    assert good["FD_shapes"] < bad["FD_shapes"] / 10
    assert good["class_accuracy_shapes"] > 0.99


def test_a_slice_run_is_scored_against_its_slice():
    from configs.shapes_edt_tiny import MAIN_JOB_SLICE

    images = shapes_slice_images(MAIN_JOB_SLICE)
    assert images.shape == (108, 32, 32, 3) and shapes_slice_images("shapes") is None
    metrics = ["fd_shapes", "pr_shapes"]
    own = compute_metrics(images, metrics, shapes_source=MAIN_JOB_SLICE)
    whole = compute_metrics(images, metrics, shapes_source="shapes")
    assert own["reference_shapes"] == MAIN_JOB_SLICE and "reference_shapes" not in whole
    assert own["FD_shapes"] < 1e-3 * whole["FD_shapes"]  # the slice against itself vs against the whole dataset
    assert own["precision_shapes"] == own["recall_shapes"] == 1.0


def test_fid_path_with_recipe_weights(tmp_path):
    """FID of dataset images against themselves through the converted Inception (fixture recipe weights)."""
    state = inception_recipe_state_dict(load_npz("fid_inception_recipe.npz"))
    np.savez(tmp_path / "inception.npz", **{f"param/{k}": v for k, v in state.items()})
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)  # > k = 3 neighbours
    np.savez(tmp_path / "ref.npz", arr_0=images)
    result = compute_metrics(images, ["fid", "pr_inception"], reference=str(tmp_path / "ref.npz"),
                             inception_weights=str(tmp_path / "inception.npz"))
    assert abs(result["fid"]) < 1e-3  # the same images on both sides
    assert result["precision_inception"] == 1 and result["recall_inception"] == 1
    with pytest.raises(ValueError, match="needs the fc head"):
        compute_metrics(images, ["is"], inception_weights=str(tmp_path / "inception.npz"))


def test_generator_passes_the_time_grid_and_algorithm_to_the_solver(tiny_run):
    import edt_jax

    run = edt_jax.load_run(tiny_run, use_ema=False)
    labels = np.arange(8) % 3  # the test session has 8 CPU devices

    def draw(**options):
        generate = run.generator(sampler="dpm_solver", steps=3, order=2, guidance_scale=1.0, amm=True, **options)
        return generate(run.params, labels, 7)

    default = draw()
    np.testing.assert_array_equal(draw(skip_type="time_uniform", algorithm="dpmsolver++"), default)
    # Identical options give identical samples, so any difference shows the option reached the solver.
    assert np.max(np.abs(draw(skip_type="logSNR") - default)) > 1e-6
    assert np.max(np.abs(draw(algorithm="dpmsolver") - default)) > 1e-6


class _ConstantDataModel:
    """Stands in for a network trained with x0 prediction on a point mass at ``value``: its x0 output is exact."""

    input_size, in_channels, learn_sigma, num_classes, value = 4, 3, True, 3, 0.3

    def apply(self, variables, x, t, y, **_):
        return jnp.concatenate([jnp.full_like(x, self.value), jnp.zeros_like(x)], axis=-1)


@pytest.mark.parametrize("sampler", ["unipc", "dpm_solver", "ddim", "ddpm"])
def test_generator_reads_the_output_as_the_trained_prediction(sampler):
    from edt_jax.runs.build import build_schedule
    from edt_jax.runs.generate import make_generator
    from edt_jax.training.sharding import create_mesh

    model, mesh = _ConstantDataModel(), create_mesh()
    schedule = build_schedule(shapes_edt_tiny.get_config("test"))
    labels = np.arange(8) % 3

    def draw(prediction):
        return make_generator(model, schedule, sampler=sampler, steps=4, order=2, guidance_scale=1.0, amm=True,
                              mesh=mesh, prediction=prediction)({}, labels, 0)

    # Read as x0, the exact data prediction lands every sample on the point mass, up to the noise left at the
    # solvers' last time 1/N (std 0.01); read as eps it does not.
    as_x0, as_eps = (np.mean(np.abs(draw(p) - model.value)) for p in ("x0", "eps"))
    assert as_x0 < 0.02 < 0.2 < as_eps
    # The reference's name for x0 prediction still works (deprecated); an unknown one is a one-line error.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        np.testing.assert_array_equal(draw("x_start"), draw("x0"))
    with pytest.raises(ValueError, match="unknown prediction 'x_begin'"):
        draw("x_begin")
