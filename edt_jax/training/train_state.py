"""The train state (step, parameters, EMA parameters, optimizer state), created already sharded.

``create_state`` traces the parameters' initialisation abstractly, derives every leaf's sharding
from the parameters' logical axis names (optimizer moments inherit them, since optax maps over the
boxed parameters), then runs the real initialisation under ``jax.jit`` with those output shardings,
so no device ever holds an unsharded copy of a large model.

The state is the same for every network the trainer optimises; what differs is ``init_params``
(``key -> boxed params``, e.g. ``model_init(model, example)`` for a Flax module).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh

from edt_jax.training import sharding as sharding_lib

InitParams = Callable[[jax.Array], Any]  # key -> params (may keep nn.LogicallyPartitioned boxes)


@struct.dataclass
class TrainState:
    """step () int32; params / ema_params: parameter pytrees (float32); opt_state: optax state."""

    step: jax.Array
    params: Any
    ema_params: Any
    opt_state: Any


def model_init(model: nn.Module, example: tuple) -> InitParams:
    """``key -> model.init(key, *zeros(example))["params"]``: the usual ``init_params`` of a Flax module.

    ``example``: arrays or ShapeDtypeStructs of the model's call arguments; only their shapes are used.
    """
    def init_params(key: jax.Array) -> Any:
        return model.init(key, *(jnp.zeros(e.shape, e.dtype) for e in example))["params"]

    return init_params


def initial_state(init_params: InitParams, tx: optax.GradientTransformation, key: jax.Array) -> TrainState:
    """Unsharded, boxed initial state (parameters keep their ``nn.LogicallyPartitioned`` boxes)."""
    params = init_params(key)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, ema_params=params, opt_state=tx.init(params))


def create_state(init_params: InitParams, tx: optax.GradientTransformation, key: jax.Array, mesh: Mesh,
                 rules=sharding_lib.LOGICAL_RULES) -> tuple[TrainState, Any]:
    """(state, state_shardings): a sharded, unboxed initial state and the matching NamedSharding tree."""
    _, shardings = _abstract_and_shardings(init_params, tx, mesh, rules)

    def init_unboxed(k):
        return nn.meta.unbox(initial_state(init_params, tx, k))

    init = jax.jit(init_unboxed, out_shardings=shardings).lower(key)
    # Initialisation runs once, so on a CPU it is compiled without XLA's backend optimisations: that halves its
    # compile time (the largest part of a tiny run's start-up after the train step's) for no measurable run time.
    on_cpu = mesh.devices.flat[0].platform == "cpu"
    state = init.compile(compiler_options={"xla_backend_optimization_level": 0} if on_cpu else None)(key)
    return state, shardings


def abstract_state(init_params: InitParams, tx: optax.GradientTransformation, mesh: Mesh,
                   rules=sharding_lib.LOGICAL_RULES) -> Any:
    """ShapeDtypeStructs (with target shardings) of the unboxed state: what a checkpoint restores into."""
    abstract, shardings = _abstract_and_shardings(init_params, tx, mesh, rules)
    return jax.tree.map(lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s),
                        nn.meta.unbox(abstract), shardings)


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, key: jax.Array, example: tuple,
                       mesh: Mesh, rules=sharding_lib.LOGICAL_RULES) -> tuple[TrainState, Any]:
    """``create_state`` of a Flax module called with arguments shaped like ``example`` (e.g. (x, t, y))."""
    return create_state(model_init(model, example), tx, key, mesh, rules)


def abstract_train_state(model: nn.Module, tx: optax.GradientTransformation, example: tuple, mesh: Mesh,
                         rules=sharding_lib.LOGICAL_RULES) -> Any:
    """``abstract_state`` of a Flax module called with arguments shaped like ``example``."""
    return abstract_state(model_init(model, example), tx, mesh, rules)


def load_state(directory, init_params: InitParams, tx: optax.GradientTransformation, mesh: Mesh,
               step: int | None = None, rules=sharding_lib.LOGICAL_RULES) -> tuple[TrainState, int]:
    """(state, step) of the checkpoint at ``step`` (default: the newest) in ``directory``, sharded over ``mesh``.

    ``init_params`` and ``tx`` must describe the network and optimizer that wrote it. A one-line
    ``FileNotFoundError`` when the directory holds no checkpoint.
    """
    from edt_jax.training.checkpoint import Checkpointer  # orbax only where checkpoints are read

    checkpointer = Checkpointer(directory)
    try:
        step = checkpointer.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {directory}; train first")
        state, _, _ = checkpointer.restore(abstract_state(init_params, tx, mesh, rules), step)
    finally:
        checkpointer.close()
    return state, int(step)


def load_params(directory, init_params: InitParams, mesh: Mesh, *, step: int | None = None, ema: bool = True,
                rules=sharding_lib.LOGICAL_RULES) -> tuple[Any, int]:
    """(parameters, step) of the checkpoint at ``step`` (default: the newest) in ``directory``: the EMA parameters
    (or the raw ones without ``ema``) alone, sharded over ``mesh`` by their logical axes; no optimizer is built
    and its state is never read. A one-line ``FileNotFoundError`` when the directory holds no checkpoint."""
    from etils import epath

    from edt_jax.training.checkpoint import Checkpointer, restore_state_field

    if not epath.Path(directory).is_dir():
        raise FileNotFoundError(f"no checkpoints in {directory}: the directory does not exist; train first")
    abstract = jax.eval_shape(init_params, jax.random.key(0))
    shardings = sharding_lib.variable_shardings(abstract, mesh, rules)
    abstract = jax.tree.map(lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s),
                            nn.meta.unbox(abstract), shardings)
    checkpointer = Checkpointer(directory)
    try:
        steps = checkpointer.all_steps()
    finally:
        checkpointer.close()
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {directory}; train first")
    step = steps[-1] if step is None else int(step)
    if step not in steps:
        raise FileNotFoundError(f"no checkpoint for step {step} in {directory}; available steps: {steps}")
    return restore_state_field(directory, step, "ema_params" if ema else "params", abstract), step


def _abstract_and_shardings(init_params, tx, mesh, rules) -> tuple[Any, Any]:
    """The boxed abstract state (traced, nothing allocated) and its NamedShardings from the logical names."""
    abstract = jax.eval_shape(lambda k: initial_state(init_params, tx, k), jax.random.key(0))
    return abstract, sharding_lib.variable_shardings(abstract, mesh, rules)
