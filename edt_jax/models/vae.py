"""The Stable Diffusion VAE (diffusers ``AutoencoderKL``) in Flax, layer for layer.

    from edt_jax.models.vae import SD_VAE_SCALE, create_vae, load_vae_weights, sample_posterior
    vae = create_vae()                                            # the SD VAE: 83,653,863 parameters
    variables = {"params": load_vae_weights("sd-vae-ft-ema", vae)}   # a local diffusers VAE folder
    mean, logvar = vae.apply(variables, images, method=vae.encode)  # images (B, H, W, 3) in [-1, 1]
    latents = SD_VAE_SCALE * sample_posterior(mean, logvar, key)   # (B, H/8, W/8, 4)
    images = vae.apply(variables, latents / SD_VAE_SCALE, method=vae.decode)

Submodules carry the diffusers names with ``_i`` for ``.i`` (``encoder/down_blocks_1/resnets_0/conv1``
is ``encoder.down_blocks.1.resnets.0.conv1``), which ``vae_convert`` relies on. Everything is NHWC.
Convolutions and linear layers compute in ``dtype``; GroupNorm and the attention softmax always run in
float32, since bfloat16 statistics over 512 x 32 x 32 activations drift visibly in the decoded images.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from edt_jax import paths
from edt_jax.checks import check_int
from edt_jax.models.layers import Dtype

# Latents are multiplied by this before the diffusion model sees them (unit variance for the SD VAE).
SD_VAE_SCALE = 0.18215

# diffusers clamps the posterior log-variance to this range before exponentiating it.
LOGVAR_RANGE = (-30.0, 20.0)


def _group_norm(groups: int, param_dtype: Dtype, name: str, eps: float = 1e-6) -> nn.GroupNorm:
    # eps 1e-6 everywhere in the SD VAE (the SD UNet's resnets take its config's norm_eps); float32 statistics with
    # the exact (two-pass) variance to match torch at 1e-5.
    return nn.GroupNorm(num_groups=groups, epsilon=eps, dtype=jnp.float32, param_dtype=param_dtype,
                        use_fast_variance=False, name=name)


def _conv(features: int, kernel: int, dtype: Dtype, param_dtype: Dtype, name: str, stride: int = 1,
          padding: int | str | None = None) -> nn.Conv:
    pad = kernel // 2 if padding is None else padding  # torch's padding=1 for 3x3, 0 for 1x1
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=pad, dtype=dtype,
                   param_dtype=param_dtype, name=name)


class ResnetBlock2D(nn.Module):
    """GN -> SiLU -> conv3x3 -> GN -> SiLU -> conv3x3, plus the input (1x1 ``conv_shortcut`` if C changes)."""

    features: int
    groups: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.silu(_group_norm(self.groups, self.param_dtype, "norm1")(x))
        h = _conv(self.features, 3, self.dtype, self.param_dtype, "conv1")(h)
        h = nn.silu(_group_norm(self.groups, self.param_dtype, "norm2")(h))
        h = _conv(self.features, 3, self.dtype, self.param_dtype, "conv2")(h)  # dropout is 0 in the SD VAE
        if x.shape[-1] != self.features:
            x = _conv(self.features, 1, self.dtype, self.param_dtype, "conv_shortcut")(x)
        return (x + h).astype(self.dtype)  # output_scale_factor 1


class AttentionBlock(nn.Module):
    """Single-head self-attention over the H*W positions, with GroupNorm in front and a residual."""

    groups: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        batch, height, width, channels = x.shape
        h = _group_norm(self.groups, self.param_dtype, "group_norm")(x).reshape(batch, height * width, channels)
        q, k, v = (nn.Dense(channels, dtype=self.dtype, param_dtype=self.param_dtype, name=n)(h)
                   for n in ("to_q", "to_k", "to_v"))
        scores = jnp.einsum("bqc,bkc->bqk", q, k, preferred_element_type=jnp.float32) * channels ** -0.5
        weights = jax.nn.softmax(scores, axis=-1).astype(self.dtype)  # diffusers' upcast_softmax
        h = jnp.einsum("bqk,bkc->bqc", weights, v)
        h = nn.Dense(channels, dtype=self.dtype, param_dtype=self.param_dtype, name="to_out_0")(h)
        return (x + h.reshape(x.shape)).astype(self.dtype)  # rescale_output_factor 1


class MidBlock(nn.Module):
    """resnets_0 -> attentions_0 -> resnets_1 at the lowest resolution (diffusers ``UNetMidBlock2D``)."""

    groups: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        x = ResnetBlock2D(channels, self.groups, self.dtype, self.param_dtype, name="resnets_0")(x)
        x = AttentionBlock(self.groups, self.dtype, self.param_dtype, name="attentions_0")(x)
        return ResnetBlock2D(channels, self.groups, self.dtype, self.param_dtype, name="resnets_1")(x)


class Resample(nn.Module):
    """``Downsample2D`` (pad bottom/right by 1, 3x3 conv stride 2) or ``Upsample2D`` (nearest 2x, 3x3 conv)."""

    up: bool
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        if self.up:
            x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
            return _conv(channels, 3, self.dtype, self.param_dtype, "conv")(x)
        # The asymmetric (0, 1, 0, 1) pad of diffusers (padding=0 in the conv itself).
        x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
        return _conv(channels, 3, self.dtype, self.param_dtype, "conv", stride=2, padding="VALID")(x)


class ResolutionBlock(nn.Module):
    """``num_layers`` resnets to ``features`` channels, then an optional resampler (Down/UpDecoderBlock2D)."""

    features: int
    num_layers: int
    groups: int
    resample: str | None  # "down", "up" or None (the last block of either path)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for j in range(self.num_layers):
            x = ResnetBlock2D(self.features, self.groups, self.dtype, self.param_dtype, name=f"resnets_{j}")(x)
        if self.resample is not None:
            name = "upsamplers_0" if self.resample == "up" else "downsamplers_0"
            x = Resample(self.resample == "up", self.dtype, self.param_dtype, name=name)(x)
        return x


class Encoder(nn.Module):
    """(B, H, W, C_in) -> (B, H/f, W/f, out_channels), f = 2 ** (len(block_out_channels) - 1)."""

    block_out_channels: tuple[int, ...]
    layers_per_block: int
    groups: int
    out_channels: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dt, pdt, last = self.dtype, self.param_dtype, len(self.block_out_channels) - 1
        x = _conv(self.block_out_channels[0], 3, dt, pdt, "conv_in")(x)
        for i, features in enumerate(self.block_out_channels):
            x = ResolutionBlock(features, self.layers_per_block, self.groups, None if i == last else "down", dt, pdt,
                                name=f"down_blocks_{i}")(x)
        x = MidBlock(self.groups, dt, pdt, name="mid_block")(x)
        x = nn.silu(_group_norm(self.groups, pdt, "conv_norm_out")(x))
        return _conv(self.out_channels, 3, dt, pdt, "conv_out")(x)


class Decoder(nn.Module):
    """(B, h, w, C_latent) -> (B, h*f, w*f, out_channels); up blocks run through the channels reversed."""

    block_out_channels: tuple[int, ...]
    layers_per_block: int
    groups: int
    out_channels: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        dt, pdt, last = self.dtype, self.param_dtype, len(self.block_out_channels) - 1
        x = _conv(self.block_out_channels[-1], 3, dt, pdt, "conv_in")(z)
        x = MidBlock(self.groups, dt, pdt, name="mid_block")(x)
        for i, features in enumerate(reversed(self.block_out_channels)):
            x = ResolutionBlock(features, self.layers_per_block + 1, self.groups, None if i == last else "up", dt, pdt,
                                name=f"up_blocks_{i}")(x)
        x = nn.silu(_group_norm(self.groups, pdt, "conv_norm_out")(x))
        return _conv(self.out_channels, 3, dt, pdt, "conv_out")(x)


class AutoencoderKL(nn.Module):
    """The KL autoencoder; build it with ``create_vae`` (which also converts dtype names).

    Methods (``vae.apply(variables, ..., method=vae.encode)``):
      ``encode(x)``: images (B, H, W, in_channels), H and W divisible by ``downscale`` -> float32
        ``(mean, logvar)``, each (B, H/f, W/f, latent_channels), logvar clamped to [-30, 20].
      ``decode(z)``: latents (B, h, w, latent_channels) -> float32 images (B, h*f, w*f, out_channels).
      ``__call__(x, rng=None)``: encode, take the posterior mean (or a sample when ``rng`` is given), decode.
    """

    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    latent_channels: int = 4
    in_channels: int = 3
    out_channels: int = 3
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def __post_init__(self) -> None:
        _check_config(self.block_out_channels, self.layers_per_block, self.norm_num_groups, self.latent_channels,
                      self.in_channels, self.out_channels)
        super().__post_init__()

    @property
    def downscale(self) -> int:
        """Image side / latent side (8 for the SD VAE)."""
        return 2 ** (len(self.block_out_channels) - 1)

    def setup(self) -> None:
        common = dict(block_out_channels=tuple(self.block_out_channels), layers_per_block=self.layers_per_block,
                      groups=self.norm_num_groups, dtype=self.dtype, param_dtype=self.param_dtype)
        self.encoder = Encoder(out_channels=2 * self.latent_channels, **common)
        self.decoder = Decoder(out_channels=self.out_channels, **common)
        self.quant_conv = _conv(2 * self.latent_channels, 1, self.dtype, self.param_dtype, "quant_conv")
        self.post_quant_conv = _conv(self.latent_channels, 1, self.dtype, self.param_dtype, "post_quant_conv")

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Posterior ``(mean, logvar)`` (B, H/f, W/f, latent_channels) of images x (B, H, W, C) in [-1, 1]."""
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(f"encode needs NHWC images (B, H, W, {self.in_channels}), got shape {tuple(x.shape)}")
        f = self.downscale
        if x.shape[1] % f or x.shape[2] % f:
            raise ValueError(f"image sides {x.shape[1]}x{x.shape[2]} must be divisible by {f} "
                             f"(2 ** (len(block_out_channels) - 1))")
        moments = self.quant_conv(self.encoder(x)).astype(jnp.float32)
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return mean, jnp.clip(logvar, *LOGVAR_RANGE)

    def decode(self, z: jax.Array) -> jax.Array:
        """Images (B, h*f, w*f, out_channels), float32, from unscaled latents z (B, h, w, latent_channels)."""
        if z.ndim != 4 or z.shape[-1] != self.latent_channels:
            raise ValueError(f"decode needs NHWC latents (B, h, w, {self.latent_channels}), got shape {tuple(z.shape)}")
        return self.decoder(self.post_quant_conv(z)).astype(jnp.float32)

    def __call__(self, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """Reconstruction of x through the posterior mode (or a posterior sample drawn with ``rng``)."""
        mean, logvar = self.encode(x)
        return self.decode(mean if rng is None else sample_posterior(mean, logvar, rng))


def sample_posterior(mean: jax.Array, logvar: jax.Array, rng: jax.Array) -> jax.Array:
    """A draw mean + exp(logvar / 2) * N(0, 1) of the diagonal Gaussian posterior (same shape as mean)."""
    return mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)


def posterior_mode(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """The posterior's mode (its mean), for deterministic latents."""
    del logvar
    return mean


def create_vae(block_out_channels: Sequence[int] = (128, 256, 512, 512), layers_per_block: int = 2,
               norm_num_groups: int = 32, latent_channels: int = 4, *, in_channels: int = 3, out_channels: int = 3,
               dtype: Dtype | str = jnp.float32, param_dtype: Dtype | str = jnp.float32) -> AutoencoderKL:
    """An ``AutoencoderKL``; the defaults are the SD VAE (``stabilityai/sd-vae-ft-ema`` / ``-mse``).

    ``dtype`` is the compute dtype of convolutions and linear layers (e.g. ``"bfloat16"``); parameters
    are stored in ``param_dtype``. Raises a one-line ``ValueError`` for any invalid argument.
    """
    try:
        channels = tuple(block_out_channels)
    except TypeError:
        raise ValueError(f"block_out_channels must be a sequence of integers, got {block_out_channels!r}") from None
    dtypes = {}
    for key, value in (("dtype", dtype), ("param_dtype", param_dtype)):
        try:
            dtypes[key] = jnp.dtype(value)
        except TypeError:
            dtypes[key] = None
        if dtypes[key] is None or not jnp.issubdtype(dtypes[key], jnp.floating):
            raise ValueError(f"{key} must be a floating dtype such as 'float32' or 'bfloat16', got {value!r}")
    return AutoencoderKL(channels, layers_per_block, norm_num_groups, latent_channels, in_channels, out_channels,
                         **dtypes)


# diffusers AutoencoderKL config keys that must keep these values: the module implements no other.
_VAE_FIXED = {"act_fn": "silu", "shift_factor": None, "latents_mean": None, "latents_std": None,
              "use_quant_conv": True, "use_post_quant_conv": True, "mid_block_add_attention": True}


def load_vae(folder: paths.PathLike, *, dtype: Dtype | str = jnp.float32) -> tuple[AutoencoderKL, dict, float]:
    """``(vae, params, scaling_factor)`` of a diffusers ``AutoencoderKL`` folder (``config.json`` + weights), or
    of the ``vae/`` subfolder of a pipeline folder. Latents the diffusion model sees are ``scaling_factor * z``.

    Raises a one-line error for a missing folder or file, or a config value the module does not implement.
    """
    folder = paths.as_path(folder)
    if not (folder / "config.json").is_file() and (folder / "vae" / "config.json").is_file():
        folder = folder / "vae"
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"no VAE config at {str(config_path)!r}: expected a diffusers AutoencoderKL folder "
                                f"(config.json + diffusion_pytorch_model.safetensors) or a pipeline folder with vae/")
    cfg = json.loads(config_path.read_text())
    for key, value in _VAE_FIXED.items():
        if cfg.get(key, value) != value:
            raise ValueError(f"VAE config {str(config_path)!r}: {key}={cfg[key]!r} is not supported (only {value!r})")
    vae = create_vae(cfg.get("block_out_channels", (64,)), cfg.get("layers_per_block", 1),
                     cfg.get("norm_num_groups", 32), cfg.get("latent_channels", 4),
                     in_channels=cfg.get("in_channels", 3), out_channels=cfg.get("out_channels", 3), dtype=dtype)
    return vae, load_vae_weights(folder, vae), float(cfg.get("scaling_factor", SD_VAE_SCALE))


def _check_config(block_out_channels: Sequence[int], layers_per_block: int, norm_num_groups: int,
                  latent_channels: int, in_channels: int, out_channels: int) -> None:
    if not isinstance(block_out_channels, Sequence) or not block_out_channels:
        raise ValueError(f"block_out_channels must be a non-empty sequence of integers, got {block_out_channels!r}")
    groups = check_int("norm_num_groups", norm_num_groups, 1)
    for i, c in enumerate(block_out_channels):
        if check_int(f"block_out_channels[{i}]", c, 1) % groups:
            raise ValueError(f"block_out_channels[{i}] = {c} must be divisible by norm_num_groups = {groups}")
    check_int("layers_per_block", layers_per_block, 1)
    for name, value in (("latent_channels", latent_channels), ("in_channels", in_channels),
                        ("out_channels", out_channels)):
        check_int(name, value, 1)


# Re-exported here so that ``from edt_jax.models.vae import vae_params_from_torch`` works; vae_convert
# does not import this module, so there is no cycle.
from edt_jax.models.vae_convert import (  # noqa: E402
    abstract_vae_params,
    find_vae_weights,
    load_vae_weights,
    vae_params_from_torch,
)

__all__ = ["SD_VAE_SCALE", "AutoencoderKL", "abstract_vae_params", "create_vae", "find_vae_weights", "load_vae",
           "load_vae_weights", "posterior_mode", "sample_posterior", "vae_params_from_torch"]
