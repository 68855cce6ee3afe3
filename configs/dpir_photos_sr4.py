"""DP-IR x4 super-resolution of colour photo patches (scikit-image's photos; train and test photos disjoint).

    python -m launch.train --config configs/dpir_photos_denoiser.py --workdir /tmp/dpir/denoiser32
    python -m launch.restore --config configs/dpir_photos_sr4.py --workdir /tmp/dpir/sr4 --mode train_ir \\
        --config.denoiser_workdir=/tmp/dpir/denoiser32    # then --mode train_fusion, then --mode evaluate
    python -m benchmarks.restoration --config configs/dpir_photos_sr4.py --workdir /tmp/dpir/sr4 \\
        --denoiser_workdir /tmp/dpir/denoiser32 --name photos32_sr4    # docs/dpir.md

``get_config("64")``: 64x64 patches with the paper's fusion net (width 64, 8 blocks: 0.64M parameters) and a
wider NAFNet; its denoiser is ``configs/dpir_photos_denoiser.py:64``.

``--config.denoiser=gaussian``: DP-IR with the paper's kind of denoiser, a noise-level-conditioned NAFNet trained
here (``--mode train_denoiser``, into ``<workdir>/denoiser``) instead of the EDT run of ``denoiser_workdir``.
"""

import ml_collections

from configs.base import dpir_config, dpir_test_variant


def add_gaussian_denoiser(c: ml_collections.ConfigDict, test: bool = False) -> ml_collections.ConfigDict:
    """``c.denoiser`` ("dpm": the launch.train run of ``denoiser_workdir``; "gaussian": ``c.gaussian``, a
    ``GaussianDenoiser`` trained by ``launch.restore --mode train_denoiser`` on the clean training images)."""
    c.denoiser = "dpm"
    # CPU-sized: the IR network's NAFNet shape (width 16, two levels; 77k parameters) for 1,200 steps of 16, which a
    # shared 2-core CPU trains in 8 minutes. A GPU run would use width 32-64 and ~100x the steps.
    c.gaussian = ml_collections.ConfigDict(dict(width=16, enc_blocks=(1, 1), middle_blocks=1, dec_blocks=(1, 1),
                                                steps=1200, batch_size=16, learning_rate=2e-3, ema_decay=0.995,
                                                seed=2))
    if test:
        c.gaussian.update(dict(width=8, enc_blocks=(1,), dec_blocks=(1,), steps=3, batch_size=8))
    return c


def get_config(arg=None):
    if arg not in (None, "", "64", "test"):
        raise ValueError(f"dpir_photos_sr4: unknown variant {arg!r}; use none (32x32), 64 or test")
    size = 64 if arg == "64" else 32
    c = dpir_config(f"photos:{size}:train", f"photos:{size}:test", "sr4", channels=3, size=size)
    if arg == "64":
        c.fusion.update(dict(width=64, num_blocks=8))
        c.conditional.update(dict(width=64, num_blocks=8))
        c.ir.update(dict(width=32, enc_blocks=(1, 1, 1), dec_blocks=(1, 1, 1)))
    add_gaussian_denoiser(c, test=arg == "test")
    return dpir_test_variant(c) if arg == "test" else c
