"""Building blocks shared by EDT and DiT: embedders, adaLN modulation, MLP, final layer, sin-cos tables.

Every module mirrors one class of the official PyTorch code (xinwangChen/EDT ``models_edt.py``,
facebookresearch/DiT ``models.py``) so that a state dict maps onto it name by name; the converter in
``convert.py`` relies on the submodule names chosen here. Parameters carry logical axis names
(``embed``, ``mlp``, ``heads``, ...) that ``edt_jax.training.sharding`` maps onto a device mesh.

Token layout: (B, L, D) with L = h * w tokens in row-major (h, w) order, as ``PatchEmbed`` flattens.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:  # base.py imports this module
    from edt_jax.models.base import ClassConditionalTransformer

Dtype = jnp.dtype | type

# PyTorch's nn.Linear weights are initialised by the official code with xavier_uniform (biases zero).
xavier_uniform = nn.initializers.xavier_uniform()
zeros = nn.initializers.zeros_init()


class TokenDense(nn.Dense):
    """nn.Dense that multiplies a (rows, in) matrix: leading axes are flattened first and restored after.

    Same parameters and result as nn.Dense. Why: for (B, L, in) inputs the kernel gradient is a
    contraction over two axes, which XLA's CPU backend lowers with layout copies around the product
    (benchmarks/cpu_kernels.py: 1.6x slower for an (8, 256, 312) x (312, 1248) layer).
    """

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        if inputs.ndim <= 2:
            return super().__call__(inputs)
        lead = inputs.shape[:-1]
        out = super().__call__(inputs.reshape(-1, inputs.shape[-1]))
        return out.reshape(*lead, out.shape[-1])


def dense(features: int, axes: tuple[str | None, str | None], *, use_bias: bool = True,
          kernel_init: Callable = xavier_uniform, dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32,
          name: str | None = None) -> nn.Dense:
    """A ``TokenDense`` whose kernel (in, out) and bias (out,) carry the logical axis names ``axes``."""
    bias_init = nn.with_logical_partitioning(zeros, (axes[1],))
    return TokenDense(features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
                      kernel_init=nn.with_logical_partitioning(kernel_init, axes), bias_init=bias_init, name=name)


def sum_over_batch(x: jax.Array) -> jax.Array:
    """x (B, ...) summed over its leading axis, as a product with a ones vector.

    Why: XLA's CPU backend reduces a short leading axis of a large array far slower than this dot
    (benchmarks/cpu_kernels.py: 86x for the (8, 6, 256, 256) gradient of a relative-position bias).
    """
    return jnp.einsum("b,b...->...", jnp.ones((x.shape[0],), x.dtype), x)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def broadcast_batch(x: jax.Array, batch: int) -> jax.Array:
    """x (...) -> (batch, ...); its gradient is ``sum_over_batch`` (a trainable table added to every sample)."""
    return jnp.broadcast_to(x, (batch, *x.shape))


def _broadcast_batch_fwd(x: jax.Array, batch: int) -> tuple[jax.Array, None]:
    return broadcast_batch(x, batch), None


def _broadcast_batch_bwd(batch: int, _, grad: jax.Array) -> tuple[jax.Array]:
    del batch
    return (sum_over_batch(grad),)


broadcast_batch.defvjp(_broadcast_batch_fwd, _broadcast_batch_bwd)


def layer_norm(dtype: Dtype | None, name: str | None = None) -> nn.LayerNorm:
    """LayerNorm(eps=1e-6) without affine parameters (the official ``elementwise_affine=False``).

    Flax computes the statistics in float32 even for bfloat16 inputs, which keeps adaLN stable.
    """
    return nn.LayerNorm(epsilon=1e-6, use_bias=False, use_scale=False, dtype=dtype, name=name)


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """x * (1 + scale) + shift with per-sample (B, D) shift/scale broadcast over the tokens of x (B, L, D)."""
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


class AdaLNModulation(nn.Module):
    """SiLU then Linear(cond_dim -> chunks * features), split into ``chunks`` (B, features) arrays.

    Official name: ``adaLN_modulation`` (an nn.Sequential whose Linear is index 1).
    """

    features: int
    chunks: int
    zero_init: bool
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, c: jax.Array) -> list[jax.Array]:
        init = zeros if self.zero_init else xavier_uniform
        out = dense(self.chunks * self.features, ("embed", "adaln"), kernel_init=init, dtype=self.dtype,
                    param_dtype=self.param_dtype, name="linear")(nn.silu(c))
        return jnp.split(out, self.chunks, axis=-1)


class Mlp(nn.Module):
    """timm's Mlp: fc1 -> tanh-GELU -> fc2 (dropout 0)."""

    hidden_features: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        x = dense(self.hidden_features, ("embed", "mlp"), dtype=self.dtype, param_dtype=self.param_dtype,
                  name="fc1")(x)
        x = nn.gelu(x, approximate=True)
        return dense(features, ("mlp", "embed"), dtype=self.dtype, param_dtype=self.param_dtype, name="fc2")(x)


class PatchEmbed(nn.Module):
    """p x p patches -> tokens: a stride-p convolution, flattened row-major to (B, (H/p)(W/p), D)."""

    features: int
    patch_size: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        p = self.patch_size
        # The official code initialises the conv like a Linear on its (out, in*p*p) view.
        init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform", in_axis=(0, 1, 2), out_axis=-1)
        bias_init = nn.with_logical_partitioning(zeros, ("embed",))
        x = nn.Conv(self.features, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
                    param_dtype=self.param_dtype, name="proj",
                    kernel_init=nn.with_logical_partitioning(init, (None, None, None, "embed")),
                    bias_init=bias_init)(x)
        batch, h, w, d = x.shape
        return x.reshape(batch, h * w, d)


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0, *, flip_sin_to_cos: bool = True,
                       freq_shift: float = 0.0) -> jax.Array:
    """Sinusoidal features of (possibly fractional) timesteps t (B,) -> (B, dim), [cos, sin] order.

    Computed in float32 exactly as the official code does (frequencies in float32), since t reaches
    ~1000 and a different rounding of the frequencies would shift the angles by ~1e-4. diffusers'
    ``get_timestep_embedding`` options: ``flip_sin_to_cos=False`` gives [sin, cos]; ``freq_shift`` divides
    by half - freq_shift instead of half. A zero column is appended for odd ``dim``.
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift))
    args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None]
    parts = [jnp.cos(args), jnp.sin(args)] if flip_sin_to_cos else [jnp.sin(args), jnp.cos(args)]
    if dim % 2:
        parts.append(jnp.zeros_like(args[:, :1]))
    return jnp.concatenate(parts, axis=-1)


class TimestepEmbedder(nn.Module):
    """t (B,) -> (B, D): 256 sinusoid features, Linear, SiLU, Linear (official ``mlp.0`` / ``mlp.2``)."""

    features: int
    frequency_embedding_size: int = 256
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, t: jax.Array) -> jax.Array:
        init = nn.initializers.normal(0.02)
        x = timestep_embedding(t, self.frequency_embedding_size)
        x = dense(self.features, (None, "embed"), kernel_init=init, dtype=self.dtype, param_dtype=self.param_dtype,
                  name="mlp_0")(x)
        x = nn.silu(x)
        return dense(self.features, ("embed", "embed_out"), kernel_init=init, dtype=self.dtype,
                     param_dtype=self.param_dtype, name="mlp_2")(x)


class LabelEmbedder(nn.Module):
    """Class labels (B,) -> (B, D); label ``num_classes`` is the null label of classifier-free guidance.

    In training each label is replaced by the null label with probability ``dropout_prob``, drawn from
    the ``"dropout"`` RNG stream.
    """

    num_classes: int
    features: int
    dropout_prob: float
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, labels: jax.Array, train: bool) -> jax.Array:
        use_cfg_embedding = int(self.dropout_prob > 0)
        table = self.param("embedding_table",
                           nn.with_logical_partitioning(nn.initializers.normal(0.02), ("vocab", "embed")),
                           (self.num_classes + use_cfg_embedding, self.features), self.param_dtype)
        if train and self.dropout_prob > 0:
            drop = jax.random.uniform(self.make_rng("dropout"), labels.shape) < self.dropout_prob
            labels = jnp.where(drop, self.num_classes, labels)
        return jnp.take(table, labels, axis=0)


class FinalLayer(nn.Module):
    """adaLN (shift, scale) + LayerNorm + Linear to p*p*C_out per token; zero-initialised (adaLN-Zero)."""

    patch_size: int
    out_channels: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        shift, scale = AdaLNModulation(x.shape[-1], 2, zero_init=True, dtype=self.dtype,
                                       param_dtype=self.param_dtype, name="adaLN_modulation")(c)
        x = modulate(layer_norm(self.dtype, name="norm_final")(x), shift, scale)
        features = self.patch_size * self.patch_size * self.out_channels
        return dense(features, ("embed", "patch_out"), kernel_init=zeros, dtype=self.dtype,
                     param_dtype=self.param_dtype, name="linear")(x)


def embed_inputs(module: ClassConditionalTransformer, x: jax.Array, t: jax.Array, y: jax.Array, width: int, train: bool,
                 pos_embed: jax.Array | None = None) -> tuple[jax.Array, jax.Array, np.ndarray | jax.Array]:
    """The common stem of EDT, DiT and MDTv2, run inside ``module``'s compact ``__call__`` with its fields.

    Returns tokens (B, L, width) = patch embedding + position table, the condition c = t-embedding +
    label embedding (B, width), and the (L, width) table itself: the fixed sin-cos table, or the
    trained ``pos_embed`` (L, width) when given (MDTv2). Submodules are named as the official
    ``x_embedder``, ``t_embedder``, ``y_embedder``.
    """
    check_input_shape(x, (module.input_size, module.input_size, module.in_channels))
    dtype, param_dtype = module.dtype, module.param_dtype
    tokens = PatchEmbed(width, module.patch_size, dtype, param_dtype, name="x_embedder")(x)
    if pos_embed is None:
        pos_embed = sincos_pos_embed_2d(width, module.grid)
        tokens = tokens + pos_embed.astype(tokens.dtype)
    else:
        tokens = tokens + broadcast_batch(pos_embed, tokens.shape[0]).astype(tokens.dtype)
    c = TimestepEmbedder(width, dtype=dtype, param_dtype=param_dtype, name="t_embedder")(t)
    c = c + LabelEmbedder(module.num_classes, width, module.class_dropout_prob, param_dtype,
                          name="y_embedder")(y, train)
    return tokens, c, pos_embed


def unpatchify(x: jax.Array, patch_size: int, channels: int) -> jax.Array:
    """(B, h*w, p*p*C) tokens -> (B, h*p, w*p, C) NHWC image (square grids, as the official code)."""
    batch, tokens, _ = x.shape
    h = w = math.isqrt(tokens)
    p = patch_size
    x = x.reshape(batch, h, w, p, p, channels)
    x = jnp.transpose(x, (0, 1, 3, 2, 4, 5))
    return x.reshape(batch, h * p, w * p, channels)


def sincos_pos_embed_2d(embed_dim: int, grid_size: int) -> np.ndarray:
    """The fixed MAE 2-D sin-cos position table, (grid_size**2, embed_dim) float32.

    The first half of the channels encodes the column (w) coordinate and the second half the row, each
    as [sin, cos] of positions times 1/10000^(2i/d); computed in float64 like the reference, then float32.
    """
    if embed_dim % 4:
        raise ValueError(f"the 2-D sin-cos position embedding needs a width divisible by 4, got {embed_dim}")
    rows, cols = np.meshgrid(np.arange(grid_size, dtype=np.float32), np.arange(grid_size, dtype=np.float32),
                             indexing="ij")
    emb = np.concatenate([_sincos_1d(embed_dim // 2, cols), _sincos_1d(embed_dim // 2, rows)], axis=1)
    return emb.astype(np.float32)


def _sincos_1d(embed_dim: int, positions: np.ndarray) -> np.ndarray:
    omega = 1.0 / 10000 ** (np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0))
    out = np.einsum("m,d->md", positions.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def merge_2x2(x: jax.Array, grid: int) -> jax.Array:
    """(B, g*g, C) -> (B, (g/2)^2, 4C) concatenating [x(0::2,0::2), x(1::2,0::2), x(0::2,1::2), x(1::2,1::2)]."""
    batch, _, channels = x.shape
    x = x.reshape(batch, grid, grid, channels)
    parts = [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]]
    return jnp.concatenate(parts, axis=-1).reshape(batch, (grid // 2) ** 2, 4 * channels)


def pixel_shuffle_2x(x: jax.Array, grid: int) -> jax.Array:
    """(B, g*g, 4C) -> (B, (2g)^2, C): each token's channels ordered (p1, p2, c) fill a 2x2 block."""
    batch, _, channels = x.shape
    c = channels // 4
    x = x.reshape(batch, grid, grid, 2, 2, c)
    x = jnp.transpose(x, (0, 1, 3, 2, 4, 5))
    return x.reshape(batch, 4 * grid * grid, c)


def check_input_shape(x: jax.Array, expected_hwc: tuple[int, int, int]) -> None:
    """One-line error unless x is (B, H, W, C) with the model's (H, W, C)."""
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(expected_hwc):
        raise ValueError(f"x must be NHWC of shape (B, {', '.join(map(str, expected_hwc))}) for this model, "
                         f"got {tuple(x.shape)}")


def as_tuple(values: int | Sequence[int], length: int) -> tuple[int, ...]:
    """An int repeated ``length`` times, or the sequence itself as a tuple of ints."""
    if isinstance(values, int):
        return (values,) * length
    return tuple(int(v) for v in values)
