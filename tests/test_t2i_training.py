"""The text-to-image task on captioned shapes: captions and their one-token words, the caption vocabulary, prompt
files, a few trained steps of ``configs/shapes_t2i.py:test`` (resume included), and the export that
``StableDiffusion.from_pretrained`` reads back to the images of the run loaded by ``edt_jax.load_run``."""

from __future__ import annotations

import itertools
import json

import jax
import numpy as np
import pytest
from reference_fixtures import fixture_path

import edt_jax
from configs import shapes_t2i
from edt_jax.data.shapes import FACTOR_SIZES, ShapesDataset, ShapesSubset
from edt_jax.mesh import create_mesh
from edt_jax.models.convert import official_shape, to_flax_layout, to_torch_layout
from edt_jax.models.sd import unet_config_from_dict
from edt_jax.t2i import captions
from edt_jax.t2i import training as t2i
from edt_jax.t2i.pipeline import StableDiffusion
from edt_jax.t2i.tokenizer import load_tokenizer
from edt_jax.training.metrics import read_records

PROMPTS = ["a red circle on a dark blue background", "a huge yellow triangle on a dark green background at the top"]


# ------------------------------------------------------------------------------------------------------ captions
def test_captions_name_the_factors():
    assert captions.caption(np.array([1, 0, 2, 2, 0, 0, 5])) == \
        "a large red circle on a dark blue background at the top left"
    assert captions.caption(np.array([2, 5, 3, 0, 3, 4, 0]), with_size=False) == \
        "a magenta triangle on a dark purple background in the center"
    assert captions.caption(np.array([0, 1, 0, 3, 7, 6, 1]), with_position=False) == \
        "a huge yellow square on a dark brown background"
    with pytest.raises(ValueError, match="object_hue=6"):
        captions.caption_of(0, 6, 0)
    with pytest.raises(ValueError, match="7 integers"):
        captions.caption(np.zeros(6, np.int32))


def test_every_caption_word_is_one_token():
    tokenizer = captions.caption_tokenizer()
    vocab, _ = captions.caption_vocabulary()
    grid = itertools.product(*(range(n) for n in FACTOR_SIZES[:6]))
    texts = {captions.caption(np.array([*f, 0])) for f in grid}
    texts |= {captions.caption(np.array([*f, 0, 0, 0, 0]), with_size=False, with_position=False)
              for f in itertools.product(*(range(n) for n in FACTOR_SIZES[:3]))}
    assert len(texts) == 3 * 6 * 4 * 4 * 9 + 3 * 6 * 4  # positions read as 9 phrases
    assert {w for t in texts for w in t.split()} == set(captions.CAPTION_WORDS)
    texts = sorted(texts)
    ids = tokenizer(texts)["input_ids"]
    for text, row in zip(texts, ids, strict=True):
        words = text.split()
        assert row[0] == tokenizer.bos_token_id and row[len(words) + 1] == tokenizer.eos_token_id, text
        assert [vocab[w + "</w>"] for w in words] == row[1:len(words) + 1].tolist(), text


def test_caption_vocabulary_has_clips_layout():
    vocab, merges = captions.caption_vocabulary()
    real = json.loads(fixture_path("clip_tokenizer/vocab.json").read_text(encoding="utf-8"))
    by_id = sorted(vocab, key=vocab.get)
    assert by_id[:512] == sorted(real, key=real.get)[:512]  # the byte symbols, then with </w>, as CLIP's
    assert sorted(vocab.values()) == list(range(len(vocab)))
    assert by_id[-2:] == ["<|startoftext|>", "<|endoftext|>"]
    assert all(a + b in vocab for a, b in merges) and len(vocab) == 512 + len(merges) + 2
    tokenizer = captions.caption_tokenizer()
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == \
        (len(vocab) - 2, len(vocab) - 1, len(vocab) - 1)
    np.testing.assert_array_equal(tokenizer("")["input_ids"][0, :3], [len(vocab) - 2, len(vocab) - 1, len(vocab) - 1])
    # A word whose letters other words' merges join first still becomes one token.
    vocab, merges = captions.caption_vocabulary(["top", "bottom", "to", "tt"])
    assert all(w + "</w>" in vocab for w in ("top", "bottom", "to", "tt"))
    with pytest.raises(ValueError, match="'Red'"):
        captions.caption_vocabulary(["Red"])


def test_tokenizer_folder_round_trip(tmp_path):
    captions.write_tokenizer(tmp_path / "tokenizer")
    loaded = load_tokenizer(tmp_path)
    assert loaded.model_max_length == 77
    np.testing.assert_array_equal(loaded(PROMPTS)["input_ids"], captions.caption_tokenizer()(PROMPTS)["input_ids"])


def test_prompt_files(tmp_path):
    records = captions.prompt_records(80, seed=3)
    assert len({tuple(r["factors"].values()) for r in records[:72]}) == 72  # each combination once, then cycled
    assert records[72:] == records[:8] and records == captions.prompt_records(80, seed=3)
    first = records[0]["factors"]
    assert records[0]["prompt"] == captions.caption_of(first["shape"], first["object_hue"], first["background_hue"])
    path = tmp_path / "prompts.jsonl"
    captions.write_prompts(path, records)
    assert captions.read_prompts(path) == records
    path.write_text('{"prompt": "a red square"}\n\n{"factors": {}}\n')
    with pytest.raises(ValueError, match=r"prompts.jsonl:3 needs"):
        captions.read_prompts(path)


def test_captioned_source():
    base = ShapesSubset(ShapesDataset(), {"scale": (3,), "x_position": (3, 4)})
    source = captions.CaptionedShapes(base, seed=1)
    record = source[5]
    assert set(record) == {"image", "label", "factors", "input_ids"}
    assert record["input_ids"].shape == (77,) and record["input_ids"].dtype == np.int32
    np.testing.assert_array_equal(record["image"], base[5]["image"])
    text = source.caption(5)
    np.testing.assert_array_equal(record["input_ids"], captions.caption_tokenizer()(text)["input_ids"][0])
    assert captions.caption(record["factors"], with_size=False, with_position=False).split(" background")[0] in \
        text.replace("huge ", "")
    # Both halves of the optional phrases appear (about half each), the same ones on every read.
    texts = [source.caption(i) for i in range(64)]
    assert texts == [captions.CaptionedShapes(base, seed=1).caption(i) for i in range(64)]
    assert 10 < sum("huge" in t for t in texts) < 54 and 10 < sum(t.endswith("background") for t in texts) < 54


# ------------------------------------------------------------------------------------------------ export pieces
def test_config_dicts_and_layouts_invert():
    config = shapes_t2i.get_config()
    cfg = t2i.unet_config(config)
    assert (cfg.sample_size, cfg.in_channels, cfg.cross_attention_dim) == (32, 3, 64)
    assert unet_config_from_dict(t2i.unet_config_to_dict(cfg)) == cfg
    assert cfg.only_cross_attention == (False, False, False)
    # Per-block options reach the UNet: cross-attention only (no self-attention) in the first block.
    config.model.unet = {**config.model.unet.to_dict(), "only_cross_attention": (True, False, False)}
    fine = t2i.unet_config(config)
    assert fine.only_cross_attention == (True, False, False)
    assert unet_config_from_dict(t2i.unet_config_to_dict(fine)) == fine
    rng = np.random.default_rng(0)
    for shape in ((3, 4), (3, 3, 2, 5), (7,)):
        flax = rng.standard_normal(shape)
        torch = to_torch_layout(flax, "kernel")
        assert torch.shape == official_shape(shape, "kernel")
        np.testing.assert_array_equal(to_flax_layout(torch, "kernel"), flax)
    scheduler = t2i.scheduler_config(config)
    assert (scheduler["beta_start"], scheduler["beta_end"]) == (1e-4, 0.02)
    assert scheduler["prediction_type"] == "v_prediction"
    config.loss.prediction = "score"
    with pytest.raises(ValueError, match="score"):  # through the one entry point: runs.train hands text configs on
        edt_jax.runs.train(config, "/nonexistent/never_written")


# ------------------------------------------------------------------------------------------------ a trained run
@pytest.fixture(scope="module")
def one_device():
    """A one-device mesh: the tests' 8 virtual CPU devices would make every step of this UNet ~5x slower."""
    return create_mesh(devices=jax.devices()[:1])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, one_device):
    """``:test`` trained 2 steps, then resumed to 4. The learning rate decays over 4 steps in both calls, so the
    resumed run's train step is the first one's (a persistent-cache hit, not a second compile)."""
    workdir = tmp_path_factory.mktemp("t2i") / "run"
    config = shapes_t2i.get_config("test")
    config.optimizer.decay_steps = 4
    first = t2i.train(config, str(workdir), mesh=one_device)
    config.total_steps = 4
    second = t2i.train(config, str(workdir), mesh=one_device)
    return workdir, first, second


def test_training_writes_checkpoints_and_resumes(run_dir):
    workdir, first, second = run_dir
    assert first.step == 2 and [r["step"] for r in first.history] == [1, 2]
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in first.history)
    assert second.step == 4 and [r["step"] for r in second.history] == [3, 4]  # resumed at 2, not from scratch
    assert [r["step"] for r in read_records(workdir / "metrics.jsonl")] == [1, 2, 3, 4]
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [2, 4]
    assert (workdir / "tokenizer" / "vocab.json").is_file() and (workdir / "config.json").is_file()


def test_export_loads_to_the_same_images(run_dir, tmp_path, one_device):
    workdir, _, _ = run_dir
    pipe = edt_jax.load_run(workdir, mesh=one_device)  # the one run loader: a text run is a pipeline
    assert isinstance(pipe, StableDiffusion) and pipe.vae is None and pipe.latent_shape() == (32, 32, 3)
    options = dict(num_inference_steps=3, guidance_scale=2.0, seed=4)
    images = pipe(PROMPTS, **options)
    folder = t2i.export_pipeline(workdir, tmp_path / "pipeline")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["vae"] == [None, None] and not (folder / "vae").exists()
    loaded = StableDiffusion.from_pretrained(folder, mesh=one_device)
    assert images.shape == (2, 32, 32, 3) and np.isfinite(images).all()
    np.testing.assert_allclose(loaded(PROMPTS, **options), images, atol=1e-5)
    np.testing.assert_array_equal(loaded.tokenize(PROMPTS), pipe.tokenize(PROMPTS))
    with pytest.raises(ValueError, match=r"the DPM workdir .* is a text-to-image run; give a launch.train run"):
        edt_jax.runs.load_frozen_run(workdir, (32, 32, 3), role="DPM", user="this config disentangles")
