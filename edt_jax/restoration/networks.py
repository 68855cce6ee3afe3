"""DP-IR's trainable networks: a NAFNet restoration network and the small fusion network.

Why NAFNet (Chen et al., ECCV 2022, "Simple Baselines for Image Restoration") as the IR network: it
is state of the art for deblurring and denoising with nothing but convolutions, layer norms and
gates (no attention), so it runs at any image size, is cheap on a CPU and maps well onto TPUs, and
its PyTorch weights convert leaf by leaf. For super-resolution it restores the bicubic lift of the
low-resolution image (``lift``), as SR3-style pipelines do, so one network serves every degradation.

The fusion network (DP-IR, Zhussip et al. 2024) combines the IR estimate x0_IR and the frozen
denoiser's estimate x0_D(x_t, t) (and optionally x_t) into the fused x0: convolutions with ReLU,
a dense time-embedding branch added in every block, and a zero-initialised output added to x0_IR,
so training starts from the IR estimate. Width 64 with 8 blocks is the paper's ~0.7M parameters.

Shapes: images NHWC float32 in [-1, 1]; t (B,) the network time (training timestep, 0..N-1).
"""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp

from edt_jax.models.layers import timestep_embedding


def lift(y: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """``y`` (B, h, w, C) brought to the image shape (B, H, W, C): bicubic up-sampling, or ``y`` itself."""
    if y.shape == tuple(shape):
        return y
    return jax.image.resize(y, shape, method="cubic")


class LayerNorm2d(nn.Module):
    """NAFNet's LayerNorm2d: normalise over channels at every pixel, then scale and shift."""

    @nn.compact
    def __call__(self, x):
        return nn.LayerNorm(epsilon=1e-6)(x)


class NAFBlock(nn.Module):
    """x + beta * SCA-gated conv branch, then + gamma * gated feed-forward (beta, gamma start at zero)."""

    width: int
    expand: int = 2

    @nn.compact
    def __call__(self, x):
        c = self.width
        h = nn.Conv(c * self.expand, (1, 1), name="conv1")(LayerNorm2d(name="norm1")(x))
        h = nn.Conv(c * self.expand, (3, 3), feature_group_count=c * self.expand, name="conv2")(h)
        h = _simple_gate(h)
        # Simplified channel attention: a 1x1 conv of the global average, multiplied back in.
        h = h * nn.Conv(h.shape[-1], (1, 1), name="sca")(jnp.mean(h, axis=(1, 2), keepdims=True))
        h = nn.Conv(c, (1, 1), name="conv3")(h)
        y = x + self.param("beta", nn.initializers.zeros, (c,)) * h
        h = nn.Conv(c * self.expand, (1, 1), name="conv4")(LayerNorm2d(name="norm2")(y))
        h = nn.Conv(c, (1, 1), name="conv5")(_simple_gate(h))
        return y + self.param("gamma", nn.initializers.zeros, (c,)) * h


def _simple_gate(x):
    """NAFNet's SimpleGate: split the channels in two halves and multiply them."""
    a, b = jnp.split(x, 2, axis=-1)
    return a * b


class NAFNet(nn.Module):
    """U-shaped NAFNet: (B, H, W, C) -> (B, H, W, C), a residual on its input.

    ``enc_blocks`` / ``dec_blocks`` give the blocks per level (each level halves the resolution and
    doubles the width), ``middle_blocks`` the bottleneck. H and W must be divisible by 2**levels.
    ``out_channels`` (default: C, a residual on the input) gives a plain, non-residual output of that many
    channels; ``emb`` (B, E), when given, is projected and added to the features at every level (the
    Gaussian denoiser's noise-level embedding; the official weights have neither).
    """

    width: int = 16
    enc_blocks: tuple[int, ...] = (1, 1)
    middle_blocks: int = 1
    dec_blocks: tuple[int, ...] = (1, 1)
    out_channels: int | None = None

    @nn.compact
    def __call__(self, y, emb=None):
        levels = len(self.enc_blocks)
        if y.shape[1] % 2 ** levels or y.shape[2] % 2 ** levels:
            raise ValueError(f"NAFNet with {levels} levels needs H and W divisible by {2 ** levels}, "
                             f"got {y.shape[1]}x{y.shape[2]}")

        def condition(h, name):
            return h if emb is None else h + nn.Dense(h.shape[-1], name=name)(emb)[:, None, None, :]

        h = nn.Conv(self.width, (3, 3), name="intro")(y)
        skips, c = [], self.width
        for level, n in enumerate(self.enc_blocks):
            h = condition(h, f"emb_enc{level}")
            for i in range(n):
                h = NAFBlock(c, name=f"enc{level}_{i}")(h)
            skips.append(h)
            h = nn.Conv(2 * c, (2, 2), strides=(2, 2), name=f"down{level}")(h)
            c *= 2
        h = condition(h, "emb_middle")
        for i in range(self.middle_blocks):
            h = NAFBlock(c, name=f"middle_{i}")(h)
        for level, n in enumerate(self.dec_blocks):
            h = nn.Conv(2 * c, (1, 1), use_bias=False, name=f"up{level}")(h)
            h = _pixel_shuffle(h, 2)
            c //= 2
            h = condition(h + skips.pop(), f"emb_dec{level}")
            for i in range(n):
                h = NAFBlock(c, name=f"dec{level}_{i}")(h)
        if self.out_channels is not None:
            return nn.Conv(self.out_channels, (3, 3), name="ending")(h)
        return y + nn.Conv(y.shape[-1], (3, 3), name="ending")(h)


class GaussianDenoiser(nn.Module):
    """DP-IR's Gaussian denoiser: x0_hat = D(x~, sigma) for x~ = x0 + sigma eps; (B, H, W, C), sigma (B,).

    A NAFNet conditioned on the noise level twice, as DRUNet / FFDNet and diffusion U-Nets do: a noise-level
    map concatenated to the input, and an embedding of it added at every level.

    Why the EDM preconditioning (Karras et al. 2022), D = c_skip x~ + c_out F(c_in x~, c_noise): DP-IR's chain
    visits sigma from ~0.01 to sqrt((1 - abar_T) / abar_T) ~ 157 (linear betas). Fed raw, x~ would span four
    orders of magnitude; c_in = 1 / sqrt(sigma^2 + s^2) gives F unit-variance inputs at every level. The
    output interpolates: c_skip = s^2 / (sigma^2 + s^2) -> 1 keeps x~ itself at small sigma (F only predicts
    the scaled noise), and -> 0 at large sigma, where c_out -> s bounds the estimate to F's range, so x0_hat
    stays sane at t near T instead of amplifying x~'s huge noise. s = ``sigma_data`` (0.5: images in [-1, 1]).
    """

    width: int = 32
    enc_blocks: tuple[int, ...] = (1, 1)
    middle_blocks: int = 1
    dec_blocks: tuple[int, ...] = (1, 1)
    sigma_data: float = 0.5

    @nn.compact
    def __call__(self, x_noisy, sigma):
        sigma = jnp.reshape(jnp.asarray(sigma, x_noisy.dtype), (-1, 1, 1, 1))
        s2 = self.sigma_data ** 2
        c_skip, c_out = s2 / (sigma ** 2 + s2), sigma * self.sigma_data / jnp.sqrt(sigma ** 2 + s2)
        c_in, c_noise = 1.0 / jnp.sqrt(sigma ** 2 + s2), jnp.log(sigma) / 4.0  # c_noise in [-1.2, 1.3]
        noise_map = jnp.broadcast_to(c_noise, (*x_noisy.shape[:3], 1))
        emb = timestep_embedding(c_noise[:, 0, 0, 0] * 250.0, self.width)  # the embedding's usual 0..1000 range
        emb = nn.Dense(self.width, name="noise_1")(nn.silu(nn.Dense(self.width, name="noise_0")(emb)))
        unet = NAFNet(self.width, self.enc_blocks, self.middle_blocks, self.dec_blocks,
                      out_channels=x_noisy.shape[-1], name="unet")
        return c_skip * x_noisy + c_out * unet(jnp.concatenate([c_in * x_noisy, noise_map], axis=-1), nn.silu(emb))


def _pixel_shuffle(x, r: int):
    """(B, H, W, C r^2) -> (B, H r, W r, C), channel order as torch.nn.PixelShuffle."""
    b, h, w, c = x.shape
    x = x.reshape(b, h, w, c // (r * r), r, r)
    return x.transpose(0, 1, 4, 2, 5, 3).reshape(b, h * r, w * r, c // (r * r))


class FusionNet(nn.Module):
    """Fused x0 = x0_IR + out(x0_IR, x0_D[, x_t], t); (B, H, W, C) each, t (B,) -> (B, H, W, C)."""

    width: int = 64
    num_blocks: int = 8
    use_x_t: bool = False

    @nn.compact
    def __call__(self, x0_ir, x0_d, x_t, t):
        inputs = [x0_ir, x0_d] + ([x_t] if self.use_x_t else [])
        h = nn.relu(nn.Conv(self.width, (3, 3), name="in_conv")(jnp.concatenate(inputs, axis=-1)))
        emb = timestep_embedding(t, self.width)
        emb = nn.Dense(self.width, name="time_1")(nn.relu(nn.Dense(self.width, name="time_0")(emb)))
        for i in range(self.num_blocks):
            shift = nn.Dense(self.width, name=f"time_proj_{i}")(nn.relu(emb))[:, None, None, :]
            r = nn.relu(nn.Conv(self.width, (3, 3), name=f"block{i}_conv0")(h) + shift)
            h = h + nn.Conv(self.width, (3, 3), name=f"block{i}_conv1")(r)
        out = nn.Conv(x0_ir.shape[-1], (3, 3), kernel_init=nn.initializers.zeros, name="out_conv")(nn.relu(h))
        return x0_ir + out


def count_params(params) -> int:
    """The number of scalars in a parameter tree."""
    return sum(int(p.size) for p in jax.tree.leaves(params))


_NAFNET_BLOCK_ROOTS = (  # Flax module name -> the official nn.ModuleList path
    (re.compile(r"^enc(\d+)_(\d+)$"), r"encoders.\1.\2"),
    (re.compile(r"^dec(\d+)_(\d+)$"), r"decoders.\1.\2"),
    (re.compile(r"^middle_(\d+)$"), r"middle_blks.\1"),
    (re.compile(r"^down(\d+)$"), r"downs.\1"),
    (re.compile(r"^up(\d+)$"), r"ups.\1.0"),  # nn.Sequential(Conv2d, PixelShuffle)
)


def nafnet_official_name(path: tuple[str, ...]) -> str:
    """Flax path of ``NAFNet`` -> the key in the official PyTorch NAFNet (megvii-research/NAFNet) state dict.

    ('enc0_1', 'conv2', 'kernel') -> 'encoders.0.1.conv2.weight'; ('middle_0', 'sca', 'bias') ->
    'middle_blks.0.sca.1.bias'; ('up1', 'kernel') -> 'ups.1.0.weight'; LayerNorm2d's scale -> 'norm1.weight'.
    """
    root = path[0]
    for pattern, official in _NAFNET_BLOCK_ROOTS:
        if pattern.match(root):
            root = pattern.sub(official, root)
            break
    names = [root]
    for part in path[1:-1]:
        if part == "sca":
            names += ["sca", "1"]  # nn.Sequential(AdaptiveAvgPool2d(1), Conv2d)
        elif part != "LayerNorm_0":  # LayerNorm2d holds its weight and bias itself
            names.append(part)
    names.append({"kernel": "weight", "scale": "weight"}.get(path[-1], path[-1]))
    return ".".join(names)


def nafnet_params_from_torch(state_dict, net: NAFNet, image_shape: tuple[int, int, int]) -> dict:
    """Flax ``params`` of ``net`` from an official NAFNet state dict (numpy arrays; ``load_state_dict`` reads
    .pth / .safetensors files). One-line ``ValueError`` naming the missing, mis-shaped and unexpected tensors.

    The official ``beta`` / ``gamma`` are (1, C, 1, 1); convolutions are transposed to Flax's (kh, kw, in, out).
    """
    from edt_jax.models.convert import match_state_dict, mismatch_report

    abstract = jax.eval_shape(net.init, jax.random.key(0), jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
    match = match_state_dict(state_dict, abstract["params"], nafnet_official_name,
                             adapt=lambda a, shape: a.reshape(shape) if a.ndim == 4 and len(shape) == 1 else a)
    report = mismatch_report(match)
    if report:
        raise ValueError(f"the state dict does not fit NAFNet(width={net.width}, enc_blocks={net.enc_blocks}, "
                         f"middle_blocks={net.middle_blocks}, dec_blocks={net.dec_blocks}): {report}")
    return match.nested()
