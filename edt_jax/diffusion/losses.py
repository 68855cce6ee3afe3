"""DDPM training losses with the semantics of EDT's (ADM / DiT / MDTv2) ``GaussianDiffusion.training_losses``.

EDT trains with DiT's ``create_diffusion`` defaults: loss type MSE (not RESCALED_MSE, so the vb term is
NOT rescaled), learned-range variance, epsilon prediction, and MDTv2's Min-SNR weight with gamma = 5
applied per sample to the MSE term only:

    snr_t   = acp_t / (1 - acp_t)
    w_t     = min(snr_t, gamma) / snr_t   (eps and v prediction),   min(snr_t, gamma)   (x0 prediction)
    mse     = w_t * mean_{H,W,C} (target - pred)^2
    vb      = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) in bits per dim, or at t == 0 the
              discretised-Gaussian decoder NLL in bits per dim; the mean of p uses stop_gradient(pred)
              so that the vb term only trains the variance channels (ADM's ``frozen_out``)
    loss    = mse + vb                    (vb = 0 without learn_sigma)

Note: the reference also uses min(snr, gamma) / snr for v prediction (Min-SNR's paper has
min(snr, gamma) / (snr + 1) there); we reproduce the reference. Unlike the reference, whose
``p_mean_variance`` treats a v output as eps, the vb term here converts v to x0 correctly.

Everything is in float32 (tables gathered from the float64 NumPy tables) and jit-able; arguments are
checked on the host, at trace time.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from edt_jax.checks import check_choice
from edt_jax.diffusion.ddpm import DiscreteDiffusion, as_tables, extract, q_posterior_mean_variance, q_sample
from edt_jax.diffusion.predictions import PREDICTIONS, target_of, to_x0

WEIGHTINGS = ("min_snr", "none")


# --------------------------------------------------------------------------------- Gaussian helpers
def normal_kl(mean1: jax.Array, logvar1: jax.Array, mean2: jax.Array, logvar2: jax.Array) -> jax.Array:
    """Elementwise KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) in nats; arguments broadcast."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2)
                  + jnp.square(mean1 - mean2) * jnp.exp(-logvar2))


def _approx_standard_normal_cdf(x: jax.Array) -> jax.Array:
    # ADM's tanh approximation, kept (rather than the exact erf) so the NLL matches the reference.
    return 0.5 * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(x: jax.Array, *, means: jax.Array, log_scales: jax.Array) -> jax.Array:
    """Elementwise log-probability (nats) of x under N(means, exp(log_scales)^2) discretised to 256 bins.

    x is assumed to be uint8 data rescaled to [-1, 1] (bin width 2/255); values below -0.999 (above
    0.999) take the whole lower (upper) tail, as ADM. All arguments have the same shape.
    """
    centered = x - means
    inv_stdv = jnp.exp(-log_scales)
    cdf_plus = _approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = _approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = jnp.log(jnp.maximum(cdf_plus, 1e-12))
    log_one_minus_cdf_min = jnp.log(jnp.maximum(1.0 - cdf_min, 1e-12))
    log_cdf_delta = jnp.log(jnp.maximum(cdf_plus - cdf_min, 1e-12))
    return jnp.where(x < -0.999, log_cdf_plus, jnp.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta))


def _mean_flat(x: jax.Array) -> jax.Array:
    """(B,) mean over all non-batch axes."""
    return jnp.mean(x, axis=tuple(range(1, x.ndim)))


# --------------------------------------------------------------------------------- weighting
def mse_loss_weights(diffusion: DiscreteDiffusion, *, prediction: str = "eps", weighting: str = "min_snr",
                     snr_gamma: float = 5.0) -> np.ndarray:
    """(N,) float64 per-timestep weight of the MSE term (see the module docstring for the formula)."""
    diffusion = as_tables(diffusion)
    check_choice("prediction", prediction, PREDICTIONS)
    check_choice("weighting", weighting, WEIGHTINGS)
    snr_gamma = _check_gamma(snr_gamma)
    if weighting == "none":
        return np.ones(diffusion.num_steps, dtype=np.float64)
    acp = diffusion.alphas_cumprod
    snr = acp / (1.0 - acp)
    clipped = np.minimum(snr, snr_gamma)
    # An x0-space MSE is (1 / snr) times an eps-space one, hence no division for x0 prediction.
    return clipped if prediction == "x0" else clipped / snr


def _check_gamma(snr_gamma) -> float:
    ok = isinstance(snr_gamma, numbers.Real) and not isinstance(snr_gamma, bool)
    if not ok or not math.isfinite(snr_gamma) or snr_gamma <= 0:
        raise ValueError(f"snr_gamma must be a finite number > 0, got {snr_gamma!r}")
    return float(snr_gamma)


# --------------------------------------------------------------------------------- losses
def _x0_from_prediction(diffusion: DiscreteDiffusion, prediction: str, x_t: jax.Array, t: jax.Array,
                        pred: jax.Array) -> jax.Array:
    """The x0 implied by the network's mean output (B, ..., C)."""
    return to_x0(pred, x_t, extract(diffusion.sqrt_alphas_cumprod, t, x_t),
                 extract(diffusion.sqrt_one_minus_alphas_cumprod, t, x_t), prediction)


def _vb_terms_bpd(diffusion: DiscreteDiffusion, prediction: str, x_start: jax.Array, x_t: jax.Array,
                  t: jax.Array, pred: jax.Array, var_values: jax.Array) -> jax.Array:
    """(B,) ADM's ``_vb_terms_bpd`` with a learned-range variance and clip_denoised=False."""
    true_mean, _, true_log_var = q_posterior_mean_variance(diffusion, x_start, x_t, t)
    x0_pred = _x0_from_prediction(diffusion, prediction, x_t, t, pred)
    model_mean, _, _ = q_posterior_mean_variance(diffusion, x0_pred, x_t, t)
    # var_values in [-1, 1] interpolate the log variance between the posterior's and beta_t.
    min_log = extract(diffusion.posterior_log_variance_clipped, t, x_t)
    max_log = extract(np.log(diffusion.betas), t, x_t)
    frac = (var_values + 1.0) / 2.0
    model_log_var = frac * max_log + (1.0 - frac) * min_log
    kl = _mean_flat(normal_kl(true_mean, true_log_var, model_mean, model_log_var)) / math.log(2.0)
    nll = -_mean_flat(discretized_gaussian_log_likelihood(
        x_start, means=model_mean, log_scales=0.5 * model_log_var)) / math.log(2.0)
    # At t == 0 the bound's term is the decoder NLL, elsewhere the KL.
    return jnp.where(t == 0, nll, kl)


def _check_args(learn_sigma, x_start, t, noise) -> None:
    if not isinstance(learn_sigma, (bool, np.bool_)):
        raise ValueError(f"learn_sigma must be True or False, got {learn_sigma!r}")
    if x_start.ndim < 2:
        raise ValueError(f"x_start must have shape (B, ..., C) with at least 2 axes, got {x_start.shape}")
    if noise.shape != x_start.shape:
        raise ValueError(f"noise must have the shape of x_start {x_start.shape}, got {noise.shape}")
    if t.shape != (x_start.shape[0],) or not jnp.issubdtype(t.dtype, jnp.integer):
        raise ValueError(f"t must be an integer array of shape ({x_start.shape[0]},), got {t.dtype} {t.shape}")


def training_losses(model_fn: Callable[[jax.Array, jax.Array], jax.Array], x_start: jax.Array, t: jax.Array,
                    noise: jax.Array, diffusion: DiscreteDiffusion, *, learn_sigma: bool = True,
                    prediction: str = "eps", weighting: str = "min_snr",
                    snr_gamma: float = 5.0) -> dict[str, jax.Array]:
    """Per-sample training losses of EDT / MDTv2 (see the module docstring for the exact formulas).

    Args:
      model_fn: ``model_fn(x_t, t_model) -> out`` with x_t (B, ..., C) float32 and t_model (B,) int32 the
        training timestep (``diffusion.timestep_map[t]``, i.e. t itself unless respaced). out is
        (B, ..., C), or (B, ..., 2C) with learn_sigma, where the LAST C channels are the variance
        values v in [-1, 1] (log variance = frac log(beta_t) + (1 - frac) posterior_log_variance_clipped,
        frac = (v + 1) / 2). Any floating dtype; it is cast to float32.
      x_start: (B, ..., C) clean data x_0, channels last.
      t: (B,) integer timesteps in [0, N).
      noise: (B, ..., C) standard normal noise; x_t = sqrt(acp_t) x_start + sqrt(1 - acp_t) noise.
      diffusion: the training schedule: a discrete ``NoiseScheduleVP`` or its ``DiscreteDiffusion`` tables.
      learn_sigma: whether the model outputs variance channels (trained through the vb term).
      prediction: what the first C channels predict: "eps" | "x0" | "v" (v = sqrt(acp) eps - sqrt(1-acp) x0).
      weighting: "min_snr" (MDTv2 / EDT) or "none" (plain DiT).
      snr_gamma: the Min-SNR clip gamma.

    Returns:
      dict of (B,) float32: "loss" = "mse" + "vb" (what to minimise, before any importance weights of
      the timestep sampler), "mse" (the weighted MSE), "vb" (bits per dim; zeros without learn_sigma).
    """
    x_start = jnp.asarray(x_start, dtype=jnp.float32)
    noise = jnp.asarray(noise, dtype=jnp.float32)
    t = jnp.asarray(t)
    diffusion = as_tables(diffusion)
    _check_args(learn_sigma, x_start, t, noise)
    weights = mse_loss_weights(diffusion, prediction=prediction, weighting=weighting, snr_gamma=snr_gamma)

    x_t = q_sample(diffusion, x_start, t, noise)
    # ADM's SpacedDiffusion feeds the network the original timestep; identity for an unspaced diffusion.
    t_model = jnp.asarray(diffusion.timestep_map, dtype=jnp.int32)[t] if diffusion.is_respaced \
        else t.astype(jnp.int32)
    out = model_fn(x_t, t_model)
    channels = x_start.shape[-1]
    expected = x_start.shape[:-1] + (2 * channels if learn_sigma else channels,)
    if tuple(out.shape) != expected:
        raise ValueError(f"model output has shape {tuple(out.shape)}; learn_sigma={learn_sigma} needs {expected}")
    out = out.astype(jnp.float32)
    pred = out[..., :channels]

    target = target_of(prediction, x_start, noise, extract(diffusion.sqrt_alphas_cumprod, t, x_start),
                       extract(diffusion.sqrt_one_minus_alphas_cumprod, t, x_start))
    mse = jnp.asarray(weights, dtype=jnp.float32)[t] * _mean_flat(jnp.square(target - pred))

    if learn_sigma:
        vb = _vb_terms_bpd(diffusion, prediction, x_start, x_t, t, jax.lax.stop_gradient(pred), out[..., channels:])
    else:
        vb = jnp.zeros_like(mse)
    return {"loss": mse + vb, "mse": mse, "vb": vb}
