"""diffusers' ``UNet2DConditionModel`` in the Stable Diffusion 1.x / 2.x layouts, in Flax, loaded from a folder.

    from edt_jax.models.sd import load_unet
    unet, params = load_unet("stable-diffusion-v1-5")       # a pipeline folder, or its unet/ folder
    eps = unet.apply({"params": params}, latents, t, text)  # (B, h, w, 4), (B,) or scalar, (B, 77, 768)

Everything is NHWC: latents (B, H, W, in_channels) -> float32 (B, H, W, out_channels). The blocks live in
``sd_blocks``; their submodules carry the diffusers names with ``_i`` for ``.i``, so that ``unet_name``
maps each Flax path to its state-dict key with one regex, and the library's ``match_state_dict`` checks
every tensor by name and shape.

Supported configurations: the down blocks ``CrossAttnDownBlock2D`` / ``DownBlock2D``, the mid block
``UNetMidBlock2DCrossAttn`` (or none), the up blocks ``UpBlock2D`` / ``CrossAttnUpBlock2D``, positional
timestep embedding, SiLU, conv (SD 1.x) or linear (SD 2.x, ``use_linear_projection``) transformer
projections, ints or per-block lists for heads, layers and transformer depths. Anything else (class or
added embeddings, ``time_cond_proj_dim``, ``encoder_hid_dim``, other block types, ...) is refused by
``unet_config_from_dict`` with a one-line ``ValueError`` naming the key, unless it holds its default.

Historic naming: in SD 1.x / 2.x configs ``attention_head_dim`` is the number of heads per block (diffusers
reads ``num_attention_heads or attention_head_dim``); the head width is channels // heads.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from edt_jax import paths
from edt_jax.checks import check_int
from edt_jax.models.convert import load_state_dict, match_state_dict, mismatch_report
from edt_jax.models.layers import Dtype
from edt_jax.models.sd_blocks import (
    TimestepEmbedding,
    UNetBlock,
    UNetMidBlock2DCrossAttn,
    _group_norm,
    timestep_features,
)
from edt_jax.models.vae import _conv
from edt_jax.models.vae_convert import WEIGHT_FILES, _squeeze_1x1_conv

DOWN_BLOCK_TYPES = ("CrossAttnDownBlock2D", "DownBlock2D")
UP_BLOCK_TYPES = ("CrossAttnUpBlock2D", "UpBlock2D")
MID_BLOCK_TYPES = ("UNetMidBlock2DCrossAttn", None)

# Keys this port does not implement: accepted only at these values (the first is diffusers' default).
FIXED_KEYS: dict[str, tuple] = {
    "class_embed_type": (None,), "num_class_embeds": (None,), "class_embeddings_concat": (False,),
    "projection_class_embeddings_input_dim": (None,), "addition_embed_type": (None,),
    "addition_time_embed_dim": (None,), "time_cond_proj_dim": (None,), "encoder_hid_dim": (None,),
    "encoder_hid_dim_type": (None,), "time_embedding_type": ("positional",), "time_embedding_act_fn": (None,),
    "timestep_post_act": (None,), "resnet_time_scale_shift": ("default",), "dual_cross_attention": (False,),
    "attention_type": ("default",), "act_fn": ("silu", "swish"), "reverse_transformer_layers_per_block": (None,),
}
# Keys that do not change what these block types compute: diffusers passes resnet_skip_time_act,
# resnet_out_scale_factor, cross_attention_norm and mid_block_only_cross_attention only to the Simple*/
# Resnet* blocks, addition_embed_type_num_heads only with an addition embedding; upcast_attention is what
# this port always does (float32 logits); dropout does not matter at inference.
IGNORED_KEYS = frozenset({"dropout", "upcast_attention", "resnet_skip_time_act",
                          "resnet_out_scale_factor", "cross_attention_norm", "mid_block_only_cross_attention",
                          "addition_embed_type_num_heads"})
# diffusers' defaults for the keys read below (UNet2DConditionModel.__init__).
DEFAULTS = {
    "in_channels": 4, "out_channels": 4, "center_input_sample": False, "flip_sin_to_cos": True, "freq_shift": 0,
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "mid_block_type": "UNetMidBlock2DCrossAttn", "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "only_cross_attention": False, "block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 2,
    "downsample_padding": 1, "mid_block_scale_factor": 1, "norm_num_groups": 32, "norm_eps": 1e-5,
    "cross_attention_dim": 1280, "transformer_layers_per_block": 1, "attention_head_dim": 8,
    "num_attention_heads": None, "use_linear_projection": False, "time_embedding_dim": None, "conv_in_kernel": 3,
    "conv_out_kernel": 3, "sample_size": None,
}


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """A supported ``UNet2DConditionModel`` configuration, with every per-block value spelled out per down block.

    The defaults are Stable Diffusion 1.x (``runwayml/stable-diffusion-v1-5``). Up block i uses entry
    n-1-i of the per-block tuples, as diffusers does; the mid block uses the last entry.
    """

    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    down_block_types: tuple[str, ...] = DEFAULTS["down_block_types"]
    up_block_types: tuple[str, ...] = DEFAULTS["up_block_types"]
    mid_block_type: str | None = "UNetMidBlock2DCrossAttn"
    layers_per_block: tuple[int, ...] = (2, 2, 2, 2)
    num_attention_heads: tuple[int, ...] = (8, 8, 8, 8)
    transformer_layers_per_block: tuple[int, ...] = (1, 1, 1, 1)
    only_cross_attention: tuple[bool, ...] = (False, False, False, False)
    cross_attention_dim: int = 768
    use_linear_projection: bool = False
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: float = 0.0
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0
    center_input_sample: bool = False
    time_embedding_dim: int | None = None  # None: 4 * block_out_channels[0]
    conv_in_kernel: int = 3
    conv_out_kernel: int = 3
    sample_size: int | None = None  # the latent side it was trained at (informative: any size runs)

    def __post_init__(self) -> None:
        _check_config(self)

    @property
    def time_embed_dim(self) -> int:
        return self.time_embedding_dim or 4 * self.block_out_channels[0]

    def summary(self) -> str:
        """The fields that decide the tensor shapes, for error messages."""
        return (f"block_out_channels={self.block_out_channels}, layers_per_block={self.layers_per_block}, "
                f"heads={self.num_attention_heads}, cross_attention_dim={self.cross_attention_dim}, "
                f"use_linear_projection={self.use_linear_projection}")


def unet_config_from_dict(cfg: Mapping) -> UNetConfig:
    """The ``UNetConfig`` of a diffusers ``unet/config.json`` dict; keys starting with ``_`` are ignored.

    Missing keys take diffusers' defaults. Raises a one-line ``ValueError`` for an unsupported value
    (naming the key, the value and what is accepted) or an unknown key.
    """
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    unknown = sorted(set(cfg) - set(DEFAULTS) - set(FIXED_KEYS) - IGNORED_KEYS)
    if unknown:
        raise ValueError(f"unknown UNet2DConditionModel config key(s) {unknown}; this port reads the keys of "
                         f"diffusers 0.42")
    for key, accepted in FIXED_KEYS.items():
        if key in cfg and cfg[key] not in accepted:
            raise ValueError(f"UNet config {key}={cfg[key]!r} is not supported; accepted: "
                             f"{' or '.join(map(repr, accepted))} (the Stable Diffusion 1.x / 2.x layouts)")
    get = {**DEFAULTS, **cfg}.__getitem__
    down, up, mid = _types("down_block_types", get, DOWN_BLOCK_TYPES), _types("up_block_types", get, UP_BLOCK_TYPES), \
        get("mid_block_type")
    if mid not in MID_BLOCK_TYPES:
        raise ValueError(f"UNet config mid_block_type={mid!r} is not supported; accepted: "
                         f"{' or '.join(map(repr, MID_BLOCK_TYPES))}")
    n = len(down)
    heads = get("num_attention_heads") or get("attention_head_dim")  # diffusers' historic naming, see above
    cross = _per_block("cross_attention_dim", get("cross_attention_dim"), n)
    if len(set(cross)) != 1:
        raise ValueError(f"UNet config cross_attention_dim={list(cross)} is not supported; accepted: one width "
                         f"for all blocks (one encoder_hidden_states feeds them all)")
    groups = get("norm_num_groups")
    if groups is None:
        raise ValueError("UNet config norm_num_groups=None is not supported; accepted: an integer")
    return UNetConfig(
        in_channels=get("in_channels"), out_channels=get("out_channels"),
        block_out_channels=tuple(get("block_out_channels")), down_block_types=down, up_block_types=up,
        mid_block_type=mid, layers_per_block=_per_block("layers_per_block", get("layers_per_block"), n),
        num_attention_heads=_per_block("attention_head_dim", heads, n),
        transformer_layers_per_block=_per_block("transformer_layers_per_block",
                                                get("transformer_layers_per_block"), n),
        only_cross_attention=_per_block("only_cross_attention", get("only_cross_attention"), n, bool),
        cross_attention_dim=cross[0], use_linear_projection=bool(get("use_linear_projection")),
        norm_num_groups=groups, norm_eps=float(get("norm_eps")), flip_sin_to_cos=bool(get("flip_sin_to_cos")),
        freq_shift=float(get("freq_shift")), downsample_padding=get("downsample_padding"),
        mid_block_scale_factor=float(get("mid_block_scale_factor")),
        center_input_sample=bool(get("center_input_sample")), time_embedding_dim=get("time_embedding_dim"),
        conv_in_kernel=get("conv_in_kernel"), conv_out_kernel=get("conv_out_kernel"),
        sample_size=get("sample_size"))


def _types(key: str, get, accepted: tuple[str, ...]) -> tuple[str, ...]:
    values = get(key)
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        raise ValueError(f"UNet config {key} must be a non-empty list of block names, got {values!r}")
    for value in values:
        if value not in accepted:
            raise ValueError(f"UNet config {key} entry {value!r} is not supported; accepted: {', '.join(accepted)}")
    return tuple(values)


def _per_block(key: str, value, n: int, kind: type = int) -> tuple:
    """A scalar repeated for the n down blocks, or a list of n scalars, as a tuple of ``kind``."""
    values = [value] * n if isinstance(value, (bool, int)) else value
    if not isinstance(values, Sequence) or len(values) != n or not all(isinstance(v, (bool, int)) for v in values):
        raise ValueError(f"UNet config {key} must be an integer or a list of {n} integers (one per down block), "
                         f"got {value!r}")
    return tuple(kind(v) for v in values)


def _check_config(cfg: UNetConfig) -> None:
    n = len(cfg.block_out_channels)
    groups = check_int("norm_num_groups", cfg.norm_num_groups, 1)
    for name in ("down_block_types", "up_block_types", "layers_per_block", "num_attention_heads",
                 "transformer_layers_per_block", "only_cross_attention"):
        if len(getattr(cfg, name)) != n:
            raise ValueError(f"UNet config {name} has {len(getattr(cfg, name))} entries, but block_out_channels "
                             f"has {n}; give one per block")
    for i, (channels, heads) in enumerate(zip(cfg.block_out_channels, cfg.num_attention_heads, strict=True)):
        if check_int(f"block_out_channels[{i}]", channels, 1) % groups:
            raise ValueError(f"block_out_channels[{i}] = {channels} must be divisible by norm_num_groups = {groups}")
        if check_int(f"attention heads of block {i}", heads, 1) > channels:
            raise ValueError(f"block {i} has {heads} attention heads but only {channels} channels")
        check_int(f"layers_per_block[{i}]", cfg.layers_per_block[i], 1)
        check_int(f"transformer_layers_per_block[{i}]", cfg.transformer_layers_per_block[i], 1)
    for name in ("in_channels", "out_channels", "cross_attention_dim"):
        check_int(name, getattr(cfg, name), 1)
    check_int("downsample_padding", cfg.downsample_padding, 0)
    for name in ("conv_in_kernel", "conv_out_kernel"):
        if check_int(name, getattr(cfg, name), 1) % 2 == 0:
            raise ValueError(f"UNet config {name} must be odd (same-size convolution), got {getattr(cfg, name)}")
    for name in ("time_embedding_dim", "sample_size"):
        if getattr(cfg, name) is not None:
            check_int(name, getattr(cfg, name), 1)


class UNet2DConditionModel(nn.Module):
    """diffusers' ``UNet2DConditionModel`` for the configurations ``UNetConfig`` describes.

    ``apply({"params": params}, x, timesteps, encoder_hidden_states)``: x (B, H, W, in_channels) NHWC,
    timesteps (B,) or a scalar (int or float; diffusers' discrete steps 0..999 for SD), encoder_hidden_states
    (B, L, cross_attention_dim) -> float32 (B, H, W, out_channels). Any H, W work (diffusers' odd-size
    upsampling included); multiples of 2 ** (len(block_out_channels) - 1) avoid it.

    Options: ``dtype`` is the compute dtype of convolutions and linear layers (norms and softmax stay
    float32); parameters are kept in ``param_dtype``; ``remat`` recomputes each resnet and transformer
    block in the backward pass instead of storing its activations (for training under memory pressure).
    """

    config: UNetConfig = UNetConfig()
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    remat: bool = False

    @property
    def sample_size(self) -> int | None:
        """The latent side of the training images (``config.json``'s ``sample_size``), or None."""
        return self.config.sample_size

    @nn.compact
    def __call__(self, x: jax.Array, timesteps: jax.Array | int | float, encoder_hidden_states: jax.Array) -> jax.Array:
        cfg, dt, pdt = self.config, self.dtype, self.param_dtype
        t, context = self._check_inputs(x, timesteps, encoder_hidden_states)
        if cfg.center_input_sample:
            x = 2 * x - 1.0
        channels = cfg.block_out_channels
        last = len(channels) - 1
        features = timestep_features(t, channels[0], flip_sin_to_cos=cfg.flip_sin_to_cos, freq_shift=cfg.freq_shift)
        temb = TimestepEmbedding(cfg.time_embed_dim, dt, pdt, name="time_embedding")(features)
        common = dict(groups=cfg.norm_num_groups, eps=cfg.norm_eps, use_linear_projection=cfg.use_linear_projection,
                      remat=self.remat, dtype=dt, param_dtype=pdt)

        h = _conv(channels[0], cfg.conv_in_kernel, dt, pdt, "conv_in")(x.astype(dt))
        skips = [h]
        for i, kind in enumerate(cfg.down_block_types):
            h, outputs = UNetBlock(channels[i], cfg.layers_per_block[i],
                                   cfg.num_attention_heads[i] if kind.startswith("CrossAttn") else 0,
                                   cfg.transformer_layers_per_block[i], up=False, resample=i < last,
                                   only_cross_attention=cfg.only_cross_attention[i],
                                   downsample_padding=cfg.downsample_padding, name=f"down_blocks_{i}",
                                   **common)(h, temb, context)
            skips.extend(outputs)
        if cfg.mid_block_type is not None:
            h = UNetMidBlock2DCrossAttn(cfg.num_attention_heads[-1], cfg.transformer_layers_per_block[-1],
                                        output_scale_factor=cfg.mid_block_scale_factor, name="mid_block",
                                        **common)(h, temb, context)
        for i, kind in enumerate(cfg.up_block_types):
            j = last - i  # up block i mirrors down block j
            count = cfg.layers_per_block[j] + 1
            block_skips, skips = skips[-count:], skips[:-count]
            # The next up block works at the resolution of the skips left over (diffusers' upsample_size).
            size = tuple(skips[-1].shape[1:3]) if i < last else None
            h = UNetBlock(channels[j], count, cfg.num_attention_heads[j] if kind.startswith("CrossAttn") else 0,
                          cfg.transformer_layers_per_block[j], up=True, resample=i < last,
                          only_cross_attention=cfg.only_cross_attention[j], name=f"up_blocks_{i}",
                          **common)(h, temb, context, block_skips, size)
        h = nn.silu(_group_norm(cfg.norm_num_groups, pdt, "conv_norm_out", eps=cfg.norm_eps)(h))
        return _conv(cfg.out_channels, cfg.conv_out_kernel, dt, pdt, "conv_out")(h).astype(jnp.float32)

    def _check_inputs(self, x: jax.Array, timesteps, context: jax.Array) -> tuple[jax.Array, jax.Array]:
        cfg = self.config
        if x.ndim != 4 or x.shape[-1] != cfg.in_channels:
            raise ValueError(f"x must be NHWC latents (B, H, W, {cfg.in_channels}), got shape {tuple(x.shape)}")
        batch = x.shape[0]
        t = jnp.asarray(timesteps, jnp.float32)
        if t.ndim > 1 or t.size not in (1, batch):
            raise ValueError(f"timesteps must be a scalar or of shape ({batch},), got shape {tuple(t.shape)}")
        if context.ndim != 3 or context.shape[0] != batch or context.shape[-1] != cfg.cross_attention_dim:
            raise ValueError(f"encoder_hidden_states must be (B={batch}, L, {cfg.cross_attention_dim}), "
                             f"got shape {tuple(context.shape)}")
        return jnp.broadcast_to(t.reshape(-1), (batch,)), context.astype(self.dtype)


def unet_name(path: tuple[str, ...]) -> str:
    """Flax path -> diffusers key: ('down_blocks_0', 'attentions_0', 'transformer_blocks_0', 'attn1', 'to_out_0',
    'kernel') -> 'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.weight'.

    ``_i`` becomes ``.i`` except in ``linear_1`` / ``linear_2`` (``time_embedding.linear_1``); kernels and
    norm scales are ``weight``.
    """
    parts = [re.sub(r"(?<!linear)_(\d+)$", r".\1", part) for part in path[:-1]]
    parts.append("weight" if path[-1] in ("kernel", "scale") else path[-1])
    return ".".join(parts)


def abstract_unet_params(module: UNet2DConditionModel) -> dict:
    """Shape/dtype structs of the UNet's params, without allocating them (cheap for the full SD UNet)."""
    cfg = module.config
    side = 2 ** (len(cfg.block_out_channels) - 1)
    x = jax.ShapeDtypeStruct((1, side, side, cfg.in_channels), jnp.float32)
    t = jax.ShapeDtypeStruct((1,), jnp.float32)
    context = jax.ShapeDtypeStruct((1, 1, cfg.cross_attention_dim), jnp.float32)
    return nn.meta.unbox(jax.eval_shape(module.init, jax.random.key(0), x, t, context)["params"])


def unet_params_from_torch(state_dict: Mapping[str, np.ndarray], module: UNet2DConditionModel) -> dict:
    """Flax ``params`` for ``module`` from a diffusers ``UNet2DConditionModel`` state dict.

    Args:
      state_dict: diffusers name -> array (numpy, or anything ``np.asarray`` accepts, e.g. CPU torch tensors);
        a ``module.`` prefix is stripped. Linear (out, in) and conv (out, in, kh, kw) layouts are converted;
        a 1x1 conv stored where the module has a Linear (a conv ``proj_in`` for an SD 2.x layout) is accepted,
        since both compute the same map.
      module: the Flax module whose parameters to fill; its configuration must match the checkpoint's.

    Returns the nested params dict in the module's ``param_dtype``. Raises one one-line ``ValueError``
    naming the missing, mis-shaped and unexpected tensors.
    """
    match = match_state_dict(state_dict, abstract_unet_params(module), unet_name, adapt=_squeeze_1x1_conv)
    problems = mismatch_report(match)
    if problems:
        raise ValueError(f"UNet state dict does not fit {module.config.summary()}: {problems}")
    return match.nested()


def find_unet_files(path: paths.PathLike) -> tuple[epath.Path, epath.Path]:
    """(config.json, weights file) of the diffusers UNet folder ``path``, or of ``path/unet`` (a pipeline root).

    Raises a one-line ``FileNotFoundError`` saying what is expected (nothing is downloaded).
    """
    path = paths.as_path(path)
    for folder in (path, path / "unet"):
        config = folder / "config.json"
        if config.is_file():
            for name in WEIGHT_FILES:
                if (folder / name).is_file():
                    return config, folder / name
    raise FileNotFoundError(
        f"no diffusers UNet at {str(path)!r}: expected a unet/ folder holding config.json and {WEIGHT_FILES[0]} "
        f"(or {WEIGHT_FILES[1]}, which needs the torch extra), or a pipeline folder with such a unet/ subfolder; "
        f"download the weights yourself (nothing is fetched at run time)")


def load_unet(folder: paths.PathLike, *, dtype: Dtype | str = jnp.float32,
              remat: bool = False) -> tuple[UNet2DConditionModel, dict]:
    """(module, params) from a diffusers ``unet/`` folder or a pipeline root holding one.

    ``dtype`` is the compute dtype (e.g. ``"bfloat16"``); parameters are float32 whatever the file stores.
    """
    config_path, weights_path = find_unet_files(folder)
    try:
        compute = jnp.dtype(dtype)
    except TypeError:
        compute = None
    if compute is None or not jnp.issubdtype(compute, jnp.floating):
        raise ValueError(f"dtype must be a floating dtype such as 'float32' or 'bfloat16', got {dtype!r}")
    config = unet_config_from_dict(json.loads(config_path.read_text()))
    module = UNet2DConditionModel(config, dtype=compute, param_dtype=jnp.float32, remat=remat)
    return module, unet_params_from_torch(load_state_dict(weights_path), module)


__all__ = ["UNet2DConditionModel", "UNetConfig", "abstract_unet_params", "find_unet_files", "load_unet",
           "unet_config_from_dict", "unet_name", "unet_params_from_torch"]
