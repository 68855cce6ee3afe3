"""A tiny DiT on the embedded shapes dataset: the baseline of EDT's comparisons at CPU scale.

    python -m launch.train --config configs/shapes_dit_tiny.py --workdir /tmp/shapes_dit

Everything but the model is shapes_edt_tiny's recipe, data included (``:full`` for the whole dataset, ``:test``).
The DiT (hidden 144, depth 6, patch 4) has about the tiny EDT's parameters (2.37 M vs 2.31 M) and 2.5x its
FLOPs (104.8 vs 41.9 M multiply-adds per image), the relation of DiT-S/2 to EDT-S/2 in the paper (32.9 M vs
38.3 M parameters, 2.3x the FLOPs).
``benchmarks/ablations.py`` trains both on the whole dataset.
"""

import ml_collections

from configs.shapes_edt_tiny import get_config as edt_config


def get_config(arg=None):
    c = edt_config(arg)
    c.model = ml_collections.ConfigDict(dict(name="DiT", hidden_size=144, depth=6, num_heads=3, patch_size=4,
                                             input_size=32, in_channels=3, num_classes=3, dtype=c.model.dtype))
    if arg == "test":
        c.model.update(dict(hidden_size=32, depth=2, num_heads=2))
    c.loss.masked_pass = False  # token masking is EDT's; DiT has no masked pass
    c.sample.amm = False  # and no Attention Modulation Matrix unless amm_blocks are named
    return c
