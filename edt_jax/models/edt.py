"""EDT: the Efficient Diffusion Transformer (Chen et al., NeurIPS 2024), number for number with the
official ``models_edt.py``.

Five stages on token grids n, n/2, n/4, n/2, n (for 32x32 latents and patch 2: 16, 8, 4, 8, 16).
Stages before the middle end in a down-sampling module (2x2 token merge + adaLN + linear reduction +
sin-cos position supplement); stages after it start with an up-sampling module (linear expansion +
pixel shuffle) and a long-skip fusion layer that concatenates the INPUT of the mirrored stage.

Token relation-enhanced masking: in the masked pass each down-sampling module zeroes the tokens of a
keep-mask (drawn per token with ratios U(0.4, 0.5) then U(0.1, 0.2)) after its modulation, and EDT-XL
additionally replaces tokens by the position embedding before block ``mid_mask_block`` of stage 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from edt_jax.models.base import ClassConditionalTransformer
from edt_jax.models.blocks import transformer_block_class
from edt_jax.models.layers import (
    AdaLNModulation,
    Dtype,
    dense,
    embed_inputs,
    layer_norm,
    merge_2x2,
    modulate,
    pixel_shuffle_2x,
    sincos_pos_embed_2d,
)
from edt_jax.models.masking import check_keep_mask, draw_keep_mask


class DownSample(nn.Module):
    """(B, g*g, C) -> (B, (g/2)^2, C_out): merge 2x2, LN(4C), adaLN(shift, scale), [keep-mask], reduce, + pos."""

    out_features: int
    grid: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array, keep: jax.Array | None = None) -> jax.Array:
        """``keep`` (B, g*g) marks the input tokens that survive the masked pass (1 = kept)."""
        channels = x.shape[-1]
        x = merge_2x2(x, self.grid)
        shift, scale = AdaLNModulation(4 * channels, 2, zero_init=False, dtype=self.dtype,
                                       param_dtype=self.param_dtype, name="adaLN_modulation")(c)
        x = modulate(layer_norm(self.dtype, name="norm")(x), shift, scale)
        if keep is not None:
            # The mask is merged like the tokens, so each 4C row keeps the parts of its kept inputs.
            merged = merge_2x2(keep[..., None].astype(x.dtype), self.grid)
            x = x * jnp.repeat(merged, channels, axis=-1)
        x = dense(self.out_features, ("merged", "embed"), use_bias=False, dtype=self.dtype,
                  param_dtype=self.param_dtype, name="reduction")(x)
        return x + sincos_pos_embed_2d(self.out_features, self.grid // 2).astype(x.dtype)


class UpSample(nn.Module):
    """(B, g*g, C) -> (B, (2g)^2, C_out): bias-free linear to 4 C_out, then pixel shuffle (p1, p2, c)."""

    out_features: int
    grid: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = dense(4 * self.out_features, ("embed", "merged"), use_bias=False, dtype=self.dtype,
                  param_dtype=self.param_dtype, name="expand")(x)
        return pixel_shuffle_2x(x, self.grid)


class ConcatLayer(nn.Module):
    """Long-skip fusion: [x, skip] (B, L, 2C) -> LN, adaLN(shift, scale), Linear(2C -> C), + pos embed."""

    grid: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, skip: jax.Array, c: jax.Array) -> jax.Array:
        features = x.shape[-1]
        x = jnp.concatenate([x, skip], axis=-1)
        shift, scale = AdaLNModulation(2 * features, 2, zero_init=False, dtype=self.dtype,
                                       param_dtype=self.param_dtype, name="adaLN_modulation")(c)
        x = modulate(layer_norm(self.dtype, name="norm_final")(x), shift, scale)
        x = dense(features, ("merged", "embed"), dtype=self.dtype, param_dtype=self.param_dtype, name="cat")(x)
        return x + sincos_pos_embed_2d(features, self.grid).astype(x.dtype)


class EDT(ClassConditionalTransformer, kw_only=True):
    """The EDT network; build it with ``edt_jax.models.create_model`` (which validates the arguments).

    Call: ``model.apply(variables, x, t, y, train=False, amm=True)`` with x (B, H, W, C) NHWC, t (B,)
    timesteps, y (B,) int labels (``num_classes`` = null label) -> (B, H, W, C_out), C_out = 2C when
    ``learn_sigma``. RNG streams: ``"dropout"`` (label dropout when ``train``) and ``"mask"`` (the
    masked pass when its keep-masks are not given). The common fields are those of
    ``ClassConditionalTransformer``; ``amm_blocks`` index ``blocks_{i}``, numbered across the stages.

    Attributes:
      dims: width of each of the (odd number of) stages, symmetric, e.g. (312, 416, 520, 416, 312).
      num_heads: attention heads of each stage.
      depths: transformer blocks in each stage.
      mid_mask: in the masked pass, also replace tokens by the position embedding before block
        ``mid_mask_block`` of stage 0 (EDT-XL).
      mid_mask_block: the stage-0 block that the mid mask precedes.
      mid_mask_ratio: (low, high): the mid mask draws a ratio p ~ U(low, high) per call and replaces
        each token with probability p.
      down_mask_ratios: (low, high) per down-sampling module, drawn likewise for the tokens it zeroes in
        the masked pass; the last entry serves any further modules.
    """

    dims: tuple[int, ...]
    num_heads: tuple[int, ...]
    depths: tuple[int, ...]
    mid_mask: bool = False
    mid_mask_block: int = 4
    mid_mask_ratio: tuple[float, float] = (0.15, 0.25)
    down_mask_ratios: tuple[tuple[float, float], ...] = ((0.4, 0.5), (0.1, 0.2))

    @property
    def down_stages(self) -> int:
        return len(self.depths) // 2

    def stage_grids(self) -> list[int]:
        """Token-grid side of every stage, e.g. [16, 8, 4, 8, 16]."""
        n = self.grid
        return [n >> min(s, len(self.depths) - 1 - s) for s in range(len(self.depths))]

    def keep_mask_shapes(self, batch: int) -> list[tuple[int, int]]:
        """Shapes of the keep-masks of the down-sampling modules: (B, tokens of their input grid)."""
        grids = self.stage_grids()
        return [(batch, grids[s] ** 2) for s in range(self.down_stages)]

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, y: jax.Array, train: bool = False, amm: bool = True,
                 masked: bool = False, keep_masks: Sequence[jax.Array] | None = None,
                 mid_keep_mask: jax.Array | None = None) -> jax.Array:
        """Noise (and variance) prediction for x (B, H, W, C).

        ``masked`` runs the token-masked training pass with keep-masks drawn from the ``"mask"`` RNG;
        explicit ``keep_masks`` (one (B, tokens) array per down-sampling module, 1 = kept) imply it.
        ``mid_keep_mask`` (B, n*n) is EDT-XL's stage-0 mask. The AMM acts only when ``amm`` and not ``train``.
        """
        x, c, pos_embed = embed_inputs(self, x, t, y, self.dims[0], train)  # checks x's shape first
        batch = x.shape[0]
        grids = self.stage_grids()
        masked = masked or keep_masks is not None
        if keep_masks is not None:
            keep_masks = _check_keep_masks(keep_masks, self.keep_mask_shapes(batch))
        if mid_keep_mask is not None and not (self.mid_mask and masked):
            raise ValueError("mid_keep_mask is only used by the masked pass of a model with mid_mask=True (EDT-XL)")

        block_cls = transformer_block_class(self.remat)
        skips = []
        depth = 0
        for stage, stage_depth in enumerate(self.depths):
            if stage < self.down_stages:
                skips.append(x)
            if stage > self.down_stages:
                up = stage - self.down_stages - 1
                x = UpSample(self.dims[stage], grids[stage - 1], self.dtype, self.param_dtype,
                             name=f"up_blocks_{up}")(x)
                x = ConcatLayer(grids[stage], self.dtype, self.param_dtype, name=f"concat_blocks_{up}")(
                    x, skips.pop(), c)
            for j in range(stage_depth):
                if masked and self.mid_mask and stage == 0 and j == self.mid_mask_block:
                    keep = mid_keep_mask
                    if keep is None:
                        keep = draw_keep_mask(self._mask_rng(), (batch, grids[0] ** 2), self.mid_mask_ratio)
                    keep = check_keep_mask("mid_keep_mask", keep, (batch, grids[0] ** 2))[..., None].astype(x.dtype)
                    x = x * keep + (1 - keep) * pos_embed.astype(x.dtype)
                apply_amm = amm and not train and depth in self.amm_blocks
                x = block_cls(self.num_heads[stage], grids[stage], True, self.mlp_ratio, self.dtype,
                              self.param_dtype, name=f"blocks_{depth}")(x, c, apply_amm)
                depth += 1
            if stage < self.down_stages:
                keep = None
                if masked and keep_masks is not None:
                    keep = keep_masks[stage]
                elif masked:
                    ratio = self.down_mask_ratios[min(stage, len(self.down_mask_ratios) - 1)]
                    keep = draw_keep_mask(self._mask_rng(), (batch, grids[stage] ** 2), ratio)
                x = DownSample(self.dims[stage + 1], grids[stage], self.dtype, self.param_dtype,
                               name=f"down_blocks_{stage}")(x, c, keep)

        return self.final_output(x, c)

    def _mask_rng(self) -> jax.Array:
        if not self.has_rng("mask"):
            raise ValueError("the masked pass draws its keep-masks from the 'mask' RNG: pass rngs={'mask': key} "
                             "to apply, or give keep_masks explicitly")
        return self.make_rng("mask")


def _check_keep_masks(keep_masks: Sequence[jax.Array], shapes: list[tuple[int, int]]) -> list[jax.Array]:
    if len(keep_masks) != len(shapes):
        raise ValueError(f"keep_masks needs one mask per down-sampling module ({len(shapes)}), got {len(keep_masks)}")
    return [check_keep_mask(f"keep_masks[{i}]", m, s) for i, (m, s) in enumerate(zip(keep_masks, shapes, strict=True))]
