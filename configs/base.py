"""Defaults shared by the experiment configs (each config file overrides what its recipe needs)."""

from __future__ import annotations

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.total_steps = 400_000
    c.batch_size = 256  # global, over all processes and devices
    c.log_every_steps = 100
    c.checkpoint_every_steps = 10_000
    c.keep_checkpoints = 3
    c.ema_decay = 0.9999
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    # Logical axis -> mesh axis pairs; empty = edt_jax.training.sharding.LOGICAL_RULES (FSDP on "embed").
    c.sharding_rules = ()

    c.model = ml_collections.ConfigDict(dict(name="EDT-S/2", input_size=32, in_channels=4, num_classes=1000,
                                             dtype="float32"))
    c.data = ml_collections.ConfigDict(dict(source="shapes", data_dir="", split="train", image_size=None,
                                            channels=None, label_key="label", random_flip=False, latent_scale=1.0,
                                            num_workers=0, num_threads=None))
    c.diffusion = ml_collections.ConfigDict(dict(num_timesteps=1000, beta_schedule="linear",
                                                 timestep_sampler="uniform"))
    c.loss = ml_collections.ConfigDict(dict(prediction="eps", weighting="min_snr", snr_gamma=5.0, masked_pass=False))
    c.optimizer = ml_collections.ConfigDict(dict(name="adamw", learning_rate=1e-4, weight_decay=0.0,
                                                 schedule="constant", grad_clip_norm=None))
    # The VAE of latent-space runs (the SD VAE layout): launch.extract_latents encodes with it and
    # launch.sample decodes with it when `path` (a local diffusers VAE folder or weights file) is set.
    c.vae = ml_collections.ConfigDict(dict(path="", scale=0.18215, block_out_channels=(128, 256, 512, 512),
                                           layers_per_block=2, norm_num_groups=32, latent_channels=4,
                                           dtype="float32"))
    # Defaults of launch.sample (each can be overridden by its flags).
    c.sample = ml_collections.ConfigDict(dict(sampler="unipc", steps=25, order=2, guidance_scale=1.0,
                                              num_samples=64, amm=True, use_ema=True))
    return c


def imagenet256_latents(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """EDT's ImageNet 256 recipe on precomputed SD-VAE latents (32x32x4, scaled by 0.18215)."""
    c.data.source = "tfds:imagenet256_sd_vae_latents"  # written by launch.extract_latents
    c.data.data_dir = "~/tensorflow_datasets"
    # The images launch.extract_latents encodes into that dataset (ImageNet's train folder: n01440764/...).
    c.data.image_source = "folder:~/imagenet/train"
    # launch.extract_latents stores the posterior samples already multiplied by vae.scale (as EDT's
    # extract_features.py does), so the pipeline applies no further scale.
    c.data.latent_scale = 1.0
    c.data.image_size = 256  # what launch.extract_latents centre-crops the images to
    c.data.random_flip = False  # DiT/EDT flip the images once, when the latents are extracted
    c.batch_size = 256
    c.total_steps = 400_000
    c.diffusion.timestep_sampler = "loss-second-moment"
    c.loss.masked_pass = True
    c.model.dtype = "bfloat16"
    return c
