"""Helpers shared by the model tests: random parameters, their official-layout state dict, a jit-compiled apply."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from edt_jax.models.convert import abstract_params, official_name


def random_params(model, seed: int = 0, scale: float = 0.1) -> dict:
    """Every parameter drawn from N(0, scale^2), so adaLN-Zero layers are not zero (as in the fixture)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda leaf: jnp.asarray(scale * rng.standard_normal(leaf.shape), jnp.float32),
                        abstract_params(model))


def official_state_dict(params) -> dict[str, np.ndarray]:
    """The authors' state dict of Flax ``params`` (names and PyTorch layouts: the inverse of the converter)."""
    state = {}
    for path, value in traverse_util.flatten_dict(params).items():
        value = np.asarray(value)
        if path[-1] == "kernel":
            value = value.T if value.ndim == 2 else value.transpose(3, 2, 0, 1)
        state[official_name(path)] = np.ascontiguousarray(value)  # as torch saves it (safetensors needs it)
    return state


def apply(model, params, x, t, y, rngs=None, **kwargs):
    """model.apply under jit (eager Flax dispatches op by op, which is slow on CPU)."""
    fn = jax.jit(lambda p, x, t, y, r: model.apply({"params": p}, x, t, y, rngs=r, **kwargs))
    return fn(params, x, t, y, rngs)
