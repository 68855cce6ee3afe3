"""diffusers ``AutoencoderKL`` state dicts -> Flax params of ``edt_jax.models.vae.AutoencoderKL``.

The mapping is derived from the Flax parameter tree: every parameter is looked up under its diffusers
name (``encoder/mid_block/attentions_0/to_out_0/kernel`` -> ``encoder.mid_block.attentions.0.to_out.0.weight``,
GroupNorm ``scale`` -> ``weight``) and checked for shape; missing, mis-shaped and unexpected tensors are
all reported in one error. Layouts: Linear (out, in) -> (in, out); conv (out, in, kh, kw) -> (kh, kw, in, out).

Older checkpoints (diffusers < 0.14, e.g. the original upload of ``stabilityai/sd-vae-ft-mse``) name the
attention projections ``query`` / ``key`` / ``value`` / ``proj_attn``, and some conversions store them
as 1x1 convolutions (out, in, 1, 1); both are accepted.

This module does not import ``vae.py`` (which re-exports it), so either can be imported first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from edt_jax import paths
from edt_jax.models.convert import load_state_dict, match_state_dict, mismatch_report

# Current diffusers name -> the name older checkpoints use for the same tensor.
OLD_ATTENTION_NAMES = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}

# Files of a diffusers VAE folder, in order of preference.
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def diffusers_name(path: tuple[str, ...]) -> str:
    """('decoder', 'up_blocks_1', 'resnets_0', 'norm1', 'scale') -> 'decoder.up_blocks.1.resnets.0.norm1.weight'."""
    parts = [re.sub(r"_(\d+)$", r".\1", part) for part in path[:-1]]
    parts.append("weight" if path[-1] in ("kernel", "scale") else path[-1])
    return ".".join(parts)


def _old_name(name: str) -> str | None:
    for new, old in OLD_ATTENTION_NAMES.items():
        if f".{new}." in name:
            return name.replace(f".{new}.", f".{old}.")
    return None


def abstract_vae_params(vae: nn.Module) -> dict:
    """Shape/dtype structs of the VAE's params, without allocating them (works for the full SD VAE)."""
    side = 2 ** (len(vae.block_out_channels) - 1)  # the smallest image the encoder accepts
    x = jax.ShapeDtypeStruct((1, side, side, vae.in_channels), jnp.float32)
    return nn.meta.unbox(jax.eval_shape(vae.init, jax.random.key(0), x)["params"])


def vae_params_from_torch(state_dict: Mapping[str, np.ndarray], vae: nn.Module) -> dict:
    """Flax ``params`` for ``vae`` (from ``create_vae``) from a diffusers ``AutoencoderKL`` state dict.

    Args:
      state_dict: diffusers name -> array (numpy, or anything ``np.asarray`` accepts, e.g. CPU torch
        tensors); a ``module.`` prefix is stripped.
      vae: the Flax module whose parameters to fill; its configuration must match the checkpoint's.

    Returns the nested params dict in the module's ``param_dtype``. Raises one one-line ``ValueError``
    naming the missing, mis-shaped and unexpected tensors.
    """
    match = match_state_dict(state_dict, abstract_vae_params(vae), diffusers_name, fallback_name=_old_name,
                             adapt=_squeeze_1x1_conv)
    problems = mismatch_report(match)
    if problems:
        raise ValueError(f"VAE state dict does not fit block_out_channels={tuple(vae.block_out_channels)}, "
                         f"layers_per_block={vae.layers_per_block}, norm_num_groups={vae.norm_num_groups}, "
                         f"latent_channels={vae.latent_channels}: {problems}")
    return match.nested()


def _squeeze_1x1_conv(tensor: np.ndarray, needed: tuple[int, ...]) -> np.ndarray:
    """Some conversions store the attention projections as 1x1 convs (out, in, 1, 1): give the Linear (out, in)."""
    if len(needed) == 2 and tensor.ndim == 4 and tensor.shape[2:] == (1, 1):
        return tensor[:, :, 0, 0]
    return tensor


def find_vae_weights(path: paths.PathLike) -> epath.Path:
    """The weights file of a diffusers VAE: ``path`` itself, or the first of ``WEIGHT_FILES`` in the folder
    ``path`` (or in its ``vae/`` subfolder, as in a full Stable Diffusion pipeline folder).

    Raises a one-line ``FileNotFoundError`` saying what is expected and where the public weights live.
    """
    path = paths.as_path(path)
    if path.is_file():
        return path
    for folder in (path, path / "vae"):
        for name in WEIGHT_FILES:
            if (folder / name).is_file():
                return folder / name
    raise FileNotFoundError(
        f"no VAE weights at {str(path)!r}: expected a diffusers VAE folder holding {WEIGHT_FILES[0]} "
        f"(or {WEIGHT_FILES[1]}, which needs the torch extra), or the path of such a file; download "
        f"stabilityai/sd-vae-ft-ema or stabilityai/sd-vae-ft-mse from Hugging Face yourself "
        f"(nothing is fetched at run time)")


def load_vae_weights(path: paths.PathLike, vae: nn.Module) -> dict:
    """Flax ``params`` for ``vae`` from a diffusers VAE folder or weights file (.safetensors, .bin, .npz)."""
    return vae_params_from_torch(load_state_dict(find_vae_weights(path)), vae)
