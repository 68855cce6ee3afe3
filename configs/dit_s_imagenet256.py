"""DiT-S/2 on ImageNet 256 latents: the baseline (AdamW, lr 1e-4, no masking, uniform timesteps).

    python -m launch.train --config configs/dit_s_imagenet256.py --workdir DIR --config.data.data_dir=/path/to/tfds

Latent extraction, several hosts, TPU pods and mesh overrides: docs/training.md.
"""

from configs.base import base_config, imagenet256_latents


def get_config(arg=None):
    del arg
    c = imagenet256_latents(base_config())
    c.model.name = "DiT-S/2"
    c.loss.masked_pass = False
    c.loss.weighting = "none"
    c.diffusion.timestep_sampler = "uniform"
    c.optimizer.update(dict(name="adamw", learning_rate=1e-4, weight_decay=0.0, schedule="constant"))
    return c
