"""Prompt records, the text-embedding edits of the [EOS] study and the reader, for ``analysis.text``.

    records = load_prompts("prompts.jsonl")   # [{"prompt": "a red circle ...", "factors": {"shape": 1, ...}}, ...]
    pairs = prompt_pairs(records)             # [(i, j)]: records i and j differ in every factor both name
    ids = pipe.tokenize(prompts)                                   # (B, 77) int32
    eos = eos_positions(ids, pipe.tokenizer.eos_token_id)          # (B,) index of each row's first [EOS]
    mixed = swap_eos(emb_a, eos_a, emb_b, eos_b)                   # A's words, then B's [EOS] and padding
    words = keep_only(emb, empty, eos, keep="words")               # the [EOS] part replaced by the empty prompt's
    seen = read_factors(reader, images, ["shape", "object_hue"])   # {factor: (N,) predicted class}

A prompts file has one JSON record per line, ``{"prompt": str, "factors": {name: index}}``, the factor names
those of ``edt_jax.data.shapes.FACTOR_NAMES`` and the values their class indices. The reader is the shipped shapes
classifier (``metrics.extractors.load_extractor("shapes")``), which predicts every shapes factor of a 32x32 image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from edt_jax import paths
from edt_jax.checks import check_choice
from edt_jax.data.shapes import FACTOR_NAMES, FACTOR_SIZES
from edt_jax.metrics.extractors import Extractor

# The factors a prompt of the shapes captions names, and the ones the switch / swap pairs must all differ in.
FACTORS = ("shape", "object_hue", "background_hue")
KEEP_MODES = ("eos", "words")


# ------------------------------------------------------------------------------------------------- records
def load_prompts(path: paths.PathLike) -> list[dict]:
    """The checked records of a prompts file (read by ``edt_jax.t2i.captions.read_prompts``)."""
    from edt_jax.t2i.captions import read_prompts

    records = check_records(read_prompts(path))
    if not records:
        raise ValueError(f"prompts file {str(path)!r} holds no records")
    return records


def check_records(records: Sequence[Any]) -> list[dict]:
    """``records`` as plain ``{"prompt": str, "factors": {name: int}}`` dicts (mappings, or objects with
    ``prompt`` and ``factors`` attributes; no factors: {}), after checking every factor name and index."""
    checked = []
    for i, record in enumerate(records):
        get = record.get if isinstance(record, Mapping) else lambda key, r=record: getattr(r, key, None)
        prompt, factors = get("prompt"), get("factors")
        factors = {} if factors is None else factors
        if not isinstance(prompt, str) or not isinstance(factors, Mapping):
            raise ValueError(f"prompt record {i} is {record!r}; expected {{\"prompt\": str, \"factors\": "
                             f"{{name: index}}}}")
        for name, value in factors.items():
            if name not in FACTOR_NAMES:
                raise ValueError(f"prompt record {i} names factor {name!r}; accepted: {', '.join(FACTOR_NAMES)}")
            size = FACTOR_SIZES[FACTOR_NAMES.index(name)]
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 0 <= value < size:
                raise ValueError(f"prompt record {i}: factor {name} = {value!r}; expected an index in [0, {size})")
        checked.append({"prompt": prompt, "factors": {k: int(v) for k, v in factors.items()}})
    return checked


def factor_names(records: Sequence[dict]) -> list[str]:
    """The factors any record names, in ``FACTOR_NAMES`` order."""
    named = {name for r in records for name in r["factors"]}
    return [name for name in FACTOR_NAMES if name in named]


def prompt_pairs(records: Sequence[dict], factors: Sequence[str] = FACTORS) -> list[tuple[int, int]]:
    """(A, B) index pairs for the prompt switch and the [EOS] swap: for each record A, the first record B after it
    (cyclically) that names at least one of ``factors`` as A does and differs from A in every one both name.
    Records without such a partner are left out."""
    pairs = []
    for i, a in enumerate(records):
        for step in range(1, len(records)):
            j = (i + step) % len(records)
            shared = [f for f in factors if f in a["factors"] and f in records[j]["factors"]]
            if shared and all(a["factors"][f] != records[j]["factors"][f] for f in shared):
                pairs.append((i, j))
                break
    return pairs


# ----------------------------------------------------------------------------------------- embedding edits
def eos_positions(input_ids: np.ndarray, eos_id: int) -> np.ndarray:
    """(B,) int32: the index of the first ``eos_id`` in each row of ``input_ids`` (B, L).

    CLIP token rows are [BOS] word tokens [EOS] padding (SD 1.x pads with the [EOS] id itself, SD 2.x with
    another id), so positions from this index on are the "[EOS] part" of the paper: the [EOS] token and the
    padding after it, whose embeddings have attended to every word (the text encoder is causal).
    """
    ids = np.asarray(input_ids)
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be (B, L) token ids, got shape {ids.shape}")
    is_eos = ids == eos_id
    missing = np.nonzero(~is_eos.any(axis=1))[0]
    if missing.size:
        raise ValueError(f"row {int(missing[0])} of input_ids has no eos token {eos_id}; expected tokenizer rows "
                         f"[BOS] ... [EOS] padding")
    return np.argmax(is_eos, axis=1).astype(np.int32)


def _check_edit(name: str, embeddings, eos) -> tuple[jax.Array, jax.Array]:
    embeddings, eos = jnp.asarray(embeddings), jnp.asarray(eos, jnp.int32)
    if embeddings.ndim != 3 or eos.shape != embeddings.shape[:1]:
        raise ValueError(f"{name} must be (B, L, D) embeddings with (B,) eos positions, got shapes "
                         f"{tuple(embeddings.shape)} and {tuple(eos.shape)}")
    return embeddings, eos


def swap_eos(embeddings_a: jax.Array, eos_a: np.ndarray, embeddings_b: jax.Array, eos_b: np.ndarray) -> jax.Array:
    """(B, L, D): prompt A's embeddings with its [EOS] part replaced by prompt B's.

    Alignment: positions before ``eos_a`` keep A's embeddings ([BOS] and A's words). From ``eos_a`` on come B's
    [EOS] part in order, B's position ``eos_b + j`` at A's position ``eos_a + j``: B's [EOS] token lands where A's
    was, then B's padding. If B's [EOS] part is longer than A's (B is the shorter prompt), it is cut at L (77);
    if it is shorter, its last embedding (a padding position of B) fills A's remaining positions. Swapping A with
    its own [EOS] part (B = A, eos_b = eos_a) returns A unchanged.

    Args:
      embeddings_a, embeddings_b: (B, L, D) text embeddings (``pipe.encode_prompt``).
      eos_a, eos_b: (B,) their first [EOS] positions (``eos_positions``).
    """
    embeddings_a, eos_a = _check_edit("embeddings_a", embeddings_a, eos_a)
    embeddings_b, eos_b = _check_edit("embeddings_b", embeddings_b, eos_b)
    if embeddings_a.shape != embeddings_b.shape:
        raise ValueError(f"embeddings_a and embeddings_b must have one shape, got {tuple(embeddings_a.shape)} and "
                         f"{tuple(embeddings_b.shape)}")
    length = embeddings_a.shape[1]
    position = jnp.arange(length)[None, :]  # (1, L)
    source = jnp.clip(eos_b[:, None] + position - eos_a[:, None], 0, length - 1)  # (B, L): B's position for each
    from_b = jnp.take_along_axis(embeddings_b, source[:, :, None], axis=1)
    return jnp.where((position >= eos_a[:, None])[:, :, None], from_b, embeddings_a)


def keep_only(embeddings: jax.Array, empty_embeddings: jax.Array, eos: np.ndarray, *, keep: str) -> jax.Array:
    """(B, L, D): one part of the prompt's embeddings kept, the other replaced by the empty prompt's embeddings at
    the same positions.

    ``keep="eos"``: the [EOS] part (positions >= ``eos``) kept, the word positions (< ``eos``, [BOS] included)
    taken from ``empty_embeddings``. ``keep="words"``: the word positions kept, the [EOS] part taken from the empty
    prompt. [BOS] is the same in every prompt (the encoder is causal), so it does not matter which side holds it.

    Args:
      embeddings: (B, L, D) the prompts' embeddings; empty_embeddings: (B, L, D) or (1, L, D) those of "".
      eos: (B,) the prompts' first [EOS] positions (``eos_positions``).
    """
    check_choice("keep", keep, KEEP_MODES)
    embeddings, eos = _check_edit("embeddings", embeddings, eos)
    empty = jnp.broadcast_to(jnp.asarray(empty_embeddings, embeddings.dtype), embeddings.shape)
    in_eos_part = (jnp.arange(embeddings.shape[1])[None, :] >= eos[:, None])[:, :, None]
    return jnp.where(in_eos_part, embeddings, empty) if keep == "eos" else jnp.where(in_eos_part, empty, embeddings)


# --------------------------------------------------------------------------------------------------- reader
def reader_input(reader: Extractor, images: np.ndarray) -> np.ndarray:
    """Images (N, H, W, 3) in [0, 1] (the pipeline's) -> (N, 32, 32, 3) in [-1, 1], the reader's input; larger
    images are resized with an antialiasing filter (a 512-pixel Stable Diffusion image shrinks to 32 pixels)."""
    images = np.asarray(images, np.float32)
    height, width, channels = reader.spec.image_shape
    if images.ndim != 4 or images.shape[-1] != channels:
        raise ValueError(f"the reader takes images (N, H, W, {channels}) in [0, 1], got shape {images.shape}")
    if images.shape[1:3] != (height, width):
        images = np.asarray(jax.image.resize(images, (len(images), height, width, channels), "linear",
                                             antialias=True))
    return np.clip(images * 2 - 1, -1.0, 1.0)


def read_factors(reader: Extractor, images: np.ndarray, factors: Sequence[str]) -> dict[str, np.ndarray]:
    """{factor: (N,) int32 class the reader sees} for images (N, H, W, 3) in [0, 1]."""
    heads = [head for head, _ in reader.spec.heads]
    for factor in factors:
        check_choice("reader factor", factor, heads)
    predicted = reader.predict(reader_input(reader, images))
    return {factor: predicted[factor] for factor in factors}
