"""MDTv2 (Gao et al., Masked Diffusion Transformer v2), number for number with the official
``masked_diffusion/models.py`` of sail-sg/MDT: the baseline EDT's speed claims are measured against.

An isotropic adaLN-Zero transformer on one token grid with a learned BEiT relative position bias in
every block ((2n-1)^2 + 3 rows), trainable ``pos_embed`` / ``decoder_pos_embed``, and three groups of
blocks: ``en_inblocks`` (plain), ``en_outblocks`` (each fuses the mirrored en_inblock's output through
``skip_linear``, U-ViT style) and ``de_blocks`` (each fuses the embedded input tokens). With
``half = (depth - decode_layer) // 2`` blocks are numbered 0..half-1 (en_in), half..2 half-1 (en_out),
2 half.. (de), as the EDT authors' ``models_mdt_with_amm.py`` numbers them for ``amm_blocks``.

Masked pass (training): the encoder runs on the kept tokens ``ids_keep`` only, with the relative
bias gathered to them; the side-interpolater block then fills the masked positions starting from the
learnable ``mask_token`` and the decoder runs on all tokens.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from edt_jax.models.base import ClassConditionalTransformer
from edt_jax.models.blocks import transformer_block_class
from edt_jax.models.layers import embed_inputs, sincos_pos_embed_2d

# BEiT's relative-position table has 3 rows more than the grid needs (its cls-token rows).
BEIT_EXTRA_ROWS = 3
# Blocks the EDT authors modulated in MDTv2 (``is_local`` of models_mdt_with_amm.py, "mdtv2-s-400k").
AUTHORS_AMM_BLOCKS = {"MDTv2-S/2": (8,)}


def kept_token_count(tokens: int, mask_ratio: float) -> int:
    """The most tokens a masked pass keeps: int(L (1 - mask_ratio)) in float32, as the official code."""
    return int(np.float32(tokens) * (np.float32(1.0) - np.float32(mask_ratio)))


def draw_ids_keep(key: jax.Array, batch: int, tokens: int, mask_ratio: float) -> tuple[jax.Array, jax.Array]:
    """The official masking draw, padded to a fixed length so that one compiled step serves every draw.

    One ratio r = mask_ratio + 0.2 u (u ~ U[0, 1)) for the batch, len_keep = int(L (1 - r)), and
    per sample the tokens of the len_keep smallest of L uniform draws (argsort order). Returns
    ``ids_keep`` (B, K) with K = ``kept_token_count(L, mask_ratio)`` >= len_keep (the entries after
    len_keep are further, masked tokens in the same order) and ``key_valid`` (B, K) bool, True for
    the first len_keep entries.
    """
    ratio_key, noise_key = jax.random.split(key)
    ratio = mask_ratio + 0.2 * jax.random.uniform(ratio_key, (), jnp.float32)
    len_keep = jnp.floor(jnp.float32(tokens) * (1.0 - ratio)).astype(jnp.int32)
    ids_shuffle = jnp.argsort(jax.random.uniform(noise_key, (batch, tokens)), axis=1)
    width = kept_token_count(tokens, mask_ratio)
    key_valid = jnp.broadcast_to(jnp.arange(width) < len_keep, (batch, width))
    return ids_shuffle[:, :width].astype(jnp.int32), key_valid


class MDTv2(ClassConditionalTransformer, kw_only=True):
    """The MDTv2 network; build it with ``edt_jax.models.create_model("MDTv2-S/2", ...)``.

    Call: ``model.apply(variables, x, t, y, train=False)`` with x (B, H, W, C) NHWC -> (B, H, W, C_out).
    Masked pass: ``ids_keep=`` (B, K) int token indices (row-major on the grid) that enter the
    encoder, optionally with ``key_valid=`` (B, K) bool marking padding (False) entries; or
    ``masked=True`` to draw them from the ``"mask"`` RNG with ``draw_ids_keep``.
    The common fields are those of ``ClassConditionalTransformer``; ``amm_blocks`` number the blocks as
    the module docstring says.

    Attributes:
      hidden_size: width D of every token and of the condition.
      depth: number of transformer blocks, ``decode_layer`` of them in the decoder (the side-interpolater
        block comes on top).
      num_heads: attention heads of every block.
      decode_layer: number of decoder blocks (``de_blocks``); depth - decode_layer must be even.
      mask_ratio: the masked pass drops a fraction mask_ratio + 0.2 u (u ~ U[0, 1)) of the tokens.
    """

    hidden_size: int
    depth: int
    num_heads: int
    decode_layer: int = 4
    mask_ratio: float = 0.3

    @property
    def half_depth(self) -> int:
        return (self.depth - self.decode_layer) // 2

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, y: jax.Array, train: bool = False, amm: bool = True,
                 masked: bool = False, ids_keep: jax.Array | None = None,
                 key_valid: jax.Array | None = None) -> jax.Array:
        batch, tokens, width = x.shape[0], self.tokens, self.hidden_size
        pos_embed, decoder_pos_embed, mask_token = self._embedding_params(tokens, width)
        x, c, _ = embed_inputs(self, x, t, y, width, train, pos_embed=pos_embed[0])  # checks x's shape first
        input_skip = x

        if masked and ids_keep is None:
            if not self.has_rng("mask"):
                raise ValueError("the masked pass draws its tokens from the 'mask' RNG: pass rngs={'mask': key} "
                                 "to apply, or give ids_keep explicitly")
            ids_keep, key_valid = draw_ids_keep(self.make_rng("mask"), batch, tokens, self.mask_ratio)
        if ids_keep is not None:
            ids_keep = _check_ids_keep(ids_keep, batch, tokens)
            x = jnp.take_along_axis(x, ids_keep[..., None], axis=1)
        if key_valid is not None and ids_keep is None:
            raise ValueError("key_valid marks padding entries of ids_keep; it needs ids_keep")

        block_cls = transformer_block_class(self.remat)

        def block(name: str, skip_linear: bool) -> nn.Module:
            return block_cls(self.num_heads, self.grid, True, self.mlp_ratio, self.dtype, self.param_dtype,
                             skip_linear=skip_linear, bias_extra_rows=BEIT_EXTRA_ROWS, name=name)

        def use_amm(index: int, sees_all_tokens: bool) -> bool:
            # Eval only, as officially; an encoder block of the masked pass sees a subset of the grid, where
            # the (L, L) matrix has no meaning (the official code would fail on the shape there).
            return amm and not train and index in self.amm_blocks and sees_all_tokens

        half, encoder_full = self.half_depth, ids_keep is None
        skips = []
        for i in range(half):
            x = block(f"en_inblocks_{i}", False)(x, c, use_amm(i, encoder_full), None, ids_keep, key_valid)
            skips.append(x)
        for i in range(half):
            x = block(f"en_outblocks_{i}", True)(x, c, use_amm(half + i, encoder_full), skips.pop(),
                                                 ids_keep, key_valid)

        side = block("sideblocks_0", False)
        if ids_keep is not None:
            x = self._side_interpolate(side, x, c, ids_keep, key_valid, mask_token, decoder_pos_embed)
        else:
            x = x + decoder_pos_embed.astype(x.dtype)
            if self.is_initializing():  # the side block's parameters exist in every model, as officially
                side(x, c)
        for i in range(self.decode_layer):
            index = 2 * half + i
            x = block(f"de_blocks_{i}", True)(x, c, use_amm(index, True), input_skip)
        return self.final_output(x, c)

    def _embedding_params(self, tokens: int, width: int) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Trainable ``pos_embed`` / ``decoder_pos_embed`` (1, L, D) from the MAE sin-cos table, ``mask_token``."""

        def sincos(key, shape, dtype):
            del key
            return jnp.asarray(sincos_pos_embed_2d(width, self.grid)[None], dtype)

        def partitioned(init):
            return nn.with_logical_partitioning(init, (None, None, "embed"))

        pos_embed = self.param("pos_embed", partitioned(sincos), (1, tokens, width), self.param_dtype)
        decoder_pos_embed = self.param("decoder_pos_embed", partitioned(sincos), (1, tokens, width),
                                       self.param_dtype)
        mask_token = self.param("mask_token", partitioned(nn.initializers.normal(0.02)), (1, 1, width),
                                self.param_dtype)
        return pos_embed, decoder_pos_embed, mask_token

    def _side_interpolate(self, side: nn.Module, x: jax.Array, c: jax.Array, ids_keep: jax.Array,
                          key_valid: jax.Array | None, mask_token: jax.Array,
                          decoder_pos_embed: jax.Array) -> jax.Array:
        """Encoder outputs (B, K, D) back on the grid, mask_token elsewhere; the side block fills the masked."""
        batch, _, width = x.shape
        tokens = self.tokens
        mask_token = mask_token.astype(x.dtype)
        valid = jnp.ones(ids_keep.shape, bool) if key_valid is None else key_valid
        rows = jnp.arange(batch)[:, None]
        values = jnp.where(valid[..., None], x, mask_token)  # padding entries are masked tokens too
        full = jnp.broadcast_to(mask_token, (batch, tokens, width)).at[rows, ids_keep].set(values)
        kept = jnp.zeros((batch, tokens), bool).at[rows, ids_keep].set(valid)[..., None]
        x_before = full + decoder_pos_embed.astype(x.dtype)
        return jnp.where(kept, x_before, side(x_before, c))


def _check_ids_keep(ids_keep, batch: int, tokens: int) -> jax.Array:
    ids_keep = jnp.asarray(ids_keep)
    if ids_keep.ndim != 2 or ids_keep.shape[0] != batch or not 0 < ids_keep.shape[1] <= tokens:
        raise ValueError(f"ids_keep must have shape (batch {batch}, K) with 0 < K <= {tokens} tokens, "
                         f"got {tuple(ids_keep.shape)}")
    if not jnp.issubdtype(ids_keep.dtype, jnp.integer):
        raise ValueError(f"ids_keep must hold integer token indices, got dtype {ids_keep.dtype}")
    return ids_keep.astype(jnp.int32)


def guided_output(model: MDTv2, variables: dict, x: jax.Array, t: jax.Array, y: jax.Array, cfg_scale: float,
                  diffusion_steps: int = 1000, scale_pow: float = 4.0) -> jax.Array:
    """The official ``forward_with_cfg``: a [conditional; unconditional] batch with a power-cosine scale.

    x (2N, H, W, C) (its second half is ignored and replaced by the first), t (2N,), y (2N,) with the
    null label in the second half. Channels 0..2 get eps_u + s (eps_c - eps_u) with
    s = (cfg_scale - 1) (1 - cos(pi (1 - t / diffusion_steps)^scale_pow)) / 2 + 1 from the first
    half's t; the rest pass through (the DiT convention). Returns (2N, H, W, C_out).
    """
    half = x.shape[0] // 2
    out = model.apply(variables, jnp.concatenate([x[:half], x[:half]]), t, y, train=False)
    eps, rest = out[..., :3], out[..., 3:]
    cond, uncond = eps[:half], eps[half:]
    step = (1 - jnp.cos((1 - t[:half] / diffusion_steps) ** scale_pow * jnp.pi)) / 2
    scale = ((cfg_scale - 1) * step + 1)[:, None, None, None]
    guided = uncond + scale * (cond - uncond)
    return jnp.concatenate([jnp.concatenate([guided, guided]), rest], axis=-1)
