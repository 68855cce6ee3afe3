"""The training loop: sharded state, resume, checkpoints, preemption, metrics, NaN guard.

``train`` takes plain objects (model, optimizer, diffusion, dataset, ...); ``launch/train.py`` builds
them from a config. Every quantity that decides the next step is either in the checkpoint (state,
data-iterator position, timestep-sampler history) or a pure function of (seed, step), so a run that
is killed and resumed continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import signal
from pathlib import Path

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from edt_jax.data.pipeline import to_global
from edt_jax.diffusion import DiscreteDiffusion
from edt_jax.training import sharding as sharding_lib
from edt_jax.training.checkpoint import Checkpointer, save_config
from edt_jax.training.metrics import MetricsWriter
from edt_jax.training.step import LossConfig, compile_train_step, make_train_step
from edt_jax.training.train_state import abstract_train_state, create_train_state


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

    def agreed(self) -> bool:
        """Whether any process was signalled; every process must call this at the same steps.

        A scheduler may signal only some hosts of a job (or signal them at slightly different
        times). Stopping is collective: the final save and every later step involve all processes,
        so a host that stopped alone would leave the others blocked in a collective. One tiny
        all-gather per step makes every host stop after the same step.
        """
        requested = self.signal is not None
        if jax.process_count() == 1:
            return requested
        return bool(np.any(multihost_utils.process_allgather(np.int32(requested))))


def train(model, tx: optax.GradientTransformation, diffusion: DiscreteDiffusion, loss_config: LossConfig,
          dataset: grain.IterDataset, timestep_sampler, mesh: Mesh, workdir: str | Path, options: LoopOptions,
          *, config: dict | None = None, rules=sharding_lib.LOGICAL_RULES) -> TrainResult:
    """Train until ``options.total_steps``, resuming from the newest complete checkpoint in ``workdir``.

    ``dataset`` yields host batches ({"image" or "latent", "label"}); ``timestep_sampler`` draws the
    timesteps on the host (``edt_jax.diffusion.timestep_sampling``); ``rules`` map the parameters'
    logical axes onto the mesh. Raises ``FloatingPointError``
    naming the step when the loss becomes NaN or inf (the last good checkpoint is kept).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if config is not None:
        save_config(workdir, config)
    size = model.input_size
    example = (jax.ShapeDtypeStruct((1, size, size, model.in_channels), jnp.float32),
               jax.ShapeDtypeStruct((1,), jnp.float32), jax.ShapeDtypeStruct((1,), jnp.int32))
    checkpointer = Checkpointer(workdir / "checkpoints", max_to_keep=options.keep_checkpoints,
                                save_interval_steps=options.checkpoint_every_steps)
    iterator = iter(dataset)
    start = checkpointer.latest_step()
    if start is None:
        state, shardings = create_train_state(model, tx, jax.random.key(options.seed), example, mesh, rules)
        start = 0
    else:
        abstract = abstract_train_state(model, tx, example, mesh, rules)
        shardings = jax.tree.map(lambda s: s.sharding, abstract)
        state, data_state, extra = checkpointer.restore(abstract, start)
        if data_state is not None:
            iterator.set_state(data_state)
        if extra and "timestep_sampler" in extra:
            timestep_sampler.load_state_dict(extra["timestep_sampler"])
        logging.info("resumed from step %d in %s", start, workdir)
    writer = MetricsWriter(workdir, options.total_steps)
    writer.truncate_after(start)

    replicated = sharding_lib.replicated(mesh)
    step_fn = compile_train_step(make_train_step(model, tx, diffusion, loss_config), shardings,
                                 sharding_lib.batch_sharding(mesh), replicated)
    base_key = jax.random.key(options.seed + 1)
    history = []

    def save(step: int, force: bool = False) -> None:
        extra = {"timestep_sampler": timestep_sampler.state_dict()}
        checkpointer.save(step, state, data_state=iterator.get_state(), extra=extra, force=force)

    writer.start(start)
    step = start
    stopping = False
    with _StopFlag() as stop:
        while step < options.total_steps:
            batch = next(iterator)
            writer.global_batch = len(batch["label"]) * jax.process_count()
            # Timesteps: a pure function of (seed, process, step), so resumed runs draw the same ones.
            rng = np.random.default_rng([options.seed, jax.process_index(), step])
            t, weights = timestep_sampler.sample(rng, len(batch["label"]))
            batch = to_global({**batch, "t": t.astype(np.int32), "t_weight": weights.astype(np.float32)}, mesh)
            state, metrics = step_fn(state, batch, base_key)
            step += 1
            if timestep_sampler.loss_aware:  # every process sees all (t, loss) pairs: identical histories
                timestep_sampler.update_with_local_losses(np.asarray(metrics["t"]),
                                                          np.asarray(metrics["per_sample_loss"]))
            log_now = step % options.log_every_steps == 0 or step == options.total_steps
            save_now = step % options.checkpoint_every_steps == 0 or step == options.total_steps
            stopping = stop.agreed()
            if log_now or save_now or stopping:
                scalars = {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}
                if not math.isfinite(scalars["loss"]):
                    checkpointer.wait()
                    raise FloatingPointError(f"loss is {scalars['loss']} at step {step}; stopping without saving "
                                             f"(last good checkpoint: step {checkpointer.latest_step()})")
                if log_now:
                    history.append(writer.write(step, scalars))
            if save_now:
                save(step)
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

