"""DP-IR x4 super-resolution on mnist5k (32x32x1 from 8x8): the small fast task.

    python -m launch.train --config configs/mnist_edt_tiny.py --workdir /tmp/mnist_edt       # the denoiser
    python -m launch.restore --config configs/dpir_mnist_sr4.py --workdir /tmp/dpir_mnist --mode train_ir \\
        --config.denoiser_workdir=/tmp/mnist_edt        # then --mode train_fusion, then --mode evaluate
    python -m benchmarks.restoration --config configs/dpir_mnist_sr4.py --workdir /tmp/dpir_mnist \\
        --denoiser_workdir /tmp/mnist_edt --name mnist_sr4        # docs/dpir.md

``get_config("xt")``: the fusion net also takes x_t.
Digits 0..4499 train the networks, 4500..4999 are the test set. The mnist_edt_tiny denoiser saw all
5,000 digits, so on this task the denoiser's prior has seen the test digits (the photo tasks have no such overlap).
"""

from configs.base import dpir_config, dpir_test_variant


def get_config(arg=None):
    if arg not in (None, "", "xt", "test"):
        raise ValueError(f"dpir_mnist_sr4: unknown variant {arg!r}; use none, xt or test")
    c = dpir_config("mnist5k", "mnist5k", "sr4", channels=1)
    c.data.train_range, c.data.test_range = (0, 4500), (4500, 5000)
    c.data.random_flip = False  # digits are not mirror-symmetric
    c.fusion.use_x_t = arg == "xt"  # the fusion net also sees x_t (docs/dpir.md measures it)
    return dpir_test_variant(c) if arg == "test" else c
