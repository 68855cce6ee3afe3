"""A tiny MDTv2 on the embedded shapes dataset: EDT's other baseline at CPU scale.

    python -m launch.train --config configs/shapes_mdt_tiny.py --workdir /tmp/shapes_mdt

Everything but the model and the masked pass is shapes_edt_tiny's recipe, data included (``:full`` for the whole
dataset, ``:test``). The MDTv2 (hidden 128, depth 6, decode_layer 2, patch 4) has about the tiny EDT's parameters
(2.33 M vs 2.31 M) and 2.2x its forward multiply-adds (92.0 vs 41.9 M per image); it trains with its masked pass,
as MDTv2 does. ``benchmarks/ablations.py`` trains it beside the tiny EDT and DiT.
"""

import ml_collections

from configs.shapes_edt_tiny import get_config as edt_config


def get_config(arg=None):
    c = edt_config(arg)
    c.model = ml_collections.ConfigDict(dict(name="MDTv2", hidden_size=128, depth=6, num_heads=4, decode_layer=2,
                                             mask_ratio=0.3, patch_size=4, input_size=32, in_channels=3,
                                             num_classes=3, dtype=c.model.dtype))
    if arg == "test":
        c.model.update(dict(hidden_size=32, depth=4, num_heads=2))
    c.loss.masked_pass = True  # MDTv2's training: plain + masked loss every step
    c.sample.amm = False  # no Attention Modulation Matrix unless amm_blocks are named
    return c
