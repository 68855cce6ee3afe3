"""Official PyTorch state dicts of EDT, DiT and MDTv2 -> Flax parameters, and checkpoint-file loaders.

The mapping is derived from the Flax parameter tree, not from the state dict, so every parameter the
model needs is looked up under its official name (``blocks.3.attn.qkv.weight`` for
``blocks_3/attn/qkv/kernel``) and checked for shape; leftovers other than the frozen buffers are
reported too. Layouts: Linear weights (out, in) -> kernels (in, out); the patch-embedding conv
(out, in, kh, kw) -> (kh, kw, in, out).

Files: ``load_state_dict(path)`` reads ``.npz`` and ``.safetensors`` without torch, and ``.pt`` /
``.pth`` (the official training checkpoints, via ``torch.load(weights_only=True)``) when the optional
``torch`` extra is installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import traverse_util

from edt_jax import paths

# Buffers of the official modules that are recomputed here rather than loaded (MDTv2's pos_embed is a
# trained parameter: the Flax tree asks for it, so it is loaded, never recomputed).
FROZEN_BUFFERS = re.compile(r"(^|\.)(pos_embed|relative_position_index|modulation_matrix)$")


def official_name(path: tuple[str, ...]) -> str:
    """Flax path -> official key: ('blocks_3', 'mlp', 'fc1', 'kernel') -> 'blocks.3.mlp.fc1.weight'."""
    parts = []
    for part in path[:-1]:
        if part == "linear" and parts and parts[-1] == "adaLN_modulation":
            part = "1"  # nn.Sequential(SiLU, Linear): the Linear is index 1
        parts.append(re.sub(r"_(\d+)$", r".\1", part))
    leaf = path[-1]
    if leaf == "kernel":
        parts.append("weight")
    elif leaf == "embedding_table":
        parts.extend([leaf, "weight"])
    else:
        parts.append(leaf)
    return ".".join(parts)


def to_flax_layout(array: np.ndarray, leaf: str) -> np.ndarray:
    """A PyTorch tensor in Flax layout: Linear (out, in) -> (in, out), conv (out, in, kh, kw) -> (kh, kw, in, out)."""
    if leaf == "kernel" and array.ndim == 2:
        return array.T
    if leaf == "kernel" and array.ndim == 4:
        return array.transpose(2, 3, 1, 0)
    return array


def to_torch_layout(array: np.ndarray, leaf: str) -> np.ndarray:
    """A Flax variable in PyTorch layout (the inverse of ``to_flax_layout``): Dense kernel (in, out) ->
    Linear (out, in), conv kernel (kh, kw, in, out) -> (out, in, kh, kw); anything else as it is."""
    if leaf == "kernel" and array.ndim == 2:
        return array.T
    if leaf == "kernel" and array.ndim == 4:
        return array.transpose(3, 2, 0, 1)
    return array


def torch_state_dict(params: Mapping, name_of) -> dict[str, np.ndarray]:
    """name -> contiguous float32 numpy tensor in torch layout, for a Flax params tree and its naming function."""
    out = {}
    for path, value in traverse_util.flatten_dict(dict(params)).items():
        name = name_of(path)
        if name in out:
            raise ValueError(f"two parameters map onto the tensor name {name!r}")
        out[name] = np.ascontiguousarray(to_torch_layout(np.asarray(jax.device_get(value), np.float32), path[-1]))
    return out


@dataclasses.dataclass
class TensorMatch:
    """What ``match_state_dict`` found: the converted arrays and every kind of mismatch."""

    params: dict  # flat Flax path -> array in the variable's dtype
    missing: list[tuple[str, tuple[str, ...]]]  # (looked-up name, Flax path) with no tensor
    misshaped: list[tuple[str, tuple[int, ...], tuple[int, ...]]]  # (key, its shape, the shape needed)
    unexpected: list[str]  # state-dict keys nothing asked for (sorted)

    def nested(self) -> dict:
        return traverse_util.unflatten_dict(self.params)


def strip_module_prefix(state_dict: Mapping[str, np.ndarray]) -> dict:
    """Drop the ``module.`` prefix DistributedDataParallel puts on every key."""
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state_dict.items()}


def match_state_dict(state_dict: Mapping[str, np.ndarray], abstract: Mapping, name_of: Callable[[tuple], str], *,
                     fallback_name: Callable[[str], str | None] | None = None,
                     adapt: Callable[[np.ndarray, tuple[int, ...]], np.ndarray] | None = None,
                     ignore: re.Pattern | None = None) -> TensorMatch:
    """Look every variable of the Flax tree ``abstract`` up in a PyTorch state dict, by name, and check shapes.

    The mapping is driven by the Flax tree, so every variable the module needs is accounted for.

    Args:
      state_dict: PyTorch name -> array (numpy, or anything ``np.asarray`` accepts); ``module.`` is stripped.
      abstract: nested tree of shape/dtype structs (e.g. from ``jax.eval_shape``).
      name_of: Flax path -> PyTorch name.
      fallback_name: a second name to try when the first is absent (older checkpoints), or None.
      adapt: ``adapt(tensor, needed_shape)`` rewrites a tensor before the layout change (e.g. a 1x1 conv
        stored for a Linear).
      ignore: keys matching it are never reported as unexpected (buffers that are recomputed).
    """
    state = strip_module_prefix(state_dict)
    match = TensorMatch({}, [], [], [])
    used = set()
    for path, leaf in traverse_util.flatten_dict(abstract).items():
        name = name_of(path)
        key = name if name in state or fallback_name is None else fallback_name(name)
        if key not in state:
            match.missing.append((name, path))
            continue
        used.add(key)
        raw = np.asarray(state[key])
        array = to_flax_layout(adapt(raw, tuple(leaf.shape)) if adapt else raw, path[-1])
        if array.shape != tuple(leaf.shape):
            match.misshaped.append((key, tuple(raw.shape), official_shape(tuple(leaf.shape), path[-1])))
            continue
        match.params[path] = jnp.asarray(array, dtype=leaf.dtype)
    match.unexpected = sorted(k for k in state if k not in used and not (ignore and ignore.search(k)))
    return match


def mismatch_report(match: TensorMatch, limit: int = 5) -> str:
    """'1 missing: a; 2 mis-shaped: b (8, 3) (needs (3, 8)), c ...; 9 unexpected: d, e, ... (4 more)', or ''.

    Names at most ``limit`` tensors per kind, for one-line error messages.
    """
    kinds = (("missing", [name for name, _ in match.missing]),
             ("mis-shaped", [f"{key} {shape} (needs {needed})" for key, shape, needed in match.misshaped]),
             ("unexpected", match.unexpected))
    parts = []
    for label, names in kinds:
        if names:
            more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
            parts.append(f"{len(names)} {label}: " + ", ".join(names[:limit]) + more)
    return "; ".join(parts)


def params_from_torch(state_dict: Mapping[str, np.ndarray], model: nn.Module) -> dict:
    """Flax ``params`` for ``model`` (EDT, DiT or MDTv2 from ``create_model``) from an official state dict.

    Args:
      state_dict: official name -> array (numpy, or anything ``np.asarray`` accepts, e.g. CPU torch
        tensors); a ``module.`` prefix (DistributedDataParallel) is stripped.
      model: the Flax module whose parameters to fill.

    Returns the nested params dict (float arrays in the model's ``param_dtype``). Raises a one-line
    ``ValueError`` naming the first missing, mis-shaped or unexpected tensor.
    """
    match = match_state_dict(state_dict, abstract_params(model), official_name, ignore=FROZEN_BUFFERS)
    if match.missing:
        key, path = match.missing[0]
        raise ValueError(f"state dict has no tensor {key!r} (needed for {'/'.join(path)}); "
                         f"is it a checkpoint of this model configuration?")
    if match.misshaped:
        key, shape, needed = match.misshaped[0]
        raise ValueError(f"tensor {key!r} has shape {shape}, but this model needs {needed}")
    if match.unexpected:
        raise ValueError(f"state dict has {len(match.unexpected)} tensor(s) this model does not use, "
                         f"e.g. {match.unexpected[0]!r}")
    return match.nested()


edt_params_from_torch = params_from_torch  # the name before MDTv2 joined; kept for existing code


def official_shape(shape: tuple[int, ...], leaf: str) -> tuple[int, ...]:
    """The PyTorch shape of a Flax variable's ``shape`` (the inverse of ``to_flax_layout``)."""
    if leaf == "kernel" and len(shape) == 2:
        return tuple(shape[::-1])
    if leaf == "kernel" and len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    return tuple(shape)


def abstract_params(model: nn.Module) -> dict:
    """Shape/dtype structs of the model's params, without allocating them."""
    size = model.input_size
    x = jax.ShapeDtypeStruct((1, size, size, model.in_channels), jnp.float32)
    t = jax.ShapeDtypeStruct((1,), jnp.float32)
    y = jax.ShapeDtypeStruct((1,), jnp.int32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x, t, y)
    return nn.meta.unbox(variables["params"])


def load_state_dict(path: paths.PathLike, key: str | None = None) -> dict[str, np.ndarray]:
    """Read a state dict from ``.npz``, ``.safetensors`` or ``.pt``/``.pth``; nothing is downloaded.

    Official training checkpoints hold several dicts (``model``, ``ema``, ``opt``, ``args``): ``key``
    picks one (default ``"ema"`` when present, else ``"model"``). In ``.npz`` files a ``param/`` prefix
    on the names (as in the test fixtures) is removed.
    """
    path = paths.as_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found; download the official weights yourself "
                                f"and pass their local path (nothing is fetched at run time)")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with paths.open_npz(path) as data:
            names = [n for n in data.files if n.startswith("param/")] or list(data.files)
            return {n.removeprefix("param/"): data[n] for n in names}
    if suffix == ".safetensors":
        try:
            from safetensors.numpy import load, load_file
        except ImportError:
            raise ImportError("reading .safetensors needs the 'safetensors' package: "
                              "pip install 'edt_jax[weights]'") from None
        return load(path.read_bytes()) if paths.is_url(path) else load_file(str(path))
    if suffix in (".pt", ".pth", ".bin"):
        return _load_torch(path, key)
    raise ValueError(f"unsupported checkpoint format {suffix!r} of {str(path)!r}; "
                     f"expected .npz, .safetensors, .pt, .pth or .bin")


def _load_torch(path: epath.Path, key: str | None) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise ImportError(f"reading {path.suffix} checkpoints needs torch: pip install 'edt_jax[torch]' "
                          f"(or convert the file to .safetensors/.npz once elsewhere)") from None
    # The official train scripts also store their argparse.Namespace; allow exactly that class
    # (add_safe_globals exists from torch 2.4; the safe_globals context manager only from 2.5).
    torch.serialization.add_safe_globals([argparse.Namespace])
    with path.open("rb") as f:
        checkpoint = torch.load(f, map_location="cpu", weights_only=True)
    if isinstance(checkpoint, Mapping) and not all(hasattr(v, "shape") for v in checkpoint.values()):
        choices = [k for k in ("ema", "model", "state_dict") if k in checkpoint]
        pick = key or (choices[0] if choices else None)
        if pick not in checkpoint:
            raise ValueError(f"checkpoint {str(path)!r} holds {sorted(checkpoint)}; pass key= one of them")
        checkpoint = checkpoint[pick]
    return {name: tensor.detach().float().numpy() if tensor.is_floating_point() else tensor.numpy()
            for name, tensor in checkpoint.items()}
