"""DisDiff's trainable networks: the factor encoder E and the decoder of N sub-gradient fields G_n; the
beta-VAE baseline's encoder / decoder.

Images are NHWC in [-1, 1]; H = W a multiple of 2**len(widths). The decoder follows the official
``openaimodel_shift.UNetModel``: one network shared by all N factors, told apart by rows of the orthogonal
embedding P = expm(W^T - W) added to the time embedding, with the factor code entering every up-path
block by FiLM (scale and shift after the norm) and a zero-initialised output, so G_n = 0 at step 0 and
training starts from the frozen DPM.

What is reused of the frozen DPM: its output eps_theta(x_t, t), an input of the decoder beside x_t (it is
computed anyway for the loss). The official decoder instead reads the UNet's down-path features and copies
its middle and up path. Our DPMs are EDT / DiT transformers on 4x4 patches, whose tokens are a coarse
8x8 grid at 32x32 (and masked / down-sampled inside EDT): a copy of their second half would work at that
coarse grid and cost as much as the DPM itself per factor, N times per step on a CPU budget. So the
factor-independent half here is the decoder's own conv down path, run once per image; only the up path
runs per factor, as one folded batch of N * B images (no Python loop over factors).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from edt_jax.disentangle.losses import orthogonal_embedding
from edt_jax.models.layers import timestep_embedding


def _groups(channels: int) -> int:
    return min(8, channels)


class Encoder(nn.Module):
    """x (B, H, W, C) -> codes (B, N, d): stride-2 4x4 convs, each with GroupNorm and ReLU, then one linear
    layer to N * d features, reshaped row-major (the official ``chunk(N, dim=1)`` + ``stack``)."""

    num_factors: int
    code_dim: int
    widths: Sequence[int] = (32, 64, 64, 128)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = x
        for i, width in enumerate(self.widths):
            h = nn.Conv(width, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), name=f"conv_{i}")(h)
            h = nn.relu(nn.GroupNorm(_groups(width), name=f"norm_{i}")(h))
        h = h.reshape(h.shape[0], -1)
        codes = nn.Dense(self.num_factors * self.code_dim, name="out")(h)
        return codes.reshape(x.shape[0], self.num_factors, self.code_dim)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, then norm with scale/shift from ``emb`` and, when given, from ``cond`` (FiLM),
    SiLU and a zero-initialised conv, plus a (1x1-projected) skip; the official ``ResBlockShift``."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array, emb: jax.Array, cond: jax.Array | None = None) -> jax.Array:
        h = nn.Conv(self.features, (3, 3), name="in_conv")(nn.silu(nn.GroupNorm(_groups(x.shape[-1]),
                                                                              name="in_norm")(x)))
        h = nn.GroupNorm(_groups(self.features), name="out_norm")(h)
        scale, shift = jnp.split(nn.Dense(2 * self.features, name="emb")(nn.silu(emb)), 2, axis=-1)
        h = h * (1 + scale[:, None, None]) + shift[:, None, None]
        if cond is not None:
            scale, shift = jnp.split(nn.Dense(2 * self.features, name="cond")(nn.silu(cond)), 2, axis=-1)
            h = h * (1 + scale[:, None, None]) + shift[:, None, None]
        h = nn.Conv(self.features, (3, 3), kernel_init=nn.initializers.zeros, name="out_conv")(nn.silu(h))
        skip = x if x.shape[-1] == self.features else nn.Conv(self.features, (1, 1), name="skip")(x)
        return skip + h


def _space_to_depth(x: jax.Array, p: int) -> jax.Array:
    """(B, H, W, C) -> (B, H/p, W/p, p*p*C)."""
    b, h, w, c = x.shape
    return x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h // p, w // p, p * p * c)


def _depth_to_space(x: jax.Array, p: int) -> jax.Array:
    """(B, h, w, p*p*C) -> (B, h*p, w*p, C); the inverse of ``_space_to_depth``."""
    b, h, w, c = x.shape
    c //= p * p
    return x.reshape(b, h, w, p, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h * p, w * p, c)


def _upsample(x: jax.Array) -> jax.Array:
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class SubGradientDecoder(nn.Module):
    """(x_t, eps_theta, t, codes) -> the N sub-gradient fields G (N, B, H, W, C).

    x_t, eps_theta (B, H, W, C); t (B,) integer timesteps; codes (B, N, d). The network works on
    ``patch_size`` x ``patch_size`` pixel blocks folded into channels (space-to-depth, as the DPM's patches):
    ``widths`` are the channels at 1/p, 1/2p, ... of the resolution; the orthogonal embedding has
    ``embed_dim`` >= N rows.
    """

    num_factors: int
    widths: Sequence[int] = (32, 64, 64)
    embed_dim: int = 64
    patch_size: int = 2

    @nn.compact
    def __call__(self, x_t: jax.Array, eps: jax.Array, t: jax.Array, codes: jax.Array) -> jax.Array:
        batch, n = x_t.shape[0], self.num_factors
        if codes.shape[:2] != (batch, n):
            raise ValueError(f"SubGradientDecoder: codes must be (B={batch}, N={n}, d), got {codes.shape}")
        if self.embed_dim < n:
            raise ValueError(f"SubGradientDecoder: embed_dim={self.embed_dim} must be >= num_factors={n}")
        temb_dim = 4 * self.widths[0]
        emb = nn.Dense(temb_dim, name="time_1")(nn.silu(nn.Dense(temb_dim, name="time_0")(
            timestep_embedding(t, self.widths[0]))))  # (B, E)

        # Factor-independent down path, once per image.
        inputs = _space_to_depth(jnp.concatenate([x_t, eps.astype(x_t.dtype)], -1), self.patch_size)
        h = nn.Conv(self.widths[0], (3, 3), name="stem")(inputs)
        skips = []
        for level, width in enumerate(self.widths):
            h = ResBlock(width, name=f"down_{level}")(h, emb)
            skips.append(h)
            if level < len(self.widths) - 1:
                h = nn.Conv(self.widths[level + 1], (3, 3), strides=(2, 2), name=f"downsample_{level}")(h)

        # Per-factor up path as one folded batch: row n * B + b is factor n of image b.
        weight = self.param("factor_weight", nn.initializers.normal(1.0), (self.embed_dim, self.embed_dim))
        factor_rows = orthogonal_embedding(weight)[:n]  # (N, D)
        factor_emb = nn.Dense(temb_dim, name="factor_emb")(factor_rows)  # (N, E)
        fold = lambda a: jnp.broadcast_to(a[None], (n, *a.shape)).reshape(n * batch, *a.shape[1:])  # noqa: E731
        emb_n = (emb[None] + factor_emb[:, None]).reshape(n * batch, temb_dim)
        cond_n = nn.Dense(temb_dim, name="code_emb")(jnp.swapaxes(codes, 0, 1).reshape(n * batch, -1))
        h = fold(h)
        for level in reversed(range(len(self.widths))):
            if level < len(self.widths) - 1:
                h = _upsample(h)
            h = jnp.concatenate([h, fold(skips[level])], axis=-1)
            h = ResBlock(self.widths[level], name=f"up_{level}")(h, emb_n, cond_n)
        h = nn.silu(nn.GroupNorm(_groups(self.widths[0]), name="out_norm")(h))
        p = self.patch_size
        fields = nn.Conv(x_t.shape[-1] * p * p, (3, 3), kernel_init=nn.initializers.zeros, name="out")(h)
        return _depth_to_space(fields, p).reshape(n, batch, *x_t.shape[1:])


class VAEDecoder(nn.Module):
    """z (B, K) -> image logits (B, H, W, C): a linear layer to a (H / 2**L)^2 map, then L transposed 4x4
    stride-2 convs (the encoder's widths reversed, GroupNorm and ReLU between)."""

    image_shape: tuple[int, int, int]
    widths: Sequence[int] = (32, 64, 64, 128)

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        size = self.image_shape[0] // 2 ** len(self.widths)
        h = nn.Dense(size * size * self.widths[-1], name="in")(z).reshape(z.shape[0], size, size, self.widths[-1])
        h = nn.relu(h)
        outs = [*reversed(self.widths[:-1]), self.image_shape[-1]]
        for i, width in enumerate(outs):
            h = nn.ConvTranspose(width, (4, 4), strides=(2, 2), padding="SAME", name=f"deconv_{i}")(h)
            if i < len(outs) - 1:
                h = nn.relu(nn.GroupNorm(_groups(width), name=f"norm_{i}")(h))
        return h


class BetaVAE(nn.Module):
    """The beta-VAE baseline: DisDiff's ``Encoder`` (same convs) with 2K outputs (mean, log-variance) and a
    ``VAEDecoder``. ``apply(v, x, noise)`` -> (mean, log_variance, logits) with z = mean + std * noise;
    ``apply(v, x, method="encode")`` -> (mean, log_variance), each (B, K)."""

    latent_dim: int
    image_shape: tuple[int, int, int]
    widths: Sequence[int] = (32, 64, 64, 128)

    def setup(self) -> None:
        self.encoder = Encoder(num_factors=2, code_dim=self.latent_dim, widths=self.widths)
        self.decoder = VAEDecoder(self.image_shape, self.widths)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        stats = self.encoder(x)
        return stats[:, 0], stats[:, 1]

    def __call__(self, x: jax.Array, noise: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        mean, log_variance = self.encode(x)
        return mean, log_variance, self.decoder(mean + jnp.exp(0.5 * log_variance) * noise)
