"""A small pixel-space text-to-image model (SD's UNet + a CLIP text encoder, trained jointly) on captioned shapes.

    python -m launch.train --config configs/shapes_t2i.py --workdir /tmp/t2i_run
    # or, from Python:  edt_jax.runs.train(get_config(), "/tmp/t2i_run")

Then ``edt_jax.load_run("/tmp/t2i_run")`` is a ``StableDiffusion`` pipeline
(``pipe(["a red circle on a dark blue background"], num_inference_steps=20, guidance_scale=3.0)``) and
``export_pipeline("/tmp/t2i_run", "/tmp/t2i_pipeline")`` writes it as a diffusers folder.

The default is the CPU run (about 96 minutes on a 2-core CPU): 32x32 images of a shapes slice (``CAPTIONED_SLICE``
without rotations: the largest objects in the centre, unrotated; every shape, object colour and background colour,
72 images, one per prompt); its captions name shape and colours, half the time also "huge" and "in the center".
A 3-level UNet (16 / 32 / 64 channels, self- and cross-attention at 16x16, 8x8 and in the middle block; 1.1 M
parameters) conditioned on a 3-layer, 64-wide text encoder over the caption vocabulary (613 tokens), v prediction
on ADM's linear schedule, AdamW 1.5e-3 after a 100-step warmup, decayed linearly to 1e-5 over 4,000 steps of 32,
10% of the captions dropped for classifier-free guidance.
Why (docs/t2i.md; docs/reports/t2i_shape_word.md): the shape is the small signal (the objects are 10-14 pixels
wide), and it is learnt late: the classifier reads the prompted shape in chance's share of the samples at step
1,000 and in 0.93 / 0.99 (guidance 1 / 3) at step 2,000. The first recipe (batch 64 at 6e-4, 1,500-2,000 steps:
``:rotations``, ``:no_rotation``, ``:fine_text``) stopped before that and drew round blobs for every shape.
Why v: the same model with eps prediction on the whole dataset (110,592 images, sizes and positions free) drew flat
colours and noise after 2,000 steps (benchmarks/results/t2i_shapes_cpu_eps.md). Its eps error at high noise, which
x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) multiplies by up to 150 at t = 950, made its x0 estimates far worse
than the dataset's mean image there; v keeps the x0 error at high noise at the network's own error.
Measured on this 2-core CPU: 1.8 s a step of 64 for (16, 32, 64) channels, 2.9 s for (32, 64, 64), 7.1 s for
(64, 128) (the backward convolutions cost 3x the forward on XLA:CPU), so the widths are the narrowest; a step of
32 takes 1.44 s (benchmarks/results/t2i_shapes_cpu.md).
``get_config("test")`` is a few steps of a minute model for the tests.
"""

import ml_collections

from configs.base import base_config, decay_over_the_run

# Fixed: the largest scale, centre x 3 / y 4; free: the three prompted factors (shape, object hue, background hue)
# and the orientation: 432 images, every one of the 72 prompts with 6 orientations (``:rotations``). The default
# also fixes the orientation: 72 images, one per prompt.
CAPTIONED_SLICE = "shapes:scale=3,x_position=3,y_position=4"
UNROTATED_SLICE = CAPTIONED_SLICE + ",orientation=0"
# The first recipe's runs (docs/reports/t2i_shape_word.md), kept as they ran; none of them learnt the shape word.
FIRST_RECIPE_VARIANTS = ("rotations", "no_rotation", "fine_text")
VARIANTS = (None, "", *FIRST_RECIPE_VARIANTS, "test")


def get_config(arg=None):
    if arg not in VARIANTS:
        raise ValueError(f"shapes_t2i: unknown variant {arg!r}; use none (the CPU run), rotations, no_rotation, "
                         f"fine_text or test")
    c = base_config()
    del c.vae  # pixel space
    c.task = "text_to_image"  # runs.train hands it to edt_jax.t2i.training.train
    c.total_steps = 4000  # ~1.44 s a step on a 2-core CPU: ~96 minutes
    c.batch_size = 32  # at a fixed budget more, smaller steps: the shape is learnt after ~1,500 of them
    c.log_every_steps = 20
    c.checkpoint_every_steps = 250
    c.keep_checkpoints = 3
    c.ema_decay = 0.995  # a short run: the EMA must forget the initialisation within a few hundred steps
    c.model = ml_collections.ConfigDict(dict(
        name="sd_unet_clip", dtype="float32",
        # diffusers' UNet2DConditionModel: 32x32 -> 16x16 -> 8x8; no attention at 32x32 (1024 tokens would cost
        # more than the rest of the step on a CPU).
        unet=dict(block_out_channels=(16, 32, 64), down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * 2,
                  up_block_types=("CrossAttnUpBlock2D",) * 2 + ("UpBlock2D",), mid_block_type="UNetMidBlock2DCrossAttn",
                  layers_per_block=1, attention_heads=4, transformer_layers_per_block=1, norm_num_groups=8,
                  use_linear_projection=True),
        # transformers' CLIPTextModel; its width is the UNet's cross_attention_dim, its vocabulary the captions'.
        text_encoder=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
                          hidden_act="quick_gelu")))
    c.data = ml_collections.ConfigDict(dict(
        source=UNROTATED_SLICE, image_size=32, channels=3,
        caption_dropout=0.1,  # captions replaced by the empty prompt: the unconditional branch of guidance
        optional_probability=0.5,  # how often a caption names the size, and (independently) the position
        num_workers=0, num_threads=None))
    c.diffusion = ml_collections.ConfigDict(dict(num_timesteps=1000, beta_schedule="linear",
                                                 timestep_sampler="uniform"))
    c.loss = ml_collections.ConfigDict(dict(prediction="v", weighting="none", snr_gamma=5.0))
    c.optimizer = ml_collections.ConfigDict(dict(name="adamw", weight_decay=0.0, grad_clip_norm=1.0, warmup_steps=100))
    decay_over_the_run(c, 1.5e-3, 1e-5)  # warmup, then a linear decay to 1e-5 over the run's total_steps
    # The pipeline's scheduler (scheduler/scheduler_config.json of the export) and sampling defaults.
    c.sample = ml_collections.ConfigDict(dict(scheduler="UniPCMultistepScheduler", steps=20, guidance_scale=3.0,
                                              num_samples=24, use_ema=True))
    if arg in FIRST_RECIPE_VARIANTS:  # 2,000 steps of 64 at 6e-4 (1,500 without rotations)
        c.total_steps, c.batch_size, c.checkpoint_every_steps = 2000, 64, 60
        c.optimizer.warmup_steps = 50
        decay_over_the_run(c, 6e-4, 6e-5)
    if arg == "rotations":  # every orientation: 432 images
        c.data.source = CAPTIONED_SLICE
    if arg in ("no_rotation", "fine_text"):
        c.total_steps = 1500
    if arg == "fine_text":  # the text also at 32x32: cross-attention without self-attention there
        c.total_steps = 1000
        c.model.unet = {**c.model.unet.to_dict(), "down_block_types": ("CrossAttnDownBlock2D",) * 3,
                        "up_block_types": ("CrossAttnUpBlock2D",) * 3, "only_cross_attention": (True, False, False),
                        "attention_heads": (2, 4, 4)}
    if arg == "test":  # a few steps of a minute model (batch 8: the tests' 8 virtual devices)
        c.total_steps, c.batch_size, c.log_every_steps, c.checkpoint_every_steps = 2, 8, 1, 2
        c.optimizer.warmup_steps = 1
        # Cross-attention in the middle block only: each transformer block adds more compile time than a resnet.
        c.model.unet.update(dict(block_out_channels=(16, 32), attention_heads=2,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D")))
        c.model.text_encoder.update(dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2))
        c.sample.steps = 3
    return c
