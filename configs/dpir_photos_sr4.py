"""DP-IR x4 super-resolution of colour photo patches (scikit-image's photos; train and test photos disjoint).

    python -m launch.train --config configs/dpir_photos_denoiser.py --workdir /tmp/dpir/denoiser32
    python -m launch.restore --config configs/dpir_photos_sr4.py --workdir /tmp/dpir/sr4 --mode train_ir \\
        --config.denoiser_workdir=/tmp/dpir/denoiser32    # then --mode train_fusion, then --mode evaluate
    python -m benchmarks.restoration --config configs/dpir_photos_sr4.py --workdir /tmp/dpir/sr4 \\
        --denoiser_workdir /tmp/dpir/denoiser32 --name photos32_sr4    # docs/dpir.md

``get_config("64")``: 64x64 patches with the paper's fusion net (width 64, 8 blocks: 0.64M parameters) and a
wider NAFNet; its denoiser is ``configs/dpir_photos_denoiser.py:64``.
"""

from configs.base import dpir_config, dpir_test_variant


def get_config(arg=None):
    if arg not in (None, "", "64", "test"):
        raise ValueError(f"dpir_photos_sr4: unknown variant {arg!r}; use none (32x32), 64 or test")
    size = 64 if arg == "64" else 32
    c = dpir_config(f"photos:{size}:train", f"photos:{size}:test", "sr4", channels=3, size=size)
    if arg == "64":
        c.fusion.update(dict(width=64, num_blocks=8))
        c.conditional.update(dict(width=64, num_blocks=8))
        c.ir.update(dict(width=32, enc_blocks=(1, 1, 1), dec_blocks=(1, 1, 1)))
    return dpir_test_variant(c) if arg == "test" else c
