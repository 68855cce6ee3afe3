"""The fields, properties and output head that EDT, DiT and MDTv2 share.

The fields are keyword-only (``kw_only=True``): a subclass may then declare required fields of its
own (EDT's ``dims``, DiT's ``hidden_size``) after these defaulted ones. Build a network with
``edt_jax.models.create_model``, which passes every field by keyword and validates it.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from edt_jax.models.layers import Dtype, FinalLayer, unpatchify


class ClassConditionalTransformer(nn.Module, kw_only=True):
    """Base of the class-conditional diffusion transformers EDT, DiT and MDTv2 (not a network itself).

    Every subclass is called as ``model.apply(variables, x, t, y, train=False, amm=True, ...)`` with
    x (B, input_size, input_size, in_channels) NHWC noisy latents, t (B,) timesteps (float or int),
    y (B,) int labels in [0, num_classes] (``num_classes`` is the null label of classifier-free
    guidance), and returns (B, input_size, input_size, out_channels). ``x`` is cut into
    ``grid x grid`` patches of ``patch_size`` pixels, i.e. ``tokens`` tokens, by ``embed_inputs``.

    Attributes:
      input_size: side of the square input latent (H = W), divisible by ``patch_size``.
      patch_size: side of the square patch that becomes one token.
      in_channels: channels C of x.
      num_classes: number of class labels; the label embedding table has one row more, the null label.
      learn_sigma: predict the variance too: the output has 2C channels (noise, then variance), else C.
      class_dropout_prob: probability that a label is replaced by the null label when ``train`` (drawn
        from the ``"dropout"`` RNG); with 0 the table has no null-label row.
      mlp_ratio: hidden width of each block's MLP as a multiple of the block's width.
      amm_blocks: indices (in order of application) of the blocks whose attention the Attention
        Modulation Matrix modulates at inference (``amm=True`` and not ``train``); empty for none.
      remat: recompute each block's activations in the backward pass (``nn.remat``) to save memory.
      dtype: computation dtype (e.g. bfloat16); None computes in the dtype of the inputs and parameters.
      param_dtype: dtype of the parameters.
    """

    input_size: int
    patch_size: int = 2
    in_channels: int = 4
    num_classes: int = 1000
    learn_sigma: bool = True
    class_dropout_prob: float = 0.1
    mlp_ratio: float = 4.0
    amm_blocks: tuple[int, ...] = ()
    remat: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @property
    def out_channels(self) -> int:
        """Channels of the output: 2 * in_channels when ``learn_sigma``, else in_channels."""
        return self.in_channels * 2 if self.learn_sigma else self.in_channels

    @property
    def grid(self) -> int:
        """Side of the token grid of the patch embedding: input_size // patch_size."""
        return self.input_size // self.patch_size

    @property
    def tokens(self) -> int:
        """Tokens of the patch embedding: grid ** 2."""
        return self.grid ** 2

    def final_output(self, x: jax.Array, c: jax.Array) -> jax.Array:
        """The output head, inside the compact ``__call__``: tokens (B, tokens, D) and condition c (B, D)
        -> (B, input_size, input_size, out_channels) through the ``final_layer`` submodule."""
        x = FinalLayer(self.patch_size, self.out_channels, self.dtype, self.param_dtype, name="final_layer")(x, c)
        return unpatchify(x, self.patch_size, self.out_channels)
