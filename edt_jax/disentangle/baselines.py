"""The beta-VAE baseline (Higgins et al., 2017) as disentanglement_lib trains it: Bernoulli likelihood of the
pixels in [0, 1] summed over the image, beta times the KL to N(0, I); the representation is the posterior mean."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from edt_jax.disentangle.networks import BetaVAE


def beta_vae_loss(vae: BetaVAE, beta: float):
    """The trainer's ``loss_fn(params, frozen, batch, key)`` of a beta-VAE on batch {"image": (B, H, W, C)
    in [-1, 1]}: mean over the batch of (reconstruction + beta KL), both summed over their dimensions."""
    if beta < 0:
        raise ValueError(f"beta={beta!r} must be >= 0")

    def loss_fn(params: Any, frozen: Any, batch: dict, key: jax.Array):
        del frozen
        x = batch["image"].astype(jnp.float32)
        noise = jax.random.normal(key, (x.shape[0], vae.latent_dim), jnp.float32)
        mean, log_variance, logits = vae.apply({"params": params}, x, noise)
        target = (x + 1.0) / 2.0
        reconstruction = jnp.sum(optax.sigmoid_binary_cross_entropy(logits, target), axis=(1, 2, 3))
        kl = 0.5 * jnp.sum(jnp.exp(log_variance) + mean ** 2 - 1.0 - log_variance, axis=-1)
        loss = jnp.mean(reconstruction + beta * kl)
        return loss, {"reconstruction": jnp.mean(reconstruction), "kl": jnp.mean(kl)}

    return loss_fn
