"""An exact denoiser for Gaussian-mixture data, for testing and benchmarking samplers.

For data x0 ~ sum_k w_k N(mu_k, s_k^2 I) in D dimensions and x_t = alpha_t x0 + sigma_t eps, the
posterior mean is available in closed form:

    var_k   = alpha_t^2 s_k^2 + sigma_t^2
    logp_k  = log w_k - D/2 log var_k - |x - alpha_t mu_k|^2 / (2 var_k)
    g       = softmax_k(logp)
    E[x0|x] = sum_k g_k (mu_k + alpha_t s_k^2 / var_k (x - alpha_t mu_k))

so the probability-flow ODE has a known right-hand side and sampler error can be measured without
any training. This is the model behind ``tests/fixtures/samplers_reference.npz``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from edt_jax.diffusion.predictions import PREDICTIONS, check_prediction
from edt_jax.diffusion.schedules import NoiseScheduleVP


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianMixture:
    """Isotropic Gaussian mixture: means (K, D), stds (K,), weights (K,)."""

    means: np.ndarray
    stds: np.ndarray
    weights: np.ndarray

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    def posterior_mean(self, x: jax.Array, alpha: jax.Array, sigma: jax.Array,
                       weights: jax.Array | None = None) -> jax.Array:
        """E[x0 | x_t = x] for x (B, ...) flattened to (B, D); alpha, sigma (B,); weights (B, K)."""
        batch = x.shape[0]
        flat = x.reshape(batch, -1)
        means = jnp.asarray(self.means, flat.dtype)
        stds2 = jnp.asarray(self.stds, flat.dtype) ** 2
        if weights is None:
            weights = jnp.broadcast_to(jnp.asarray(self.weights, flat.dtype), (batch, self.num_components))
        alpha = alpha.reshape(batch, 1)
        sigma = sigma.reshape(batch, 1)
        var = alpha**2 * stds2[None, :] + sigma**2                            # (B, K)
        diff = flat[:, None, :] - alpha[:, :, None] * means[None]              # (B, K, D)
        dim = flat.shape[1]
        logp = jnp.log(weights) - 0.5 * dim * jnp.log(var) - jnp.sum(diff**2, -1) / (2 * var)
        resp = jax.nn.softmax(logp, axis=-1)                                   # (B, K)
        comp_mean = means[None] + (alpha * stds2[None, :] / var)[:, :, None] * diff
        return jnp.einsum("bk,bkd->bd", resp, comp_mean).reshape(x.shape)

    def conditional_weights(self, labels: jax.Array) -> jax.Array:
        """Component weights given a label: 0.98 onehot + 0.01; label K means unconditional."""
        k = self.num_components
        onehot = jax.nn.one_hot(labels, k, dtype=jnp.result_type(float))
        cond = 0.98 * onehot + 0.01
        uncond = jnp.broadcast_to(jnp.asarray(self.weights, cond.dtype), cond.shape)
        return jnp.where((labels == k)[:, None], uncond, cond)

    def model(self, ns: NoiseScheduleVP, prediction: str = "eps"):
        """A network stand-in ``model(x, t_input[, labels]) -> its prediction`` ("eps" | "x0" | "v"; the
        reference's "noise" and "x_start" still work, deprecated).

        ``t_input`` follows the reference convention (``ns.model_time``): for discrete schedules
        t = t_input / 1000 + 1/N, otherwise t = t_input.
        """
        prediction = check_prediction(prediction, PREDICTIONS)

        def apply(x, t_input, labels=None):
            t_input = jnp.broadcast_to(jnp.asarray(t_input, x.dtype), (x.shape[0],))
            t = ns.continuous_time(t_input)
            alpha, sigma = ns.marginal_alpha(t), ns.marginal_std(t)
            weights = None if labels is None else self.conditional_weights(labels)
            x0 = self.posterior_mean(x, alpha, sigma, weights)
            shape = (-1,) + (1,) * (x.ndim - 1)
            alpha, sigma = alpha.reshape(shape), sigma.reshape(shape)
            eps = (x - alpha * x0) / sigma
            if prediction == "eps":
                return eps
            if prediction == "x0":
                return x0
            return alpha * eps - sigma * x0

        return apply
