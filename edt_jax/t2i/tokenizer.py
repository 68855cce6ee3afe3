"""The CLIP tokenizer of a Stable Diffusion folder, on Hugging Face's ``tokenizers`` package.

    from edt_jax.t2i.tokenizer import load_tokenizer
    tokenizer = load_tokenizer("stable-diffusion-v1-5")  # the pipeline root or its tokenizer/ folder
    batch = tokenizer(["a photograph of an astronaut riding a horse"])
    batch["input_ids"]       # (1, 77) int32: 49406 320 8853 ... 49407, then the pad id
    batch["attention_mask"]  # (1, 77) int32: 1 on bos, the tokens and eos

The ids are those of transformers' ``CLIPTokenizer(prompts, padding="max_length", max_length=77,
truncation=True)``, the call every diffusers pipeline makes. The byte-level BPE itself is ``tokenizers``'
(the implementation transformers also runs); this module only builds the same pipeline transformers builds.

A folder with ``tokenizer.json`` (what transformers 5 saves) is read as it is; otherwise the pipeline is built
from ``vocab.json`` + ``merges.txt`` as transformers' ``CLIPTokenizer`` builds it: NFC, whitespace runs -> one
space, lowercase; CLIP's split pattern, then byte-level; BPE with the word-final suffix ``</w>``. The special
tokens (and ``model_max_length``) come from ``tokenizer_config.json`` when present.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from etils import epath

from edt_jax import paths

DEFAULT_BOS = "<|startoftext|>"
DEFAULT_EOS = "<|endoftext|>"
DEFAULT_MAX_LENGTH = 77
UNSET_MAX_LENGTH = 1_000_000  # larger model_max_length values are transformers' "no limit" placeholder

# CLIP's pre-tokenizer pattern as transformers 5's CLIPTokenizer writes it: the special tokens, the English
# contractions, letter runs, single digits and runs of other non-space characters; the gaps (spaces) are dropped.
# (transformers 4's CLIPConverter has the same pattern without the two special-token alternatives; the special
# tokens are matched as added tokens before the pre-tokenizer runs, so both give the same ids.)
SPLIT_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def _tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise ImportError("the CLIP tokenizer needs Hugging Face's 'tokenizers' package: "
                          "pip install 'edt_jax[t2i]'") from None
    return tokenizers


def _token_content(value: Any, default: str) -> str:
    """A special token of tokenizer_config.json: a string, or (transformers < 4.3x) an AddedToken dict."""
    if value is None:
        return default
    if isinstance(value, Mapping):
        return str(value["content"])
    return str(value)


def build_clip_tokenizer(vocab: Mapping[str, int], merges: Sequence[tuple[str, str]], *, unk_token: str = DEFAULT_EOS,
                         bos_token: str = DEFAULT_BOS, eos_token: str = DEFAULT_EOS):
    """A ``tokenizers.Tokenizer`` with the pipeline of transformers' ``CLIPTokenizer`` for this vocabulary.

    Args:
      vocab: token -> id (``vocab.json``).
      merges: the BPE merges in rank order (the pairs of ``merges.txt``).
      unk_token / bos_token / eos_token: the special tokens (all must be in ``vocab``).
    """
    tk = _tokenizers()
    for role, token in (("bos", bos_token), ("eos", eos_token), ("unk", unk_token)):
        if token not in vocab:
            raise ValueError(f"the vocabulary has no {role} token {token!r}")
    tokenizer = tk.Tokenizer(tk.models.BPE(vocab=dict(vocab), merges=list(merges), dropout=None,
                                           continuing_subword_prefix="", end_of_word_suffix="</w>", fuse_unk=False,
                                           unk_token=unk_token))
    tokenizer.normalizer = tk.normalizers.Sequence([tk.normalizers.NFC(),
                                                    tk.normalizers.Replace(tk.Regex(r"\s+"), " "),
                                                    tk.normalizers.Lowercase()])
    tokenizer.pre_tokenizer = tk.pre_tokenizers.Sequence([
        tk.pre_tokenizers.Split(tk.Regex(SPLIT_PATTERN), behavior="removed", invert=True),
        tk.pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tokenizer.decoder = tk.decoders.ByteLevel()
    # (sep, cls) positionally: tokenizers 0.23 renamed the second keyword from ``cls`` to ``cls_token``.
    tokenizer.post_processor = tk.processors.RobertaProcessing(
        (eos_token, vocab[eos_token]), (bos_token, vocab[bos_token]), trim_offsets=False, add_prefix_space=False)
    # transformers registers its special tokens as added tokens, so a prompt that spells one out gets its id.
    tokenizer.add_special_tokens([tk.AddedToken(t, special=True, normalized=False)
                                  for t in dict.fromkeys((bos_token, eos_token, unk_token))])
    return tokenizer


def read_merges(text: str) -> list[tuple[str, str]]:
    """The merges of a ``merges.txt``: one ``a b`` pair a line, after the ``#version`` header line."""
    lines = text.split("\n")
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]
    merges = []
    for number, line in enumerate(lines, start=2):
        if not line.strip():
            continue
        pair = line.split()
        if len(pair) != 2:
            raise ValueError(f"merges.txt line {number} is not a pair of symbols: {line!r}")
        merges.append((pair[0], pair[1]))
    return merges


class CLIPTokenizer:
    """Prompts -> the padded ids and attention mask a CLIP text encoder takes.

    Attributes: ``tokenizer`` (the ``tokenizers.Tokenizer``), ``bos_token_id``, ``eos_token_id``,
    ``pad_token_id``, ``model_max_length`` (77 for every SD text encoder).
    """

    def __init__(self, tokenizer, *, bos_token: str = DEFAULT_BOS, eos_token: str = DEFAULT_EOS,
                 pad_token: str | None = None, model_max_length: int = DEFAULT_MAX_LENGTH):
        self.tokenizer = tokenizer
        pad_token = eos_token if pad_token is None else pad_token
        ids = {}
        for role, token in (("bos", bos_token), ("eos", eos_token), ("pad", pad_token)):
            ids[role] = tokenizer.token_to_id(token)
            if ids[role] is None:
                raise ValueError(f"the tokenizer's vocabulary has no {role} token {token!r}")
        self.bos_token_id: int = ids["bos"]
        self.eos_token_id: int = ids["eos"]
        self.pad_token_id: int = ids["pad"]
        self.model_max_length = int(model_max_length)

    def __call__(self, prompts: str | Sequence[str], *, max_length: int | None = None) -> dict[str, np.ndarray]:
        """Tokenize ``prompts`` (one string or a sequence of B strings).

        Each row is bos, the prompt's tokens, eos, then the pad id up to ``max_length`` (default
        ``model_max_length``); a longer prompt is cut so that eos stays last.

        Returns ``{"input_ids": (B, max_length) int32, "attention_mask": (B, max_length) int32}`` (mask 1 on
        bos, the tokens and eos, 0 on padding).
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not all(isinstance(p, str) for p in prompts):
            raise TypeError("prompts must be a string or a sequence of strings")
        length = self.model_max_length if max_length is None else int(max_length)
        if length < 2:
            raise ValueError(f"max_length must leave room for bos and eos (at least 2), got {length}")
        input_ids = np.full((len(prompts), length), self.pad_token_id, dtype=np.int32)
        attention_mask = np.zeros((len(prompts), length), dtype=np.int32)
        # Special tokens are added here rather than by the post-processor, so truncation can keep eos last.
        encodings = self.tokenizer.encode_batch(prompts, add_special_tokens=False) if prompts else []
        for row, encoding in enumerate(encodings):
            ids = [self.bos_token_id, *encoding.ids[:length - 2], self.eos_token_id]
            input_ids[row, :len(ids)] = ids
            attention_mask[row, :len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def __repr__(self) -> str:
        return (f"CLIPTokenizer(vocab_size={self.tokenizer.get_vocab_size()}, bos={self.bos_token_id}, "
                f"eos={self.eos_token_id}, pad={self.pad_token_id}, model_max_length={self.model_max_length})")


def find_tokenizer(folder: paths.PathLike) -> epath.Path:
    """The tokenizer folder at ``folder``: ``folder`` itself when it holds ``tokenizer.json`` or ``vocab.json``,
    else its ``tokenizer/`` subfolder (a diffusers pipeline root).

    Raises a one-line ``FileNotFoundError`` saying what is expected (nothing is downloaded).
    """
    folder = paths.as_path(folder)
    for candidate in (folder, folder / "tokenizer"):
        if (candidate / "tokenizer.json").is_file() or (candidate / "vocab.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"no CLIP tokenizer at {str(folder)!r}: expected a tokenizer/ folder holding tokenizer.json, or vocab.json "
        f"and merges.txt, or a diffusers pipeline folder containing one; download the pipeline from Hugging Face "
        f"yourself (nothing is fetched at run time)")


def load_tokenizer(folder: paths.PathLike) -> CLIPTokenizer:
    """The CLIP tokenizer of a Stable Diffusion ``tokenizer/`` folder or pipeline root (see the module docstring)."""
    tk = _tokenizers()
    folder = find_tokenizer(folder)
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    bos = _token_content(config.get("bos_token"), DEFAULT_BOS)
    eos = _token_content(config.get("eos_token"), DEFAULT_EOS)
    unk = _token_content(config.get("unk_token"), DEFAULT_EOS)
    pad = _token_content(config.get("pad_token"), eos)
    max_length = config.get("model_max_length", DEFAULT_MAX_LENGTH)
    if not isinstance(max_length, (int, float)) or not 2 <= max_length <= UNSET_MAX_LENGTH:
        max_length = DEFAULT_MAX_LENGTH  # transformers writes int(1e30) when a tokenizer was saved without one
    if (folder / "tokenizer.json").is_file():
        tokenizer = tk.Tokenizer.from_str((folder / "tokenizer.json").read_text())
    else:
        if not (folder / "merges.txt").is_file():
            raise FileNotFoundError(f"tokenizer folder {str(folder)!r} has vocab.json but no merges.txt "
                                    f"(or a tokenizer.json in their place)")
        vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        merges = read_merges((folder / "merges.txt").read_text(encoding="utf-8"))
        tokenizer = build_clip_tokenizer(vocab, merges, unk_token=unk, bos_token=bos, eos_token=eos)
    return CLIPTokenizer(tokenizer, bos_token=bos, eos_token=eos, pad_token=pad, model_max_length=max_length)
