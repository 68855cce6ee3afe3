"""What the trainer optimises: a ``Task`` (initial parameters, a pure loss, host-side batch preparation).

The loop (``edt_jax.training.loop.train``) knows nothing about diffusion, restoration or
disentanglement; each system hands it a task::

    def loss_fn(params, frozen, batch, key):      # pure; runs inside jax.jit
        out = net.apply({"params": params}, batch["y"])
        return jnp.mean(jnp.abs(out - batch["image"])), {"l1": ...}   # (scalar loss, metrics)

    task = Task(init_params=model_init(net, (y_example,)), loss_fn=loss_fn)
    train(task, tx, dataset, mesh, workdir, options)

``frozen`` is a pytree of arrays that the step reads but never updates (a frozen denoiser's
parameters, say); it is an argument of the compiled step, not a constant baked into it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jax
import numpy as np
import optax

from edt_jax.training.optimizers import ema_decay_at, ema_update, learning_rate_of
from edt_jax.training.train_state import InitParams, TrainState

LossFn = Callable[[Any, Any, dict, jax.Array], tuple[jax.Array, dict]]  # (params, frozen, batch, key)
StepFn = Callable[[TrainState, Any, dict, jax.Array], tuple[TrainState, dict]]


class HostState(Protocol):
    """Host-side state a task keeps between steps (e.g. a loss-aware timestep sampler's history)."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def _unchanged(batch: dict, rng: np.random.Generator) -> dict:
    del rng
    return batch


@dataclasses.dataclass
class Task:
    """A training problem for the generic loop.

    init_params: ``key -> params`` (boxed with logical axis names where the network has them).
    loss_fn: ``(params, frozen, batch, key) -> (loss, metrics)``; metrics scalars are logged, arrays
      are handed to ``after_step``.
    frozen: arrays the loss reads but the optimiser never touches, already placed on the mesh.
    prepare_batch: ``(host_batch, rng) -> host_batch`` on each process before the batch is made
      global; ``rng`` is a pure function of (seed, process, step), so a resumed run draws the same.
    after_step: called with the step's metrics (device arrays) after every step.
    host_state: named objects with ``state_dict`` / ``load_state_dict``, saved in every checkpoint.
    ema_decay: decay of the parameter EMA kept in the state.
    ema_warmup: LDM's EMA warm-up (``optimizers.ema_decay_at``): the decay starts near 0 and rises to
      ``ema_decay``; off, the EMA decays at ``ema_decay`` from step 0 (DiT, EDT).
    """

    init_params: InitParams
    loss_fn: LossFn
    frozen: Any = None
    prepare_batch: Callable[[dict, np.random.Generator], dict] = _unchanged
    after_step: Callable[[dict], None] | None = None
    host_state: Mapping[str, HostState] = dataclasses.field(default_factory=dict)
    ema_decay: float = 0.9999
    ema_warmup: bool = False


def make_update_step(loss_fn: LossFn, tx: optax.GradientTransformation, ema_decay: float, *,
                     ema_warmup: bool = False) -> StepFn:
    """A pure ``step(state, frozen, batch, key) -> (state, metrics)``: gradients, update, EMA.

    The key is folded with the state's step, so every step draws fresh randomness from one base key.
    metrics: the loss's own, plus "loss", "grad_norm" and "learning_rate" (when the optimizer exposes
    it, as ``create_optimizer``'s do).
    """

    def step(state: TrainState, frozen: Any, batch: dict, key: jax.Array) -> tuple[TrainState, dict]:
        key = jax.random.fold_in(key, state.step)
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, frozen, batch, key)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = ema_update(state.ema_params, params, ema_decay_at(ema_decay, state.step, warmup=ema_warmup))
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
        learning_rate = learning_rate_of(opt_state)
        if learning_rate is not None:
            metrics["learning_rate"] = learning_rate
        new_state = state.replace(step=state.step + 1, params=params, ema_params=ema, opt_state=opt_state)
        return new_state, metrics

    return step


def compile_update_step(step: StepFn, state_shardings: Any, frozen: Any, batch_sharding: Any,
                        replicated: Any) -> Callable:
    """``jax.jit`` the step: state donated with its shardings, ``frozen`` as placed, batch, replicated key."""
    frozen_shardings = jax.tree.map(lambda a: a.sharding, frozen)
    return jax.jit(step, in_shardings=(state_shardings, frozen_shardings, batch_sharding, replicated),
                   out_shardings=(state_shardings, replicated), donate_argnums=(0,))
