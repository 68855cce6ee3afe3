"""Disentanglement end to end on tiny configs (``edt_jax.disentangle.tasks`` / ``build``): train (resumable),
evaluate, swap, the beta-VAE, bad input; ``launch.disentangle`` prints what the library returns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from configs import shapes_betavae, shapes_disdiff
from edt_jax.disentangle import tasks
from edt_jax.disentangle.build import build_method

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def disdiff_run(tiny_shapes_run, tmp_path_factory):
    config = shapes_disdiff.get_config("test")
    workdir = tmp_path_factory.mktemp("disdiff")
    result = tasks.train(config, workdir, str(tiny_shapes_run))
    assert result.step == config.total_steps == 4
    return config, workdir, tiny_shapes_run


def test_train_is_a_resumable_trainer_run(disdiff_run):
    config, workdir, dpm = disdiff_run
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [2, 4]
    assert {"loss", "reconstruction", "dis_total", "dis_invariant", "dis_variant"} <= set(lines[-1])
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["dpm_workdir"] == str(dpm.resolve()) and saved["model"]["name"] == "DisDiff"
    again = tasks.train(shapes_disdiff.get_config("test"), workdir, str(dpm))
    assert again.step == 4 and again.history == []


def test_evaluate_scores_both_protocols(disdiff_run):
    config, workdir, _ = disdiff_run
    report = tasks.evaluate(config, workdir, untrained=False)
    assert report["step"] == 4 and report["num_chunks"] == 7 and report["code_entries"] == 7 * 4
    # The test slice varies shape, object hue, x position and orientation.
    assert report["factors"] == ["shape", "object_hue", "x_position", "orientation"]
    pca, raw = report["scores"]["pca"], report["scores"]["raw"]
    assert set(pca) == {"factor_vae", "dci", "mig"} and set(raw) == {"factor_vae", "mig"}
    assert set(pca["dci"]) == {"disentanglement", "completeness", "informativeness_train", "informativeness_test"}
    for scores in (pca, raw):
        assert 0.0 <= scores["factor_vae"]["eval_accuracy"] <= 1.0 and 0.0 <= scores["mig"]["discrete_mig"] <= 1.0
    assert json.loads((workdir / "eval.json").read_text())["scores"] == report["scores"]
    untrained = tasks.evaluate(config, workdir, untrained=True)
    assert untrained["step"] == 0 and (workdir / "eval_untrained.json").is_file()


def test_swap_writes_the_grid_and_the_table(disdiff_run):
    config, workdir, _ = disdiff_run
    report = tasks.swap(config, workdir, None)  # the DPM is read from the run's config
    n, factors = config.model.num_factors, report["factors"]
    assert np.asarray(report["what_changes"]).shape == (n, len(factors))
    grid = np.asarray(Image.open(workdir / "swap.png"))
    rows, cols = n + 3, config.swap.grid_columns  # sources, reconstructions, one per factor, donors
    assert grid.shape == (rows * 34 + 2, cols * 34 + 2, 3)
    assert json.loads((workdir / "what_changes.json").read_text())["what_changes"] == report["what_changes"]
    assert len(report["dpm_alone_vs_source"]) == len(factors) and report["dpm_alone_rmse"] > 0


def test_beta_vae_trains_and_scores_its_raw_codes(tmp_path):
    config = shapes_betavae.get_config("test")
    assert tasks.train(config, tmp_path, None).step == 4
    report = tasks.evaluate(config, tmp_path, untrained=False)
    assert set(report["scores"]) == {"raw"} and report["code_entries"] == config.model.latent_dim
    with pytest.raises(ValueError, match=r"--mode swap needs DisDiff's factor codes; model.name='BetaVAE'"):
        tasks.swap(config, tmp_path, "/unused")


def test_bad_input(disdiff_run, tmp_path):
    config, workdir, dpm = disdiff_run
    with pytest.raises(FileNotFoundError, match=r"the DPM workdir .*missing does not exist"):
        tasks.train(shapes_disdiff.get_config("test"), tmp_path / "a", str(tmp_path / "missing"))
    other = shapes_disdiff.get_config("test")
    other.data.update(dict(source="shapes:64:scale=3,x_position=3,y_position=4,background_hue=0", image_size=64))
    with pytest.raises(ValueError, match=r"was trained on \(32, 32, 3\) images, this config disentangles "
                                         r"\(64, 64, 3\)"):
        tasks.train(other, tmp_path / "b", str(dpm))
    for key, value, message in [("num_factors", 1, r"model.num_factors=1: DisDiff needs N >= 2"),
                                ("code_dim", 0, r"model.code_dim=0: the code of each factor needs d >= 1"),
                                ("dis_weight", -0.5, r"model.dis_weight=-0.5: lambda must be >= 0")]:
        bad = shapes_disdiff.get_config("test")
        bad.model[key] = value
        with pytest.raises(ValueError, match=message):
            build_method(bad)
    no_factors = shapes_disdiff.get_config("test")
    no_factors.data.source = "mnist5k"
    with pytest.raises(ValueError, match=r"'mnist5k'.*factor labels"):
        tasks.evaluate(no_factors, workdir, untrained=True)
    with pytest.raises(ValueError, match="DisDiff needs the frozen DPM: give --dpm_workdir"):
        tasks.train(shapes_disdiff.get_config("test"), tmp_path / "c", None)
    with pytest.raises(FileNotFoundError, match=r"no trained DisDiff in .*; run --mode train first"):
        tasks.evaluate(shapes_disdiff.get_config("test"), tmp_path / "d", untrained=False)
    with pytest.raises(ValueError, match=r"shapes_disdiff: unknown variant 'n5'"):
        shapes_disdiff.get_config("n5")


def test_the_launcher_prints_the_library_report(disdiff_run, tmp_path):
    config, workdir, _ = disdiff_run
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-m", "launch.disentangle", "--config", "configs/shapes_disdiff.py:test",
                          f"--workdir={workdir}", "--mode=evaluate"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout) == json.loads((workdir / "eval.json").read_text())["scores"]
    out = subprocess.run([sys.executable, "-m", "launch.disentangle", "--config", "configs/shapes_disdiff.py:test",
                          f"--workdir={tmp_path}", "--mode=train"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 2 and "error: DisDiff needs the frozen DPM: give --dpm_workdir" in out.stderr
