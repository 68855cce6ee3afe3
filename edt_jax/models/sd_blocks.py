"""The blocks of diffusers' ``UNet2DConditionModel`` (Stable Diffusion 1.x / 2.x) in Flax, NHWC.

Every module mirrors one diffusers class and names its submodules as diffusers does, with ``_i`` for
``.i`` (``attn1/to_out_0`` is ``attn1.to_out.0``, ``ff/net_0/proj`` is ``ff.net.0.proj``), so that
``sd.unet_name`` maps a Flax path onto a state-dict key with one regex. ``sd.py`` assembles the UNet.

Dtypes: convolutions and linear layers compute in ``dtype`` (e.g. bfloat16); GroupNorm, LayerNorm, the
attention logits and softmax always run in float32, as diffusers' ``upcast_attention`` / ``upcast_softmax``
do, since bfloat16 statistics drift over thousands of positions. Parameters are stored in ``param_dtype``.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from edt_jax.models.layers import Dtype, timestep_embedding
from edt_jax.models.vae import _conv, _group_norm

# diffusers' Transformer2DModel normalises its input with GroupNorm(eps=1e-6) whatever the UNet's norm_eps;
# the LayerNorms inside BasicTransformerBlock keep torch's default eps 1e-5.
TRANSFORMER_GROUP_NORM_EPS = 1e-6
TRANSFORMER_LAYER_NORM_EPS = 1e-5


def timestep_features(t: jax.Array, dim: int, *, flip_sin_to_cos: bool = True, freq_shift: float = 0.0,
                      max_period: float = 10000.0) -> jax.Array:
    """diffusers' ``get_timestep_embedding``: timesteps t (B,) -> (B, dim) float32 sinusoids.

    Frequencies exp(-log(max_period) i / (dim/2 - freq_shift)) for i < dim/2, computed in float32 in
    diffusers' order of operations; [sin, cos], or [cos, sin] with ``flip_sin_to_cos``; a zero column
    is appended for odd ``dim``: ``layers.timestep_embedding`` with diffusers' options.
    """
    return timestep_embedding(t, dim, max_period, flip_sin_to_cos=flip_sin_to_cos, freq_shift=freq_shift)


def _layer_norm(param_dtype: Dtype, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=TRANSFORMER_LAYER_NORM_EPS, dtype=jnp.float32, param_dtype=param_dtype,
                        use_fast_variance=False, name=name)


def _dense(features: int, dtype: Dtype, param_dtype: Dtype, name: str, use_bias: bool = True) -> nn.Dense:
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, name=name)


class TimestepEmbedding(nn.Module):
    """``time_embedding``: sinusoid features (B, C) -> linear_1 -> SiLU -> linear_2 -> (B, features)."""

    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        h = nn.silu(_dense(self.features, self.dtype, self.param_dtype, "linear_1")(features))
        return _dense(self.features, self.dtype, self.param_dtype, "linear_2")(h)


class ResnetBlock2D(nn.Module):
    """GN -> SiLU -> conv3x3 -> + time_emb_proj(SiLU(temb)) -> GN -> SiLU -> conv3x3, plus the input.

    x (B, H, W, C_in), temb (B, T) -> (B, H, W, features); a 1x1 ``conv_shortcut`` when C_in != features;
    the sum is divided by ``output_scale_factor`` (diffusers' ``time_embedding_norm="default"``).
    """

    features: int
    groups: int
    eps: float
    output_scale_factor: float = 1.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array) -> jax.Array:
        dt, pdt = self.dtype, self.param_dtype
        h = nn.silu(_group_norm(self.groups, pdt, "norm1", eps=self.eps)(x))
        h = _conv(self.features, 3, dt, pdt, "conv1")(h)
        h = h + _dense(self.features, dt, pdt, "time_emb_proj")(nn.silu(temb))[:, None, None, :]
        h = nn.silu(_group_norm(self.groups, pdt, "norm2", eps=self.eps)(h))
        h = _conv(self.features, 3, dt, pdt, "conv2")(h)  # dropout: inference only
        if x.shape[-1] != self.features:
            x = _conv(self.features, 1, dt, pdt, "conv_shortcut")(x)
        out = x + h
        if self.output_scale_factor != 1:
            out = out / self.output_scale_factor
        return out.astype(dt)


class Attention(nn.Module):
    """Multi-head attention of x (B, L, D) over ``context`` (B, S, D_ctx), or over x itself when None.

    ``to_q`` / ``to_k`` / ``to_v`` without bias (diffusers' ``attention_bias=False``), ``to_out_0`` with;
    head dim = ``inner // heads``, scale head_dim ** -0.5; logits and softmax in float32.
    """

    heads: int
    inner: int  # heads * head_dim
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        dt, pdt = self.dtype, self.param_dtype
        context = x if context is None else context
        head_dim = self.inner // self.heads
        q, k, v = (_dense(self.inner, dt, pdt, name, use_bias=False)(src)
                   for name, src in (("to_q", x), ("to_k", context), ("to_v", context)))
        q, k, v = (a.reshape(*a.shape[:2], self.heads, head_dim) for a in (q, k, v))
        # (B, L, heads, head_dim) layout; for bfloat16 inputs jax computes the logits in float32 and
        # always runs the softmax in float32.
        out = jax.nn.dot_product_attention(q, k, v, scale=head_dim ** -0.5)
        out = out.reshape(*x.shape[:2], self.inner)
        return _dense(x.shape[-1], dt, pdt, "to_out_0")(out)


class GEGLU(nn.Module):
    """``proj``: D -> 2 * inner, split into (hidden, gate); hidden * exact-GELU(gate)."""

    inner: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        hidden, gate = jnp.split(_dense(2 * self.inner, self.dtype, self.param_dtype, "proj")(x), 2, axis=-1)
        return hidden * nn.gelu(gate, approximate=False)


class FeedForward(nn.Module):
    """``ff``: ``net_0`` (GEGLU D -> 4D) then ``net_2`` (Linear 4D -> D); net.1 is a dropout."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dim = x.shape[-1]
        h = GEGLU(4 * dim, self.dtype, self.param_dtype, name="net_0")(x)
        return _dense(dim, self.dtype, self.param_dtype, "net_2")(h)


class BasicTransformerBlock(nn.Module):
    """x (B, L, D) + attn1(norm1 x) -> + attn2(norm2 x, context) -> + ff(norm3 x).

    ``only_cross_attention`` makes attn1 attend to the context too (its to_k / to_v then read it).
    """

    heads: int
    only_cross_attention: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        dt, pdt, dim = self.dtype, self.param_dtype, x.shape[-1]
        h = _layer_norm(pdt, "norm1")(x)
        x = x + Attention(self.heads, dim, dt, pdt, name="attn1")(h, context if self.only_cross_attention else None)
        x = x + Attention(self.heads, dim, dt, pdt, name="attn2")(_layer_norm(pdt, "norm2")(x), context)
        x = x + FeedForward(dt, pdt, name="ff")(_layer_norm(pdt, "norm3")(x))
        return x.astype(dt)


class Transformer2DModel(nn.Module):
    """x (B, H, W, C), context (B, S, D_ctx) -> (B, H, W, C): GN -> proj_in -> blocks -> proj_out, + x.

    ``proj_in`` / ``proj_out`` are 1x1 convolutions (SD 1.x) or, with ``use_linear_projection``, Linear
    layers on the flattened tokens (SD 2.x); the width inside is heads * (C // heads), as in diffusers.
    """

    heads: int
    num_layers: int
    groups: int
    use_linear_projection: bool
    only_cross_attention: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        dt, pdt = self.dtype, self.param_dtype
        batch, height, width, channels = x.shape
        inner = self.heads * (channels // self.heads)
        h = _group_norm(self.groups, pdt, "norm", eps=TRANSFORMER_GROUP_NORM_EPS)(x)
        # A 1x1 conv on NHWC is the Linear on the flattened tokens; they differ only in the stored layout.
        if self.use_linear_projection:
            h = _dense(inner, dt, pdt, "proj_in")(h.reshape(batch, height * width, channels))
        else:
            h = _conv(inner, 1, dt, pdt, "proj_in")(h).reshape(batch, height * width, inner)
        for k in range(self.num_layers):
            h = BasicTransformerBlock(self.heads, self.only_cross_attention, dt, pdt,
                                      name=f"transformer_blocks_{k}")(h, context)
        if self.use_linear_projection:
            h = _dense(channels, dt, pdt, "proj_out")(h).reshape(batch, height, width, channels)
        else:
            h = _conv(channels, 1, dt, pdt, "proj_out")(h.reshape(batch, height, width, inner))
        return (h + x).astype(dt)


class Downsample2D(nn.Module):
    """``downsamplers_0``: 3x3 ``conv`` stride 2 with ``padding`` on each side; padding 0 pads bottom/right by 1."""

    padding: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pad = self.padding
        if pad == 0:  # diffusers' Downsample2D: F.pad(x, (0, 1, 0, 1)) before an unpadded conv
            x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
        return _conv(x.shape[-1], 3, self.dtype, self.param_dtype, "conv", stride=2, padding=pad)(x)


class Upsample2D(nn.Module):
    """``upsamplers_0``: nearest-neighbour resize to ``size`` (default 2x), then a 3x3 ``conv``."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, size: tuple[int, int] | None = None) -> jax.Array:
        _, height, width, channels = x.shape
        if size is None or tuple(size) == (2 * height, 2 * width):
            x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        else:
            # torch's F.interpolate(size=..., mode="nearest"): source index floor(i * in / out).
            rows = (jnp.arange(size[0]) * height) // size[0]
            cols = (jnp.arange(size[1]) * width) // size[1]
            x = x[:, rows][:, :, cols]
        return _conv(channels, 3, self.dtype, self.param_dtype, "conv")(x)


# Rematerialised blocks recompute their activations in the backward pass instead of storing them.
_REMAT_CLASSES = (nn.remat(ResnetBlock2D), nn.remat(Transformer2DModel))


def _block_classes(remat: bool) -> tuple[type[ResnetBlock2D], type[Transformer2DModel]]:
    return _REMAT_CLASSES if remat else (ResnetBlock2D, Transformer2DModel)


class UNetBlock(nn.Module):
    """One down or up block: ``resnets_j`` each followed by ``attentions_j`` when ``heads`` > 0.

    Down (``CrossAttnDownBlock2D`` / ``DownBlock2D``): ``__call__(x, temb, context)`` -> (x, skips) with
    one skip per resnet plus the downsampled output. Up (``CrossAttnUpBlock2D`` / ``UpBlock2D``):
    ``__call__(x, temb, context, skips, upsample_size)`` concatenates [x, skip] before each resnet, the
    last skip first, and returns x upsampled to ``upsample_size`` (or 2x) unless it is the last block.
    """

    features: int
    num_layers: int
    heads: int  # 0: no attentions (DownBlock2D / UpBlock2D)
    transformer_layers: int
    groups: int
    eps: float
    up: bool
    resample: bool  # add the downsampler / upsampler
    use_linear_projection: bool = False
    only_cross_attention: bool = False
    downsample_padding: int = 1
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array, context: jax.Array, skips: Sequence[jax.Array] = (),
                 upsample_size: tuple[int, int] | None = None) -> jax.Array | tuple[jax.Array, tuple]:
        dt, pdt = self.dtype, self.param_dtype
        resnet_cls, transformer_cls = _block_classes(self.remat)
        skips, outputs = list(skips), []
        for j in range(self.num_layers):
            if self.up:
                x = jnp.concatenate([x, skips.pop().astype(x.dtype)], axis=-1)
            x = resnet_cls(self.features, self.groups, self.eps, 1.0, dt, pdt, name=f"resnets_{j}")(x, temb)
            if self.heads:
                x = transformer_cls(self.heads, self.transformer_layers, self.groups, self.use_linear_projection,
                                    self.only_cross_attention, dt, pdt, name=f"attentions_{j}")(x, context)
            outputs.append(x)
        if self.up:
            if self.resample:
                x = Upsample2D(dt, pdt, name="upsamplers_0")(x, upsample_size)
            return x
        if self.resample:
            x = Downsample2D(self.downsample_padding, dt, pdt, name="downsamplers_0")(x)
            outputs.append(x)
        return x, tuple(outputs)


class UNetMidBlock2DCrossAttn(nn.Module):
    """``resnets_0`` -> ``attentions_0`` -> ``resnets_1`` at the lowest resolution; (B, h, w, C) -> same."""

    heads: int
    transformer_layers: int
    groups: int
    eps: float
    output_scale_factor: float = 1.0
    use_linear_projection: bool = False
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array, context: jax.Array) -> jax.Array:
        dt, pdt, channels = self.dtype, self.param_dtype, x.shape[-1]
        resnet_cls, transformer_cls = _block_classes(self.remat)
        x = resnet_cls(channels, self.groups, self.eps, self.output_scale_factor, dt, pdt, name="resnets_0")(x, temb)
        # diffusers builds the mid block's transformer without only_cross_attention.
        x = transformer_cls(self.heads, self.transformer_layers, self.groups, self.use_linear_projection, False,
                            dt, pdt, name="attentions_0")(x, context)
        return resnet_cls(channels, self.groups, self.eps, self.output_scale_factor, dt, pdt,
                          name="resnets_1")(x, temb)
