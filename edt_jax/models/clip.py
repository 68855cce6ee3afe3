"""The CLIP text encoder of Stable Diffusion (transformers' ``CLIPTextModel``) in Flax, and its weight loader.

    from edt_jax.models.clip import load_text_encoder
    text_encoder, params = load_text_encoder("stable-diffusion-v1-5")  # the pipeline root or its text_encoder/
    out = text_encoder.apply({"params": params}, input_ids)              # input_ids (B, 77) from the tokenizer
    out["last_hidden_state"]   # (B, 77, D): SD 1.x conditions the UNet on this (after the final layer norm)
    out["hidden_states"][-2]   # (B, 77, D): SD 2 / SDXL use the penultimate layer's output, before the norm
    out["pooler_output"]       # (B, D): the final-norm state at the end-of-text token

The network: token + learned position embeddings, ``num_hidden_layers`` pre-LN transformer layers with causal
self-attention (padding is not masked, exactly as transformers does when no ``attention_mask`` is passed, which
is how the diffusers pipelines call it), an MLP with ``quick_gelu`` or ``gelu``, and a final layer norm.

Weights: a transformers ``text_encoder/`` folder (``config.json`` + ``model.safetensors``). transformers 5 saves
the tensors as ``embeddings.token_embedding.weight``; older checkpoints (every public SD upload) prefix them with
``text_model.``: both are accepted. The Flax tree uses the same names, so a parameter path maps onto its tensor
by joining with dots (``encoder/layers_0/self_attn/q_proj/kernel`` -> ``encoder.layers.0.self_attn.q_proj.weight``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from edt_jax import paths
from edt_jax.models.convert import load_state_dict, match_state_dict, mismatch_report
from edt_jax.models.layers import Dtype

# hidden_act values of a transformers config.json this port implements. quick_gelu is the original OpenAI CLIP
# activation (SD 1.x); gelu is the exact erf form (OpenCLIP ViT-H / ViT-bigG of SD 2 and SDXL).
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
}

# The non-persistent buffer older transformers versions still wrote into checkpoints; recomputed here.
IGNORED_BUFFERS = re.compile(r"(^|\.)embeddings\.position_ids$")
LEGACY_PREFIX = "text_model."  # transformers < 5: CLIPTextModel.text_model.<...>

# Weight files of a transformers text_encoder/ folder, in order of preference (.bin needs the torch extra).
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
SHARD_INDEX = "model.safetensors.index.json"


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
    """The architecture of a CLIP text encoder: the fields of transformers' ``CLIPTextConfig`` that shape it.

    The defaults are transformers' (a config.json that leaves a key out gets them there too); SD 1.x's
    encoder (CLIP ViT-L/14) has hidden_size 768, intermediate_size 3072 and 12 heads. ``eos_token_id`` only
    picks the pooled position (see ``pooled_positions``).
    """

    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    eos_token_id: int = 49407

    def __post_init__(self):
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"unsupported hidden_act {self.hidden_act!r}; expected one of {sorted(ACTIVATIONS)}")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "max_position_embeddings"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                             f"{self.num_attention_heads}")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"layer_norm_eps must be positive, got {self.layer_norm_eps!r}")


def text_config_from_dict(cfg: Mapping[str, Any]) -> CLIPTextConfig:
    """A ``CLIPTextConfig`` from a transformers ``config.json`` dict (keys it leaves out take transformers'
    defaults; keys that do not shape the network are ignored).

    A full ``CLIPModel`` config (``model_type`` ``"clip"``) is read through its ``text_config``. Raises a
    one-line ``ValueError`` for values this port does not implement (e.g. ``hidden_act="relu"``).
    """
    if "text_config" in cfg and isinstance(cfg["text_config"], Mapping):
        cfg = cfg["text_config"]
    defaults = {field.name: field.default for field in dataclasses.fields(CLIPTextConfig)}
    values = {name: cfg.get(name, default) for name, default in defaults.items()}
    if values["eos_token_id"] is None:
        values["eos_token_id"] = defaults["eos_token_id"]
    try:
        values["layer_norm_eps"] = float(values["layer_norm_eps"])
    except (TypeError, ValueError):
        raise ValueError(f"layer_norm_eps must be a number, got {values['layer_norm_eps']!r}") from None
    return CLIPTextConfig(**values)


def pooled_positions(input_ids: jax.Array, eos_token_id: int) -> jax.Array:
    """The position (B,) whose final-norm state is ``pooler_output``, chosen exactly as transformers does.

    Configs written before transformers' fix of ``eos_token_id`` (the OpenAI and SD 1.x ones) carry
    ``eos_token_id == 2``; for those transformers keeps the original rule, the position of the largest id (the
    end-of-text token is the last entry of CLIP's vocabulary). Otherwise: the first position holding
    ``eos_token_id`` (padding may repeat it), or 0 when a row has none (``argmax`` of all-False).
    """
    if eos_token_id == 2:
        return jnp.argmax(input_ids, axis=-1)
    return jnp.argmax(input_ids == eos_token_id, axis=-1)


def _layer_norm(eps: float, param_dtype: Dtype, name: str) -> nn.LayerNorm:
    # float32 statistics and output: bfloat16 variance over the residual stream is visibly off. Two-pass variance
    # (use_fast_variance=False) as torch computes it.
    return nn.LayerNorm(epsilon=eps, dtype=jnp.float32, param_dtype=param_dtype, use_fast_variance=False,
                        name=name)


class CLIPAttention(nn.Module):
    """Causal multi-head self-attention: (B, L, D) -> (B, L, D); q/k/v/out projections with bias."""

    config: CLIPTextConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        batch, length, width = x.shape
        heads = cfg.num_attention_heads
        head_dim = width // heads

        def project(name: str) -> jax.Array:
            y = nn.Dense(width, dtype=self.dtype, param_dtype=self.param_dtype, name=name)(x)
            return y.reshape(batch, length, heads, head_dim)

        q, k, v = project("q_proj"), project("k_proj"), project("v_proj")
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * head_dim ** -0.5
        causal = jnp.tril(jnp.ones((length, length), dtype=bool))
        # The most negative float32 rather than -inf, as transformers' additive mask: a row is never all-masked
        # (the diagonal is always kept), so both give the same softmax.
        scores = jnp.where(causal, scores, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(scores, axis=-1).astype(self.dtype)  # softmax in float32
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(batch, length, width)
        return nn.Dense(width, dtype=self.dtype, param_dtype=self.param_dtype, name="out_proj")(out)


class CLIPMLP(nn.Module):
    """fc1 -> hidden_act -> fc2: (B, L, D) -> (B, L, D)."""

    config: CLIPTextConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        h = nn.Dense(cfg.intermediate_size, dtype=self.dtype, param_dtype=self.param_dtype, name="fc1")(x)
        h = ACTIVATIONS[cfg.hidden_act](h)
        return nn.Dense(cfg.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype, name="fc2")(h)


class CLIPEncoderLayer(nn.Module):
    """Pre-LN transformer layer: x + attn(layer_norm1(x)), then x + mlp(layer_norm2(x)); (B, L, D) -> (B, L, D)."""

    config: CLIPTextConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        eps, dt, pdt = self.config.layer_norm_eps, self.dtype, self.param_dtype
        h = _layer_norm(eps, pdt, "layer_norm1")(x).astype(dt)
        x = x + CLIPAttention(self.config, dt, pdt, name="self_attn")(h)
        h = _layer_norm(eps, pdt, "layer_norm2")(x).astype(dt)
        return x + CLIPMLP(self.config, dt, pdt, name="mlp")(h)


class CLIPTextEmbeddings(nn.Module):
    """token_embedding[input_ids] + position_embedding[0..L-1]: (B, L) int -> (B, L, D) in ``dtype``."""

    config: CLIPTextConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids: jax.Array) -> jax.Array:
        cfg = self.config
        tokens = nn.Embed(cfg.vocab_size, cfg.hidden_size, param_dtype=self.param_dtype,
                          name="token_embedding")(input_ids)
        positions = nn.Embed(cfg.max_position_embeddings, cfg.hidden_size, param_dtype=self.param_dtype,
                             name="position_embedding")(jnp.arange(input_ids.shape[-1]))
        return (tokens + positions[None]).astype(self.dtype)  # summed in the parameters' precision


class CLIPEncoder(nn.Module):
    """The layer stack; returns the input and every layer's output (num_hidden_layers + 1 arrays (B, L, D))."""

    config: CLIPTextConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
        states = [x]
        for i in range(self.config.num_hidden_layers):
            x = CLIPEncoderLayer(self.config, self.dtype, self.param_dtype, name=f"layers_{i}")(x)
            states.append(x)
        return tuple(states)


class CLIPTextModel(nn.Module):
    """transformers' ``CLIPTextModel`` (without an attention mask): input_ids (B, L) int, L <= max_position_embeddings.

    Returns a dict:

    - ``last_hidden_state`` (B, L, D): the last layer's output after the final layer norm.
    - ``pooler_output`` (B, D): ``last_hidden_state`` at ``pooled_positions(input_ids, eos_token_id)``.
    - ``hidden_states``: tuple of num_hidden_layers + 1 arrays (B, L, D), the embeddings then each layer's
      output, before the final norm (transformers' ``output_hidden_states=True``); ``[-2]`` is the penultimate
      layer that SD 2 and SDXL condition on.

    ``dtype`` is the compute dtype (e.g. ``jnp.bfloat16``) of the embeddings sum, projections and residual
    stream; the layer norms and the attention softmax always run in float32, and ``last_hidden_state`` /
    ``pooler_output`` come out in float32. Parameters are stored in ``param_dtype``.
    """

    config: CLIPTextConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids: jax.Array) -> dict[str, Any]:
        cfg = self.config
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, length), got shape {input_ids.shape}")
        if input_ids.shape[1] > cfg.max_position_embeddings:
            raise ValueError(f"input_ids has length {input_ids.shape[1]}, but this text encoder has only "
                             f"{cfg.max_position_embeddings} positions (max_position_embeddings)")
        x = CLIPTextEmbeddings(cfg, self.dtype, self.param_dtype, name="embeddings")(input_ids)
        hidden_states = CLIPEncoder(cfg, self.dtype, self.param_dtype, name="encoder")(x)
        last = _layer_norm(cfg.layer_norm_eps, self.param_dtype, "final_layer_norm")(hidden_states[-1])
        pooled = last[jnp.arange(last.shape[0]), pooled_positions(input_ids, cfg.eos_token_id)]
        return {"last_hidden_state": last, "pooler_output": pooled, "hidden_states": hidden_states}


def create_text_encoder(config: CLIPTextConfig | Mapping[str, Any], *, dtype: Dtype = jnp.float32,
                        param_dtype: Dtype = jnp.float32) -> CLIPTextModel:
    """A ``CLIPTextModel`` for ``config`` (a ``CLIPTextConfig`` or a transformers ``config.json`` dict)."""
    if not isinstance(config, CLIPTextConfig):
        config = text_config_from_dict(config)
    return CLIPTextModel(config, dtype=dtype, param_dtype=param_dtype)


def abstract_text_params(module: CLIPTextModel) -> dict:
    """Shape/dtype structs of the text encoder's params, without allocating them."""
    ids = jax.ShapeDtypeStruct((1, 1), jnp.int32)
    return nn.meta.unbox(jax.eval_shape(module.init, jax.random.key(0), ids)["params"])


def transformers_name(path: tuple[str, ...]) -> str:
    """('encoder', 'layers_0', 'layer_norm1', 'scale') -> 'encoder.layers.0.layer_norm1.weight'.

    Dense ``kernel``, LayerNorm ``scale`` and Embed ``embedding`` are all torch's ``weight``.
    """
    parts = [re.sub(r"_(\d+)$", r".\1", part) for part in path[:-1]]
    parts.append("weight" if path[-1] in ("kernel", "scale", "embedding") else path[-1])
    return ".".join(parts)


def _legacy_name(name: str) -> str:
    return LEGACY_PREFIX + name


def text_params_from_torch(state_dict: Mapping[str, np.ndarray], module: CLIPTextModel) -> dict:
    """Flax ``params`` for ``module`` from a transformers ``CLIPTextModel`` state dict.

    Args:
      state_dict: tensor name -> array (numpy, or anything ``np.asarray`` accepts, e.g. CPU torch tensors),
        with or without the ``text_model.`` prefix of transformers < 5; a ``module.`` prefix is stripped and the
        ``embeddings.position_ids`` buffer is ignored.
      module: the Flax text encoder to fill; its configuration must match the checkpoint's.

    Returns the nested params dict in the module's ``param_dtype``. Raises one one-line ``ValueError`` naming
    the missing, mis-shaped and unexpected tensors.
    """
    match = match_state_dict(state_dict, abstract_text_params(module), transformers_name,
                             fallback_name=_legacy_name, ignore=IGNORED_BUFFERS)
    problems = mismatch_report(match)
    if problems:
        cfg = module.config
        raise ValueError(f"CLIP text encoder state dict does not fit vocab_size={cfg.vocab_size}, "
                         f"hidden_size={cfg.hidden_size}, intermediate_size={cfg.intermediate_size}, "
                         f"num_hidden_layers={cfg.num_hidden_layers}, "
                         f"max_position_embeddings={cfg.max_position_embeddings}: {problems}")
    return match.nested()


def find_text_encoder(folder: paths.PathLike) -> epath.Path:
    """The transformers text-encoder folder at ``folder``: ``folder`` itself when it holds ``config.json``,
    else its ``text_encoder/`` subfolder (a diffusers pipeline root).

    Raises a one-line ``FileNotFoundError`` saying what is expected (nothing is downloaded).
    """
    folder = paths.as_path(folder)
    for candidate in (folder, folder / "text_encoder"):
        if (candidate / "config.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"no CLIP text encoder at {str(folder)!r}: expected a transformers text_encoder/ folder holding "
        f"config.json and {WEIGHT_FILES[0]}, or a diffusers pipeline folder containing one; download the "
        f"pipeline from Hugging Face yourself (nothing is fetched at run time)")


def _read_weights(folder: epath.Path) -> dict[str, np.ndarray]:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return load_state_dict(folder / name)
    if (folder / SHARD_INDEX).is_file():  # large checkpoints split over several files
        shards = sorted(set(json.loads((folder / SHARD_INDEX).read_text())["weight_map"].values()))
        state = {}
        for shard in shards:
            state.update(load_state_dict(folder / shard))
        return state
    raise FileNotFoundError(f"text encoder folder {str(folder)!r} has config.json but no weights: expected "
                            f"{WEIGHT_FILES[0]} (or {WEIGHT_FILES[1]}, which needs the torch extra, or {SHARD_INDEX})")


def load_text_encoder(folder: paths.PathLike, *, dtype: Dtype = jnp.float32,
                      param_dtype: Dtype = jnp.float32) -> tuple[CLIPTextModel, dict]:
    """The text encoder of a Stable Diffusion folder: ``(module, params)``.

    Args:
      folder: a transformers ``text_encoder/`` folder (``config.json`` + ``model.safetensors``) or the root of
        a diffusers pipeline folder (its ``text_encoder/`` is used); local or a URL epath reads.
      dtype: compute dtype of the module (see ``CLIPTextModel``).
      param_dtype: dtype the parameters are stored in.
    """
    folder = find_text_encoder(folder)
    module = create_text_encoder(json.loads((folder / "config.json").read_text()), dtype=dtype,
                                 param_dtype=param_dtype)
    return module, text_params_from_torch(_read_weights(folder), module)
