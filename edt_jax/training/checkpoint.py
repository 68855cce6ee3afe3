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
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

STATE, DATA_STATE, EXTRA = "state", "data_state", "extra"
CONFIG_FILENAME = "config.json"
UNREADABLE_DIR = "unreadable"


class UnreadableCheckpointError(RuntimeError):
    """Every checkpoint of a run failed to restore."""


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

    def stored_shapes(self, step: int) -> dict[str, tuple[int, ...]]:
        """``{leaf path: shape}`` of the state saved at ``step``, from its metadata (no arrays read)."""
        metadata = ocp.StandardCheckpointHandler().metadata(self.directory / str(int(step)) / STATE)
        return {_path_name(path): tuple(leaf.shape)
                for path, leaf in jax.tree_util.tree_flatten_with_path(metadata)[0]}

    def set_aside(self, step: int) -> epath.Path:
        """Move the step's directory to ``unreadable/<step>`` (``<step>.1``, ... if taken); returns the target.

        Process 0 moves; every process then waits for it and re-reads the step list.
        """
        self._manager.wait_until_finished()
        target_dir = self.directory / UNREADABLE_DIR
        target = target_dir / str(int(step))
        suffix = 0
        while target.exists():
            suffix += 1
            target = target_dir / f"{int(step)}.{suffix}"
        if jax.process_index() == 0:
            target_dir.mkdir(parents=True, exist_ok=True)
            (self.directory / str(int(step))).rename(target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"checkpoint_set_aside_{int(step)}")
        self._manager.reload()
        return target

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


def restore_state_field(directory: str | os.PathLike, step: int, field: str, abstract: Any) -> Any:
    """The ``field`` of the train state saved at ``step`` (e.g. ``"ema_params"``), read alone: the other fields
    (the optimizer's moments, ...) are never read. ``abstract`` is its ``ShapeDtypeStruct`` tree with shardings."""
    path = epath.Path(directory) / str(int(step)) / STATE
    restore_args = ocp.checkpoint_utils.construct_restore_args({field: abstract})
    restored = ocp.PyTreeCheckpointHandler().restore(
        path, args=ocp.args.PyTreeRestore(item={field: abstract}, restore_args=restore_args, partial_restore=True))
    return restored[field]


def _path_name(path) -> str:
    """A key path as ``a/b/0``, whatever node types spell it (dict keys, dataclass fields, indices)."""
    parts = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return "/".join(parts)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def _any_process(flag: bool) -> bool:
    """Whether ``flag`` is set on any process (every process must call this together)."""
    if jax.process_count() == 1:
        return flag
    return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))


def check_same_model(checkpointer: Checkpointer, abstract_state: Any, step: int) -> None:
    """One-line ``ValueError`` when the state saved at ``step`` has other leaves or shapes than ``abstract_state``.

    A changed config resumed on an old workdir must fail loudly, not have its checkpoints set aside.
    Raises whatever reading the metadata raises when the metadata itself is unreadable.
    """
    stored = checkpointer.stored_shapes(step)
    wanted = {_path_name(path): tuple(leaf.shape)
              for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_state)[0]}
    if stored == wanted:
        return
    for name in sorted(set(stored) | set(wanted)):
        if stored.get(name) != wanted.get(name):
            raise ValueError(f"checkpoint step {step} in {checkpointer.directory} holds another model: "
                             f"{name} has shape {stored.get(name, 'none')} there and {wanted.get(name, 'none')} "
                             f"in this config; use a new workdir or the config that wrote it")


def restore_newest_readable(checkpointer: Checkpointer, abstract_state: Any
                            ) -> tuple[int, Any, dict | None, dict | None] | None:
    """``(step, state, data_state, extra)`` of the newest checkpoint that restores, or ``None`` when there is none.

    An unreadable step is logged as one warning (its step and the error's first line), moved to
    ``unreadable/`` by ``set_aside`` and the next older one is tried. Raises ``UnreadableCheckpointError``
    (one line listing what was tried) when none is readable, and ``ValueError`` when a checkpoint
    belongs to a different model.
    """
    tried = []
    for step in reversed(checkpointer.all_steps()):
        error = None
        try:
            check_same_model(checkpointer, abstract_state, step)
            restored = checkpointer.restore(abstract_state, step)
        except ValueError as err:
            if str(err).startswith(f"checkpoint step {step} in "):  # another model, not a damaged file
                raise
            error = err
        except Exception as err:  # noqa: BLE001 - tensorstore, JSON and OS errors all mean "cannot read it"
            error = err
        # Collective: a step unreadable on one host is set aside on all, so they resume from the same one.
        if not _any_process(error is not None):
            return (step, *restored)
        reason = _first_line(error) if error is not None else "unreadable on another process"
        target = checkpointer.set_aside(step)
        logging.warning("checkpoint step %d is unreadable (%s); moved it to %s and trying the next older one",
                        step, reason, target)
        tried.append(f"step {step} ({reason})")
    if tried:
        raise UnreadableCheckpointError(f"no readable checkpoint in {checkpointer.directory}; tried "
                                        + "; ".join(tried))
    return None


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
