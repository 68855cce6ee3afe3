"""DisDiff's loss pieces, as the official code computes them (ThomasMrY/DisDiff, ``ldm/models/diffusion/ddpm.py``).

A frozen DPM predicts eps_theta(x_t, t); DisDiff adds N learned sub-gradient fields G_n(x_t, z_n, t):

    training (p_losses):   eps_hat = eps_theta + k_t * sum_n G_n,   k_t = train_shift_coef
    sampling / dis_loss:   eps_hat = eps_theta + s_t * G,           s_t = sample_shift_coef

Timesteps ``t`` are integers 0..T-1 of the discrete schedule ``alphas_cumprod`` (T,), with abar_{-1} = 1
and a_t = abar_t / abar_{t-1}. Every function is pure jnp and works in float32 or float64.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LOSS_KEYS = ("invariant", "variant", "weight", "total")


def orthogonal_embedding(weight: jax.Array) -> jax.Array:
    """(D, D) -> (D, D) orthogonal matrix P = expm(weight.T - weight); row c embeds factor c.

    The official ``torch_expm(W - W^T)`` solves its Pade system with the sign flipped, so what it returns is
    expm(W^T - W); taking expm(W - W^T) here would give the transpose, i.e. other rows.
    """
    weight = jnp.asarray(weight)
    if weight.ndim != 2 or weight.shape[0] != weight.shape[1]:
        raise ValueError(f"orthogonal_embedding: weight must be a square (D, D) matrix, got shape {weight.shape}")
    return jax.scipy.linalg.expm(weight.T - weight)


def _previous_alphas_cumprod(alphas_cumprod: jax.Array) -> jax.Array:
    """(T,) abar_{t-1}, with abar_{-1} = 1."""
    return jnp.concatenate([jnp.ones((1,), alphas_cumprod.dtype), alphas_cumprod[:-1]])


def train_shift_coef(alphas_cumprod: jax.Array, t: jax.Array) -> jax.Array:
    """(B,) k_t = -sqrt(a_t) (1 - abar_{t-1}) / sqrt(1 - abar_t): the PDAE coefficient of sum_n G_n in the
    training prediction (the official buffer ``shift_coef``; k_0 = 0)."""
    abar = jnp.asarray(alphas_cumprod)
    prev = _previous_alphas_cumprod(abar)
    coef = -jnp.sqrt(abar / prev) * (1.0 - prev) / jnp.sqrt(1.0 - abar)
    return coef[jnp.asarray(t)]


def sample_shift_coef(alphas_cumprod: jax.Array, t: jax.Array) -> jax.Array:
    """(B,) s_t = -sqrt(1 - abar_t): the coefficient of G when sampling and in the disentangling loss
    (the official buffer ``ddim_coef``)."""
    abar = jnp.asarray(alphas_cumprod)
    return -jnp.sqrt(1.0 - abar)[jnp.asarray(t)]


def _per_sample(v: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim)).astype(x.dtype)


def shifted_x0(x_t: jax.Array, t: jax.Array, eps_pred: jax.Array, shift: jax.Array,
               alphas_cumprod: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(x0_pred, x0_shifted), each shaped like x_t (B, ...): the x0 estimates of eps_pred and of
    eps_pred + s_t shift (``predict_start_from_noise``), where shift is G_c of the sampled factor."""
    abar = jnp.asarray(alphas_cumprod)[jnp.asarray(t)]
    recip, recipm1 = _per_sample(jnp.sqrt(1.0 / abar), x_t), _per_sample(jnp.sqrt(1.0 / abar - 1.0), x_t)
    s_t = _per_sample(sample_shift_coef(alphas_cumprod, t), x_t)
    x0_pred = recip * x_t - recipm1 * eps_pred
    x0_shifted = recip * x_t - recipm1 * (eps_pred + s_t * shift)
    return x0_pred, x0_shifted


WEIGHTINGS = ("x0", "none")


def disentangling_loss(codes_pred: jax.Array, codes_shifted: jax.Array, codes_true: jax.Array, factor: jax.Array,
                       x0_pred: jax.Array, x0_shifted: jax.Array, weight_scale: float = 1.0, *,
                       weighting: str = "x0") -> dict[str, jax.Array]:
    """The official ``dis_loss``: per-example losses {invariant, variant, weight, total}, each (B,).

    codes_* (B, N, d): the (frozen-copy) encoder's codes of x0_pred, of x0_shifted and of the real image;
    factor (B,) int: the factor c whose field shifted each example; x0_* (B, ...) the two x0 estimates.
    Distances are Euclidean (not squared). The invariant term asks that only code c moves between x0_pred
    and x0_shifted; the variant term that code c moves towards the real image's code the most. Gradients
    flow only through ``codes_shifted``: ``codes_pred`` comes from a no-grad block and ``codes_true`` and
    ``x0_shifted`` are detached in the official code, so the per-example ``weight`` is a constant.

    ``weighting="x0"`` is the official weight (``dis_loss_type`` "IM", and "Z" too: "Z" takes the same squared
    difference of the two x0 estimates in the LDM's latent space, which in pixel space is this one). "none"
    (not official) weighs every example 1: the official weight is the squared size of the field, so while
    the fields are small it switches the cross-entropies off, and when they grow it grows with them.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; accepted: {', '.join(WEIGHTINGS)}")
    logits_invariant, logits_variant = distance_logits(codes_pred, codes_shifted, codes_true)
    factor = jnp.asarray(factor)

    def cross_entropy(logits):
        return -jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), factor[:, None], axis=-1)[:, 0]

    invariant, variant = cross_entropy(logits_invariant), cross_entropy(logits_variant)
    diff = jax.lax.stop_gradient(x0_pred - x0_shifted)
    weight = jnp.mean(jnp.reshape(diff ** 2, (diff.shape[0], -1)), axis=-1)
    if weighting == "none":
        weight = jnp.ones_like(weight)
    total = weight_scale * weight * (invariant + variant)
    return {"invariant": invariant, "variant": variant, "weight": weight, "total": total}


def distance_logits(codes_pred: jax.Array, codes_shifted: jax.Array,
                    codes_true: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The two (B, N) logit matrices of ``disentangling_loss``: d_in = |pred - shifted| per factor and
    d_va = |pred - true| - |shifted - true| (Euclidean over each factor's d code entries)."""
    codes_pred = jax.lax.stop_gradient(codes_pred)
    codes_true = jax.lax.stop_gradient(codes_true)
    logits_invariant = _norm(codes_pred - codes_shifted)
    logits_variant = _norm(codes_pred - codes_true) - _norm(codes_shifted - codes_true)
    return logits_invariant, logits_variant


def _norm(x: jax.Array) -> jax.Array:
    """Euclidean norm over the last axis whose gradient at 0 is 0, as torch.norm's (jnp.linalg.norm's is NaN).
    At step 0 every G_n is 0, so codes_shifted == codes_pred exactly."""
    squared = jnp.sum(x * x, axis=-1)
    positive = squared > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)
