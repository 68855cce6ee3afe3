"""The one training loop: sharded state, resume, checkpoints, preemption, metrics, NaN guard, EMA.

``train`` takes a ``Task`` (what to optimise: initial parameters and a pure loss, see
``edt_jax.training.task``), an optimizer, a dataset and a mesh; every network of the library trains
through it (diffusion models via ``step.diffusion_task``, DP-IR's restoration and fusion networks, ...).
Every quantity that decides the next step is either in the checkpoint (state,
data-iterator position, timestep-sampler history) or a pure function of (seed, step), so a run that
is killed and resumed continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import signal

import grain
import jax
import numpy as np
import optax
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from edt_jax import paths
from edt_jax.data.pipeline import to_global
from edt_jax.training import sharding as sharding_lib
from edt_jax.training.checkpoint import Checkpointer, restore_newest_readable, save_config
from edt_jax.training.metrics import MetricsWriter
from edt_jax.training.task import Task, compile_update_step, make_update_step
from edt_jax.training.train_state import abstract_state, create_state
from edt_jax.training.workdir_lock import hold_workdir


@dataclasses.dataclass(frozen=True)
class LoopOptions:
    total_steps: int
    log_every_steps: int = 50
    checkpoint_every_steps: int = 1000
    keep_checkpoints: int = 3
    seed: int = 0


class _StopFlag:
    """Set by SIGTERM/SIGINT so the loop saves the current step and exits (a preempted job loses nothing)."""

    def __init__(self):
        self.signal: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        del frame
        self.signal = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def agreed(self, lost: bool = False) -> tuple[bool, bool]:
        """``(signalled, lost)`` on any process; every process must call this at the same steps.

        A scheduler may signal only some hosts of a job (or signal them at slightly different
        times). Stopping is collective: the final save and every later step involve all processes,
        so a host that stopped alone would leave the others blocked in a collective. One tiny
        all-gather per step makes every host stop after the same step. ``lost``: this process's hold on
        the workdir was taken over (``workdir_lock``), which stops every process too.
        """
        flags = np.array([self.signal is not None, lost], np.int32)
        if jax.process_count() > 1:
            flags = np.any(multihost_utils.process_allgather(flags), axis=0)
        return bool(flags[0]), bool(flags[1])


def train(task: Task, tx: optax.GradientTransformation, dataset: grain.IterDataset, mesh: Mesh,
          workdir: paths.PathLike, options: LoopOptions, *, config: dict | None = None,
          rules=sharding_lib.LOGICAL_RULES) -> TrainResult:
    """Train ``task`` until ``options.total_steps``, resuming from the newest readable checkpoint in ``workdir``.

    ``dataset`` yields host batches (dicts of arrays with a common leading batch axis); the task's
    ``prepare_batch`` completes them on the host; ``rules`` map the parameters' logical axes onto the
    mesh. ``workdir`` is a local path or a URL (``gs://bucket/run``). Raises ``FloatingPointError`` naming the
    step when the loss becomes NaN or inf (the last good checkpoint is kept), and ``WorkdirBusyError`` when
    another live run holds ``workdir``.
    """
    with hold_workdir(workdir) as hold:
        return _train(task, tx, dataset, mesh, paths.as_path(workdir), options, config, rules, hold)


def _train(task, tx, dataset, mesh, workdir, options, config, rules, hold) -> TrainResult:
    workdir.mkdir(parents=True, exist_ok=True)
    if config is not None:
        save_config(workdir, config)
    checkpointer = Checkpointer(workdir / "checkpoints", max_to_keep=options.keep_checkpoints,
                                save_interval_steps=options.checkpoint_every_steps)
    iterator = iter(dataset)
    abstract = abstract_state(task.init_params, tx, mesh, rules)
    shardings = jax.tree.map(lambda s: s.sharding, abstract)
    restored = restore_newest_readable(checkpointer, abstract)
    if restored is None:
        state, _ = create_state(task.init_params, tx, jax.random.key(options.seed), mesh, rules)
        start = 0
    else:
        start, state, data_state, extra = restored
        if data_state is not None:
            iterator.set_state(data_state)
        for name, host_state in task.host_state.items():
            if extra and name in extra:
                host_state.load_state_dict(extra[name])
        logging.info("resumed from step %d in %s", start, workdir)
    writer = MetricsWriter(workdir, options.total_steps)
    writer.truncate_after(start)

    replicated = sharding_lib.replicated(mesh)
    frozen = jax.tree.map(lambda a: a if isinstance(a, jax.Array) else jax.device_put(a, replicated), task.frozen)
    update = make_update_step(task.loss_fn, tx, task.ema_decay, ema_warmup=task.ema_warmup)
    step_fn = compile_update_step(update, shardings, frozen, sharding_lib.batch_sharding(mesh), replicated)
    base_key = jax.random.key(options.seed + 1)
    history = []

    def save(step: int, force: bool = False) -> None:
        extra = {name: host_state.state_dict() for name, host_state in task.host_state.items()}
        checkpointer.save(step, state, data_state=iterator.get_state(), extra=extra, force=force)

    writer.start(start)
    step = start
    stopping = False
    with _StopFlag() as stop:
        while step < options.total_steps:
            batch = next(iterator)
            writer.global_batch = len(jax.tree.leaves(batch)[0]) * jax.process_count()
            # Host randomness: a pure function of (seed, process, step), so resumed runs draw the same.
            rng = np.random.default_rng([options.seed, jax.process_index(), step])
            batch = to_global(task.prepare_batch(batch, rng), mesh)
            state, metrics = step_fn(state, frozen, batch, base_key)
            step += 1
            if task.after_step is not None:
                task.after_step(metrics)
            log_now = step % options.log_every_steps == 0 or step == options.total_steps
            save_now = step % options.checkpoint_every_steps == 0 or step == options.total_steps
            stopping, lost = stop.agreed(hold.lost)
            if lost:  # another run owns the workdir now: write nothing more
                raise hold.lost_error()
            if log_now or save_now or stopping:
                scalars = {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}
                if not math.isfinite(scalars["loss"]):
                    checkpointer.wait()
                    raise FloatingPointError(f"loss is {scalars['loss']} at step {step}; stopping without saving "
                                             f"(last good checkpoint: step {checkpointer.latest_step()})")
                if log_now:
                    history.append(writer.write(step, scalars))
            if save_now:
                # The last step is saved even off the checkpoint grid (the checkpointer skips those unless forced).
                save(step, force=step == options.total_steps)
            if stopping:
                cause = f"received signal {stop.signal}" if stop.signal is not None else "another process was signalled"
                logging.warning("%s: saving step %d and stopping", cause, step)
                save(step, force=True)
                break
    checkpointer.wait()
    checkpointer.close()
    return TrainResult(state=state, step=step, history=history, preempted=stopping)


@dataclasses.dataclass
class TrainResult:
    state: object
    step: int
    history: list[dict]
    preempted: bool

