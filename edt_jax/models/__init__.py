"""Diffusion networks: EDT, the DiT and MDTv2 baselines, the SD VAE, building blocks, MAC counts, converters.

    from edt_jax.models import create_model
    model = create_model("EDT-S/2", input_size=32, in_channels=4, num_classes=1000)
    out = model.apply(variables, x_nhwc, t, y, train=False, amm=True)
"""

from edt_jax.models.base import ClassConditionalTransformer
from edt_jax.models.dit import DiT
from edt_jax.models.edt import EDT
from edt_jax.models.flops import count_macs
from edt_jax.models.mdt import MDTv2
from edt_jax.models.registry import DIT_CONFIGS, EDT_CONFIGS, MDT_CONFIGS, MODEL_NAMES, create_model
from edt_jax.models.vae import SD_VAE_SCALE, AutoencoderKL, create_vae, load_vae_weights, vae_params_from_torch

__all__ = ["DIT_CONFIGS", "MDT_CONFIGS", "SD_VAE_SCALE", "AutoencoderKL", "ClassConditionalTransformer", "DiT",
           "EDT", "EDT_CONFIGS", "MDTv2", "MODEL_NAMES", "count_macs",
           "create_model", "create_vae", "load_vae_weights", "vae_params_from_torch"]
