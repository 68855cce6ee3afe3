"""Config -> library objects: what a ``configs/*.py`` experiment (or a run's ``config.json``) describes.

The only place (with the DP-IR and DisDiff ``build`` modules) that reads ``ml_collections.ConfigDict``s; the
objects it returns take plain arguments. Every path a config names is read through ``etils.epath``, so local
paths and ``gs://`` both work.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections

from edt_jax import data as data_lib
from edt_jax import paths
from edt_jax.diffusion import NoiseScheduleVP
from edt_jax.diffusion.timestep_sampling import create_timestep_sampler
from edt_jax.models import EDT, MDTv2, create_model
from edt_jax.models.vae import SD_VAE_SCALE, create_vae, load_vae_weights
from edt_jax.training import sharding
from edt_jax.training.checkpoint import CONFIG_FILENAME
from edt_jax.training.loop import LoopOptions
from edt_jax.training.optimizers import create_optimizer
from edt_jax.training.step import LossConfig


def to_plain(value):
    """ConfigDict values -> plain Python (lists become tuples, as module attributes want)."""
    if isinstance(value, ml_collections.ConfigDict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return tuple(to_plain(v) for v in value)
    return value


TEXT_TO_IMAGE_TASK = "text_to_image"  # config.task of the text-to-image configs (edt_jax.t2i.training trains them)


def is_text_to_image(config: Mapping[str, Any]) -> bool:
    """Whether a config (or a run's config.json dict) is a text-to-image one (``task == "text_to_image"``)."""
    return config.get("task") == TEXT_TO_IMAGE_TASK


def read_config(workdir) -> ml_collections.ConfigDict:
    """The ``config.json`` a training run wrote into ``workdir``; a one-line error when there is none."""
    path = paths.as_path(workdir) / CONFIG_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; is {workdir} a launch.train workdir?")
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def build_mesh(config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
    mesh = config.get("mesh", {})
    return sharding.create_mesh(data=mesh.get("data", -1), fsdp=mesh.get("fsdp", 1), tensor=mesh.get("tensor", 1))


def build_sharding_rules(config: ml_collections.ConfigDict) -> tuple:
    """``config.sharding_rules`` (pairs of logical axis -> mesh axis or None), else the library defaults."""
    rules = config.get("sharding_rules")
    return sharding.LOGICAL_RULES if not rules else tuple((name, to_plain(axis)) for name, axis in rules)


def build_model(config: ml_collections.ConfigDict):
    kwargs = to_plain(config.model)
    return create_model(kwargs.pop("name"), **kwargs)


def build_schedule(config: ml_collections.ConfigDict) -> NoiseScheduleVP:
    """The run's discrete schedule (``config.diffusion``): the samplers' VP view and, in ``.tables``, the
    training diffusion."""
    d = config.get("diffusion", {})
    return NoiseScheduleVP.named(d.get("beta_schedule", "linear"), d.get("num_timesteps", 1000))


def build_timestep_sampler(config: ml_collections.ConfigDict):
    d = config.diffusion
    return create_timestep_sampler(d.get("timestep_sampler", "uniform"), d.get("num_timesteps", 1000))


def build_loss_config(config: ml_collections.ConfigDict, model) -> LossConfig:
    loss = to_plain(config.get("loss", {}))
    if loss.get("masked_pass") and not isinstance(model, EDT | MDTv2):
        raise ValueError(f"loss.masked_pass=True needs an EDT or MDTv2 model (token-masking training), got "
                         f"{type(model).__name__}; set --config.loss.masked_pass=False")
    return LossConfig(learn_sigma=model.learn_sigma, ema_decay=config.get("ema_decay", 0.9999), **loss)


def loop_options(config: ml_collections.ConfigDict, *, total_steps: int | None = None,
                 seed: int | None = None) -> LoopOptions:
    """The training loop's step counts of ``config`` (its ``total_steps`` and ``seed`` unless given: DP-IR trains
    several networks, each with its own)."""
    return LoopOptions(total_steps=config.total_steps if total_steps is None else total_steps,
                       log_every_steps=config.log_every_steps, checkpoint_every_steps=config.checkpoint_every_steps,
                       keep_checkpoints=config.get("keep_checkpoints", 3), seed=config.seed if seed is None else seed)


def build_optimizer(config: ml_collections.ConfigDict):
    """``config.optimizer``'s optax transformation; ``decay_steps=None`` decays over the run's ``total_steps``."""
    opt = to_plain(config.optimizer)
    if "decay_steps" in opt and opt["decay_steps"] is None:
        opt["decay_steps"] = config.total_steps
    return create_optimizer(opt.pop("name"), opt.pop("learning_rate"), **opt)


def build_dataset(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
    """(grain dataset of host batches, source) from ``config.data`` and the global ``config.batch_size``."""
    d = to_plain(config.data)
    source = data_lib.create_source(d["source"], data_dir=d.get("data_dir") or None,
                                    split=d.get("split", "train"))
    host_batch = data_lib.host_batch_size(config.batch_size, mesh=mesh)
    dataset = data_lib.create_dataset(source, host_batch, seed=config.seed, image_size=d.get("image_size"),
                                      channels=d.get("channels"), label_key=d.get("label_key", "label"),
                                      latent_scale=d.get("latent_scale", 1.0),
                                      random_flip=d.get("random_flip", False), num_workers=d.get("num_workers", 0),
                                      num_threads=d.get("num_threads"))
    return dataset, source


def check_batch_matches_model(batch: dict, model) -> None:
    """One-line error when the pipeline's images are not what the model takes."""
    x = batch.get("image", batch.get("latent"))
    expected = (model.input_size, model.input_size, model.in_channels)
    if tuple(x.shape[1:]) != expected:
        raise ValueError(f"the data gives {tuple(x.shape[1:])} inputs but the model takes {expected}; "
                         f"set data.image_size / data.channels or model.input_size / model.in_channels")


def build_vae(config: ml_collections.ConfigDict, path: str | None = None):
    """(VAE, its Flax params, latent scale) from ``config.vae`` and the weights at ``path`` (default
    ``config.vae.path``); ``None`` when neither names a path (pixel-space runs)."""
    settings = to_plain(config.get("vae", {}))
    path = path or settings.get("path")
    if not path:
        return None
    scale = float(settings.pop("scale", SD_VAE_SCALE))
    settings.pop("path", None)
    vae = create_vae(**settings)
    return vae, load_vae_weights(path, vae), scale
