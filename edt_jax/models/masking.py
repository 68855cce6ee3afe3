"""Token keep-masks of EDT's token relation-enhanced masking training.

One masking ratio p ~ U(low, high) is drawn per call (for the whole batch, as the official code
does), then every token is kept independently with probability 1 - p.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def draw_keep_mask(key: jax.Array, shape: tuple[int, ...], ratio_range: tuple[float, float]) -> jax.Array:
    """A float32 {0, 1} keep-mask of ``shape`` (B, tokens); ~ratio of the tokens are 0 (masked)."""
    ratio_key, token_key = jax.random.split(key)
    low, high = ratio_range
    ratio = jax.random.uniform(ratio_key, (), minval=low, maxval=high)
    return (jax.random.uniform(token_key, shape) >= ratio).astype(jnp.float32)


def check_keep_mask(name: str, mask, shape: tuple[int, ...]) -> jax.Array:
    """The mask as an array, after checking it has ``shape`` (one-line error otherwise)."""
    mask = jnp.asarray(mask)
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} (batch, tokens of the module's input grid), "
                         f"got {tuple(mask.shape)}")
    return mask
