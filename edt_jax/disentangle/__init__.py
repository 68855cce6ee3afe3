"""DisDiff (Yang et al., NeurIPS 2023): unsupervised disentanglement of a frozen pretrained DPM.

    from edt_jax import disentangle
    P = disentangle.orthogonal_embedding(W)                    # (D, D) factor embeddings, rows used
    k = disentangle.train_shift_coef(alphas_cumprod, t)        # (B,) coefficient of sum_n G_n in training
    s = disentangle.sample_shift_coef(alphas_cumprod, t)       # (B,) coefficient when sampling
    x0_pred, x0_shifted = disentangle.shifted_x0(x_t, t, eps_pred, shift, alphas_cumprod)
    losses = disentangle.disentangling_loss(codes_pred, codes_shifted, codes_true, factor, x0_pred, x0_shifted,
                                            weight_scale=0.05)  # {invariant, variant, weight, total} (B,)

``DisDiff`` assembles them into the trainer's loss and the shifted samplers; ``networks`` holds the encoder,
the sub-gradient decoder and the beta-VAE baseline; ``baselines`` the beta-VAE loss. From a config:
``disentangle.build`` (the method, on the frozen DPM of a ``launch.train`` run) and ``disentangle.tasks`` (train,
evaluate, swap factors), which ``launch/disentangle.py`` calls.
"""

from edt_jax.disentangle.disdiff import DisDiff, ddim_invert, noise_predictor, sample, swap_codes
from edt_jax.disentangle.losses import (
    disentangling_loss,
    orthogonal_embedding,
    sample_shift_coef,
    shifted_x0,
    train_shift_coef,
)
from edt_jax.disentangle.networks import BetaVAE, Encoder, SubGradientDecoder

__all__ = ["BetaVAE", "DisDiff", "Encoder", "SubGradientDecoder", "ddim_invert", "disentangling_loss",
           "noise_predictor", "orthogonal_embedding", "sample", "sample_shift_coef", "shifted_x0", "swap_codes",
           "train_shift_coef"]
