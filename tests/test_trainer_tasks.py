"""The generic trainer on a non-diffusion task, and resuming past an unreadable newest checkpoint."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from edt_jax.data import create_dataset
from edt_jax.mesh import create_mesh
from edt_jax.training.checkpoint import Checkpointer, UnreadableCheckpointError
from edt_jax.training.loop import LoopOptions, train
from edt_jax.training.optimizers import create_optimizer
from edt_jax.training.task import Task
from edt_jax.training.train_state import model_init


class Denoiser(nn.Module):
    """A two-layer conv net mapping a noisy 8x8 image to the clean one."""

    width: int = 8

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(self.width, (3, 3))(x))
        return x + nn.Conv(1, (3, 3))(h)


def images() -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"image": rng.integers(0, 256, (8, 8, 1), dtype=np.uint8), "label": i % 2} for i in range(64)]


def make_task(width: int = 8) -> Task:
    net = Denoiser(width)

    def loss_fn(params, frozen, batch, key):
        noisy = batch["image"] + frozen["noise_std"] * jax.random.normal(key, batch["image"].shape)
        error = net.apply({"params": params}, noisy) - batch["image"]
        return jnp.mean(error ** 2), {"mae": jnp.mean(jnp.abs(error))}

    return Task(init_params=model_init(net, (jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32),)), loss_fn=loss_fn,
                frozen={"noise_std": jnp.float32(0.3)}, ema_decay=0.9)


def run(workdir: Path, total_steps: int, width: int = 8):
    dataset = create_dataset(images(), 8, seed=0)
    options = LoopOptions(total_steps=total_steps, log_every_steps=1, checkpoint_every_steps=10, keep_checkpoints=5)
    return train(make_task(width), create_optimizer("adamw", 1e-2), dataset, create_mesh(devices=jax.devices()[:1]),
                 workdir, options)


def logged(workdir: Path) -> dict[int, float]:
    rows = map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
    return {r["step"]: r["loss"] for r in rows}


def truncate_data_files(step_dir: Path) -> None:
    """What a bad copy or failing disk leaves: every array data file cut to a third."""
    for root, _, files in os.walk(step_dir / "state"):
        if os.path.basename(root) == "d":
            for name in files:
                path = Path(root) / name
                with path.open("r+b") as f:
                    f.truncate(path.stat().st_size // 3)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight")
    result = run(workdir, 30)
    return workdir, result


def test_generic_task_trains_logs_its_metrics_and_keeps_an_ema(uninterrupted):
    workdir, result = uninterrupted
    curve = [r["loss"] for r in result.history]
    assert len(curve) == 30 and np.mean(curve[-5:]) < 0.7 * np.mean(curve[:5])
    assert {"mae", "grad_norm", "learning_rate"} <= set(result.history[-1])
    for ema, p in zip(jax.tree.leaves(result.state.ema_params), jax.tree.leaves(result.state.params), strict=True):
        assert ema.shape == p.shape and not np.allclose(ema, p)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # orbax async teardown
def test_corrupt_newest_checkpoint_is_set_aside_and_the_run_resumes_from_the_older(uninterrupted, tmp_path, caplog):
    reference, _ = uninterrupted
    run(tmp_path, 20)
    truncate_data_files(tmp_path / "checkpoints" / "20")
    with caplog.at_level(logging.WARNING, logger="absl"):
        result = run(tmp_path, 30)
    warnings = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warnings) == 1 and "checkpoint step 20 is unreadable" in warnings[0], warnings
    assert "\n" not in warnings[0]
    assert (tmp_path / "checkpoints" / "unreadable" / "20" / "state").is_dir()  # kept, not deleted
    assert Checkpointer(tmp_path / "checkpoints").all_steps() == [10, 20, 30]  # step 20 saved again
    got, want = logged(tmp_path), logged(reference)
    assert sorted(got) == list(range(1, 31)) and result.step == 30
    np.testing.assert_allclose([got[s] for s in range(11, 31)], [want[s] for s in range(11, 31)], rtol=1e-6)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_no_readable_checkpoint_is_one_line_listing_the_steps_tried(tmp_path):
    run(tmp_path, 20)
    for step in (10, 20):
        truncate_data_files(tmp_path / "checkpoints" / str(step))
    with pytest.raises(UnreadableCheckpointError, match=r"no readable checkpoint in .*; tried step 20 \(.*\); "
                                                        r"step 10 \(") as err:
        run(tmp_path, 30)
    assert "\n" not in str(err.value)


def test_a_checkpoint_of_another_model_is_an_error_and_stays_in_place(tmp_path):
    run(tmp_path, 10)
    with pytest.raises(ValueError, match=r"checkpoint step 10 in .* holds another model: .* has shape"):
        run(tmp_path, 20, width=16)
    assert Checkpointer(tmp_path / "checkpoints").all_steps() == [10]
    assert not (tmp_path / "checkpoints" / "unreadable").exists()


def test_a_torn_metrics_line_is_not_a_record(tmp_path):
    """A reader racing the writer (or a run killed mid-line) sees complete records only; resuming drops the rest."""
    from edt_jax.training.metrics import MetricsWriter, read_records

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.4}\n{"step": 3, "lo')
    assert read_records(path) == [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.4}]
    MetricsWriter(tmp_path, total_steps=10).truncate_after(5)
    assert path.read_text() == '{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.4}\n'
    MetricsWriter(tmp_path, total_steps=10).truncate_after(1)
    assert read_records(path) == [{"step": 1, "loss": 0.5}]


def test_the_last_step_is_saved_off_the_checkpoint_grid(tmp_path):
    # total_steps 13 with checkpoints every 10: the run ends with both step 10 and step 13 on disk.
    run(tmp_path, 13)
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [10, 13]
