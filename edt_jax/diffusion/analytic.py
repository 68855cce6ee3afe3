"""Exact denoisers: Gaussian-mixture data (testing and benchmarking samplers) and a finite set of images
(``DatasetDPM``: a perfect frozen DPM of its set at no training cost).

For data x0 ~ sum_k w_k N(mu_k, s_k^2 I) in D dimensions and x_t = alpha_t x0 + sigma_t eps, the
posterior mean is available in closed form:

    var_k   = alpha_t^2 s_k^2 + sigma_t^2
    logp_k  = log w_k - D/2 log var_k - |x - alpha_t mu_k|^2 / (2 var_k)
    g       = softmax_k(logp)
    E[x0|x] = sum_k g_k (mu_k + alpha_t s_k^2 / var_k (x - alpha_t mu_k))

so the probability-flow ODE has a known right-hand side and sampler error can be measured without
any training. This is the model behind ``tests/fixtures/samplers_reference.npz``.

For a finite set {x_i} (the data distribution of a finite training set), the same posterior mean is

    E[x0|x_t] = sum_i softmax_i(-|x_t - alpha_t x_i|^2 / (2 sigma_t^2)) x_i

which ``DatasetDPM`` computes batched, jit-able and chunked over the set (an online softmax, so memory is
O(B * chunk_size) whatever the set's size).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from edt_jax.diffusion.predictions import PREDICTIONS, check_prediction, to_eps
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


def dataset_posterior_mean(images: jax.Array, x: jax.Array, alpha: jax.Array, sigma: jax.Array, *,
                           chunk_size: int = 1024) -> jax.Array:
    """E[x0 | x_t = x] when x0 is uniform over the K ``images`` (K, ...): x (B, ...) like one image, alpha and
    sigma (B,) -> (B, ...). Chunks of ``chunk_size`` images are folded in by an online log-sum-exp, so the
    (B, K) weights never exist at once; distances are dot products (no (B, K, D) difference tensor)."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r} must be a positive integer")
    num = images.shape[0]
    if num < 1:
        raise ValueError("dataset_posterior_mean: the image set is empty; it needs at least one image")
    batch = x.shape[0]
    flat = x.reshape(batch, -1).astype(jnp.float32)
    data = images.reshape(num, -1).astype(jnp.float32)
    if data.shape[1] != flat.shape[1]:
        raise ValueError(f"dataset_posterior_mean: x has {flat.shape[1]} entries per item but the images have "
                         f"{data.shape[1]}")
    chunk = min(chunk_size, num)
    num_chunks = math.ceil(num / chunk)
    data = jnp.pad(data, ((0, num_chunks * chunk - num), (0, 0))).reshape(num_chunks, chunk, -1)
    valid = (jnp.arange(num_chunks * chunk) < num).reshape(num_chunks, chunk)
    norms = jnp.sum(data * data, axis=-1)  # (chunks, chunk)
    alpha = alpha.reshape(batch, 1).astype(jnp.float32)
    var = sigma.reshape(batch, 1).astype(jnp.float32) ** 2
    # -|x - a x_i|^2 / (2 s^2) up to the per-row constant -|x|^2 / (2 s^2), which the softmax drops.
    linear, quadratic = alpha / var, alpha ** 2 / (2.0 * var)

    def fold(carry, chunk_in):
        top, total, acc = carry
        items, item_norms, ok = chunk_in
        logits = linear * jnp.matmul(flat, items.T, precision="highest") - quadratic * item_norms[None]
        logits = jnp.where(ok[None], logits, -jnp.inf)
        new_top = jnp.maximum(top, jnp.max(logits, axis=-1))
        rescale = jnp.exp(top - new_top)  # 0 on the first chunk (top = -inf)
        w = jnp.exp(logits - new_top[:, None])
        acc = acc * rescale[:, None] + jnp.matmul(w, items, precision="highest")
        return (new_top, total * rescale + jnp.sum(w, axis=-1), acc), None

    init = (jnp.full((batch,), -jnp.inf, jnp.float32), jnp.zeros((batch,), jnp.float32), jnp.zeros_like(flat))
    (_, total, acc), _ = jax.lax.scan(fold, init, (data, norms, valid))
    return (acc / total[:, None]).reshape(x.shape).astype(x.dtype)


@dataclasses.dataclass(frozen=True, eq=False)
class DatasetDPM:
    """The exact (Bayes-optimal) DPM of a finite image set under ``schedule``: a frozen DPM that draws exactly
    its training set, at no training cost. ``params`` are the images (K, H, W, C) in [-1, 1], passed to the
    predictors as a jit argument like a network's parameters, so one compiled function serves any set of that
    shape.

        dpm = DatasetDPM(images, NoiseScheduleVP.named("linear"))
        eps = dpm.noise_predictor()(dpm.params, x_t, t_input)     # (B, H, W, C); t_input = ns.model_time(t)
        x0 = dpm.x0_predictor()(dpm.params, x_t, t_input)

    t_input is the training timestep (0 ... N-1 for a discrete schedule; fractional values interpolate the
    schedule as every network's time does). Duck-types what a frozen ``Run`` gives DisDiff: ``params``,
    ``schedule``, ``noise_predictor()``, ``x0_predictor()``.
    """

    params: jax.Array | np.ndarray
    schedule: NoiseScheduleVP
    chunk_size: int = 1024
    # > 0: the DPM of the images blurred into Gaussians N(x_i, bandwidth^2 I) (a kernel density estimate), not of
    # the K points themselves. Its denoiser no longer snaps to the nearest image at moderate noise.
    bandwidth: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.bandwidth, bool) or not isinstance(self.bandwidth, (int, float)) \
                or not 0.0 <= self.bandwidth < float("inf"):
            raise ValueError(f"DatasetDPM: bandwidth={self.bandwidth!r} must be a finite number >= 0")
        if np.ndim(self.params) != 4 or np.shape(self.params)[0] < 1:
            raise ValueError(f"DatasetDPM: images must be a non-empty (K, H, W, C) array, got shape "
                             f"{np.shape(self.params)}")
        if isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, int) or self.chunk_size < 1:
            raise ValueError(f"DatasetDPM: chunk_size={self.chunk_size!r} must be a positive integer")

    def _alpha_sigma(self, x_t: jax.Array, t_input: jax.Array) -> tuple[jax.Array, jax.Array]:
        t = self.schedule.continuous_time(jnp.broadcast_to(jnp.asarray(t_input, jnp.float32), (x_t.shape[0],)))
        return self.schedule.marginal_alpha(t), self.schedule.marginal_std(t)

    def x0_predictor(self) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
        """``(images, x_t, t_input) -> x0``: the posterior mean over the images (over their Gaussian blurs with a
        ``bandwidth``), (B, H, W, C)."""

        def x0(images, x_t, t_input):
            alpha, sigma = self._alpha_sigma(x_t, t_input)
            if not self.bandwidth:
                return dataset_posterior_mean(images, x_t, alpha, sigma, chunk_size=self.chunk_size)
            # x_t | i ~ N(alpha x_i, (sigma^2 + alpha^2 h^2) I): the component weights are the exact DPM's at the
            # wider noise level, and within component i, E[x0 | x_t, i] = x_i + alpha h^2 / s^2 (x_t - alpha x_i).
            h2 = float(self.bandwidth) ** 2
            var = sigma ** 2 + alpha ** 2 * h2
            mean = dataset_posterior_mean(images, x_t, alpha, jnp.sqrt(var), chunk_size=self.chunk_size)
            shape = (-1,) + (1,) * (x_t.ndim - 1)
            gain = (alpha * h2 / var).reshape(shape)
            return mean + gain * (x_t - alpha.reshape(shape) * mean)

        return x0

    def noise_predictor(self) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
        """``(images, x_t, t_input) -> eps = (x_t - alpha_t x0) / sigma_t`` of the posterior mean x0."""

        x0 = self.x0_predictor()

        def eps(images, x_t, t_input):
            alpha, sigma = self._alpha_sigma(x_t, t_input)
            shape = (-1,) + (1,) * (x_t.ndim - 1)
            return to_eps(x0(images, x_t, t_input), x_t, alpha.reshape(shape), sigma.reshape(shape), "x0")

        return eps
