"""The train state (step, parameters, EMA parameters, optimizer state), created already sharded.

``create_train_state`` traces the model's initialisation abstractly, derives every leaf's sharding
from the parameters' logical axis names (optimizer moments inherit them, since optax maps over the
boxed parameters), then runs the real initialisation under ``jax.jit`` with those output shardings,
so no device ever holds an unsharded copy of a large model.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh

from edt_jax.training import sharding as sharding_lib


@struct.dataclass
class TrainState:
    """step () int32; params / ema_params: model parameter pytrees (float32); opt_state: optax state."""

    step: jax.Array
    params: Any
    ema_params: Any
    opt_state: Any


def init_state(model: nn.Module, tx: optax.GradientTransformation, key: jax.Array, example: tuple) -> TrainState:
    """Unsharded, boxed initial state (parameters keep their ``nn.LogicallyPartitioned`` boxes).

    ``example``: arrays or ShapeDtypeStructs of the model's call arguments; only their shapes are used.
    """
    params = model.init(key, *(jnp.zeros(e.shape, e.dtype) for e in example))["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, ema_params=params, opt_state=tx.init(params))


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, key: jax.Array, example: tuple,
                       mesh: Mesh, rules=sharding_lib.LOGICAL_RULES) -> tuple[TrainState, Any]:
    """(state, state_shardings): a sharded, unboxed initial state and the matching NamedSharding tree.

    ``example`` holds the model's call arguments (e.g. (x, t, y)) as arrays or ShapeDtypeStructs of a
    small batch; only their shapes matter.
    """
    _, shardings = _abstract_and_shardings(model, tx, example, mesh, rules)

    def init_unboxed(k):
        return nn.meta.unbox(init_state(model, tx, k, example))

    state = jax.jit(init_unboxed, out_shardings=shardings)(key)
    return state, shardings


def abstract_train_state(model: nn.Module, tx: optax.GradientTransformation, example: tuple, mesh: Mesh,
                         rules=sharding_lib.LOGICAL_RULES) -> Any:
    """ShapeDtypeStructs (with target shardings) of the unboxed state: what a checkpoint restores into."""
    abstract, shardings = _abstract_and_shardings(model, tx, example, mesh, rules)
    return jax.tree.map(lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s),
                        nn.meta.unbox(abstract), shardings)


def _abstract_and_shardings(model, tx, example, mesh, rules) -> tuple[Any, Any]:
    """The boxed abstract state (traced, nothing allocated) and its NamedShardings from the logical names."""
    abstract = jax.eval_shape(lambda k: init_state(model, tx, k, example), jax.random.key(0))
    return abstract, sharding_lib.variable_shardings(abstract, mesh, rules)
