"""The beta-VAE baseline of DisDiff's comparison on the embedded shapes dataset (all 7 factors).

    python -m launch.disentangle --config configs/shapes_betavae.py --workdir /tmp/betavae --mode train
    python -m launch.disentangle --config configs/shapes_betavae.py --workdir /tmp/betavae --mode evaluate

The encoder is DisDiff's (same convs, 2K outputs: mean and log-variance); the representation is the mean.
``:test`` is a few steps for the tests. ``:quick`` is the baseline of the quick preset
(``python -m benchmarks.disentanglement --preset quick``): the 3-factor ``SHAPES_HUE_POSITION`` slice, trained for
DisDiff's wall time (``tasks.train_for_seconds``; ``total_steps`` is then only the default of a plain run).
``:quick_test`` is it in a few steps.
"""

import ml_collections

from configs.base import disentangle_config, disentangle_test_variant
from edt_jax.data.ground_truth import SHAPES_HUE_POSITION


def get_config(arg=None):
    if arg not in (None, "", "test", "quick", "quick_test"):
        raise ValueError(f"shapes_betavae: unknown variant {arg!r}; use none, test, quick or quick_test")
    c = disentangle_config("shapes")
    c.model = ml_collections.ConfigDict(dict(
        name="BetaVAE",
        latent_dim=10,  # disentanglement_lib's 10 latents
        beta=4.0,
        encoder_widths=(32, 64, 64, 128),
    ))
    c.total_steps = 1500  # about DisDiff's wall-clock training budget (docs/disdiff.md)
    c.probe_steps = 100  # tasks.train_for_seconds: steps timed before the rest of a wall-clock budget
    if arg in ("test", "quick_test"):
        disentangle_test_variant(c)
        c.model.update(dict(latent_dim=4, encoder_widths=(8, 8, 8, 8)))
        c.probe_steps = 1
    if arg in ("quick", "quick_test"):
        c.data.source = SHAPES_HUE_POSITION
    if arg == "quick_test":
        c.total_steps, c.checkpoint_every_steps = 2, 2  # the cap of train_for_seconds
    if arg == "quick":
        c.total_steps = 100_000  # only a cap: the preset trains for DisDiff's wall time
        c.batch_size = 64  # DisDiff's
        c.log_every_steps, c.checkpoint_every_steps = 50, 500
        c.eval.raw_metrics = ("factor_vae", "dci", "mig")
        c.eval.dci = dict(num_train=2000, num_test=1000, batch_size=16)  # as DisDiff's quick evaluation
    return c
