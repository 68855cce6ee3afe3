"""Self-attention and the adaLN-Zero transformer block shared by EDT, DiT and MDTv2.

EDT and MDTv2 add a BEiT relative position bias to every attention; MDTv2's blocks can also fuse a
long skip (``skip_linear``) and attend over a subset of the grid's tokens (its masked pass).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from edt_jax.models import amm as amm_lib
from edt_jax.models.layers import AdaLNModulation, Dtype, Mlp, dense, layer_norm, modulate, sum_over_batch


class RelativePositionBias(nn.Module):
    """BEiT relative position bias for an n x n grid: a learned ((2n-1)^2 + extra_rows, heads) table.

    EDT's table has (2n-1)^2 rows; MDTv2's has 3 more (BEiT's cls-token rows, never indexed).
    """

    grid: int
    num_heads: int
    extra_rows: int = 0
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, ids_keep: jax.Array | None = None) -> jax.Array:
        """(heads, L, L) for the whole grid, or (B, heads, K, K) between the tokens ``ids_keep`` (B, K)."""
        size = (2 * self.grid - 1) ** 2 + self.extra_rows
        table = self.param("relative_position_bias_table",
                           nn.with_logical_partitioning(nn.initializers.truncated_normal(0.02), ("relpos", "heads")),
                           (size, self.num_heads), self.param_dtype)
        index = amm_lib.relative_position_index(self.grid)
        # Gathering from the transposed table yields the heads-first layout without a transpose.
        if ids_keep is None:
            return jnp.take(table.T, index, axis=1)
        kept_index = jnp.asarray(index)[ids_keep[:, :, None], ids_keep[:, None, :]]  # (B, K, K)
        return jnp.moveaxis(jnp.take(table.T, kept_index, axis=1), 0, 1)


class Attention(nn.Module):
    """Multi-head self-attention on tokens of an n x n grid, optionally with relative bias and the AMM.

    Official names: ``qkv``, ``proj``, ``rel_pos_bias``.
    """

    num_heads: int
    grid: int
    relative_bias: bool
    bias_extra_rows: int = 0
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, apply_amm: bool = False, ids_keep: jax.Array | None = None,
                 key_valid: jax.Array | None = None) -> jax.Array:
        """x (B, L, D) -> (B, L, D).

        ``apply_amm`` multiplies the weights by the grid's AMM (needs all n*n tokens). With
        ``ids_keep`` (B, K), x holds those grid tokens (in that order) and the bias is gathered to
        match; ``key_valid`` (B, L) bool excludes the False tokens from every softmax (padding).
        """
        batch, tokens, dim = x.shape
        qkv = dense(3 * dim, ("embed", "qkv"), dtype=self.dtype, param_dtype=self.param_dtype, name="qkv")(x)
        bias = None
        if self.relative_bias:
            bias = RelativePositionBias(self.grid, self.num_heads, self.bias_extra_rows, self.param_dtype,
                                        name="rel_pos_bias")(ids_keep)
            if ids_keep is None:
                bias = bias[None]
        modulation = amm_lib.modulation_matrix(self.grid) if apply_amm else None
        if modulation is not None and tokens != self.grid ** 2:
            raise ValueError(f"the AMM needs all {self.grid ** 2} tokens of the grid, got {tokens}")
        out = multi_head_attention(qkv, self.num_heads, bias, modulation, key_valid)
        return dense(dim, ("heads", "embed"), dtype=self.dtype, param_dtype=self.param_dtype, name="proj")(out)


def multi_head_attention(qkv: jax.Array, num_heads: int, bias: jax.Array | None = None,
                         modulation: np.ndarray | None = None, key_valid: jax.Array | None = None) -> jax.Array:
    """softmax(q k^T / sqrt(d) + bias) [* M] @ v for fused qkv (B, L, 3D) -> (B, L, D).

    bias: (B or 1, heads, L, L) or None; modulation: the AMM (L, L), which multiplies the normalised
    weights (rows are not renormalised, as in the official code); key_valid: (B, L) bool or None.

    Without the AMM on GPU/TPU this is ``jax.nn.dot_product_attention`` (fused kernels). Otherwise it
    is ``explicit_attention`` in (B, heads, L, d) layout with a hand-written gradient.
    """
    batch, tokens, width = qkv.shape
    head_dim = width // (3 * num_heads)
    if key_valid is not None:
        masked = jnp.where(key_valid, 0.0, jnp.finfo(jnp.float32).min)[:, None, None, :]
        bias = masked if bias is None else bias.astype(jnp.float32) + masked
    if modulation is None and jax.default_backend() != "cpu":
        q, k, v = jnp.moveaxis(qkv.reshape(batch, tokens, 3, num_heads, head_dim), 2, 0)  # (B, L, H, d) each
        out = jax.nn.dot_product_attention(q, k, v, bias=None if bias is None else bias.astype(q.dtype))
        return out.reshape(batch, tokens, num_heads * head_dim)
    q, k, v = qkv.reshape(batch, tokens, 3, num_heads, head_dim).transpose(2, 0, 3, 1, 4)  # (B, H, L, d) each
    m = None if modulation is None else jnp.asarray(modulation, jnp.float32)
    out = explicit_attention(q * head_dim ** -0.5, k, v, bias, m)
    return out.transpose(0, 2, 1, 3).reshape(batch, tokens, num_heads * head_dim)


@jax.custom_vjp
def explicit_attention(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None,
                       modulation: jax.Array | None) -> jax.Array:
    """softmax(q k^T + bias) [* modulation] @ v with q, k, v (B, H, L, d) (q pre-scaled); logits in float32.

    bias: (B or 1, H or 1, L, L) or None; modulation: (L, L) or None (a constant: no gradient).

    The gradient is written out so that every product in it is a plain batched matmul: XLA's CPU
    backend lowers the derived gradient's transposed contractions to slower kernels
    (benchmarks/cpu_kernels.py: 3.2x against the derived gradient of jax.nn.dot_product_attention).
    """
    return _attention_fwd(q, k, v, bias, modulation)[0]


def _attention_weights(q, k, bias):
    logits = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32)
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    return jax.nn.softmax(logits, axis=-1)


def _attention_fwd(q, k, v, bias, modulation):
    probs = _attention_weights(q, k, bias)
    weights = probs if modulation is None else probs * modulation
    out = jnp.einsum("bhqk,bhkd->bhqd", weights.astype(v.dtype), v)
    return out, (q, k, v, bias, modulation, probs)


def _attention_bwd(residuals, d_out):
    q, k, v, bias, modulation, probs = residuals
    weights = probs if modulation is None else probs * modulation
    d_v = jnp.matmul(jnp.swapaxes(weights, -1, -2).astype(v.dtype), d_out.astype(v.dtype))
    d_weights = jnp.einsum("bhqd,bhkd->bhqk", d_out, v, preferred_element_type=jnp.float32)
    d_probs = d_weights if modulation is None else d_weights * modulation
    d_logits = probs * (d_probs - jnp.sum(d_probs * probs, axis=-1, keepdims=True))
    d_q = jnp.matmul(d_logits.astype(q.dtype), k)
    d_k = jnp.matmul(jnp.swapaxes(d_logits, -1, -2).astype(q.dtype), q)
    d_bias = None if bias is None else _sum_to_shape(d_logits, bias.shape).astype(bias.dtype)
    d_modulation = None if modulation is None else jnp.zeros_like(modulation)
    return d_q, d_k, d_v, d_bias, d_modulation


explicit_attention.defvjp(_attention_fwd, _attention_bwd)


def _sum_to_shape(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Sum x (B, H, L, L) over the axes where ``shape`` has 1 (a broadcast bias's gradient)."""
    if shape[0] == 1 and x.shape[0] > 1:
        x = sum_over_batch(x)[None]
    if shape[1] == 1 and x.shape[1] > 1:
        x = jnp.sum(x, axis=1, keepdims=True)
    return x


class TransformerBlock(nn.Module):
    """adaLN-Zero block: x + g1 * Attn(mod(LN(x))), then x + g2 * MLP(mod(LN(x))); c is (B, cond_dim).

    Official names: ``norm1``, ``attn``, ``norm2``, ``mlp``, ``adaLN_modulation`` (EDTBlock / DiTBlock /
    MDTBlock) and, with ``skip_linear``, MDTBlock's ``skip_linear``: Linear(2D -> D) of [x, skip] first.
    """

    num_heads: int
    grid: int
    relative_bias: bool
    mlp_ratio: float = 4.0
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    skip_linear: bool = False
    bias_extra_rows: int = 0

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array, apply_amm: bool = False, skip: jax.Array | None = None,
                 ids_keep: jax.Array | None = None, key_valid: jax.Array | None = None) -> jax.Array:
        """x (B, L, D), c (B, D), skip (B, L, D) when ``skip_linear``; ids_keep / key_valid as ``Attention``."""
        dim = x.shape[-1]
        if self.skip_linear:
            x = dense(dim, ("merged", "embed"), dtype=self.dtype, param_dtype=self.param_dtype, name="skip_linear")(
                jnp.concatenate([x, skip], axis=-1))
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = AdaLNModulation(
            dim, 6, zero_init=True, dtype=self.dtype, param_dtype=self.param_dtype, name="adaLN_modulation")(c)
        h = modulate(layer_norm(self.dtype, name="norm1")(x), shift_msa, scale_msa)
        h = Attention(self.num_heads, self.grid, self.relative_bias, self.bias_extra_rows, self.dtype,
                      self.param_dtype, name="attn")(h, apply_amm, ids_keep, key_valid)
        x = x + gate_msa[:, None, :] * h
        h = modulate(layer_norm(self.dtype, name="norm2")(x), shift_mlp, scale_mlp)
        h = Mlp(int(dim * self.mlp_ratio), self.dtype, self.param_dtype, name="mlp")(h)
        return x + gate_mlp[:, None, :] * h


def transformer_block_class(remat: bool) -> type[TransformerBlock]:
    """``TransformerBlock``, or its rematerialised form (activations recomputed in the backward pass)."""
    return nn.remat(TransformerBlock, static_argnums=(3,)) if remat else TransformerBlock  # 3: apply_amm
