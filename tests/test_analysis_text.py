"""edt_jax.analysis.text: the working-mechanism experiments on a text-to-image pipeline (the tiny diffusers folder,
whose images are noise to the reader: the tests check shapes, keys, ranges and invariants, not findings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from edt_jax.analysis import prompts, text
from edt_jax.analysis.experiments import write_report
from edt_jax.mesh import create_mesh
from edt_jax.metrics.extractors import load_extractor
from edt_jax.t2i import StableDiffusion
from tests.reference_fixtures import FIXTURES

FOLDER = FIXTURES / "sd_tiny_pipeline"
REPO = Path(__file__).resolve().parents[1]
RECORDS = [{"prompt": "a red circle on a dark blue background",
            "factors": {"shape": 1, "object_hue": 0, "background_hue": 2}},
           {"prompt": "a small green square in the middle of a yellow background",
            "factors": {"shape": 0, "object_hue": 2, "background_hue": 1}}]
# A batch of 2 on one device, 3 steps: every sampler call runs in a fraction of a second; the time goes to compiling
# the three programs (with and without trajectory, with the prompt switch).
OPTIONS = dict(steps=3, guidance_scale=3.0, seeds=(0,), num_per_prompt=1, batch_size=4)
FACTORS = ["shape", "object_hue", "background_hue"]


# -------------------------------------------------------------------------------------------- embedding edits
def _rows(values: list[list[float]]) -> np.ndarray:
    """(B, L, 1) embeddings from per-position values."""
    return np.asarray(values, np.float32)[:, :, None]


def test_eos_positions_are_the_first_eos_of_each_row():
    ids = np.array([[998, 5, 6, 999, 999, 999],    # SD 1.x: padded with the eos id itself
                    [998, 999, 999, 999, 999, 999],  # the empty prompt
                    [998, 5, 6, 7, 8, 999],          # no padding left
                    [998, 5, 999, 0, 0, 0]])         # SD 2.x: another pad id
    np.testing.assert_array_equal(prompts.eos_positions(ids, 999), [3, 1, 5, 2])
    with pytest.raises(ValueError, match="row 1 of input_ids has no eos token 999"):
        prompts.eos_positions(np.array([[998, 999], [998, 5]]), 999)


def test_swap_eos_places_bs_eos_part_from_as_eos_position():
    positions = np.arange(6, dtype=np.float32)
    a, b = _rows([100 + positions] * 2), _rows([200 + positions] * 2)
    # Row 0: B's eos part (from 1) is the longer one, cut at L. Row 1: it is the shorter, its last padding repeats.
    swapped = prompts.swap_eos(a, np.array([3, 1]), b, np.array([1, 4]))
    np.testing.assert_array_equal(np.asarray(swapped)[..., 0], [[100, 101, 102, 201, 202, 203],
                                                                 [100, 204, 205, 205, 205, 205]])
    np.testing.assert_array_equal(prompts.swap_eos(a, np.array([3, 1]), a, np.array([3, 1])), a)  # A with A's own
    jitted = jax.jit(prompts.swap_eos)(a, np.array([3, 1]), b, np.array([1, 4]))
    np.testing.assert_array_equal(jitted, swapped)
    with pytest.raises(ValueError, match="one shape"):
        prompts.swap_eos(a, np.array([3, 1]), b[:, :5], np.array([1, 4]))


def test_keep_only_replaces_the_other_part_with_the_empty_prompt():
    positions = np.arange(5, dtype=np.float32)
    embeddings, empty = _rows([100 + positions, 200 + positions]), _rows([300 + positions])  # empty: (1, L, 1)
    eos = np.array([2, 4])
    only_eos = np.asarray(prompts.keep_only(embeddings, empty, eos, keep="eos"))[..., 0]
    only_words = np.asarray(prompts.keep_only(embeddings, empty, eos, keep="words"))[..., 0]
    np.testing.assert_array_equal(only_eos, [[300, 301, 102, 103, 104], [300, 301, 302, 303, 204]])
    np.testing.assert_array_equal(only_words, [[100, 101, 302, 303, 304], [200, 201, 202, 203, 304]])
    with pytest.raises(ValueError, match="unknown keep 'both'"):
        prompts.keep_only(embeddings, empty, eos, keep="both")


def test_prompt_pairs_differ_in_every_shared_factor():
    records = [{"prompt": "a", "factors": {"shape": 0, "object_hue": 0, "background_hue": 0}},
               {"prompt": "b", "factors": {"shape": 1, "object_hue": 1, "background_hue": 1}},
               {"prompt": "c", "factors": {"shape": 1, "object_hue": 0, "background_hue": 2}},
               {"prompt": "d", "factors": {"shape": 2}}]
    # c shares the object hue with a and the shape with b; d names the shape only, which differs from a's, b's, c's.
    assert prompts.prompt_pairs(records) == [(0, 1), (1, 3), (2, 3), (3, 0)]
    assert prompts.prompt_pairs(records[:1]) == [] and prompts.prompt_pairs([records[0], records[2]]) == []


def test_load_prompts_checks_every_record(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n\n")
    assert prompts.load_prompts(path) == RECORDS
    path.write_text(json.dumps({"prompt": "x", "factors": {"colour": 1}}))
    with pytest.raises(ValueError, match="colour"):
        prompts.load_prompts(path)
    path.write_text(json.dumps({"prompt": "x", "factors": {"shape": 3}}))
    with pytest.raises(ValueError, match=r"shape = 3; expected an index in \[0, 3\)"):
        prompts.load_prompts(path)
    path.write_text(json.dumps({"prompt": "x"}))  # no factors: allowed, named nothing
    assert prompts.load_prompts(path) == [{"prompt": "x", "factors": {}}]
    with pytest.raises(ValueError, match="prompt records that name factors"):
        text.text_reverse_experiment(None, [{"prompt": "x", "factors": {}}])


def test_read_factors_takes_any_image_size():
    reader = load_extractor("shapes")
    rng = np.random.default_rng(0)
    small = rng.uniform(size=(3, 32, 32, 3)).astype(np.float32)
    seen = prompts.read_factors(reader, small, FACTORS)
    assert set(seen) == set(FACTORS) and all(v.shape == (3,) for v in seen.values())
    large = prompts.read_factors(reader, np.repeat(np.repeat(small, 2, axis=1), 2, axis=2), ["shape"])
    assert large["shape"].shape == (3,)
    with pytest.raises(ValueError, match="unknown reader factor 'colour'"):
        prompts.read_factors(reader, small, ["colour"])


# ------------------------------------------------------------------------------------------------ experiments
@pytest.fixture(scope="module")
def pipe():
    # One device: the tiny programs run 2x faster unsharded than over the test session's 8 virtual CPU devices.
    return StableDiffusion.from_pretrained(FOLDER, mesh=create_mesh(devices=jax.devices()[:1]))


@pytest.fixture(scope="module")
def reverse(pipe):
    return text.text_reverse_experiment(pipe, RECORDS, cutoffs=(0.25,), **{**OPTIONS, "seeds": (0, 1)})


@pytest.fixture(scope="module")
def guidance(pipe):
    return text.text_guidance_experiment(pipe, RECORDS, fractions=(1, 0.5, 0), **OPTIONS)


def _in_unit(value) -> bool:
    return value is not None and 0.0 <= value <= 1.0


def test_reverse_experiment(reverse, tmp_path):
    payload, num_calls = reverse.payload, 3
    assert payload["setup"]["num_calls"] == num_calls and len(payload["setup"]["timesteps"]) == num_calls
    distances = payload["distances"]["0.25"]
    assert all(len(distances[b]) == num_calls and np.all(np.isfinite(distances[b])) for b in ("low", "high", "total"))
    assert all(len(payload["band_settling"]["0.25"][b]) == 2 for b in ("low", "high", "total"))
    for f in FACTORS:
        assert len(payload["agreement"][f]) == num_calls and all(0 <= v <= 1 for v in payload["agreement"][f])
        assert 0 <= payload["settle_call"][f]["mean"] <= num_calls and _in_unit(payload["accuracy"][f]["mean"])
        assert len(payload["settle_call"][f]["per_seed"]) == 2
        assert [len(s["final_seen"][f]) for s in payload["per_seed"]] == [2, 2]
    assert f"of {num_calls}" in payload["verdict"] and payload["verdict"] in reverse.markdown
    written = write_report(reverse, "reverse", tmp_path)
    assert {Path(p).name for p in written} == {"reverse.md", "reverse.json", "reverse.png", "reverse_reader.png",
                                               "reverse_strip.png"}


def test_prompt_switch_experiment(pipe):
    report = text.prompt_switch_experiment(pipe, RECORDS, **OPTIONS)
    rows, references = report.payload["rows"], report.payload["references"]
    assert [r["calls_with_a"] for r in rows] == [0, 1, 2, 3] and rows[-1]["fraction"] == 1.0
    assert rows[0]["switch_timestep"] is None and rows[-1]["switch_timestep"] is None
    assert rows[0]["switch_timestep"] is None and rows[1]["switch_timestep"] > rows[2]["switch_timestep"]
    assert report.payload["pairs"] == [[RECORDS[0]["prompt"], RECORDS[1]["prompt"]],
                                       [RECORDS[1]["prompt"], RECORDS[0]["prompt"]]]
    for f in FACTORS:
        for r in rows:  # A and B differ in every factor: no sample shows both
            assert r["shows_a"][f]["mean"] + r["shows_b"][f]["mean"] <= 1
        # A for every call is prompt A alone, A for none is B alone (the references run without the switch).
        assert rows[-1]["shows_a"][f]["per_seed"] == references["A alone"]["a"][f]["per_seed"]
        assert rows[0]["shows_b"][f]["per_seed"] == references["B alone"]["b"][f]["per_seed"]
        # The pairs are (0, 1) and (1, 0): A's class in one pair is B's in the other.
        assert references["A alone"]["a"][f]["per_seed"] == references["B alone"]["b"][f]["per_seed"]
    assert set(report.payload["decided_at"]) == set(FACTORS) and report.payload["verdict"] in report.markdown


def test_eos_experiment(pipe, reverse):
    report = text.eos_experiment(pipe, RECORDS, **OPTIONS)
    payload = report.payload
    eos = prompts.eos_positions(pipe.tokenize([r["prompt"] for r in RECORDS]), pipe.tokenizer.eos_token_id)
    assert payload["eos"] == payload["eos_a"] == eos.tolist() and payload["eos_b"] == eos[::-1].tolist()
    assert eos[0] < eos[1]  # prompts of different lengths: both alignments of swap_eos are used
    assert set(payload["swap"]) == {"A", "B", "A's words + B's [EOS]"}
    assert set(payload["keep_only"]) == {"full prompt", "[EOS] part only", "words only", "empty prompt"}
    for f in FACTORS:
        swapped = payload["swap"]["A's words + B's [EOS]"]
        assert np.allclose(np.add(swapped["a"][f]["per_seed"], swapped["b"][f]["per_seed"]) +
                           swapped["neither"][f]["per_seed"], 1.0)
        for case in payload["keep_only"].values():
            assert all(_in_unit(v) for v in case[f]["per_seed"])
        # The full prompt from the same noise is the reverse experiment's final image (another compiled program).
        assert payload["keep_only"]["full prompt"][f]["per_seed"] == reverse.payload["accuracy"][f]["per_seed"][:1]
    assert payload["eos_share"] is None or _in_unit(payload["eos_share"])
    assert "the [EOS] part carries" in payload["verdict"]


def test_text_guidance_experiment(guidance, reverse):
    rows = {r["name"]: r for r in guidance.payload["rows"]}
    assert list(rows) == ["full guidance", "first 0.5, then cond", "first 0, then cond", "first 0.5, then uncond",
                          "first 0, then uncond"]  # fraction 1 is full guidance, listed once
    full = rows["full guidance"]
    assert full["scales"] == [3.0] * 3 and full["guided"] == 1.0 and full["l1"]["per_seed"] == [0.0]
    assert full["relative_time"]["per_seed"] == [1.0] and full["saving"] == 0.0
    assert rows["first 0.5, then cond"]["scales"] == [3.0, 3.0, 1.0]
    assert rows["first 0, then uncond"]["scales"] == [0.0] * 3 and rows["first 0, then uncond"]["ideal_saving"] == 0.5
    for row in rows.values():
        assert all(s > 0 for s in row["seconds_per_image"]["per_seed"]) and _in_unit(row["mean_accuracy"])
    assert rows["first 0, then cond"]["l1"]["mean"] > 0  # unguided samples differ from the guided ones
    # Fraction 1 (the per-call scales through the one compiled sampler) is full guidance: the reverse experiment's
    # final images, sampled by another program, read the same.
    for f in FACTORS:
        assert full["seen"][f] == [reverse.payload["per_seed"][0]["final_seen"][f]]
    assert guidance.payload["verdict"] in guidance.markdown


def test_errors(pipe):
    with pytest.raises(ValueError, match="guidance scale other than 1"):
        text.text_guidance_experiment(pipe, RECORDS, **{**OPTIONS, "guidance_scale": 1.0})
    same = [RECORDS[0], {**RECORDS[1], "factors": {"shape": 1}}]
    with pytest.raises(ValueError, match="no two prompt records differ in every one of shape"):
        text.prompt_switch_experiment(pipe, same, **OPTIONS)
    with pytest.raises(ValueError, match="unknown text experiment 'forward'"):
        text.run_text_experiment("forward", pipe, RECORDS)


def test_launch_analyze_pipeline(tmp_path, pipe):
    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n")
    # One device, as the pipe fixture (its compiles are not reused: the XLA cache keys differ from this session's,
    # which has 8 CPU devices); two analyses sharing one sampling program (the others are tested in this process).
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "1"}

    out = subprocess.run([sys.executable, "-m", "launch.analyze", f"--pipeline={FOLDER}", f"--prompts={prompts_file}",
                          "--analysis=eos,guidance", f"--output_dir={tmp_path / 'out'}", "--steps=3",
                          "--guidance_scale=3", "--seeds=0", "--num_per_prompt=1", "--batch_size=4", "--fractions=0.5"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    for kind in ("eos", "guidance"):
        payload = json.loads((tmp_path / "out" / f"{kind}.json").read_text())
        assert payload["setup"]["seeds"] == [0] and payload["setup"]["sampler"] == "scheduler", kind
        assert payload["verdict"] in out.stdout
    assert [r["name"] for r in json.loads((tmp_path / "out" / "guidance.json").read_text())["rows"]] == [
        "full guidance", "first 0.5, then cond", "first 0.5, then uncond"]
