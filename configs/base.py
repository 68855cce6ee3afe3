"""Defaults shared by the experiment configs (each config file overrides what its recipe needs)."""

from __future__ import annotations

import ml_collections
from ml_collections.config_dict import placeholder


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
    # The SD VAE of latent runs (extract_latents encodes, sample decodes); path: a local diffusers folder or file.
    c.vae = ml_collections.ConfigDict(dict(path="", scale=0.18215, block_out_channels=(128, 256, 512, 512),
                                           layers_per_block=2, norm_num_groups=32, latent_channels=4,
                                           dtype="float32"))
    # Defaults of launch.sample (each can be overridden by its flags).
    c.sample = ml_collections.ConfigDict(dict(sampler="unipc", steps=25, order=2, guidance_scale=1.0,
                                              num_samples=64, amm=True, use_ema=True))
    return c


def decay_over_the_run(c: ml_collections.ConfigDict, learning_rate: float, end_learning_rate: float = 1e-5) -> None:
    """A linear learning-rate decay to ``end_learning_rate`` over the run's ``total_steps``, whatever
    ``--config.total_steps`` says (``decay_steps`` is an int placeholder, so ``--config.optimizer.decay_steps=N``
    still sets it)."""
    c.optimizer.update(dict(learning_rate=learning_rate, schedule="linear_decay", end_learning_rate=end_learning_rate))
    c.optimizer.decay_steps = placeholder(int)


def imagenet256_latents(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """EDT's ImageNet 256 recipe on precomputed SD-VAE latents (32x32x4, scaled by 0.18215)."""
    c.data.source = "tfds:imagenet256_sd_vae_latents"  # written by launch.extract_latents
    c.data.data_dir = "~/tensorflow_datasets"
    # The images launch.extract_latents encodes into that dataset (ImageNet's train folder: n01440764/...).
    c.data.image_source = "folder:~/imagenet/train"
    c.data.latent_scale = 1.0  # the latents are stored already times vae.scale (EDT's extract_features.py)
    c.data.image_size = 256  # what launch.extract_latents centre-crops the images to
    c.data.random_flip = False  # DiT/EDT flip the images once, when the latents are extracted
    c.batch_size = 256
    c.total_steps = 400_000
    c.diffusion.timestep_sampler = "loss-second-moment"
    c.loss.masked_pass = True
    c.model.dtype = "bfloat16"
    return c


def dpir_config(train: str, test: str, degradation: str, channels: int, size: int = 32) -> ml_collections.ConfigDict:
    """Defaults of the DP-IR configs (``launch.restore``): data, degradation, the three trained networks.

    ``train`` / ``test``: data sources (``data.train_range`` / ``test_range`` (start, stop) select records;
    () = all). The denoiser is a ``launch.train`` run on the same domain, given by ``denoiser_workdir``.
    """
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.denoiser_workdir = ""  # a launch.train run on the same image size and channels (required but for train_ir)
    c.data = ml_collections.ConfigDict(dict(train=train, test=test, train_range=(), test_range=(), image_size=size,
                                            channels=channels, random_flip=True))
    c.degradation = degradation  # edt_jax.restoration.create_degradation spec
    # The conditional baseline's schedule (DP-IR itself samples on the denoiser run's own schedule).
    c.diffusion = ml_collections.ConfigDict(dict(num_timesteps=1000, beta_schedule="linear"))
    c.log_every_steps = 100
    c.checkpoint_every_steps = 500
    c.keep_checkpoints = 2
    # CPU-sized: a few hundred steps of narrow networks (convolutions are slow on XLA's CPU backend).
    train_recipe = dict(steps=400, batch_size=16, learning_rate=2e-3, loss="l1", ema_decay=0.99)
    # The IR network (NAFNet) and a narrower one for the plug-and-play test (fusion trained with ir, run with ir_alt).
    c.ir = ml_collections.ConfigDict(dict(width=16, enc_blocks=(1, 1), middle_blocks=1, dec_blocks=(1, 1),
                                          seed=0, **train_recipe))
    c.ir_alt = ml_collections.ConfigDict(dict(width=8, enc_blocks=(1, 1), middle_blocks=1, dec_blocks=(1, 1),
                                              seed=1, **train_recipe))
    # The plain conv + ReLU nets lose most units at lr 2e-3 (measured: the baseline's loss stalls at 0.175).
    fusion_recipe = {**train_recipe, "steps": 800, "learning_rate": 5e-4}
    c.fusion = ml_collections.ConfigDict(dict(width=16, num_blocks=4, use_x_t=False, **fusion_recipe))
    # Baseline: the fusion net's architecture on (lift(y), x_t) from scratch, for the IR + fusion steps.
    c.conditional = ml_collections.ConfigDict(dict(width=16, num_blocks=4, **{**fusion_recipe, "steps": 1200}))
    c.sample = ml_collections.ConfigDict(dict(sampler="ddim", steps=20, tau=1.0, order=2, seed=0))
    # The DDNM baseline's pseudo-inverse (conjugate gradients; damping > 0 for ill-conditioned blurs).
    c.ddnm = ml_collections.ConfigDict(dict(iters=50, damping=0.0))
    c.eval = ml_collections.ConfigDict(dict(num_test=64, batch_size=64))
    return c


def dpir_test_variant(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The tests' variant of a DP-IR config: a few steps of narrow networks on 8 test images."""
    for part in (c.ir, c.ir_alt, c.fusion, c.conditional):
        part.steps, part.batch_size, part.width = 3, 8, 8
    c.fusion.num_blocks = c.conditional.num_blocks = 1
    c.checkpoint_every_steps, c.log_every_steps = 3, 1
    c.sample.steps, c.eval.num_test, c.eval.batch_size = 2, 8, 8
    start = c.data.train_range[0] if c.data.train_range else 0
    c.data.train_range = (start, start + 64)  # a 64-image training bank
    return c


def disentangle_config(source: str = "shapes") -> ml_collections.ConfigDict:
    """Defaults of the disentanglement configs (``launch.disentangle``): data, training loop, evaluation."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.total_steps = 2000
    c.batch_size = 32
    c.log_every_steps = 100
    c.checkpoint_every_steps = 500
    c.keep_checkpoints = 2
    c.ema_decay = 0.999
    c.ema_warmup = True  # LDM's LitEma warm-up, as the official DisDiff (docs/disdiff.md, the EMA note)
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    c.data = ml_collections.ConfigDict(dict(source=source, image_size=32, channels=3, random_flip=False))
    c.optimizer = ml_collections.ConfigDict(dict(name="adam", learning_rate=1e-3, weight_decay=0.0,
                                                 schedule="constant", grad_clip_norm=1.0))
    # disentanglement_lib's defaults, as DisDiff's evaluate.py runs them (prune 0.05, 20 histogram bins).
    c.eval = ml_collections.ConfigDict(dict(
        seed=0, protocols=("pca", "raw"), encode_batch_size=2048, raw_metrics=("factor_vae", "dci", "mig"),
        factor_vae=dict(batch_size=64, num_train=10000, num_eval=5000, num_variance_estimate=10000),
        dci=dict(num_train=10000, num_test=5000, batch_size=16),
        mig=dict(num_train=10000, batch_size=16, num_bins=20)))
    return c


def disentangle_test_variant(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The tests' variant: a few steps, small metric samples, a slice of shapes so encoding is quick."""
    c.total_steps, c.batch_size, c.log_every_steps, c.checkpoint_every_steps = 4, 8, 2, 2
    c.data.source = "shapes:background_hue=0,scale=3,x_position=3+4,y_position=4"
    c.eval.protocols = ("pca", "raw")
    c.eval.factor_vae = dict(batch_size=16, num_train=40, num_eval=20, num_variance_estimate=200)
    c.eval.dci = dict(num_train=100, num_test=50, batch_size=16)
    c.eval.mig = dict(num_train=200, batch_size=16, num_bins=20)
    return c
