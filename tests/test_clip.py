"""The CLIP text encoder against transformers' CLIPTextModel: parity, folders, bfloat16, conversion errors."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from reference_fixtures import FIXTURES, load_npz
from safetensors.numpy import save_file

from edt_jax.models.clip import (
    CLIPTextConfig,
    create_text_encoder,
    load_text_encoder,
    pooled_positions,
    text_config_from_dict,
    text_params_from_torch,
)

PIPELINE = FIXTURES / "sd_tiny_pipeline"


@pytest.fixture(scope="module")
def tiny():
    """The fixture's text encoder: module, config dict, state dict, converted params, jitted apply, fixture."""
    data = load_npz("sd_tiny_public.npz")
    config = json.loads(str(data["text/config"]))
    state = {k.removeprefix("text/state/"): v for k, v in data.items() if k.startswith("text/state/")}
    module = create_text_encoder(config)
    params = text_params_from_torch(state, module)
    return module, config, state, params, jax.jit(module.apply), data


@pytest.fixture(scope="module")
def outputs(tiny):
    module, _, _, params, apply, data = tiny
    return apply({"params": params}, jnp.asarray(data["text/input_ids"], jnp.int32))


def _flat(params) -> dict:
    return traverse_util.flatten_dict(params)


def _assert_same_params(got, want):
    got, want = _flat(got), _flat(want)
    assert got.keys() == want.keys()
    for path in want:
        np.testing.assert_array_equal(np.asarray(got[path]), np.asarray(want[path]), err_msg="/".join(path))


def _write_folder(folder, config: dict, state: dict):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(folder / "model.safetensors"))


def test_config_from_fixture(tiny):
    module, config, *_ = tiny
    assert module.config == CLIPTextConfig(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                           num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu",
                                           layer_norm_eps=1e-5, eos_token_id=999)
    # A full CLIPModel config is read through its text_config.
    assert text_config_from_dict({"model_type": "clip", "text_config": config}) == module.config


def test_matches_transformers(tiny, outputs):
    data = tiny[-1]
    batch, length = data["text/input_ids"].shape
    # Measured on CPU, float32: last_hidden_state 1.3e-6, pooler_output 1.1e-6, penultimate 4.8e-7.
    for key, got in (("last_hidden_state", outputs["last_hidden_state"]),
                     ("pooler_output", outputs["pooler_output"]),
                     ("penultimate", outputs["hidden_states"][-2])):
        want = data[f"text/{key}"]
        assert got.dtype == jnp.float32 and got.shape == want.shape
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0, err_msg=key)
        assert np.ptp(want) > 1.0  # the outputs vary on 10^4 x the tolerance: the comparison is not vacuous
    assert len(outputs["hidden_states"]) == 3 and outputs["last_hidden_state"].shape == (batch, length, 32)


def test_hidden_states_layout(tiny, outputs):
    """hidden_states[0] is the embeddings' output and [-1] the last layer's before the final norm."""
    _, _, state, _, _, data = tiny
    ids = data["text/input_ids"]
    embeddings = state["embeddings.token_embedding.weight"][ids] + state["embeddings.position_embedding.weight"][None]
    np.testing.assert_allclose(np.asarray(outputs["hidden_states"][0]), embeddings, atol=1e-6, rtol=0)
    last = np.asarray(outputs["hidden_states"][-1], np.float64)
    mean, var = last.mean(-1, keepdims=True), last.var(-1, keepdims=True)
    normed = (last - mean) / np.sqrt(var + 1e-5) * state["final_layer_norm.weight"] + state["final_layer_norm.bias"]
    np.testing.assert_allclose(np.asarray(outputs["last_hidden_state"]), normed, atol=1e-5, rtol=0)


def test_pooled_positions():
    ids = jnp.asarray([[5, 7, 9, 9, 9], [5, 9, 3, 9, 9], [5, 1, 2, 3, 8]])
    # The first eos, even when padding repeats it; 0 for a row without one (as transformers' argmax).
    np.testing.assert_array_equal(pooled_positions(ids, 9), [2, 1, 0])
    # Legacy configs (eos_token_id 2): the position of the largest id, whatever the eos is.
    np.testing.assert_array_equal(pooled_positions(ids, 2), [2, 1, 4])


def test_pooler_is_last_hidden_state_at_first_eos(tiny, outputs):
    ids = tiny[-1]["text/input_ids"]
    first_eos = (ids == 999).argmax(-1)
    want = np.asarray(outputs["last_hidden_state"])[np.arange(len(ids)), first_eos]
    np.testing.assert_array_equal(np.asarray(outputs["pooler_output"]), want)


def test_load_from_folder_and_pipeline_root(tiny, tmp_path):
    module, config, state, params, *_ = tiny
    _write_folder(tmp_path / "pipe" / "text_encoder", config, state)
    for where in (tmp_path / "pipe" / "text_encoder", tmp_path / "pipe", str(tmp_path / "pipe")):
        loaded, loaded_params = load_text_encoder(where)
        assert loaded.config == module.config
        _assert_same_params(loaded_params, params)


def test_load_legacy_names(tiny, tmp_path):
    """transformers < 5 checkpoints: ``text_model.`` prefix and the position_ids buffer."""
    _, config, state, params, *_ = tiny
    legacy = {f"text_model.{k}": v for k, v in state.items()}
    legacy["text_model.embeddings.position_ids"] = np.arange(77, dtype=np.int64)[None]
    _write_folder(tmp_path / "text_encoder", config, legacy)
    _, loaded_params = load_text_encoder(tmp_path / "text_encoder")
    _assert_same_params(loaded_params, params)


def test_real_pipeline_folder():
    """The text_encoder/ saved by transformers 5.25 in the tiny SD pipeline loads and runs."""
    ids = load_npz("sd_tiny_pipeline/reference.npz")["input_ids"]
    for where in (PIPELINE, PIPELINE / "text_encoder"):
        module, params = load_text_encoder(where)
        assert module.config.hidden_size == 32 and module.config.eos_token_id == 999
    out = jax.jit(module.apply)({"params": params}, jnp.asarray(ids, jnp.int32))
    assert out["last_hidden_state"].shape == (2, 77, 32) and out["pooler_output"].shape == (2, 32)
    assert np.isfinite(np.asarray(out["last_hidden_state"])).all()


def test_bfloat16_compute_stays_close(tiny, outputs):
    module, config, _, params, _, data = tiny
    bf16 = create_text_encoder(config, dtype=jnp.bfloat16)
    out = jax.jit(bf16.apply)({"params": params}, jnp.asarray(data["text/input_ids"], jnp.int32))
    assert out["hidden_states"][-2].dtype == jnp.bfloat16
    assert out["last_hidden_state"].dtype == jnp.float32  # the final norm runs (and returns) float32
    # Measured on CPU: last_hidden_state 0.042, pooler_output 0.017, penultimate 0.014 (bfloat16 keeps 8
    # significant bits; the outputs span 2.5 to 6).
    for key in ("last_hidden_state", "pooler_output"):
        np.testing.assert_allclose(np.asarray(out[key], np.float32), np.asarray(outputs[key]), atol=0.1, rtol=0,
                                   err_msg=key)
    np.testing.assert_allclose(np.asarray(out["hidden_states"][-2], np.float32),
                               np.asarray(outputs["hidden_states"][-2]), atol=0.1, rtol=0)


@pytest.mark.parametrize("edit, pattern", [
    (lambda s: s.pop("encoder.layers.1.mlp.fc2.bias"), r"1 missing: encoder\.layers\.1\.mlp\.fc2\.bias"),
    (lambda s: s.update({"text_projection.weight": np.zeros((32, 32), np.float32)}),
     r"1 unexpected: text_projection\.weight"),
    (lambda s: s.update({"encoder.layers.0.mlp.fc1.weight": np.zeros((48, 32), np.float32)}),
     r"1 mis-shaped: encoder\.layers\.0\.mlp\.fc1\.weight \(48, 32\) \(needs \(64, 32\)\)"),
])
def test_state_dict_errors(tiny, edit, pattern):
    module, _, state, *_ = tiny
    broken = dict(state)
    edit(broken)
    with pytest.raises(ValueError, match=pattern) as info:
        text_params_from_torch(broken, module)
    assert "\n" not in str(info.value)


def test_config_errors(tiny):
    config = tiny[1]
    with pytest.raises(ValueError, match=r"unsupported hidden_act 'relu'; expected one of \['gelu', 'quick_gelu'\]"):
        text_config_from_dict({**config, "hidden_act": "relu"})
    with pytest.raises(ValueError, match="not divisible by num_attention_heads 5"):
        text_config_from_dict({**config, "num_attention_heads": 5})
    with pytest.raises(ValueError, match="num_hidden_layers must be a positive integer"):
        text_config_from_dict({**config, "num_hidden_layers": 0})


def test_too_long_input(tiny):
    module, _, _, params, *_ = tiny
    with pytest.raises(ValueError, match="length 78, but this text encoder has only 77 positions"):
        module.apply({"params": params}, jnp.zeros((1, 78), jnp.int32))


def test_missing_files(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="expected a transformers text_encoder/ folder holding config.json"):
        load_text_encoder(tmp_path / "nowhere")
    (tmp_path / "text_encoder").mkdir()
    (tmp_path / "text_encoder" / "config.json").write_text(json.dumps(tiny[1]))
    with pytest.raises(FileNotFoundError, match="has config.json but no weights: expected model.safetensors"):
        load_text_encoder(tmp_path)
