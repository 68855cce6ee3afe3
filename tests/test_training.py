"""The trainer: learning, sharded-step equivalence, resume after kill -9 (locally and in a ``gs://`` bucket, against a
real GCS emulator), preemption, one run per workdir, restore on fewer devices."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gcs_emulator import BUCKET, gcs_emulator

import edt_jax
from configs import shapes_dit_tiny, shapes_edt_tiny
from edt_jax import paths
from edt_jax.data import create_source
from edt_jax.runs import build as builders
from edt_jax.runs import train as run
from edt_jax.training import sharding
from edt_jax.training.checkpoint import Checkpointer
from edt_jax.training.metrics import read_records
from edt_jax.training.step import compile_train_step, make_train_step
from edt_jax.training.train_state import abstract_train_state, create_train_state

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = (jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32), jax.ShapeDtypeStruct((1,), jnp.float32),
           jax.ShapeDtypeStruct((1,), jnp.int32))


def tiny_config(masked_pass: bool = False, **overrides):
    """The test variant; the masked pass (twice the compile and step cost) only where a test needs it."""
    config = shapes_edt_tiny.get_config("test")
    config.update(overrides)
    config.loss.masked_pass = masked_pass
    return config


def losses(workdir: Path) -> dict[int, float]:
    """{step: loss} of the records written so far; a line still being written by a running trainer is not one."""
    return {r["step"]: r["loss"] for r in read_records(workdir / "metrics.jsonl")}


def launch_train(workdir: Path, *overrides: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "8", "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "launch.train", "--config", "configs/shapes_edt_tiny.py:test",
           f"--workdir={workdir}", *overrides]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


@pytest.fixture
def one_device(monkeypatch):
    """runs.train on a one-device mesh: the tests' 8 virtual CPU devices make a tiny step slower to compile and
    run, and what these tests check (learning, the NaN stop, config checks) does not depend on the mesh (the
    sharded step's equivalence and the 8-device runs are tested below)."""
    monkeypatch.setattr(builders, "build_mesh", lambda config: sharding.create_mesh(devices=jax.devices()[:1]))


def test_loss_decreases(tmp_path, one_device):
    config = tiny_config(total_steps=40, log_every_steps=1, checkpoint_every_steps=40)
    # eps prediction: its loss starts near 1 (unit noise) and falls within a few dozen steps. The recipe's v loss
    # starts near the data's variance (about 0.25 here) and takes hundreds of steps to clear the batch noise of
    # 16 random timesteps (measured: 0.254 -> 0.253 over 40 steps, 0.242 over 80).
    config.loss.prediction = "eps"
    result = run(config, str(tmp_path))
    curve = [r["loss"] for r in result.history]
    assert len(curve) == 40 and np.mean(curve[-5:]) < 0.8 * np.mean(curve[:5])


def test_step_on_8_devices_equals_step_on_1():
    config = tiny_config()
    model, tx = builders.build_model(config), builders.build_optimizer(config)
    step = make_train_step(model, tx, builders.build_schedule(config), builders.build_loss_config(config, model))
    rng = np.random.default_rng(0)
    batch = {"image": rng.uniform(-1, 1, (16, 32, 32, 3)).astype(np.float32), "label": np.arange(16) % 3,
             "t": rng.integers(0, 1000, 16).astype(np.int32), "t_weight": np.ones(16, np.float32)}
    results = []
    for mesh in (sharding.create_mesh(data=4, fsdp=2), sharding.create_mesh(devices=jax.devices()[:1])):
        state, shardings = create_train_state(model, tx, jax.random.key(0), EXAMPLE, mesh)
        fn = compile_train_step(step, shardings, sharding.batch_sharding(mesh), sharding.replicated(mesh))
        new_state, metrics = fn(state, jax.device_put(batch, sharding.batch_sharding(mesh)), jax.random.key(1))
        results.append((float(metrics["loss"]), jax.device_get(new_state.params)))
    (loss8, params8), (loss1, params1) = results
    assert loss8 == pytest.approx(loss1, rel=1e-5)
    for a, b in zip(jax.tree.leaves(params8), jax.tree.leaves(params1), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


TOTAL, EVERY = 24, 8  # the resume tests' run: masked pass, a checkpoint every 8 steps


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    result = run(tiny_config(True, total_steps=TOTAL, log_every_steps=1, checkpoint_every_steps=EVERY), str(workdir))
    return workdir, result


def wait_for_step(proc: subprocess.Popen, workdir: Path, step: int, timeout: float = 240.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (workdir / "metrics.jsonl").exists() and max(losses(workdir), default=0) >= step:
            return
        if proc.poll() is not None:
            raise AssertionError(f"training exited early:\n{proc.stdout.read().decode()[-3000:]}")
        time.sleep(0.02)
    raise AssertionError(f"step {step} not reached in {timeout} s")


def test_checkpoint_from_8_devices_restores_onto_2(uninterrupted):
    workdir, result = uninterrupted
    config = tiny_config()
    model, tx = builders.build_model(config), builders.build_optimizer(config)
    mesh = sharding.create_mesh(data=1, fsdp=2, devices=jax.devices()[:2])
    state, _, extra = Checkpointer(workdir / "checkpoints").restore(abstract_train_state(model, tx, EXAMPLE, mesh))
    assert int(state.step) == TOTAL and extra is not None
    kernel = state.params["blocks_0"]["mlp"]["fc1"]["kernel"]
    assert kernel.sharding.mesh.devices.size == 2
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(result.state.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_nan_loss_stops_naming_the_step(tmp_path, one_device):
    config = tiny_config(total_steps=20, log_every_steps=1)
    config.optimizer.update(dict(name="sgd", learning_rate=1e30))
    with pytest.raises(FloatingPointError, match=r"loss is (nan|inf) at step \d+"):
        run(config, str(tmp_path))


@pytest.mark.parametrize("overrides, message", [
    (dict(model=dict(name="EDT-Q/2")), "unknown model name 'EDT-Q/2'"),
    (dict(batch_size=12), "batch_size 12 is not divisible by the 8 devices"),
    (dict(data=dict(source="folder:/no/such/images")), "/no/such/images"),
    (dict(data=dict(source="shapes:scale=9")), r"scale=\(9,\) must be one or more values in \[0, 4\)"),
])
def test_bad_configs_fail_in_one_line(tmp_path, overrides, message):
    config = tiny_config()
    for key, value in overrides.items():
        if isinstance(value, dict):
            config[key].update(value)
        else:
            config[key] = value
    with pytest.raises((ValueError, FileNotFoundError), match=message) as info:
        run(config, str(tmp_path))
    assert "\n" not in str(info.value)


def test_main_job_config_is_the_full_recipe_on_its_slice():
    main, full = shapes_edt_tiny.get_config(), shapes_edt_tiny.get_config("full")
    assert len(create_source(main.data.source)) == 108 and len(create_source(full.data.source)) == 110_592
    assert (main.total_steps, full.total_steps) == (6000, 4000)
    main.data.source, main.total_steps = full.data.source, full.total_steps
    assert main.to_dict() == full.to_dict()
    with pytest.raises(ValueError, match="unknown variant 'ful'; use none"):
        shapes_edt_tiny.get_config("ful")


def test_dit_baseline_trains_and_refuses_the_masked_pass(tmp_path, one_device):
    config = shapes_dit_tiny.get_config("test")
    config.total_steps, config.log_every_steps = 2, 1
    run(config, str(tmp_path / "dit"))
    assert sorted(losses(tmp_path / "dit")) == [1, 2]
    config.loss.masked_pass = True
    with pytest.raises(ValueError, match="loss.masked_pass=True needs an EDT or MDTv2 model .* got DiT"):
        run(config, str(tmp_path / "masked"))


def launch_two_processes(workdir: Path, *overrides: str) -> list[subprocess.Popen]:
    """jax.distributed over 127.0.0.1 with gloo CPU collectives: 2 processes x 2 devices, one shared workdir."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "2", "JAX_PLATFORMS": "cpu"}
    return [subprocess.Popen([sys.executable, "-m", "launch.train", "--config", "configs/shapes_edt_tiny.py:test",
                              f"--workdir={workdir}", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                              f"--process_id={i}", *overrides],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]


def test_two_processes_train_a_second_run_is_refused_and_sigterm_to_one_stops_both_at_the_same_step(tmp_path):
    """Two processes train and write one checkpoint. A scheduler restarting the job while it still runs: the new
    copy stops at once (exit 2) naming the holder, process 0, and the run goes on undisturbed. A scheduler may
    signal one host only, and then both must save the current step and exit (none may hang in a collective). The
    loss-aware timestep sampler must learn from both processes' losses."""
    flags = ["--config.total_steps=100000", "--config.log_every_steps=1", "--config.checkpoint_every_steps=100000",
             "--config.loss.masked_pass=False", "--config.diffusion.timestep_sampler=loss-second-moment"]
    procs = launch_two_processes(tmp_path, *flags)
    wait_for_step(procs[0], tmp_path, 3)
    second = launch_train(tmp_path, *flags)  # one process, as a restarted single-host job
    refused = second.communicate(timeout=120)[0].decode().strip().splitlines()
    assert second.returncode == 2, refused[-20:]
    assert refused[-1].startswith(f"error: workdir {tmp_path} is held by another live run (host "), refused[-1]
    assert f"pid {procs[0].pid}, started " in refused[-1]
    assert all(p.poll() is None for p in procs)  # the running job was not disturbed
    wait_for_step(procs[0], tmp_path, max(losses(tmp_path)) + 2)
    procs[1].send_signal(signal.SIGTERM)
    outputs = [p.communicate(timeout=120)[0].decode() for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
    assert "process 0 of 2, 2 local / 4 global devices" in outputs[0]
    saved = Checkpointer(tmp_path / "checkpoints").latest_step()
    assert Checkpointer(tmp_path / "checkpoints").all_steps() == [saved] and saved >= 5
    assert saved == max(losses(tmp_path))  # the step the signal arrived at is the one saved
    assert sorted(losses(tmp_path)) == list(range(1, saved + 1))  # one metrics writer, every step once
    assert f"received signal {int(signal.SIGTERM)}: saving step {saved} and stopping" in outputs[1]
    assert f"another process was signalled: saving step {saved} and stopping" in outputs[0]
    # orbax's JsonSave writes the dict to <step>/extra/metadata. The global batch is 16 (8 per process)
    # and no timestep is drawn 10 times in so few steps, so every (t, loss) pair of both processes is kept.
    sampler = json.loads((tmp_path / "checkpoints" / str(saved) / "extra" / "metadata").read_text())
    assert sum(sampler["timestep_sampler"]["loss_counts"]) == 16 * saved


def test_kill_9_and_resume_in_a_gcs_bucket_then_sample_and_evaluate_there(uninterrupted):
    """The run with its workdir in Cloud Storage (fake-gcs-server): config, orbax checkpoints (tensorstore) and
    metrics go to ``gs://``; killed with SIGKILL once a checkpoint is complete, then resumed, it logs every step
    once with the losses of the uninterrupted local run, and it samples and evaluates from the bucket. (One test
    for both stores: the checkpoint and resume code is the same for a local path, which the other resume tests
    and the text-to-image and DisDiff runs take.)"""
    reference_dir, result = uninterrupted
    flags = [f"--config.total_steps={TOTAL}", "--config.log_every_steps=1", f"--config.checkpoint_every_steps={EVERY}"]
    with gcs_emulator():  # sets the clients' endpoint variables here, so launch_train's subprocesses inherit them
        workdir = f"gs://{BUCKET}/runs/shapes"
        proc = launch_train(workdir, *flags)
        committed = paths.as_path(workdir) / "checkpoints" / str(EVERY) / "commit_success.txt"
        deadline = time.time() + 240
        while not committed.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.5)  # each look is a request to the emulator: don't compete with the trainer for the CPU
        assert proc.poll() is None and committed.exists(), "no complete checkpoint in the bucket"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = max(losses(paths.as_path(workdir)))
        resumed = launch_train(workdir, *flags)
        output = resumed.communicate(timeout=300)[0].decode()
        assert resumed.returncode == 0, output[-3000:]
        resumed_from = int(output.split("resumed from step ")[1].split()[0])
        assert resumed_from % EVERY == 0 and 0 < resumed_from <= killed_at < TOTAL  # killed mid-run, steps replayed
        got, want = losses(paths.as_path(workdir)), losses(reference_dir)
        assert sorted(got) == list(range(1, TOTAL + 1))
        np.testing.assert_allclose([got[s] for s in range(1, TOTAL + 1)], [want[s] for s in range(1, TOTAL + 1)],
                                   rtol=2e-5)
        run_in_bucket = edt_jax.load_run(workdir)
        assert run_in_bucket.step == TOTAL
        for a, b in zip(jax.tree.leaves(run_in_bucket.params), jax.tree.leaves(result.state.ema_params), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        report = run_in_bucket.evaluate(["fd_shapes"], 8, steps=3, samples_path=f"{workdir}/samples.npz")
        with paths.open_npz(f"{workdir}/samples.npz") as data:
            written, labels = data["arr_0"], data["arr_1"]
        assert report["metrics"]["FD_shapes"] > 0 and written.shape == (8, 32, 32, 3)
        np.testing.assert_array_equal(written, run_in_bucket.sample(labels, steps=3, batch_size=8, as_uint8=True))

