"""Self-attention and the adaLN-Zero transformer block shared by EDT (with relative bias) and DiT."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from edt_jax.models import amm as amm_lib
from edt_jax.models.layers import AdaLNModulation, Dtype, Mlp, dense, layer_norm, modulate


class RelativePositionBias(nn.Module):
    """BEiT relative position bias for an n x n grid: a learned ((2n-1)^2, heads) table -> (heads, L, L)."""

    grid: int
    num_heads: int
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self) -> jax.Array:
        size = (2 * self.grid - 1) ** 2
        table = self.param("relative_position_bias_table",
                           nn.with_logical_partitioning(nn.initializers.truncated_normal(0.02), ("relpos", "heads")),
                           (size, self.num_heads), self.param_dtype)
        index = amm_lib.relative_position_index(self.grid).reshape(-1)
        tokens = self.grid * self.grid
        return jnp.take(table, index, axis=0).reshape(tokens, tokens, self.num_heads).transpose(2, 0, 1)


class Attention(nn.Module):
    """Multi-head self-attention on an n x n token grid, optionally with relative bias and the AMM.

    Without AMM it runs ``jax.nn.dot_product_attention`` (fused kernels where the backend has them);
    with AMM the softmax is explicit because the matrix multiplies the normalised weights.
    """

    num_heads: int
    grid: int
    relative_bias: bool
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, apply_amm: bool = False) -> jax.Array:
        """x (B, L, D) -> (B, L, D); ``apply_amm`` multiplies the weights by the grid's AMM."""
        batch, tokens, dim = x.shape
        head_dim = dim // self.num_heads
        qkv = dense(3 * dim, ("embed", "qkv"), dtype=self.dtype, param_dtype=self.param_dtype, name="qkv")(x)
        q, k, v = jnp.moveaxis(qkv.reshape(batch, tokens, 3, self.num_heads, head_dim), 2, 0)  # (B, L, H, d) each
        bias = None
        if self.relative_bias:
            bias = RelativePositionBias(self.grid, self.num_heads, self.param_dtype, name="rel_pos_bias")()[None]
        if apply_amm:
            out = _modulated_attention(q, k, v, bias, amm_lib.modulation_matrix(self.grid))
        else:
            out = jax.nn.dot_product_attention(q, k, v, bias=None if bias is None else bias.astype(q.dtype))
        out = out.reshape(batch, tokens, dim)
        return dense(dim, ("heads", "embed"), dtype=self.dtype, param_dtype=self.param_dtype, name="proj")(out)


def _modulated_attention(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None,
                         modulation: np.ndarray) -> jax.Array:
    """softmax(q k^T / sqrt(d) + bias) * M, then @ v; logits and softmax in float32. q, k, v: (B, L, H, d)."""
    scale = q.shape[-1] ** -0.5
    logits = jnp.einsum("bqhd,bkhd->bhqk", q * scale, k, preferred_element_type=jnp.float32)
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    weights = jax.nn.softmax(logits, axis=-1) * jnp.asarray(modulation, jnp.float32)
    return jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v)


class TransformerBlock(nn.Module):
    """adaLN-Zero block: x + g1 * Attn(mod(LN(x))), then x + g2 * MLP(mod(LN(x))); c is (B, cond_dim).

    Official names: ``norm1``, ``attn``, ``norm2``, ``mlp``, ``adaLN_modulation`` (EDTBlock / DiTBlock).
    """

    num_heads: int
    grid: int
    relative_bias: bool
    mlp_ratio: float = 4.0
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array, apply_amm: bool = False) -> jax.Array:
        dim = x.shape[-1]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = AdaLNModulation(
            dim, 6, zero_init=True, dtype=self.dtype, param_dtype=self.param_dtype, name="adaLN_modulation")(c)
        h = modulate(layer_norm(self.dtype, name="norm1")(x), shift_msa, scale_msa)
        h = Attention(self.num_heads, self.grid, self.relative_bias, self.dtype, self.param_dtype, name="attn")(
            h, apply_amm)
        x = x + gate_msa[:, None, :] * h
        h = modulate(layer_norm(self.dtype, name="norm2")(x), shift_mlp, scale_mlp)
        h = Mlp(int(dim * self.mlp_ratio), self.dtype, self.param_dtype, name="mlp")(h)
        return x + gate_mlp[:, None, :] * h
