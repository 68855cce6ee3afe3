"""EDT-B/2 on ImageNet 256 latents: the paper recipe (Adan, lr 1e-3, EMA 0.9999, Min-SNR, masking).

    python -m launch.train --config configs/edt_b_imagenet256.py --workdir DIR \
        --config.data.data_dir=/path/to/tfds   # holds the prepared imagenet256_sd_vae_latents dataset

Latent extraction, several hosts, TPU pods and mesh overrides: docs/training.md.
"""

from configs.base import base_config, imagenet256_latents


def get_config(arg=None):
    del arg
    c = imagenet256_latents(base_config())
    c.model.name = "EDT-B/2"
    c.optimizer.update(dict(name="adan", learning_rate=1e-3, weight_decay=0.0, schedule="linear_decay",
                            end_learning_rate=5e-5, decay_steps=400_000))
    return c
