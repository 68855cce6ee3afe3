"""The README's main job: a tiny class-conditional EDT on mnist5k, 2,000 steps of 32.

    python -m launch.train --config configs/mnist_edt_quick.py --workdir /tmp/mnist_quick
    python -m launch.sample --workdir /tmp/mnist_quick --guidance_scale 3 --num_samples 100 --labels 0,1,2,3,4,5,6,7,8,9
    python -m launch.evaluate --workdir /tmp/mnist_quick --guidance_scale 3 --num_samples 512 \\
        --metrics acc_mnist5k,fd_mnist5k

``mnist_edt_tiny``'s model, narrower, with v prediction and the learning rate decayed over the run; how it was
chosen: docs/reports/main_job_recipe_search.md; what it gives: docs/main_job.md (``python -m benchmarks.main_job``
measures it).
"""

from configs import mnist_edt_tiny
from configs.base import decay_over_the_run


def get_config(arg=None):
    if arg not in (None, ""):
        raise ValueError(f"mnist_edt_quick: unknown variant {arg!r}; it has none (configs/mnist_edt_tiny.py is the "
                         "longer run)")
    c = mnist_edt_tiny.get_config()
    c.total_steps = 2000
    c.batch_size = 32
    c.checkpoint_every_steps = 1000
    c.model.update(dict(dims=(48, 64, 96, 64, 48), num_heads=(2, 2, 2, 2, 2)))  # narrower: more steps per second
    c.loss.prediction = "v"  # eps at 3,000 steps: class accuracy 0.94 only at guidance 4
    decay_over_the_run(c, 3e-3)  # Adan (mnist_edt_tiny's), 3e-3 decaying to 1e-5
    c.sample.update(dict(steps=20, num_samples=100, guidance_scale=3.0))
    return c
