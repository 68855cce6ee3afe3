"""DiT (Peebles & Xie, 2023), the isotropic baseline EDT is compared with.

Same embedders and adaLN-Zero blocks as EDT, standard attention without relative bias. The EDT
authors also evaluated DiT with the Attention Modulation Matrix on chosen blocks
(``other_models/models_dit_with_amm.py``); ``amm_blocks`` selects them (none by default).
"""

from __future__ import annotations

import flax.linen as nn
import jax

from edt_jax.models.base import ClassConditionalTransformer
from edt_jax.models.blocks import transformer_block_class
from edt_jax.models.layers import embed_inputs

# Blocks the EDT authors modulated in their DiT experiments (models_dit_with_amm.py, cfg = 1 / 1.5).
AUTHORS_AMM_BLOCKS = {"DiT-XL/2": (15, 17, 19, 22, 24), "DiT-S/2": (8, 10)}


class DiT(ClassConditionalTransformer, kw_only=True):
    """The DiT network; build it with ``edt_jax.models.create_model("DiT-XL/2", ...)``.

    Call: ``model.apply(variables, x, t, y, train=False, amm=True)`` with x (B, H, W, C) NHWC -> (B, H, W, C_out).
    The common fields are those of ``ClassConditionalTransformer``; ``amm_blocks`` index ``blocks_{i}``.

    Attributes:
      hidden_size: width D of every token and of the condition.
      depth: number of transformer blocks.
      num_heads: attention heads of every block.
    """

    hidden_size: int
    depth: int
    num_heads: int

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, y: jax.Array, train: bool = False, amm: bool = True) -> jax.Array:
        x, c, _ = embed_inputs(self, x, t, y, self.hidden_size, train)
        block_cls = transformer_block_class(self.remat)
        for i in range(self.depth):
            apply_amm = amm and not train and i in self.amm_blocks
            x = block_cls(self.num_heads, self.grid, False, self.mlp_ratio, self.dtype, self.param_dtype,
                          name=f"blocks_{i}")(x, c, apply_amm)
        return self.final_output(x, c)
