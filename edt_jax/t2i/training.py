"""Train a small pixel-space text-to-image model (SD's UNet + CLIP text encoder) on captioned shapes, load it as a
``StableDiffusion`` pipeline, and export it as a diffusers folder.

    from edt_jax.t2i import training
    training.train(config, "/tmp/t2i")                       # configs/shapes_t2i.py; resumes like every run
    pipe = training.load_text_run("/tmp/t2i")                # = edt_jax.load_run: EMA params, no optimizer
    images = pipe(["a red circle on a dark blue background"], num_inference_steps=20, guidance_scale=3.0)
    training.export_pipeline("/tmp/t2i", "/tmp/t2i_pipeline")   # StableDiffusion.from_pretrained reads it back

The task trains ``{"unet": ..., "text_encoder": ...}`` jointly on the MSE of ``config.loss.prediction`` (eps, x0 or
v) of the DDPM forward process (``diffusion.training_losses`` with ``learn_sigma=False``): the UNet sees ``x_t`` of
the 32x32 images in [-1, 1], the training timestep and the text encoder's ``last_hidden_state`` of the caption. A
fraction (``data.caption_dropout``) of the captions is replaced by the empty prompt's ids, which is what the
pipeline's unconditional branch (negative prompt "") feeds, so classifier-free guidance works. The run's
``tokenizer/`` (vocab.json + merges.txt of ``captions.caption_vocabulary``) is written into the workdir at the first
start and read from there afterwards.

Export: the diffusers layout of a pixel-space pipeline (``model_index.json`` with ``"vae": [null, null]``, no
``vae/``), tensors under their diffusers / transformers names in torch layouts (``convert.torch_state_dict``, the
inverse of the state-dict matcher) and the scheduler config of the training betas.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from jax.sharding import Mesh

from edt_jax import data as data_lib
from edt_jax import paths
from edt_jax.checks import check_choice
from edt_jax.diffusion import PREDICTIONS, NoiseScheduleVP, training_losses
from edt_jax.mesh import create_mesh, replicated
from edt_jax.models.clip import LEGACY_PREFIX, CLIPTextConfig, CLIPTextModel, transformers_name
from edt_jax.models.convert import torch_state_dict
from edt_jax.models.sd import UNet2DConditionModel, UNetConfig, unet_config_from_dict, unet_name
from edt_jax.runs import build
from edt_jax.samplers.diffusers_config import SCHEDULER_CLASSES, resolve_config
from edt_jax.t2i.captions import CaptionedShapes, write_tokenizer
from edt_jax.t2i.pipeline import StableDiffusion
from edt_jax.t2i.tokenizer import CLIPTokenizer, load_tokenizer
from edt_jax.training.loop import TrainResult
from edt_jax.training.loop import train as train_loop
from edt_jax.training.task import Task
from edt_jax.training.train_state import InitParams, load_params
from edt_jax.training.workdir_lock import hold_workdir

TASK = build.TEXT_TO_IMAGE_TASK  # config.task of the text-to-image configs
is_text_to_image = build.is_text_to_image
TOKENIZER_DIR = "tokenizer"  # the run's vocabulary, inside the workdir
DIFFUSERS_VERSION = "0.42.1"  # the diffusers whose layout the export writes (as the test fixtures)
PREDICTION_TYPES = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}  # library name -> diffusers'
# The library's named beta schedules -> diffusers' (ADM's "linear" is diffusers' linear scaled by 1000 / N).
BETA_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}
UNET_WEIGHTS, TEXT_WEIGHTS = "diffusion_pytorch_model.safetensors", "model.safetensors"


# ----------------------------------------------------------------------------------------------- config -> networks
def _check_config(config: ml_collections.ConfigDict) -> None:
    """One-line errors for a config the text-to-image task cannot run, before anything is built."""
    if config.get("task") != TASK:
        raise ValueError(f"config.task={config.get('task')!r} is not a text-to-image config; accepted: {TASK!r} "
                         f"(e.g. configs/shapes_t2i.py)")
    if not str(config.data.source).startswith("shapes"):
        raise ValueError(f"data.source={config.data.source!r} is not accepted: the captions describe the shapes "
                         f"factors; accepted: shapes[:64][:<factor>=<v>...]")
    check_choice("loss.prediction", config.loss.prediction, PREDICTIONS)
    check_choice("diffusion.beta_schedule", config.diffusion.beta_schedule, tuple(BETA_SCHEDULES))
    check_choice("sample.scheduler", config.sample.scheduler, SCHEDULER_CLASSES)
    dropout = config.data.caption_dropout
    if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"data.caption_dropout={dropout!r} is not accepted; give a fraction in [0, 1)")


def vocab_of(tokenizer: CLIPTokenizer) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of a BPE ``CLIPTokenizer``, as vocab.json / merges.txt hold them."""
    model = json.loads(tokenizer.tokenizer.to_str())["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"the tokenizer's model is {model.get('type')!r}; only a BPE (CLIP) tokenizer is exported")
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return dict(model["vocab"]), merges


def text_config(config: ml_collections.ConfigDict, tokenizer: CLIPTokenizer) -> CLIPTextConfig:
    """The text encoder's architecture: ``config.model.text_encoder`` over the tokenizer's vocabulary (77
    positions)."""
    te = config.model.text_encoder
    return CLIPTextConfig(vocab_size=tokenizer.tokenizer.get_vocab_size(), hidden_size=te.hidden_size,
                          intermediate_size=te.intermediate_size, num_hidden_layers=te.num_hidden_layers,
                          num_attention_heads=te.num_attention_heads,
                          max_position_embeddings=tokenizer.model_max_length,
                          hidden_act=te.get("hidden_act", "quick_gelu"), eos_token_id=tokenizer.eos_token_id)


def unet_config(config: ml_collections.ConfigDict) -> UNetConfig:
    """The UNet's architecture: ``config.model.unet`` on ``data.channels`` pixels, cross-attending to the text
    encoder's width; ``sample_size`` is the image side (the pipeline's default height and width)."""
    u = build.to_plain(config.model.unet)
    return unet_config_from_dict(dict(
        in_channels=config.data.channels, out_channels=config.data.channels,
        block_out_channels=u["block_out_channels"], down_block_types=u["down_block_types"],
        up_block_types=u["up_block_types"], mid_block_type=u.get("mid_block_type", "UNetMidBlock2DCrossAttn"),
        layers_per_block=u["layers_per_block"], attention_head_dim=u["attention_heads"],  # diffusers: heads
        transformer_layers_per_block=u.get("transformer_layers_per_block", 1),
        only_cross_attention=u.get("only_cross_attention", False),
        use_linear_projection=u.get("use_linear_projection", False), norm_num_groups=u["norm_num_groups"],
        cross_attention_dim=config.model.text_encoder.hidden_size, sample_size=config.data.image_size))


def build_networks(config: ml_collections.ConfigDict,
                   tokenizer: CLIPTokenizer) -> tuple[UNet2DConditionModel, CLIPTextModel]:
    """(UNet, text encoder) of the config, in ``model.dtype`` compute with float32 parameters."""
    dtype = jnp.dtype(config.model.get("dtype", "float32"))
    return (UNet2DConditionModel(unet_config(config), dtype=dtype),
            CLIPTextModel(text_config(config, tokenizer), dtype=dtype))


def init_networks(unet: UNet2DConditionModel, text_encoder: CLIPTextModel) -> InitParams:
    """``key -> {"unet": ..., "text_encoder": ...}``: both networks' initial parameters."""
    ucfg, tcfg = unet.config, text_encoder.config
    side = ucfg.sample_size or 2 ** (len(ucfg.block_out_channels) - 1)

    def init(key: jax.Array) -> dict:
        unet_key, text_key = jax.random.split(key)
        ids = jnp.zeros((1, tcfg.max_position_embeddings), jnp.int32)
        context = jnp.zeros((1, tcfg.max_position_embeddings, ucfg.cross_attention_dim), jnp.float32)
        x = jnp.zeros((1, side, side, ucfg.in_channels), jnp.float32)
        return {"unet": unet.init(unet_key, x, jnp.zeros((1,), jnp.float32), context)["params"],
                "text_encoder": text_encoder.init(text_key, ids)["params"]}

    return init


def schedule_of(config: ml_collections.ConfigDict) -> NoiseScheduleVP:
    """The training schedule (``config.diffusion``)."""
    return build.build_schedule(config)


def scheduler_config(config: ml_collections.ConfigDict) -> dict:
    """The diffusers ``scheduler_config.json`` of the run: ``sample.scheduler`` on the training betas and
    prediction type (checked by ``resolve_config``)."""
    d = config.diffusion
    n, name = int(d.num_timesteps), d.beta_schedule
    out = {"_class_name": config.sample.scheduler, "_diffusers_version": DIFFUSERS_VERSION, "num_train_timesteps": n,
           "beta_schedule": BETA_SCHEDULES[name], "trained_betas": None,
           "prediction_type": PREDICTION_TYPES[config.loss.prediction]}
    if name == "linear":
        scale = 1000.0 / n  # ADM's linear schedule keeps the total noise of 1000 steps at any length
        out.update(beta_start=scale * 0.0001, beta_end=scale * 0.02)
    elif name == "scaled_linear":
        out.update(beta_start=0.00085, beta_end=0.012)
    if out["_class_name"] == "DDIMScheduler":
        out.update(clip_sample=True, set_alpha_to_one=True, timestep_spacing="trailing")  # pixels live in [-1, 1]
    resolve_config(out)
    return out


# ---------------------------------------------------------------------------------------------------------- task
def text_to_image_loss(unet: UNet2DConditionModel, text_encoder: CLIPTextModel, schedule: NoiseScheduleVP, *,
                       prediction: str = "eps", weighting: str = "none", snr_gamma: float = 5.0):
    """``loss_fn(params, frozen, batch, key) -> (loss, metrics)`` of the joint UNet + text encoder.

    batch: {"image": (B, H, W, C) in [-1, 1], "input_ids": (B, 77) int32, "t": (B,) int32, "t_weight": (B,)}.
    metrics: "mse" (mean), and (B,) "per_sample_loss" and "t" for a loss-aware timestep sampler.
    """
    tables = schedule.tables

    def loss_fn(params, frozen, batch, key):
        del frozen
        context = text_encoder.apply({"params": params["text_encoder"]}, batch["input_ids"])["last_hidden_state"]

        def model_fn(x_t, t):
            return unet.apply({"params": params["unet"]}, x_t, t, context)

        x = batch["image"]
        noise = jax.random.normal(key, x.shape, jnp.float32)
        out = training_losses(model_fn, x, batch["t"], noise, tables, learn_sigma=False, prediction=prediction,
                              weighting=weighting, snr_gamma=snr_gamma)
        loss = jnp.mean(out["loss"] * batch["t_weight"])
        return loss, {"mse": jnp.mean(out["mse"]), "per_sample_loss": out["loss"], "t": batch["t"]}

    return loss_fn


def text_to_image_task(unet: UNet2DConditionModel, text_encoder: CLIPTextModel, schedule: NoiseScheduleVP,
                       timestep_sampler, empty_ids: np.ndarray, *, caption_dropout: float = 0.1,
                       prediction: str = "eps", weighting: str = "none", snr_gamma: float = 5.0,
                       ema_decay: float = 0.999) -> Task:
    """The ``Task``: host-drawn timesteps (the sampler's history in every checkpoint) and caption dropout (each
    caption replaced by ``empty_ids`` (77,) with probability ``caption_dropout``), both from the loop's
    per-step host rng, so a resumed run draws exactly what an uninterrupted one does."""
    empty_ids = np.asarray(empty_ids, np.int32)

    def prepare_batch(batch: dict, rng: np.random.Generator) -> dict:
        ids = np.array(batch["input_ids"], np.int32)
        if ids.shape[1:] != empty_ids.shape:
            raise ValueError(f"input_ids have shape {ids.shape[1:]} per caption; the empty prompt's have "
                             f"{empty_ids.shape}")
        t, weights = timestep_sampler.sample(rng, len(ids))
        ids[rng.random(len(ids)) < caption_dropout] = empty_ids
        return {"image": batch["image"], "input_ids": ids, "t": t.astype(np.int32),
                "t_weight": weights.astype(np.float32)}

    def after_step(metrics: dict) -> None:
        timestep_sampler.update_with_local_losses(np.asarray(metrics["t"]), np.asarray(metrics["per_sample_loss"]))

    return Task(init_params=init_networks(unet, text_encoder),
                loss_fn=text_to_image_loss(unet, text_encoder, schedule, prediction=prediction, weighting=weighting,
                                           snr_gamma=snr_gamma),
                prepare_batch=prepare_batch, after_step=after_step if timestep_sampler.loss_aware else None,
                host_state={"timestep_sampler": timestep_sampler}, ema_decay=ema_decay)


def build_dataset(config: ml_collections.ConfigDict, mesh: Mesh, tokenizer: CLIPTokenizer):
    """(grain dataset of host batches, the ``CaptionedShapes`` source) of ``config.data``."""
    d = config.data
    source = CaptionedShapes(data_lib.create_source(d.source), tokenizer=tokenizer,
                             optional_probability=d.get("optional_probability", 0.5), seed=config.seed)
    shape = source.base[0]["image"].shape
    if shape != (d.image_size, d.image_size, d.channels):
        raise ValueError(f"data.source={d.source!r} gives {shape} images, the config says "
                         f"{(d.image_size, d.image_size, d.channels)}; set data.image_size / data.channels")
    # No random flip: a flip would swap "left" and "right" in the captions.
    dataset = data_lib.create_dataset(source, data_lib.host_batch_size(config.batch_size, mesh=mesh),
                                      seed=config.seed, label_key="label", keep_keys=("input_ids",),
                                      num_workers=d.get("num_workers", 0), num_threads=d.get("num_threads"))
    return dataset, source


def _run_tokenizer(workdir: epath.Path) -> CLIPTokenizer:
    """The run's tokenizer: ``workdir/tokenizer``, written from the caption vocabulary at the first start."""
    folder = workdir / TOKENIZER_DIR
    if not (folder / "vocab.json").is_file():
        write_tokenizer(folder)
    return load_tokenizer(folder)


def train(config: ml_collections.ConfigDict, workdir: paths.PathLike, *, mesh: Mesh | None = None) -> TrainResult:
    """Train (or resume) the text-to-image run of ``config`` in ``workdir``: ``config.json``, ``tokenizer/``,
    ``checkpoints/`` and ``metrics.jsonl`` there. ``mesh``: the devices to train on (default: ``config.mesh`` over
    every device). One-line errors for a config the task cannot run; ``WorkdirBusyError`` at once when another live
    run holds ``workdir``."""
    _check_config(config)
    key = paths.expand(workdir)  # the same string for this hold and the loop's, so the loop's is a no-op
    with hold_workdir(key):
        paths.as_path(key).mkdir(parents=True, exist_ok=True)
        tokenizer = _run_tokenizer(paths.as_path(key))
        mesh = build.build_mesh(config) if mesh is None else mesh
        unet, text_encoder = build_networks(config, tokenizer)
        dataset, _ = build_dataset(config, mesh, tokenizer)
        task = text_to_image_task(
            unet, text_encoder, schedule_of(config), build.build_timestep_sampler(config),
            tokenizer("")["input_ids"][0], caption_dropout=float(config.data.caption_dropout),
            prediction=config.loss.prediction, weighting=config.loss.weighting, snr_gamma=config.loss.snr_gamma,
            ema_decay=config.ema_decay)
        return train_loop(task, build.build_optimizer(config), dataset, mesh, key, build.loop_options(config),
                          config=config.to_dict(), rules=build.build_sharding_rules(config))


# ---------------------------------------------------------------------------------------------------- load, export
def load_text_run(workdir: paths.PathLike, *, step: int | None = None, use_ema: bool = True,
                  mesh: Mesh | None = None) -> StableDiffusion:
    """The run in ``workdir`` as a pixel-space ``StableDiffusion``: the EMA parameters (raw ones with
    ``use_ema=False``) of the checkpoint at ``step`` (default: the newest), no optimizer built, replicated over
    ``mesh`` (default: every device); the scheduler is ``scheduler_config(config)``."""
    workdir = paths.as_path(paths.expand(workdir))
    config = build.read_config(workdir)
    _check_config(config)
    if not (workdir / TOKENIZER_DIR / "vocab.json").is_file():
        raise FileNotFoundError(f"{workdir} has no {TOKENIZER_DIR}/vocab.json; is it a text-to-image run?")
    tokenizer = load_tokenizer(workdir / TOKENIZER_DIR)
    unet, text_encoder = build_networks(config, tokenizer)
    mesh = create_mesh() if mesh is None else mesh
    params, _ = load_params(workdir / "checkpoints", init_networks(unet, text_encoder), mesh, step=step,
                            ema=use_ema, rules=build.build_sharding_rules(config))
    params = jax.device_put(params, replicated(mesh))
    return StableDiffusion(unet, params["unet"], text_encoder, params["text_encoder"], tokenizer, None, {}, 1.0,
                           scheduler_config(config), mesh)


def unet_config_to_dict(cfg: UNetConfig) -> dict:
    """A diffusers ``unet/config.json`` dict of ``cfg`` (``unet_config_from_dict`` reads it back to ``cfg``).

    Heads are written as ``attention_head_dim`` (diffusers' historic naming; it refuses ``num_attention_heads``).
    """
    def number(x):
        return int(x) if float(x).is_integer() else float(x)

    return {"_class_name": "UNet2DConditionModel", "_diffusers_version": DIFFUSERS_VERSION, "act_fn": "silu",
            "in_channels": cfg.in_channels, "out_channels": cfg.out_channels,
            "block_out_channels": list(cfg.block_out_channels), "down_block_types": list(cfg.down_block_types),
            "up_block_types": list(cfg.up_block_types), "mid_block_type": cfg.mid_block_type,
            "layers_per_block": list(cfg.layers_per_block), "attention_head_dim": list(cfg.num_attention_heads),
            "num_attention_heads": None, "transformer_layers_per_block": list(cfg.transformer_layers_per_block),
            "only_cross_attention": list(cfg.only_cross_attention), "cross_attention_dim": cfg.cross_attention_dim,
            "use_linear_projection": cfg.use_linear_projection, "norm_num_groups": cfg.norm_num_groups,
            "norm_eps": cfg.norm_eps, "flip_sin_to_cos": cfg.flip_sin_to_cos, "freq_shift": number(cfg.freq_shift),
            "downsample_padding": cfg.downsample_padding,
            "mid_block_scale_factor": number(cfg.mid_block_scale_factor),
            "center_input_sample": cfg.center_input_sample, "time_embedding_dim": cfg.time_embedding_dim,
            "conv_in_kernel": cfg.conv_in_kernel, "conv_out_kernel": cfg.conv_out_kernel,
            "sample_size": cfg.sample_size}


def text_config_to_dict(cfg: CLIPTextConfig, tokenizer: CLIPTokenizer) -> dict:
    """A transformers ``text_encoder/config.json`` dict of ``cfg`` (special ids from ``tokenizer``)."""
    return {"architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
            "num_hidden_layers": cfg.num_hidden_layers, "num_attention_heads": cfg.num_attention_heads,
            "max_position_embeddings": cfg.max_position_embeddings, "hidden_act": cfg.hidden_act,
            "layer_norm_eps": cfg.layer_norm_eps, "projection_dim": cfg.hidden_size, "attention_dropout": 0.0,
            "dropout": 0.0, "initializer_factor": 1.0, "initializer_range": 0.02, "dtype": "float32",
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": cfg.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}


def _write_json(path: epath.Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n")


def _write_safetensors(path: epath.Path, tensors: dict[str, np.ndarray]) -> None:
    try:
        from safetensors.numpy import save
    except ImportError:
        raise ImportError("export_pipeline needs the 'safetensors' package: pip install 'edt_jax[t2i]'") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(save(tensors, metadata={"format": "pt"}))  # transformers reads only "pt"-format files


def export_pipeline(source: paths.PathLike | StableDiffusion, folder: paths.PathLike, *,
                    step: int | None = None) -> epath.Path:
    """Write a pixel-space diffusers folder that ``StableDiffusion.from_pretrained`` loads to the same images.

    Args:
      source: a text-to-image run's workdir (its EMA parameters at ``step``, default the newest) or a pixel-space
        ``StableDiffusion`` (e.g. from ``load_text_run``).
      folder: where to write (local or ``gs://``): model_index.json ("vae": [null, null]), unet/ (config.json +
        diffusion_pytorch_model.safetensors), text_encoder/ (config.json + model.safetensors, the ``text_model.``
        names every public SD upload has), tokenizer/ (vocab.json, merges.txt, tokenizer_config.json) and
        scheduler/scheduler_config.json. Existing files there are overwritten.

    Returns the folder as a path.
    """
    pipe = source if isinstance(source, StableDiffusion) else load_text_run(source, step=step)
    if pipe.vae is not None:
        raise ValueError("export_pipeline writes pixel-space folders; this pipeline has a VAE (latent space)")
    folder = paths.as_path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scheduler = dict(pipe.scheduler_config)
    _write_json(folder / "model_index.json", {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": DIFFUSERS_VERSION,
        "feature_extractor": [None, None], "image_encoder": [None, None], "requires_safety_checker": False,
        "safety_checker": [None, None], "scheduler": ["diffusers", scheduler["_class_name"]],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": [None, None]})
    _write_json(folder / "unet" / "config.json", unet_config_to_dict(pipe.unet.config))
    _write_safetensors(folder / "unet" / UNET_WEIGHTS, torch_state_dict(pipe.unet_params, unet_name))
    _write_json(folder / "text_encoder" / "config.json", text_config_to_dict(pipe.text_encoder.config, pipe.tokenizer))
    _write_safetensors(folder / "text_encoder" / TEXT_WEIGHTS,
                       torch_state_dict(pipe.text_params, lambda path: LEGACY_PREFIX + transformers_name(path)))
    vocab, merges = vocab_of(pipe.tokenizer)
    token = pipe.tokenizer.tokenizer.id_to_token
    write_tokenizer(folder / "tokenizer", vocab, merges, model_max_length=pipe.tokenizer.model_max_length,
                    bos_token=token(pipe.tokenizer.bos_token_id), eos_token=token(pipe.tokenizer.eos_token_id),
                    pad_token=token(pipe.tokenizer.pad_token_id))
    _write_json(folder / "scheduler" / "scheduler_config.json", {"_diffusers_version": DIFFUSERS_VERSION, **scheduler})
    return folder


__all__ = ["TASK", "build_dataset", "build_networks", "export_pipeline", "init_networks", "is_text_to_image",
           "load_text_run", "scheduler_config", "text_config", "text_config_to_dict", "text_to_image_loss",
           "text_to_image_task", "train", "unet_config",
           "unet_config_to_dict"]
