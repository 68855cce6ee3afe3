"""Captions of the shapes dataset, the small CLIP vocabulary that spells them, prompt files and a captioned source.

    from edt_jax.t2i import captions
    captions.caption(factors)                  # 'a large red circle on a dark blue background at the top left'
    vocab, merges = captions.caption_vocabulary()          # every caption word is one token
    tokenizer = captions.caption_tokenizer()               # a CLIPTokenizer over that vocabulary
    source = captions.CaptionedShapes(ShapesDataset())     # {"image", "label", "factors", "input_ids" (77,)}
    captions.write_prompts("prompts.jsonl", captions.prompt_records(24, seed=0))

A caption names the shape, the object's colour and the background's colour; an optional size word goes before
the colour and an optional position phrase after the background. Orientation is never named.

Colour words (``shapes._hsv`` of the dataset's hues): the objects are bright and saturated (S 0.8, V 1.0) at hues
0, 60, ..., 300 deg: red, yellow, green, cyan, blue, magenta. The backgrounds are dark and muted (S 0.5, V 0.45)
at hues 45, 135, 225, 315 deg, i.e. RGB (115, 100, 57), (57, 115, 72), (57, 72, 115), (115, 57, 100): "dark brown"
(a dark orange-yellow is brown), "dark green", "dark blue", "dark purple". Sizes: the four scales are small,
medium, large, huge. Positions: the 8 x 8 centre grid is split 3 / 2 / 3 into left, centre, right (x) and top,
middle, bottom (y), read as "at the top left", "at the top", "on the left", "in the center", ...

The vocabulary has CLIP's layout (``vocab.json`` + ``merges.txt`` as in every SD ``tokenizer/`` folder): the 256
byte-level symbols, the same with the word-final ``</w>``, one token per merge, then ``<|startoftext|>`` and
``<|endoftext|>`` last. The merges chain each caption word's letters into one token.
"""

from __future__ import annotations

import functools
import json
import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from edt_jax import paths
from edt_jax.data.shapes import FACTOR_NAMES, FACTOR_SIZES, SHAPE_NAMES, ShapesDataset
from edt_jax.t2i.tokenizer import DEFAULT_BOS, DEFAULT_EOS, DEFAULT_MAX_LENGTH, CLIPTokenizer, build_clip_tokenizer

OBJECT_COLORS = ("red", "yellow", "green", "cyan", "blue", "magenta")  # hue 0, 60, ..., 300 deg, bright
BACKGROUND_COLORS = ("brown", "green", "blue", "purple")  # hue 45, 135, 225, 315 deg, dark and muted
SIZE_WORDS = ("small", "medium", "large", "huge")  # the four scales
COLUMNS = ("left", "center", "right")
ROWS = ("top", "middle", "bottom")
# Grid index (0..7) -> column / row: 3 / 2 / 3, so "center" and "middle" are the two central positions.
GRID_THIRDS = (0, 0, 0, 1, 1, 2, 2, 2)
POSITION_PHRASES = {  # (row, column) -> phrase
    ("top", "left"): "at the top left", ("top", "center"): "at the top", ("top", "right"): "at the top right",
    ("middle", "left"): "on the left", ("middle", "center"): "in the center", ("middle", "right"): "on the right",
    ("bottom", "left"): "at the bottom left", ("bottom", "center"): "at the bottom",
    ("bottom", "right"): "at the bottom right",
}
PROMPT_FACTORS = ("shape", "object_hue", "background_hue")  # what a prompt file names


def caption_of(shape: int, object_hue: int, background_hue: int, *, scale: int | None = None,
               x_position: int | None = None, y_position: int | None = None) -> str:
    """'a [size] <colour> <shape> on a dark <colour> background [position]' of factor values (ints).

    The size word appears when ``scale`` is given, the position phrase when both positions are.
    """
    values = dict(shape=shape, object_hue=object_hue, background_hue=background_hue, scale=scale,
                  x_position=x_position, y_position=y_position)
    for name, value in values.items():
        size = FACTOR_SIZES[FACTOR_NAMES.index(name)]
        if value is None and name not in PROMPT_FACTORS:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < size:
            raise ValueError(f"caption: {name}={value!r} is not a valid factor value; accepted: an integer in "
                             f"[0, {size})")
    size_word = "" if scale is None else SIZE_WORDS[scale] + " "
    text = (f"a {size_word}{OBJECT_COLORS[object_hue]} {SHAPE_NAMES[shape]} on a dark "
            f"{BACKGROUND_COLORS[background_hue]} background")
    if x_position is not None and y_position is not None:
        text += " " + POSITION_PHRASES[(ROWS[GRID_THIRDS[y_position]], COLUMNS[GRID_THIRDS[x_position]])]
    return text


def caption(factors: Sequence[int] | np.ndarray, *, with_size: bool = True, with_position: bool = True) -> str:
    """The caption of a shapes factor vector (7,) (``ShapesDataset``'s order); orientation is not named.

    ``with_size`` / ``with_position`` keep the optional size word / position phrase.
    """
    f = np.asarray(factors)
    if f.shape != (len(FACTOR_NAMES),) or not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"caption: factors must be {len(FACTOR_NAMES)} integers ({', '.join(FACTOR_NAMES)}), got "
                         f"{f.dtype} of shape {f.shape}")
    shape, obj, bg, scale, x, y, _ = (int(v) for v in f)
    return caption_of(shape, obj, bg, scale=scale if with_size else None,
                      x_position=x if with_position else None, y_position=y if with_position else None)


def _all_words() -> tuple[str, ...]:
    phrases = ["a on dark background", *OBJECT_COLORS, *BACKGROUND_COLORS, *SHAPE_NAMES, *SIZE_WORDS,
               *POSITION_PHRASES.values()]
    return tuple(sorted({word for phrase in phrases for word in phrase.split()}))


CAPTION_WORDS: tuple[str, ...] = _all_words()  # every word any caption uses, sorted


# ------------------------------------------------------------------------------------------------ vocabulary
@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP's byte -> printable character table (the byte-level alphabet), in CLIP's vocabulary order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def _bpe(symbols: list[str], ranks: Mapping[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding of one word's symbols: merge the best-ranked adjacent pair (leftmost on ties) until none
    applies, as ``tokenizers``' BPE does."""
    symbols = list(symbols)
    while len(symbols) > 1:
        ranked = [(ranks.get(pair, np.inf), i) for i, pair in enumerate(zip(symbols, symbols[1:], strict=False))]
        rank, i = min(ranked)
        if rank == np.inf:
            break
        symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
    return symbols


def caption_vocabulary(words: Iterable[str] = CAPTION_WORDS) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of a CLIP-layout byte-level BPE in which each of ``words`` is one token.

    vocab: token -> id (``vocab.json``): the 256 byte symbols, the 256 with ``</w>``, one token per merge, then
    ``<|startoftext|>`` and ``<|endoftext|>`` (the two largest ids). merges: the pairs in rank order
    (``merges.txt``). Each word gets the merges that chain its letters left to right; a word whose letters an
    earlier word's merges already join differently gets the merges of its current pieces instead (merges added
    later rank lower, so they never change how an earlier word splits). Words are lowercase ASCII letters.
    """
    alphabet = bytes_to_unicode()
    base = list(alphabet.values())
    vocab: dict[str, int] = {token: i for i, token in enumerate(base + [t + "</w>" for t in base])}
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in dict.fromkeys(words):
        if not (isinstance(word, str) and word.isascii() and word.isalpha() and word.islower()):
            raise ValueError(f"caption_vocabulary: word {word!r} is not accepted; a word is lowercase ASCII letters "
                             f"(the tokenizer splits on everything else)")
        symbols = [alphabet[b] for b in word.encode()]
        symbols[-1] += "</w>"
        for _ in range(len(word)):
            pieces = _bpe(symbols, ranks)
            if len(pieces) == 1:
                break
            merged = pieces[0]
            for piece in pieces[1:]:  # chain the current pieces left to right
                if (merged, piece) not in ranks:
                    ranks[(merged, piece)] = len(merges)
                    merges.append((merged, piece))
                    vocab.setdefault(merged + piece, len(vocab))
                merged += piece
        else:
            raise AssertionError(f"caption_vocabulary: could not make {word!r} one token")  # cannot happen
    for special in (DEFAULT_BOS, DEFAULT_EOS):
        vocab[special] = len(vocab)
    return vocab, merges


@functools.cache
def caption_tokenizer() -> CLIPTokenizer:
    """A ``CLIPTokenizer`` (77 positions, pad = eos) over ``caption_vocabulary()``."""
    vocab, merges = caption_vocabulary()
    return CLIPTokenizer(build_clip_tokenizer(vocab, merges))


def write_tokenizer(folder: paths.PathLike, vocab: Mapping[str, int] | None = None,
                    merges: Sequence[tuple[str, str]] | None = None, *, model_max_length: int = DEFAULT_MAX_LENGTH,
                    bos_token: str = DEFAULT_BOS, eos_token: str = DEFAULT_EOS, pad_token: str | None = None) -> None:
    """Write a CLIP ``tokenizer/`` folder: vocab.json, merges.txt and tokenizer_config.json (bos, eos, pad (default
    eos), unk = eos, ``model_max_length``), readable by ``load_tokenizer`` and transformers' ``CLIPTokenizer``.

    ``vocab`` / ``merges`` default to ``caption_vocabulary()``'s.
    """
    if (vocab is None) != (merges is None):
        raise ValueError("write_tokenizer: give both vocab and merges, or neither (the caption vocabulary)")
    if vocab is None:
        vocab, merges = caption_vocabulary()
    pad_token = eos_token if pad_token is None else pad_token
    missing = [t for t in (bos_token, eos_token, pad_token) if t not in vocab]
    if missing:
        raise ValueError(f"write_tokenizer: special token(s) {missing} are not in the vocabulary")
    folder = paths.as_path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(dict(vocab), ensure_ascii=False, indent=1) + "\n")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    config = {"bos_token": bos_token, "eos_token": eos_token, "pad_token": pad_token, "unk_token": eos_token,
              "model_max_length": int(model_max_length), "tokenizer_class": "CLIPTokenizer", "do_lower_case": True,
              "errors": "replace", "add_prefix_space": False, "clean_up_tokenization_spaces": False}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


# ------------------------------------------------------------------------------------------------ prompt files
def prompt_records(num: int, seed: int = 0) -> list[dict[str, Any]]:
    """``num`` prompts of (shape, object_hue, background_hue) combinations: ``{"prompt", "factors": {name: value}}``.

    The 72 combinations are taken in a random order (``seed``) and cycled, so any 72 consecutive records name each
    combination once. The prompts carry no size or position (the model draws those).
    """
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 0:
        raise ValueError(f"prompt_records: num={num!r} is not accepted; give a count >= 0")
    sizes = [FACTOR_SIZES[FACTOR_NAMES.index(name)] for name in PROMPT_FACTORS]
    combos = np.stack(np.meshgrid(*map(np.arange, sizes), indexing="ij"), axis=-1).reshape(-1, len(sizes))
    order = np.random.default_rng(seed).permutation(len(combos))
    records = []
    for i in range(int(num)):
        values = dict(zip(PROMPT_FACTORS, (int(v) for v in combos[order[i % len(combos)]]), strict=True))
        records.append({"prompt": caption_of(**values), "factors": values})
    return records


def write_prompts(path: paths.PathLike, records: Iterable[Mapping[str, Any]]) -> None:
    """Write prompt records as JSON lines (one ``{"prompt": ..., "factors": {...}}`` object a line)."""
    lines = []
    for i, record in enumerate(records):
        if not isinstance(record, Mapping) or not isinstance(record.get("prompt"), str):
            raise ValueError(f"write_prompts: record {i} is {record!r}; each record needs a string 'prompt'")
        lines.append(json.dumps(dict(record)) + "\n")
    paths.as_path(path).write_text("".join(lines))


def read_prompts(path: paths.PathLike) -> list[dict[str, Any]]:
    """The records of a JSON-lines prompt file (blank lines skipped); each has a string ``prompt`` and optional
    ``factors`` (factor name -> value). One-line errors name the file and line."""
    path = paths.as_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {str(path)!r} not found; write one with write_prompts")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number} is not a JSON object ({err.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
            raise ValueError(f"{path}:{number} needs a JSON object with a string 'prompt', got {line.strip()[:80]!r}")
        factors = record.get("factors", {})
        if not isinstance(factors, dict) or any(k not in FACTOR_NAMES for k in factors):
            raise ValueError(f"{path}:{number} factors {factors!r} must map factor names ({', '.join(FACTOR_NAMES)}) "
                             f"to values")
        records.append(record)
    return records


# ------------------------------------------------------------------------------------------------ the source
class CaptionedShapes:
    """A shapes source with captions: ``ds[i]`` is the base record plus ``input_ids`` (77,) int32 of its caption.

    Records: ``{"image": uint8 (H, W, 3), "label": int32, "factors": int32 (7,), "input_ids": int32 (77,)}``.
    Each record keeps the size word and the position phrase with probability ``optional_probability`` each, drawn
    from (``seed``, the record's index), so a record's caption never changes and short prompts (shape and colours only)
    are in the training distribution.

    Args:
      base: a ``ShapesDataset`` or ``ShapesSubset`` (anything whose records carry ``factors``); default the whole
        32x32 dataset.
      tokenizer: default ``caption_tokenizer()``.
    """

    def __init__(self, base: Sequence | None = None, *, tokenizer: CLIPTokenizer | None = None,
                 optional_probability: float = 0.5, seed: int = 0) -> None:
        if not (isinstance(optional_probability, (int, float)) and 0.0 <= optional_probability <= 1.0):
            raise ValueError(f"CaptionedShapes: optional_probability={optional_probability!r} is not accepted; "
                             f"give a probability in [0, 1]")
        self.base = ShapesDataset() if base is None else base
        self.tokenizer = caption_tokenizer() if tokenizer is None else tokenizer
        self.optional_probability = float(optional_probability)
        self.seed = int(seed)
        self._ids: dict[str, np.ndarray] = {}  # caption -> ids: a few thousand distinct captions in all

    def __len__(self) -> int:
        return len(self.base)

    def caption(self, index: Any) -> str:
        """The caption of record ``index``."""
        i = operator.index(index)
        return self._caption(i, self.base[i]["factors"])

    def _caption(self, i: int, factors: np.ndarray) -> str:
        keep_size, keep_position = np.random.default_rng([self.seed, i]).random(2) < self.optional_probability
        return caption(factors, with_size=bool(keep_size), with_position=bool(keep_position))

    def token_ids(self, text: str) -> np.ndarray:
        """(77,) int32 ids of one caption (cached)."""
        ids = self._ids.get(text)
        if ids is None:
            ids = self._ids[text] = self.tokenizer(text)["input_ids"][0]
        return ids

    def __getitem__(self, index: Any) -> dict[str, np.ndarray]:
        i = operator.index(index)
        record = dict(self.base[i])
        record["input_ids"] = self.token_ids(self._caption(i, record["factors"]))
        return record


__all__ = ["BACKGROUND_COLORS", "CAPTION_WORDS", "OBJECT_COLORS", "POSITION_PHRASES", "SIZE_WORDS", "CaptionedShapes",
           "bytes_to_unicode", "caption", "caption_of", "caption_tokenizer", "caption_vocabulary", "prompt_records",
           "read_prompts", "write_prompts", "write_tokenizer"]
