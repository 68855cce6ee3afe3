"""Checkpointer: round trips, retention / interval gating, resharding across meshes, unfinished steps."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from edt_jax.training.checkpoint import Checkpointer, save_config
from edt_jax.training.sharding import create_mesh


def _state(seed: int = 0) -> dict:
    """A nested train-state-like tree: int step, f32 params, bf16 EMA."""
    rng = np.random.default_rng(seed)
    return {
        "step": jnp.asarray(seed + 10, jnp.int32),
        "params": {"dense": {"kernel": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
                             "bias": jnp.zeros((3,), jnp.float32)}},
        "ema": {"kernel": jnp.asarray(rng.normal(size=(4, 3)), jnp.bfloat16)},
    }


def _abstract(tree):
    """ShapeDtypeStructs carrying each leaf's current sharding (what the trainer derives from its mesh)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def _assert_equal(a, b) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(y, np.float32))


def test_round_trip_exact(tmp_path: Path) -> None:
    state = _state()
    data_state = {"next_index": 123, "worker_states": {"0": {"pos": 5}}}
    extra = {"sampler_history": [[0.1, 0.2], [0.3, 0.4]], "seed": 7}
    with Checkpointer(tmp_path, async_save=False) as ckpt:
        assert ckpt.latest_step() is None and ckpt.all_steps() == []
        assert ckpt.save(5, state, data_state=data_state, extra=extra)
        restored, ds, ex = ckpt.restore(_abstract(state))
    _assert_equal(restored, state)
    assert ds == data_state and ex == extra
    # A fresh Checkpointer (resumed run) sees the step on disk; missing side items come back as None.
    with Checkpointer(tmp_path, async_save=False) as ckpt:
        assert ckpt.latest_step() == 5
        assert ckpt.save(6, state)
        restored, ds, ex = ckpt.restore(_abstract(state), step=6)
    _assert_equal(restored, state)
    assert ds is None and ex is None


def test_keep_last_and_interval_gating(tmp_path: Path) -> None:
    state = _state()
    with Checkpointer(tmp_path / "keep", max_to_keep=2, async_save=False) as ckpt:
        for step in range(5):
            assert ckpt.save(step, state)
        assert ckpt.all_steps() == [3, 4] and ckpt.latest_step() == 4
        # Re-saving an existing step is a no-op, forced or not.
        assert not ckpt.save(4, state) and not ckpt.save(4, state, force=True)
    assert sorted(p.name for p in (tmp_path / "keep").iterdir() if p.name.isdigit()) == ["3", "4"]

    with Checkpointer(tmp_path / "gate", max_to_keep=10, save_interval_steps=10, async_save=False) as ckpt:
        saved = [step for step in range(0, 25) if ckpt.save(step, state)]
        assert saved == [0, 10, 20]
        assert ckpt.save(23, state, force=True)  # e.g. SIGTERM / end of training
        assert ckpt.all_steps() == [0, 10, 20, 23]


def test_restore_onto_smaller_mesh(tmp_path: Path) -> None:
    assert jax.device_count() >= 8, "conftest should provide 8 CPU devices"
    mesh8 = create_mesh(data=1, fsdp=8)
    rows = NamedSharding(mesh8, PartitionSpec("fsdp"))
    value = np.arange(64 * 32, dtype=np.float32).reshape(64, 32)
    state = {"w": jax.device_put(value, rows), "step": jax.device_put(jnp.asarray(3, jnp.int32),
                                                                      NamedSharding(mesh8, PartitionSpec()))}
    with Checkpointer(tmp_path, async_save=False) as ckpt:
        ckpt.save(3, state)

    mesh2 = create_mesh(data=1, fsdp=2, devices=jax.devices()[:2])
    target = {"w": NamedSharding(mesh2, PartitionSpec("fsdp")), "step": NamedSharding(mesh2, PartitionSpec())}
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, target)
    with Checkpointer(tmp_path, async_save=False) as ckpt:
        restored, _, _ = ckpt.restore(abstract)
    np.testing.assert_array_equal(np.asarray(restored["w"]), value)
    assert int(restored["step"]) == 3
    for name in ("w", "step"):
        assert restored[name].sharding.is_equivalent_to(target[name], restored[name].ndim)
    assert {d.id for d in restored["w"].devices()} == {d.id for d in jax.devices()[:2]}
    assert restored["w"].addressable_shards[0].data.shape == (32, 32)


def test_unfinished_checkpoint_is_ignored(tmp_path: Path) -> None:
    state = _state()
    with Checkpointer(tmp_path, async_save=False) as ckpt:
        ckpt.save(1, state)
    # Orbax 0.12 stages a step as `<step>.orbax-checkpoint-tmp` (older: `...-tmp-<timestamp>`) and renames
    # it when done; a crash mid-save leaves that directory behind, partially filled.
    for name in ("2.orbax-checkpoint-tmp", "3.orbax-checkpoint-tmp-1712345678"):
        (tmp_path / name / "state").mkdir(parents=True)
    with Checkpointer(tmp_path, async_save=False) as ckpt:
        assert ckpt.latest_step() == 1 and ckpt.all_steps() == [1]
        restored, _, _ = ckpt.restore(_abstract(state))
        _assert_equal(restored, state)
        assert ckpt.save(2, state)  # orbax replaces the stale tmp directory of the same step
        assert ckpt.all_steps() == [1, 2] and not (tmp_path / "2.orbax-checkpoint-tmp").exists()

    with Checkpointer(tmp_path / "empty") as ckpt:
        assert ckpt.latest_step() is None
        with pytest.raises(FileNotFoundError, match="no checkpoints in"):
            ckpt.restore(_abstract(state))


def test_async_save_wait_restore_and_missing_step(tmp_path: Path) -> None:
    states = [_state(seed) for seed in range(3)]
    with Checkpointer(tmp_path, max_to_keep=2, async_save=True) as ckpt:
        for step, state in enumerate(states):
            assert ckpt.save(step, state, extra={"step": step})
        # The in-flight step already counts as existing, and its device buffers were copied to host
        # before save() returned, so the trainer may donate / delete them right away.
        assert not ckpt.save(2, states[2], force=True)
        scratch = jax.tree.map(jnp.copy, states[0])
        assert ckpt.save(3, scratch, force=True)
        jax.tree.map(lambda x: x.delete(), scratch)
        ckpt.wait()
        assert ckpt.all_steps() == [2, 3]
        restored, _, extra = ckpt.restore(_abstract(states[2]), step=2)
        _assert_equal(restored, states[2])
        assert extra == {"step": 2}
        restored, _, _ = ckpt.restore(_abstract(states[0]))
        _assert_equal(restored, states[0])
        with pytest.raises(FileNotFoundError) as info:
            ckpt.restore(_abstract(states[0]), step=1)
    message = str(info.value)
    assert "\n" not in message and "step 1" in message and str(tmp_path) in message and "[2, 3]" in message
    assert not any(".orbax-checkpoint-tmp" in p.name for p in tmp_path.iterdir())


def test_bad_side_items_and_config(tmp_path: Path) -> None:
    with Checkpointer(tmp_path / "ckpt", async_save=False) as ckpt:
        with pytest.raises(TypeError, match="data_state is not JSON-serialisable"):
            ckpt.save(0, _state(), data_state={"bad": object()})
        with pytest.raises(TypeError, match="extra must be a JSON-serialisable dict or None, got list"):
            ckpt.save(0, _state(), extra=[1, 2])
        assert ckpt.all_steps() == []
    config = {"model": {"depth": 2}, "lr": 1e-4, "tags": ["a", "b"]}
    save_config(tmp_path, config)
    assert json.loads((tmp_path / "config.json").read_text()) == config
    with pytest.raises(TypeError, match="config is not JSON-serialisable"):
        save_config(tmp_path, {"x": object()})
