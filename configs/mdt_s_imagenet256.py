"""MDTv2-S/2 on ImageNet 256 latents: the official recipe of sail-sg/MDT (run.sh, train_util.py).

    python -m launch.train --config configs/mdt_s_imagenet256.py --workdir DIR \
        --config.data.data_dir=/path/to/tfds   # holds the prepared imagenet256_sd_vae_latents dataset

The baseline of EDT's speed and FID comparisons (docs/mdt.md). Latent extraction, several hosts, TPU pods:
docs/training.md.
"""

from configs.base import base_config, imagenet256_latents


def get_config(arg=None):
    del arg
    c = imagenet256_latents(base_config())
    c.model.name = "MDTv2-S/2"
    c.model.decode_layer = 6  # run.sh: --decode_layer 6 (the constructor default is 4)
    c.model.mask_ratio = 0.3  # run.sh: --mask_ratio 0.30; each masked pass draws 0.3 + 0.2 U[0, 1)
    c.loss.masked_pass = True  # train_util.py: plain + masked loss on the same x0 and t
    c.loss.weighting = "none"  # the plain improved-diffusion loss (eps MSE + learned-sigma VB), no Min-SNR
    c.diffusion.timestep_sampler = "uniform"  # UniformSampler
    # Adan, lr 5e-4 (run.sh), no weight decay, max_grad_norm 1, constant rate (lr_anneal_steps 0).
    c.optimizer.update(dict(name="adan", learning_rate=5e-4, weight_decay=0.0, schedule="constant",
                            grad_clip_norm=1.0))
    c.ema_decay = 0.9999
    c.batch_size = 256  # 32 per GPU x 8 GPUs
    c.sample.amm = False  # MDTv2 has no AMM unless amm_blocks are named (the EDT authors used (8,))
    return c
