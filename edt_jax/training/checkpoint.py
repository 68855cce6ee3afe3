"""Checkpoints: one small wrapper around ``orbax.checkpoint.CheckpointManager``.

Each step directory holds up to three items: ``state`` (any pytree of arrays, written with
``StandardSave`` so every host writes only its own shards), ``data_state`` (the input iterator's
``get_state()`` dict) and ``extra`` (small JSON dicts such as the timestep sampler's history).
Restoring takes an *abstract* state whose ``ShapeDtypeStruct`` leaves carry the target shardings,
so a checkpoint written on one mesh / device count loads onto another::

    ckpt = Checkpointer(workdir / "checkpoints", max_to_keep=3, save_interval_steps=1000)
    if (step := ckpt.latest_step()) is not None:
        abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                jax.eval_shape(init_fn), shardings)
        state, data_state, extra = ckpt.restore(abstract, step)
    ...
    ckpt.save(step, state, data_state=it.get_state(), extra={"sampler": hist})
    ckpt.close()

Orbax stages a step in ``<step>.orbax-checkpoint-tmp`` (older releases: ``...-tmp-<timestamp>``) and
renames it to ``<step>`` once every item is on disk (object stores instead write ``<step>`` directly
and mark it with ``commit_success.txt``); unfinished steps are invisible to ``latest_step`` /
``all_steps``, and a stale tmp directory for a step is removed when that step is saved again.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

STATE, DATA_STATE, EXTRA = "state", "data_state", "extra"
CONFIG_FILENAME = "config.json"


def _check_json(name: str, value: dict | None) -> None:
    """Reject bad JSON items up front: with async saves the error would otherwise surface later, in a thread."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a JSON-serialisable dict or None, got {type(value).__name__}")
    try:
        json.dumps(value)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} is not JSON-serialisable: {e}") from None


class Checkpointer:
    """Save / restore a train state plus JSON side items under ``directory`` (one sub-directory per step).

    All processes must call ``save`` / ``restore`` / ``wait`` / ``close`` together; orbax writes the
    shared metadata from the primary host only.
    """

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 3, save_interval_steps: int = 1,
                 async_save: bool = True):
        if max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1, got {max_to_keep}")
        if save_interval_steps < 1:
            raise ValueError(f"save_interval_steps must be >= 1, got {save_interval_steps}")
        self.directory = epath.Path(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            save_interval_steps=save_interval_steps,
            enable_async_checkpointing=async_save,
            create=True,
        )
        # Declaring the item names up front puts the manager in multi-item mode from the start, so
        # a restore before any save (fresh process, resumed run) does not have to guess the layout.
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=(STATE, DATA_STATE, EXTRA))

    def save(self, step: int, state: Any, *, data_state: dict | None = None, extra: dict | None = None,
             force: bool = False) -> bool:
        """Save ``state`` (+ optional JSON dicts) at ``step``; returns whether a save was started.

        Without ``force`` only steps on the ``save_interval_steps`` grid that are newer than the
        latest checkpoint are written. A step that already exists is skipped (``False``) even with
        ``force`` (orbax would raise), so a forced final save right after a periodic one is harmless.
        With ``async_save`` the arrays are copied off the devices before this returns and written in
        the background; the next ``save``, ``wait`` or ``close`` blocks until that write is done.
        """
        step = int(step)
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        _check_json(DATA_STATE, data_state)
        _check_json(EXTRA, extra)
        # all_steps() already lists a step whose async write is still in flight, so this also
        # catches a repeat of the step being written right now.
        if step in self._manager.all_steps():
            return False
        items = {STATE: ocp.args.StandardSave(state)}
        if data_state is not None:
            items[DATA_STATE] = ocp.args.JsonSave(data_state)
        if extra is not None:
            items[EXTRA] = ocp.args.JsonSave(extra)
        return bool(self._manager.save(step, args=ocp.args.Composite(**items), force=force))

    def all_steps(self) -> list[int]:
        """Complete (or in-flight, from this process) checkpoint steps, ascending."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest checkpoint step, or ``None`` when the directory holds none."""
        return self._manager.latest_step()

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict | None, dict | None]:
        """Load ``(state, data_state, extra)`` from ``step`` (default: the latest).

        ``abstract_state`` is a pytree of ``jax.ShapeDtypeStruct`` with ``.sharding`` set; arrays come
        back with exactly those shardings (and dtypes), whatever mesh wrote them. Items that were
        not saved come back as ``None``.
        """
        # Never read a step whose async write from this process has not been finalised yet.
        self._manager.wait_until_finished()
        steps = self.all_steps()
        if step is None:
            if not steps:
                raise FileNotFoundError(f"no checkpoints in {self.directory}")
            step = steps[-1]
        step = int(step)
        if step not in steps:
            raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory}; available steps: {steps}")
        step_dir = self.directory / str(step)
        items = {STATE: ocp.args.StandardRestore(abstract_state)}
        # Optional items are only requested when present: asking orbax for a missing item fails.
        present = [name for name in (DATA_STATE, EXTRA) if (step_dir / name).exists()]
        items.update({name: ocp.args.JsonRestore() for name in present})
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        side = {name: (restored[name] if name in present else None) for name in (DATA_STATE, EXTRA)}
        return restored[STATE], side[DATA_STATE], side[EXTRA]

    def wait(self) -> None:
        """Block until every pending asynchronous save is on disk (and old steps are pruned)."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release orbax's background resources."""
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def save_config(directory: str | os.PathLike, config: dict) -> None:
    """Write the run's ``config`` as ``<directory>/config.json`` (process 0 only; other hosts return)."""
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    try:
        text = json.dumps(config, indent=2)
    except (TypeError, ValueError) as e:
        raise TypeError(f"config is not JSON-serialisable: {e}") from None
    if jax.process_index() != 0:
        return
    directory = epath.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # Write-then-rename so a crash mid-write never leaves a truncated config beside the checkpoints.
    tmp = directory / f"{CONFIG_FILENAME}.tmp"
    tmp.write_text(text + "\n")
    tmp.replace(directory / CONFIG_FILENAME)  # replace, not rename: a resumed run rewrites the config
