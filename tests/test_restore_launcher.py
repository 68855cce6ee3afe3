"""DP-IR end to end on tiny networks (``edt_jax.restoration.tasks`` / ``build``): every training mode, every
method, restore a folder, bad input; ``launch.restore`` prints what the library returns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from configs import dpir_mnist_sr4, dpir_photos_sr4
from edt_jax.restoration import create_degradation, tasks
from edt_jax.restoration.build import METHODS, Restorers, load_denoiser

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dpir_run(tiny_shapes_run, tmp_path_factory):
    """The photo SR x4 test config on the shared tiny shapes denoiser (32x32x3), each network trained 3 steps
    (ir_alt is ir's code with another width; not trained here, to save a NAFNet compile)."""
    config = dpir_photos_sr4.get_config("test")
    config.denoiser_workdir = str(tiny_shapes_run)
    workdir = tmp_path_factory.mktemp("dpir")
    for name in ("ir", "fusion", "conditional"):
        result = tasks.train(config, workdir, name)
        assert result.step == 3
    return config, workdir


def test_every_network_is_a_resumable_trainer_run(dpir_run):
    config, workdir = dpir_run
    for name in ("ir", "fusion", "conditional"):
        lines = (workdir / name / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]
        assert json.loads((workdir / name / "config.json").read_text())["network"] == name
    again = tasks.train(config, workdir, "ir")  # already done: resumes at 3, trains nothing
    assert again.step == 3 and again.history == []


def test_every_kind_of_method_evaluates_and_reports_nfe(dpir_run):
    config, workdir = dpir_run
    nfe = {}
    for method in ("ir", "dpir", "ddnm", "conditional"):  # ir_alt / dpir_ir_alt: the same code on another net
        result = tasks.evaluate(config, workdir, method)
        assert result["num_images"] == 8
        assert np.isfinite([result["psnr"], result["ssim"], result["lpips"], result["consistency"]]).all()
        nfe[method] = result["nfe"]
    assert nfe == {"ir": 1, "dpir": 3, "ddnm": 2, "conditional": 2}
    assert json.loads((workdir / "eval.json").read_text())["method"] == "conditional"
    assert set(METHODS) == {"ir", "ir_alt", "dpir", "dpir_ir_alt", "ddnm", "conditional"}


def test_tau_start_and_seeds(dpir_run):
    config, workdir = dpir_run
    restorers = Restorers(config, workdir, create_degradation(config.degradation), (32, 32, 3))
    y = np.random.default_rng(0).uniform(-1, 1, (8, 8, 8, 3)).astype(np.float32)
    fast = restorers.get("dpir", steps=1, tau=0.25)
    a, b, c = fast(y, np.arange(8), 0), fast(y, np.arange(8), 0), fast(y, np.arange(8), 1)
    assert fast.nfe == 2 and a.shape == (8, 32, 32, 3)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    np.testing.assert_array_equal(fast(y[:5], np.arange(5), 0), a[:5])  # a padded batch: the same first rows
    with pytest.raises(ValueError, match=r"tau must be a fraction of T in \(0, 1\]"):
        restorers.get("dpir", tau=1.5)
    with pytest.raises(ValueError, match="unknown method 'sr3'"):
        restorers.get("sr3")


def test_the_gaussian_denoiser_route(dpir_run):
    """config.denoiser = "gaussian": the denoiser trains into <workdir>/denoiser, its fusion net beside the EDT
    route's (fusion_gaussian), and DP-IR runs on it; the "dpm" route's fusion net is left as it was."""
    config, workdir = dpir_run
    route = config.copy_and_resolve_references()
    route.denoiser = "gaussian"
    with pytest.raises(FileNotFoundError, match=r"no denoiser network in .*; run --mode train_denoiser first"):
        load_denoiser(route, (32, 32, 3), workdir=workdir)
    dpm_fusion = (workdir / "fusion" / "metrics.jsonl").read_text()
    assert tasks.train(route, workdir, "denoiser").step == 3
    assert tasks.train(route, workdir, "fusion").step == 3
    assert (workdir / "fusion" / "metrics.jsonl").read_text() == dpm_fusion
    assert json.loads((workdir / "fusion_gaussian" / "config.json").read_text())["denoiser"] == "gaussian"
    restore = Restorers(route, workdir, create_degradation(route.degradation), (32, 32, 3)).get("dpir", steps=1)
    y = np.random.default_rng(0).uniform(-1, 1, (8, 8, 8, 3)).astype(np.float32)
    x_hat = restore(y, np.arange(8), 0)
    assert restore.nfe == 2 and x_hat.shape == (8, 32, 32, 3) and np.isfinite(x_hat).all()
    route.denoiser = "edm"
    with pytest.raises(ValueError, match=r"unknown denoiser 'edm'; expected one of 'dpm', 'gaussian'"):
        Restorers(route, workdir, create_degradation(route.degradation), (32, 32, 3)).get("dpir")


def write_images(folder: Path, count: int, size: int) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"im{i}.png")


def test_restore_a_folder_of_clean_or_degraded_images(dpir_run, tmp_path):
    config, workdir = dpir_run
    write_images(tmp_path / "clean", 3, 32)
    done = tasks.restore_folder(config, workdir, tmp_path / "clean", tmp_path / "out", clean_input=True,
                                method="dpir")
    assert done == {"method": "dpir", "nfe": 3, "num_images": 3, "output": str((tmp_path / "out").resolve())}
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["im0.png", "im0_degraded.png", "im1.png", "im1_degraded.png", "im2.png", "im2_degraded.png"]
    assert np.asarray(Image.open(tmp_path / "out" / "im0_degraded.png")).shape == (8, 8, 3)
    write_images(tmp_path / "lr", 2, 8)
    tasks.restore_folder(config, workdir, tmp_path / "lr", tmp_path / "hr", clean_input=False, method="ir")
    assert np.asarray(Image.open(tmp_path / "hr" / "im1.png")).shape == (32, 32, 3)


def test_bad_input_is_one_line(dpir_run, tmp_path):
    config, workdir = dpir_run
    write_images(tmp_path / "in", 1, 32)
    with pytest.raises(ValueError, match=r"is \(inside\) the --input folder; .* never overwritten"):
        tasks.restore_folder(config, workdir, tmp_path / "in", tmp_path / "in" / "sub", clean_input=True,
                             method="ir")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"--input .*empty holds no images \(.png"):
        tasks.restore_folder(config, workdir, tmp_path / "empty", tmp_path / "o", clean_input=True, method="ir")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot read image .*x.png"):
        tasks.restore_folder(config, workdir, tmp_path / "bad", tmp_path / "o", clean_input=True, method="ir")
    with pytest.raises(ValueError, match=r"--input images are \(32, 32, 3\); 'sr4' of \(32, 32, 3\) images gives "
                                         r"\(8, 8, 3\)"):
        tasks.restore_folder(config, workdir, tmp_path / "in", tmp_path / "o", clean_input=False, method="ir")
    other = dpir_mnist_sr4.get_config("test")
    other.denoiser_workdir = config.denoiser_workdir
    with pytest.raises(ValueError, match=r"was trained on \(32, 32, 3\) images, this config restores \(32, 32, 1\)"):
        tasks.train(other, tmp_path / "mnist", "fusion")
    other.denoiser_workdir = ""
    with pytest.raises(ValueError, match="config.denoiser_workdir is empty"):
        tasks.evaluate(other, tmp_path / "mnist", "ddnm")
    with pytest.raises(FileNotFoundError, match=r"no ir network in .*; run --mode train_ir first"):
        tasks.evaluate(other, tmp_path / "mnist", "ir")
    bad = dpir_photos_sr4.get_config("test")
    bad.degradation = "sr3"
    with pytest.raises(ValueError, match=r"^sr3: the image size 32x32 is not divisible by the scale 3$"):
        tasks.train(bad, tmp_path / "sr3", "ir")
    bad.degradation = "jpeg:quality=10"
    with pytest.raises(ValueError, match="unknown degradation 'jpeg'"):
        tasks.train(bad, tmp_path / "jpeg", "ir")


def launch_restore(*flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "launch.restore", "--config", "configs/dpir_photos_sr4.py:test",
                           *flags], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_the_launcher_prints_the_library_result(dpir_run, tmp_path):
    config, workdir = dpir_run
    out = launch_restore(f"--workdir={workdir}", "--mode=evaluate", "--method=ir")
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((workdir / "eval.json").read_text())
    line = out.stdout.strip().splitlines()[-1]
    assert line.startswith("method ir degradation sr4 num_images 8 ") and "sample" not in line
    assert f" psnr {result['psnr']:.4g} " in line and " nfe 1 seconds_per_image " in line
    out = launch_restore(f"--workdir={tmp_path}", "--mode=restore")
    assert out.returncode == 2 and "error: --mode restore needs --input and --output folders" in out.stderr
