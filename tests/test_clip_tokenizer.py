"""The CLIP tokenizer of SD folders against transformers' CLIPTokenizer (padding="max_length", 77, truncation)."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
from reference_fixtures import FIXTURES, fixture_path, load_npz

from edt_jax.t2i.tokenizer import CLIPTokenizer, load_tokenizer, read_merges

REAL = FIXTURES / "clip_tokenizer"
TINY = FIXTURES / "sd_tiny_pipeline"


@pytest.fixture(scope="module")
def real() -> CLIPTokenizer:
    fixture_path("clip_tokenizer/vocab.json")
    fixture_path("clip_tokenizer/merges.txt")
    return load_tokenizer(REAL)


def test_real_vocabulary_matches_transformers(real):
    data = load_npz("clip_tokenizer/clip_tokenizer_reference.npz")
    prompts = [str(p) for p in data["prompts"]]
    out = real(prompts)
    assert out["input_ids"].dtype == np.int32 and out["attention_mask"].dtype == np.int32
    np.testing.assert_array_equal(out["input_ids"], data["input_ids"])
    np.testing.assert_array_equal(out["attention_mask"], data["attention_mask"])
    # The cases the fixture covers: an empty prompt (bos, eos) and one cut at 77 with eos kept last.
    assert out["attention_mask"][prompts.index("")].sum() == 2
    longest = int(np.argmax([len(p) for p in prompts]))
    assert out["attention_mask"][longest].all() and out["input_ids"][longest, -1] == real.eos_token_id


def test_real_vocabulary_special_ids(real):
    assert (real.bos_token_id, real.eos_token_id, real.pad_token_id, real.model_max_length) == (49406, 49407, 49407,
                                                                                                77)
    ids = real("a photograph of an astronaut riding a horse")["input_ids"]
    assert ids.shape == (1, 77)
    np.testing.assert_array_equal(ids[0, :10], [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407])
    assert (ids[0, 10:] == 49407).all()


def test_max_length(real):
    full = real(["a b c d e f"])["input_ids"][0]
    np.testing.assert_array_equal(full[:8], [49406, 320, 321, 322, 323, 324, 325, 49407])
    out = real(["a b c d e f"], max_length=5)  # cut to 3 tokens, eos kept last
    np.testing.assert_array_equal(out["input_ids"][0], [49406, 320, 321, 322, 49407])
    assert out["attention_mask"].all()
    with pytest.raises(ValueError, match="at least 2"):
        real("a", max_length=1)


def test_tiny_pipeline_matches_diffusers():
    data = load_npz("sd_tiny_pipeline/reference.npz")
    tokenizer = load_tokenizer(TINY)  # the pipeline root: its tokenizer/ is used
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (998, 999, 999)
    out = tokenizer([str(p) for p in data["prompts"]])
    np.testing.assert_array_equal(out["input_ids"], data["input_ids"])
    np.testing.assert_array_equal(load_tokenizer(TINY / "tokenizer")(list(data["prompts"]))["input_ids"],
                                  data["input_ids"])


def test_tokenizer_json_folder(real, tmp_path):
    """A folder with only tokenizer.json (+ tokenizer_config.json), as transformers 5 saves it, gives the same ids."""
    data = load_npz("clip_tokenizer/clip_tokenizer_reference.npz")
    folder = tmp_path / "tokenizer"
    folder.mkdir()
    real.tokenizer.save(str(folder / "tokenizer.json"))
    shutil.copy(TINY / "tokenizer" / "tokenizer_config.json", folder)
    loaded = load_tokenizer(tmp_path)
    np.testing.assert_array_equal(loaded([str(p) for p in data["prompts"]])["input_ids"], data["input_ids"])


def test_tokenizer_config_tokens(tmp_path):
    """Special tokens from tokenizer_config.json, also in the AddedToken-dict form older transformers wrote."""
    folder = tmp_path / "tokenizer"
    shutil.copytree(TINY / "tokenizer", folder)
    config = {"bos_token": {"__type": "AddedToken", "content": "<|startoftext|>"}, "eos_token": "<|endoftext|>",
              "pad_token": "!", "model_max_length": 8}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    tokenizer = load_tokenizer(folder)
    assert tokenizer.pad_token_id == 0 and tokenizer.model_max_length == 8  # "!" is the first byte symbol
    np.testing.assert_array_equal(tokenizer("two cats")["input_ids"][0], [998, 966, 334, 66, 527, 338, 999, 0])


def test_read_merges():
    assert read_merges("#version: 0.2\ni n\nt h</w>\n\n") == [("i", "n"), ("t", "h</w>")]
    with pytest.raises(ValueError, match="line 3 is not a pair"):
        read_merges("#version: 0.2\ni n\nt h x\n")


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected a tokenizer/ folder holding tokenizer.json, or vocab.json"):
        load_tokenizer(tmp_path / "nowhere")
    (tmp_path / "tokenizer").mkdir()
    shutil.copy(TINY / "tokenizer" / "vocab.json", tmp_path / "tokenizer")
    with pytest.raises(FileNotFoundError, match="has vocab.json but no merges.txt"):
        load_tokenizer(tmp_path)


def test_missing_tokenizers_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # makes `import tokenizers` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'edt_jax\[t2i\]'"):
        load_tokenizer(TINY)
