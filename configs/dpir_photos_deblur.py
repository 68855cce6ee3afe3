"""DP-IR motion deblurring of colour photo patches: random camera-shake kernels (9x9) and noise std 0.01.

    python -m launch.train --config configs/dpir_photos_denoiser.py --workdir /tmp/dpir/denoiser32
    python -m launch.restore --config configs/dpir_photos_deblur.py --workdir /tmp/dpir/deblur --mode train_ir \\
        --config.denoiser_workdir=/tmp/dpir/denoiser32    # then --mode train_fusion, then --mode evaluate

Each test image keeps its own kernel (fixed by its index and the seed), so the test set is reproducible.
"""

from configs.base import dpir_config, dpir_test_variant
from configs.dpir_photos_sr4 import add_gaussian_denoiser


def get_config(arg=None):
    if arg not in (None, "", "64", "test"):
        raise ValueError(f"dpir_photos_deblur: unknown variant {arg!r}; use none (32x32), 64 or test")
    size = 64 if arg == "64" else 32
    degradation = "motion_blur:size=9,intensity=0.5+noise:sigma=0.01"
    c = dpir_config(f"photos:{size}:train", f"photos:{size}:test", degradation, channels=3, size=size)
    c.ddnm.update(dict(iters=100, damping=1e-2))  # square blurs are ill-conditioned: undamped CG does not converge
    add_gaussian_denoiser(c, test=arg == "test")
    return dpir_test_variant(c) if arg == "test" else c
