"""A tiny class-conditional EDT on the embedded shapes dataset.

    python -m launch.train --config configs/shapes_edt_tiny.py --workdir /tmp/shapes_edt
    python -m launch.sample --workdir /tmp/shapes_edt --sampler unipc --steps 20 --num_samples 64 \\
        --output /tmp/shapes_edt/samples.png
    python -m launch.evaluate --workdir /tmp/shapes_edt --num_samples 512 --metrics acc_shapes,fd_shapes,pr_shapes

The default trains for 6,000 steps on ``MAIN_JOB_SLICE`` (78 distinct images); ``get_config("full")`` is the recipe
on the whole dataset (110,592 images) for 4,000 steps; ``get_config("test")`` is a few-step variant for the tests.
How to run it and its results: docs/shapes_main_job.md; what each setting rests on: docs/reports/shapes_recipe.md.
"""

from configs.base import base_config, decay_over_the_run

# Fixed: background hue 0, the largest scale, centre x 3 / y 4; free: shape, object hue, orientation.
MAIN_JOB_SLICE = "shapes:background_hue=0,scale=3,x_position=3,y_position=4"


def get_config(arg=None):
    if arg not in (None, "", "full", "test"):
        raise ValueError(f"shapes_edt_tiny: unknown variant {arg!r}; use none (the 78-image slice), full or test")
    c = base_config()
    # Why each setting: docs/reports/shapes_recipe.md, "What the config's settings rest on".
    c.total_steps = 4000 if arg == "full" else 6000
    c.batch_size = 32
    c.log_every_steps = 100
    c.checkpoint_every_steps = 1000
    c.ema_decay = 0.995  # a short run: the EMA must forget the random initialisation within ~1k steps
    # 32x32 RGB, patch 4: token grids 8/4/2/4/8; AMM on the two last-stage-group blocks (grids 4 and 8).
    c.model.update(dict(name="EDT", dims=(128, 128, 128, 128, 128), num_heads=(4, 4, 4, 4, 4),
                        depths=(1, 1, 1, 1, 1), patch_size=4, input_size=32, in_channels=3, num_classes=3,
                        amm_blocks=(3, 4)))
    c.data.update(dict(source="shapes" if arg == "full" else MAIN_JOB_SLICE, channels=3))
    c.loss.prediction = "v"
    c.loss.masked_pass = False  # it doubles a step's cost: on a CPU budget the plain pass trains twice the steps
    c.optimizer.update(dict(name="adan", weight_decay=0.0))
    decay_over_the_run(c, 3e-3)
    c.sample.update(dict(steps=20, num_samples=64, guidance_scale=1.0))
    if arg == "test":  # the test suite's variant: a few steps of a narrower model, masked pass on
        c.total_steps, c.batch_size, c.log_every_steps, c.checkpoint_every_steps = 12, 16, 2, 4
        c.model.update(dict(dims=(32, 32, 32, 32, 32), num_heads=(2, 2, 2, 2, 2)))
        c.loss.masked_pass = True
    return c
