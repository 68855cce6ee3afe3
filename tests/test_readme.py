"""The README's code blocks run as written: every python block, the install commands and the main job."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from benchmarks import main_job  # the main job's commands, timed

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

# One marker per python block of the README, each run by a test below.
MARKERS = ("edt_jax.load_run(", "nn.Dense(8)", 'create_model("EDT-S/2")', "StableDiffusion.from_pretrained(",
           "restoration.create_degradation", "disentangle.DisDiff(")


def blocks(language: str, path: Path = README) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", path.read_text(), flags=re.S | re.M)


def run_readme_block(marker: str, path: Path = README, replace: dict | None = None) -> dict:
    """Execute the python block of ``path`` (the README, or a docs page) containing ``marker``, with the
    ``replace`` substitutions (old -> new text); return its namespace."""
    example = next(b for b in blocks("python", path) if marker in b)
    for old, new in (replace or {}).items():
        assert old in example, old
        example = example.replace(old, new)
    namespace: dict = {}
    exec(compile(example, str(path), "exec"), namespace)
    return namespace


def test_every_python_block_is_run_and_the_readme_is_short():
    python = blocks("python")
    assert python and all(sum(m in b for m in MARKERS) == 1 for b in python), "a README block no test runs"
    assert len(python) == len(MARKERS)
    assert len(README.read_text().splitlines()) <= 200


def test_readme_install_commands_are_what_ci_runs():
    install = next(b for b in blocks("bash") if "pip install" in b).strip().splitlines()
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert install == ["pip install -e \".[test]\"", "python -m pytest"]
    assert all(line in ci for line in install)


def test_readme_unipc_example_runs():
    x0 = run_readme_block("nn.Dense(8)")["x0"]
    assert x0.shape == (16, 8) and x0.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(x0)))


def test_readme_official_weights_example_runs(tmp_path, monkeypatch):
    from model_helpers import official_state_dict, random_params
    from safetensors.numpy import save_file

    from edt_jax.models import create_model

    # An official-layout EDT-S/2 state dict (the names and shapes of the authors' checkpoint), random values.
    state = official_state_dict(random_params(create_model("EDT-S/2"), scale=0.02))
    save_file(state, str(tmp_path / "EDT-S-2.safetensors"))
    monkeypatch.chdir(tmp_path)
    namespace = run_readme_block('create_model("EDT-S/2")')
    assert namespace["out"].shape == (2, 32, 32, 8) and bool(jnp.all(jnp.isfinite(namespace["out"])))
    kernel = namespace["variables"]["params"]["final_layer"]["linear"]["kernel"]
    assert np.array_equal(kernel, state["final_layer.linear.weight"].T)


def test_readme_stable_diffusion_example_runs():
    # The tiny diffusers folder of the fixtures stands in for SD 1.5, with 4 steps instead of 25.
    folder = REPO / "tests" / "fixtures" / "sd_tiny_pipeline"
    namespace = run_readme_block("StableDiffusion.from_pretrained(", replace={
        '"/data/stable-diffusion-v1-5"': repr(str(folder)), "num_inference_steps=25": "num_inference_steps=4"})
    images = namespace["images"]
    assert images.shape == (1, 32, 32, 3) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0


def test_readme_restoration_example_runs():
    namespace = run_readme_block("restoration.create_degradation")
    assert namespace["y"].shape == (2, 8, 8, 3) and namespace["x_hat"].shape == (2, 32, 32, 3)
    # The fusion net starts from x0_IR and the stand-in denoiser adds nothing: the chain returns ~x0_IR.
    assert float(jnp.max(jnp.abs(namespace["x_hat"] - namespace["x0_ir"]))) < 0.1


def test_readme_disdiff_example_runs():
    namespace = run_readme_block("disentangle.DisDiff(")
    assert namespace["images"].shape == (8, 32, 32, 3)
    # Zero-initialised fields and a zero stand-in DPM: the loss is the L1 norm of the noise, E|N(0,1)| ~ 0.8.
    assert abs(float(namespace["loss"]) - 0.8) < 0.1 and 0 <= namespace["scores"]["discrete_mig"] <= 1


def test_docs_edt_sampling_example_runs():
    latents = run_readme_block('create_model("EDT", dims', REPO / "docs" / "edt.md")["latents"]
    assert latents.shape == (4, 16, 16, 4) and latents.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(latents)))


def test_docs_mdt_example_runs():
    namespace = run_readme_block('create_model("MDTv2"', REPO / "docs" / "mdt.md")
    assert namespace["out"].shape == namespace["masked"].shape == namespace["guided"].shape == (2, 16, 16, 8)
    assert namespace["ids_keep"].shape == (2, 44) and 32 <= int(namespace["key_valid"][0].sum()) <= 44


def test_docs_data_example_runs():
    batch = run_readme_block("data.create_source", REPO / "docs" / "training.md")["batch"]
    assert batch["image"].shape == (256, 32, 32, 3) and batch["label"].shape == (256,)


def test_readme_main_job_runs_as_written(tmp_path):
    """The main job's four commands, as the README writes them, with a few steps and samples added at the end."""
    block = next(b for b in blocks("bash") if "launch.train" in b)
    assert tuple(block.strip().splitlines()) == main_job.COMMANDS  # the benchmark times what the README says
    workdir = tmp_path / "run"
    # A few steps and samples; --config.sample.steps sets the run's default sampler steps (the Python block's).
    fewer = {"launch.train": ["--config.total_steps=3", "--config.batch_size=8", "--config.log_every_steps=1",
                              "--config.sample.steps=2"],
             "launch.sample": ["--num_samples=10", "--steps=2"],
             "launch.evaluate": ["--num_samples=16", "--steps=2"], "benchmarks.nearest": []}
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    outputs = {}
    for command in main_job.COMMANDS:
        argv = shlex.split(command.replace(main_job.WORKDIR, str(workdir)))
        name = next(k for k in fewer if k in argv)
        done = subprocess.run([sys.executable, *argv[1:], *fewer[name]], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
        outputs[name] = done
    assert re.search(r"step 3/3 \(100%\) .* ETA", outputs["launch.train"].stderr)  # the progress line
    assert f"the grid {(workdir / 'samples.png').resolve()}" in outputs["launch.sample"].stdout
    report = json.loads(next(workdir.glob("eval_*.json")).read_text())
    assert 0 <= report["metrics"]["class_accuracy_mnist5k"] <= 1 and report["metrics"]["FD_mnist5k"] > 0
    assert "10 samples vs 5000 distinct training images of `mnist5k`" in outputs["benchmarks.nearest"].stdout
    # The README's Python block on the same run: the library call behind the launchers.
    namespace = run_readme_block("edt_jax.load_run(", replace={main_job.WORKDIR: str(workdir),
                                                               "num_samples=512": "num_samples=16"})
    assert namespace["images"].shape == (3, 32, 32, 1) and namespace["run"].step == 3
    assert 0 <= namespace["report"]["metrics"]["class_accuracy_mnist5k"] <= 1
    x_t = np.zeros((2, 32, 32, 1), np.float32)
    assert namespace["denoise"](namespace["run"].params, x_t, np.full(2, 500.0, np.float32)).shape == x_t.shape


def test_every_relative_link_of_the_docs_resolves():
    pages = [README, REPO / "CHANGELOG.md", REPO / "tests" / "fixtures" / "README.md",
             *sorted((REPO / "docs").rglob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert not broken, broken


def test_the_repository_stands_alone():
    """Nothing the repository ships reads from beside it (the reference fixtures live in tests/fixtures)."""
    outside = "../" + "shared"
    offenders = [str(path.relative_to(REPO)) for folder in ("edt_jax", "launch", "configs", "benchmarks", "docs",
                                                            "notebooks", "tests")
                 for path in (REPO / folder).rglob("*") if path.is_file() and path.suffix in {".py", ".md", ".json",
                                                                                             ".ipynb", ".toml"}
                 and outside in path.read_text(errors="ignore")]
    offenders += [name for name in ("README.md", "setup.py", "pyproject.toml", "CHANGELOG.md")
                  if outside in (REPO / name).read_text()]
    assert not offenders, offenders
