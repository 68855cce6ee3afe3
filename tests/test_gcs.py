"""A run whose workdir is a Cloud Storage bucket (``gs://``), tested against a real GCS emulator.

The trainer writes config, checkpoints (orbax through tensorstore) and metrics to ``gs://``; a kill -9 mid-run
and a resume give exactly the losses of a local run; the run then samples (``launch.sample``, its outputs written
back to the bucket) and evaluates from the bucket like a local one.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import RESUMABLE_EVERY, RESUMABLE_STEPS
from gcs_emulator import BUCKET, gcs_emulator

import edt_jax
from edt_jax import paths
from edt_jax.training.metrics import read_records

REPO = Path(__file__).resolve().parents[1]
TOTAL, EVERY = RESUMABLE_STEPS, RESUMABLE_EVERY  # the local reference: conftest.resumable_run
SAMPLING = {"sampler": "unipc", "steps": 3, "guidance_scale": 2.0}


def launcher(module: str, env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, **env, "JAX_NUM_CPU_DEVICES": "8",
                                                           "JAX_PLATFORMS": "cpu"})


def train_flags(workdir: str) -> list[str]:
    return ["--config", "configs/shapes_edt_tiny.py:test", f"--workdir={workdir}",
            f"--config.total_steps={TOTAL}", "--config.log_every_steps=1", f"--config.checkpoint_every_steps={EVERY}"]


def losses(workdir: str) -> dict[int, float]:
    path = paths.as_path(workdir) / "metrics.jsonl"
    return {r["step"]: r["loss"] for r in read_records(path)} if path.exists() else {}


@pytest.fixture(scope="module")
def emulator():
    with gcs_emulator() as env:
        yield env


@pytest.fixture(scope="module")
def local_run(resumable_run):
    return str(resumable_run)


@pytest.fixture(scope="module")
def gcs_run(emulator, local_run):
    """The same run trained into the bucket, killed with SIGKILL once a checkpoint is complete, then resumed."""
    workdir = f"gs://{BUCKET}/runs/shapes"
    proc = launcher("launch.train", emulator, *train_flags(workdir))
    committed = paths.as_path(workdir) / "checkpoints" / str(EVERY) / "commit_success.txt"
    deadline = time.time() + 300
    while not committed.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
    assert committed.exists(), f"no complete checkpoint in {workdir} after 300 s"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(losses(workdir), default=0)
    resumed = launcher("launch.train", emulator, *train_flags(workdir))
    output = resumed.communicate(timeout=400)[0].decode()
    assert resumed.returncode == 0, output[-3000:]
    return workdir, killed_at, output


def test_kill_9_and_resume_on_gcs_give_the_local_losses(gcs_run, local_run):
    workdir, killed_at, output = gcs_run
    resumed_from = int(output.split("resumed from step ")[1].split()[0])
    assert resumed_from % EVERY == 0 and 0 < resumed_from <= killed_at < TOTAL  # killed mid-run, some steps replayed
    got, want = losses(workdir), losses(local_run)
    assert sorted(got) == list(range(1, TOTAL + 1))  # steps replayed after the kill appear once
    steps = range(1, TOTAL + 1)
    np.testing.assert_allclose([got[s] for s in steps], [want[s] for s in steps], rtol=2e-5)
    stored = {str(p.name) for p in (paths.as_path(workdir) / "checkpoints").iterdir()}
    assert str(TOTAL) in stored and (paths.as_path(workdir) / "config.json").exists()


def test_sample_and_evaluate_from_gcs(gcs_run, local_run, emulator):
    workdir, _, _ = gcs_run
    proc = launcher("launch.sample", emulator, f"--workdir={workdir}", "--labels=0,1,2", "--num_samples=3",
                    *(f"--{k}={v}" for k, v in SAMPLING.items()))
    output = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, output[-3000:]
    arrays = paths.as_path(workdir) / "samples.npz"
    with arrays.open("rb") as f, np.load(io.BytesIO(f.read())) as data:
        written = data["samples"]
    assert (paths.as_path(workdir) / "samples.png").exists()
    remote, local = edt_jax.load_run(workdir), edt_jax.load_run(local_run)
    assert remote.step == local.step == TOTAL
    np.testing.assert_allclose(written, local.sample([0, 1, 2], **SAMPLING), atol=2e-5)
    scores = [run.evaluate(["fd_shapes"], 16, batch_size=8, **SAMPLING)["metrics"] for run in (remote, local)]
    assert set(scores[0]) == set(scores[1]) and "FD_shapes" in scores[0]
    assert scores[0]["FD_shapes"] == pytest.approx(scores[1]["FD_shapes"], rel=1e-4)
