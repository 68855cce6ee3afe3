"""One training step: diffusion loss (plus EDT's masked pass), gradients, optimizer update, EMA.

The step is a pure function of (state, batch, key) compiled once with ``jax.jit`` in/out shardings
and the state donated. Timesteps and their importance weights come in the batch: they are drawn on
the host by the timestep sampler, which needs the per-sample losses back (returned in the metrics).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from edt_jax.diffusion import DiscreteDiffusion
from edt_jax.diffusion.losses import training_losses
from edt_jax.training.optimizers import ema_update, learning_rate_of
from edt_jax.training.train_state import TrainState


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """What the step optimises (see ``edt_jax.diffusion.losses.training_losses``)."""

    learn_sigma: bool = True
    prediction: str = "eps"
    weighting: str = "min_snr"
    snr_gamma: float = 5.0
    masked_pass: bool = False  # EDT: add the loss of the token-masked pass on the same batch
    ema_decay: float = 0.9999


def model_input(batch: dict) -> jax.Array:
    """The diffusion target of a batch: pixel images or precomputed latents, NHWC float32."""
    return batch["image"] if "image" in batch else batch["latent"]


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, diffusion: DiscreteDiffusion,
                    loss_config: LossConfig) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
    """A pure ``step(state, batch, key) -> (state, metrics)``; jit it with shardings and donation.

    batch: {"image" or "latent": (B, H, W, C), "label": (B,), "t": (B,) int, "t_weight": (B,) float}.
    metrics: "loss" (scalar, weighted mean), "mse", "vb", "grad_norm", "learning_rate" (when the
    optimizer exposes it, as ``create_optimizer``'s do), and
    "per_sample_loss" (B,) unweighted losses (full + masked pass), for the loss-aware timestep sampler.
    """

    def losses_for(params, x, t, y, key, masked: bool) -> dict:
        noise_key, dropout_key, mask_key = jax.random.split(key, 3)
        noise = jax.random.normal(noise_key, x.shape, jnp.float32)
        rngs = {"dropout": dropout_key, "mask": mask_key}

        def model_fn(x_t, t_in):
            out = model.apply({"params": params}, x_t, t_in, y, train=True, masked=masked, rngs=rngs) \
                if masked else model.apply({"params": params}, x_t, t_in, y, train=True, rngs=rngs)
            return out.astype(jnp.float32)

        return training_losses(model_fn, x, t, noise, diffusion, learn_sigma=loss_config.learn_sigma,
                               prediction=loss_config.prediction, weighting=loss_config.weighting,
                               snr_gamma=loss_config.snr_gamma)

    def loss_fn(params, batch, key):
        x, t, y, w = model_input(batch), batch["t"], batch["label"], batch["t_weight"]
        full_key, masked_key = jax.random.split(key)
        full = losses_for(params, x, t, y, full_key, masked=False)
        loss = jnp.mean(full["loss"] * w)
        aux = {"mse": jnp.mean(full["mse"]), "vb": jnp.mean(full["vb"]), "per_sample_loss": full["loss"],
               "t": t}
        if loss_config.masked_pass:
            # EDT: same timesteps, fresh noise and label dropout; both losses drive one update, and the
            # timestep sampler learns from their sum.
            masked = losses_for(params, x, t, y, masked_key, masked=True)
            aux["masked_loss"] = jnp.mean(masked["loss"] * w)
            aux["per_sample_loss"] = full["loss"] + masked["loss"]
            loss = loss + aux["masked_loss"]
        return loss, aux

    def step(state: TrainState, batch: dict, key: jax.Array) -> tuple[TrainState, dict]:
        key = jax.random.fold_in(key, state.step)
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, key)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = ema_update(state.ema_params, params, loss_config.ema_decay)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
        learning_rate = learning_rate_of(opt_state)
        if learning_rate is not None:
            metrics["learning_rate"] = learning_rate
        new_state = state.replace(step=state.step + 1, params=params, ema_params=ema, opt_state=opt_state)
        return new_state, metrics

    return step


def compile_train_step(step: Callable, state_shardings: Any, batch_sharding: Any, replicated: Any) -> Callable:
    """``jax.jit`` the step with the state's shardings (donated), the batch's, and a replicated key."""
    return jax.jit(step, in_shardings=(state_shardings, batch_sharding, replicated),
                   out_shardings=(state_shardings, replicated), donate_argnums=(0,))
