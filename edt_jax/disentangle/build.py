"""A disentanglement method from a config (``configs/shapes_disdiff.py``, ``configs/shapes_betavae.py``): DisDiff
on a frozen DPM or the beta-VAE, its training and its trained parameters.

    from edt_jax.disentangle import build
    method = build.build_method(config, dpm_workdir)        # DisDiff on the frozen DPM of a launch.train run
    build.train_method(config, workdir, method)             # the library's trainer (resumable)
    params, step = build.load_method_params(workdir, method)
    codes = method.encode(params, images)                   # (B, K)

``tasks`` runs them (train, evaluate, swap); ``launch.disentangle`` is its flags.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath

from edt_jax import data as data_lib
from edt_jax import paths
from edt_jax.checks import check_choice
from edt_jax.data.ground_truth import ground_truth_for
from edt_jax.diffusion import NoiseScheduleVP
from edt_jax.diffusion.analytic import DatasetDPM
from edt_jax.disentangle.baselines import beta_vae_loss
from edt_jax.disentangle.disdiff import DisDiff
from edt_jax.disentangle.networks import BetaVAE, Encoder, SubGradientDecoder
from edt_jax.runs import Run, load_frozen_run
from edt_jax.runs.build import build_mesh, build_optimizer, loop_options
from edt_jax.training import sharding
from edt_jax.training.checkpoint import CONFIG_FILENAME
from edt_jax.training.loop import TrainResult, train
from edt_jax.training.task import Task
from edt_jax.training.train_state import load_params

METHODS = ("DisDiff", "BetaVAE")
DPM_KINDS = ("run", "closed_form")


@dataclasses.dataclass
class Method:
    """A representation learner: ``init_params(key)``, the trainer's ``loss_fn``, its ``frozen`` arrays and
    ``encode(params, x) -> (B, K)`` codes; ``num_chunks`` is N for DisDiff's chunked codes (None for the VAE).
    ``dpm`` is DisDiff's frozen DPM (a ``Run``) when one was loaded."""

    name: str
    init_params: Callable[[jax.Array], Any]
    loss_fn: Callable
    encode: Callable[[Any, jax.Array], jax.Array]
    num_chunks: int | None
    frozen: Any = None
    disdiff: DisDiff | None = None
    dpm: Run | DatasetDPM | None = None


def image_shape(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
    """(H, W, C) of the config's images."""
    return (config.data.image_size, config.data.image_size, config.data.channels)


def _check_model(m: ml_collections.ConfigDict) -> None:
    check_choice("model.name", m.name, METHODS)
    if m.name == "DisDiff":
        if not isinstance(m.num_factors, int) or m.num_factors < 2:
            raise ValueError(f"model.num_factors={m.num_factors!r}: DisDiff needs N >= 2 factor codes")
        if not isinstance(m.code_dim, int) or m.code_dim < 1:
            raise ValueError(f"model.code_dim={m.code_dim!r}: the code of each factor needs d >= 1 entries")
        if m.dis_weight < 0:
            raise ValueError(f"model.dis_weight={m.dis_weight!r}: lambda must be >= 0 (0 = reconstruction only)")
    elif not isinstance(m.latent_dim, int) or m.latent_dim < 1:
        raise ValueError(f"model.latent_dim={m.latent_dim!r}: the beta-VAE needs at least 1 latent")


def dpm_kind(config: ml_collections.ConfigDict) -> str:
    """``config.dpm.kind``: "run" (a ``launch.train`` run in ``dpm_workdir``, the default) or "closed_form" (the
    exact DPM of the config's images, ``closed_form_dpm``)."""
    kind = config.get("dpm", {}).get("kind", "run")
    check_choice("dpm.kind", kind, DPM_KINDS)
    return kind


def closed_form_dpm(config: ml_collections.ConfigDict) -> DatasetDPM:
    """The exact DPM of every image of ``config.data.source`` (a ground-truth source: ``shapes...``) under the
    discrete schedule ``config.dpm``: betas linear in sqrt(beta) from ``linear_start`` to ``linear_end`` over
    ``timesteps`` (the LDM "linear" schedule of the official configs). Nothing is trained. ``dpm.bandwidth`` > 0
    smooths it: the exact DPM of the images blurred by N(0, bandwidth^2) (``DatasetDPM.bandwidth``)."""
    d = config.dpm
    if not 0 < d.linear_start < d.linear_end < 1:
        raise ValueError(f"dpm.linear_start={d.linear_start!r}, dpm.linear_end={d.linear_end!r}: need "
                         f"0 < linear_start < linear_end < 1")
    betas = np.linspace(d.linear_start ** 0.5, d.linear_end ** 0.5, int(d.timesteps), dtype=np.float64) ** 2
    ground_truth = ground_truth_for(config.data.source, indices=True)
    images = ground_truth.observations_at(np.arange(ground_truth.num_items))
    if images.shape[1:] != image_shape(config):
        raise ValueError(f"the closed-form DPM's source {config.data.source!r} gives {images.shape[1:]} images, the "
                         f"config disentangles {image_shape(config)}")
    # A host array: jit places it wherever the trainer's mesh puts the other arguments.
    return DatasetDPM(np.asarray(images, np.float32), NoiseScheduleVP.discrete(betas=betas),
                      chunk_size=int(d.get("chunk_size", 1024)), bandwidth=float(d.get("bandwidth", 0.0)))


def dpm_dir(config: ml_collections.ConfigDict, given: str | None) -> epath.Path:
    """The frozen DPM's workdir: ``given`` (``--dpm_workdir``), else ``config.dpm_workdir``."""
    path = given or config.get("dpm_workdir", "")
    if not path:
        raise ValueError("DisDiff needs the frozen DPM: give --dpm_workdir (a launch.train run on the same images)")
    return paths.as_path(path)


def trained_dpm_workdir(workdir) -> str:
    """The DPM a DisDiff run was trained on, from its saved config ('' when unknown)."""
    path = paths.as_path(workdir) / CONFIG_FILENAME
    return json.loads(path.read_text()).get("dpm_workdir", "") if path.is_file() else ""


def load_dpm(workdir, shape: tuple[int, int, int]) -> Run:
    """The frozen DPM: the ``launch.train`` run in ``workdir``, trained on ``shape`` (H, W, C) images (one-line
    errors otherwise)."""
    return load_frozen_run(workdir, shape, role="DPM", user="this config disentangles")


def build_method(config: ml_collections.ConfigDict, dpm_workdir: paths.PathLike | None = None, *,
                 with_dpm: bool = False) -> Method:
    """The config's method. DisDiff's frozen DPM (training, swaps) is the run in ``dpm_workdir`` when given, or,
    with ``with_dpm`` and ``config.dpm.kind == "closed_form"``, the exact DPM of the config's images."""
    m = config.model
    _check_model(m)
    shape = image_shape(config)
    if m.name == "BetaVAE":
        vae = BetaVAE(m.latent_dim, shape, tuple(m.encoder_widths))
        example = jnp.zeros((1, *shape), jnp.float32)
        noise = jnp.zeros((1, m.latent_dim), jnp.float32)
        return Method("BetaVAE", lambda key: vae.init(key, example, noise)["params"], beta_vae_loss(vae, m.beta),
                      lambda params, x: vae.apply({"params": params}, x, method="encode")[0], None)

    encoder = Encoder(m.num_factors, m.code_dim, tuple(m.encoder_widths))
    decoder = SubGradientDecoder(m.num_factors, tuple(m.decoder_widths), m.embed_dim, m.patch_size)
    dpm = eps_fn = None
    alphas_cumprod = np.zeros((0,))  # no DPM: only the encoder is used (evaluation)
    if with_dpm and dpm_kind(config) == "closed_form":
        dpm = closed_form_dpm(config)
    elif dpm_workdir is not None:
        dpm = load_dpm(dpm_workdir, shape)
    if dpm is not None:
        eps_fn, alphas_cumprod = dpm.noise_predictor(), dpm.schedule.alphas_cumprod
    model = DisDiff(encoder, decoder, eps_fn, np.asarray(alphas_cumprod), m.dis_weight,
                    m.get("dis_weighting", "x0"), bool(m.get("train_encoder_in_dis", False)),
                    m.get("reconstruction", "eps"))

    def encode(params, x):
        return model.encode(params, x).reshape(x.shape[0], -1)

    return Method("DisDiff", model.init_params(shape), model.loss_fn, encode, m.num_factors,
                  frozen=None if dpm is None else dpm.params, disdiff=model, dpm=dpm)


def train_method(config: ml_collections.ConfigDict, workdir, method: Method) -> TrainResult:
    """Train ``method`` with the library's trainer into ``workdir`` (resumable, kill -9 safe)."""
    if method.name == "DisDiff" and method.dpm is None:
        raise ValueError("DisDiff trains on a frozen DPM: give --dpm_workdir")
    mesh = build_mesh(config)
    host_batch = data_lib.host_batch_size(config.batch_size, mesh=mesh)
    source = data_lib.create_source(config.data.source)
    dataset = data_lib.create_dataset(source, host_batch, seed=config.seed, label_key=None,
                                      image_size=config.data.image_size, channels=config.data.channels,
                                      random_flip=config.data.random_flip, keep_keys=())
    task = Task(init_params=method.init_params, loss_fn=method.loss_fn, frozen=method.frozen,
                ema_decay=config.ema_decay, ema_warmup=bool(config.get("ema_warmup", False)))
    return train(task, build_optimizer(config), dataset, mesh, paths.as_path(workdir), loop_options(config),
                 config=config.to_dict())


def load_method_params(workdir, method: Method) -> tuple[Any, int]:
    """(EMA params, step) of the newest checkpoint of a trained run of ``method`` in ``workdir``."""
    directory = paths.as_path(workdir) / "checkpoints"
    if not directory.is_dir():
        raise FileNotFoundError(f"no trained {method.name} in {workdir}; run --mode train first")
    return load_params(directory, method.init_params, sharding.create_mesh())
