"""DP-IR's frozen denoiser on the photo patches: a tiny unconditional EDT, 32x32x3 (64x64 with arg "64").

    python -m launch.train --config configs/dpir_photos_denoiser.py --workdir /tmp/dpir/denoiser32
    python -m launch.restore --config configs/dpir_photos_sr4.py --workdir /tmp/dpir/sr4 \\
        --config.denoiser_workdir=/tmp/dpir/denoiser32 --mode train_ir      # docs/dpir.md
"""

from configs.base import base_config, decay_over_the_run


def get_config(arg=None):
    if arg not in (None, "", "64", "test"):
        raise ValueError(f"dpir_photos_denoiser: unknown variant {arg!r}; use none (32x32), 64 or test")
    size = 64 if arg == "64" else 32
    c = base_config()
    c.total_steps = 3000
    c.batch_size = 32
    c.log_every_steps = 100
    c.checkpoint_every_steps = 500
    c.ema_decay = 0.995  # a short run: the EMA must forget the random initialisation within ~1k steps
    c.model.update(dict(name="EDT", dims=(128,) * 5, num_heads=(4,) * 5, depths=(1,) * 5, patch_size=4,
                        input_size=size, in_channels=3, num_classes=1, amm_blocks=(3, 4)))
    # One class: the denoiser is unconditional (label 0 always; the null label 1 is never needed).
    c.data.update(dict(source=f"photos:{size}:train", channels=3, label_key=None, random_flip=True))
    c.loss.prediction = "v"
    c.optimizer.update(dict(name="adan", weight_decay=0.0))
    decay_over_the_run(c, 3e-3)
    c.sample.update(dict(steps=20, num_samples=64, guidance_scale=1.0))
    if arg == "test":  # the test suite's variant: a few steps of a narrower model
        c.total_steps, c.batch_size, c.log_every_steps, c.checkpoint_every_steps = 4, 8, 2, 4
        c.model.update(dict(dims=(32,) * 5, num_heads=(2,) * 5))
    return c
