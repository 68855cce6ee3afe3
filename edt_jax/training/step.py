"""The diffusion task on the generic trainer: diffusion loss (plus EDT's / MDTv2's masked pass) and timesteps.

Timesteps and their importance weights are drawn on the host by the timestep sampler (in
``prepare_batch``), which needs the per-sample losses back (returned in the metrics and fed to it in
``after_step``). ``make_train_step`` / ``compile_train_step`` give the bare compiled step for
benchmarks and tests that drive it by hand.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from edt_jax.diffusion import DiscreteDiffusion
from edt_jax.diffusion.losses import training_losses
from edt_jax.training.task import LossFn, Task, make_update_step
from edt_jax.training.train_state import TrainState, model_init


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """What the step optimises (see ``edt_jax.diffusion.losses.training_losses``)."""

    learn_sigma: bool = True
    prediction: str = "eps"
    weighting: str = "min_snr"
    snr_gamma: float = 5.0
    masked_pass: bool = False  # EDT / MDTv2: add the loss of the token-masked pass on the same batch
    ema_decay: float = 0.9999


def model_input(batch: dict) -> jax.Array:
    """The diffusion target of a batch: pixel images or precomputed latents, NHWC float32."""
    return batch["image"] if "image" in batch else batch["latent"]


def model_example(model: nn.Module) -> tuple:
    """ShapeDtypeStructs of one (x, t, y) call of a diffusion network."""
    size = model.input_size
    return (jax.ShapeDtypeStruct((1, size, size, model.in_channels), jnp.float32),
            jax.ShapeDtypeStruct((1,), jnp.float32), jax.ShapeDtypeStruct((1,), jnp.int32))


def diffusion_loss(model: nn.Module, diffusion: DiscreteDiffusion, loss_config: LossConfig) -> LossFn:
    """``loss_fn(params, frozen, batch, key) -> (loss, metrics)`` of a diffusion network (``frozen`` unused).

    batch: {"image" or "latent": (B, H, W, C), "label": (B,), "t": (B,) int, "t_weight": (B,) float}.
    metrics: "mse", "vb", "masked_loss" (with the masked pass), "t" and "per_sample_loss" (B,)
    unweighted losses (full + masked pass), for the loss-aware timestep sampler.
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

    def loss_fn(params, frozen, batch, key):
        del frozen
        x, t, y, w = model_input(batch), batch["t"], batch["label"], batch["t_weight"]
        full_key, masked_key = jax.random.split(key)
        full = losses_for(params, x, t, y, full_key, masked=False)
        loss = jnp.mean(full["loss"] * w)
        aux = {"mse": jnp.mean(full["mse"]), "vb": jnp.mean(full["vb"]), "per_sample_loss": full["loss"],
               "t": t}
        if loss_config.masked_pass:
            # EDT and MDTv2 (train_util.py): same timesteps, fresh noise and label dropout; both losses
            # drive one update, and the timestep sampler learns from their sum.
            masked = losses_for(params, x, t, y, masked_key, masked=True)
            aux["masked_loss"] = jnp.mean(masked["loss"] * w)
            aux["per_sample_loss"] = full["loss"] + masked["loss"]
            loss = loss + aux["masked_loss"]
        return loss, aux

    return loss_fn


def diffusion_task(model: nn.Module, diffusion: DiscreteDiffusion, loss_config: LossConfig,
                   timestep_sampler) -> Task:
    """Diffusion training as a ``Task``: host-drawn timesteps, the sampler's history in every checkpoint."""

    def prepare_batch(batch: dict, rng: np.random.Generator) -> dict:
        t, weights = timestep_sampler.sample(rng, len(batch["label"]))
        return {**batch, "t": t.astype(np.int32), "t_weight": weights.astype(np.float32)}

    def after_step(metrics: dict) -> None:
        # Every process sees all (t, loss) pairs of the global batch, so their histories stay identical.
        timestep_sampler.update_with_local_losses(np.asarray(metrics["t"]), np.asarray(metrics["per_sample_loss"]))

    return Task(init_params=model_init(model, model_example(model)),
                loss_fn=diffusion_loss(model, diffusion, loss_config), prepare_batch=prepare_batch,
                after_step=after_step if timestep_sampler.loss_aware else None,
                host_state={"timestep_sampler": timestep_sampler}, ema_decay=loss_config.ema_decay)


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, diffusion: DiscreteDiffusion,
                    loss_config: LossConfig) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
    """The diffusion ``step(state, batch, key) -> (state, metrics)`` (the task's update step, nothing frozen)."""
    update = make_update_step(diffusion_loss(model, diffusion, loss_config), tx, loss_config.ema_decay)

    def step(state: TrainState, batch: dict, key: jax.Array) -> tuple[TrainState, dict]:
        return update(state, None, batch, key)

    return step


def compile_train_step(step: Callable, state_shardings: Any, batch_sharding: Any, replicated: Any) -> Callable:
    """``jax.jit`` a ``make_train_step`` step with the state's shardings (donated), the batch's, a replicated key."""
    return jax.jit(step, in_shardings=(state_shardings, batch_sharding, replicated),
                   out_shardings=(state_shardings, replicated), donate_argnums=(0,))
