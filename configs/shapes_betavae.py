"""The beta-VAE baseline of DisDiff's comparison on the embedded shapes dataset (all 7 factors).

    python -m launch.disentangle --config configs/shapes_betavae.py --workdir /tmp/betavae --mode train
    python -m launch.disentangle --config configs/shapes_betavae.py --workdir /tmp/betavae --mode evaluate

The encoder is DisDiff's (same convs, 2K outputs: mean and log-variance); the representation is the mean.
``:test`` is a few steps for the tests.
"""

import ml_collections

from configs.base import disentangle_config, disentangle_test_variant


def get_config(arg=None):
    if arg not in (None, "", "test"):
        raise ValueError(f"shapes_betavae: unknown variant {arg!r}; use none or test")
    c = disentangle_config("shapes")
    c.model = ml_collections.ConfigDict(dict(
        name="BetaVAE",
        latent_dim=10,  # disentanglement_lib's 10 latents
        beta=4.0,
        encoder_widths=(32, 64, 64, 128),
    ))
    c.total_steps = 1500  # about DisDiff's wall-clock training budget (docs/disdiff.md)
    if arg == "test":
        disentangle_test_variant(c)
        c.model.update(dict(latent_dim=4, encoder_widths=(8, 8, 8, 8)))
    return c
