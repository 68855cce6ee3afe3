"""EDT against the official PyTorch model: tiny forward passes and the full-size layouts."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import traverse_util
from model_helpers import apply
from reference_fixtures import fixture_path, load_json, load_npz

from edt_jax.models import count_macs, create_model
from edt_jax.models.convert import (
    abstract_params,
    load_state_dict,
    official_name,
    official_shape,
    params_from_torch,
)
from edt_jax.models.layers import sincos_pos_embed_2d

FULL_SIZE = ("EDT-S/2", "EDT-B/2", "EDT-XL/2")


@pytest.fixture(scope="module")
def tiny():
    """The fixture's model, its converted params, and the fixture arrays (inputs NCHW -> NHWC)."""
    data = load_npz("edt_tiny_s.npz")
    model = create_model("EDT", dims=tuple(data["dims"]), num_heads=tuple(data["heads"]),
                         depths=tuple(data["depths"]), input_size=16, in_channels=4,
                         num_classes=int(data["num_classes"]), amm_blocks=tuple(data["amm_blocks"]))
    state = {k.removeprefix("param/"): v for k, v in data.items() if k.startswith("param/")}
    params = params_from_torch(state, model)
    return model, params, data


def _nchw(out) -> np.ndarray:
    return np.asarray(out).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("amm", [True, False])
def test_eval_output_matches_official(tiny, amm):
    model, params, data = tiny
    x = data["x"].transpose(0, 2, 3, 1)
    out = apply(model, params, x, data["t"], data["y"], train=False, amm=amm)
    expected = data["out_amm" if amm else "out_noamm"]
    assert out.shape == (4, 16, 16, 8)
    np.testing.assert_allclose(_nchw(out), expected, atol=1e-4, rtol=0)


def test_amm_changes_the_output_of_the_same_parameters(tiny):
    _, _, data = tiny
    # Guards the two parity checks above from passing on a model where the AMM is a no-op.
    assert np.abs(data["out_amm"] - data["out_noamm"]).max() > 1e-2


def test_masked_pass_matches_official(tiny):
    model, params, data = tiny
    x = data["x"].transpose(0, 2, 3, 1)
    masks = (data["keep_mask_down0"], data["keep_mask_down1"])
    out = apply(model, params, x, data["t"], data["y"], train=False, amm=False, keep_masks=masks)
    np.testing.assert_allclose(_nchw(out), data["out_masked"], atol=1e-4, rtol=0)
    assert np.abs(data["out_masked"] - data["out_noamm"]).max() > 1e-2


def test_sincos_tables_equal_the_official_buffers(tiny):
    _, _, data = tiny
    for key, grid in [("param/pos_embed", 8), ("param/down_blocks.0.pos_embed", 4),
                      ("param/down_blocks.1.pos_embed", 2), ("param/concat_blocks.0.pos_embed", 4),
                      ("param/concat_blocks.1.pos_embed", 8)]:
        buffer = data[key][0]
        np.testing.assert_allclose(sincos_pos_embed_2d(buffer.shape[-1], grid), buffer, atol=1e-7, err_msg=key)


def test_npz_loader_reads_the_fixture_state_dict(tiny):
    model, params, data = tiny
    state = load_state_dict(fixture_path("edt_tiny_s.npz"))
    assert "blocks.0.attn.qkv.weight" in state and "x" not in state
    again = params_from_torch(state, model)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", FULL_SIZE)
def test_full_size_layout_params_and_macs_match_official(name):
    official = load_json("edt_official_shapes.json")[name]
    model = create_model(name, input_size=32, in_channels=4, num_classes=1000)
    flat = traverse_util.flatten_dict(abstract_params(model))
    assert sum(int(np.prod(leaf.shape)) for leaf in flat.values()) == official["trainable_params"]
    converted = {official_name(path): list(official_shape(leaf.shape, path[-1])) for path, leaf in flat.items()}
    assert converted == official["state_shapes"]
    assert count_macs(model) == official["macs"]
    assert list(model.amm_blocks) == official["amm_blocks"]


def test_full_size_state_dict_converts():
    """The converter itself on a complete EDT-S/2 state dict of the official layout (XL is not materialised)."""
    shapes = load_json("edt_official_shapes.json")["EDT-S/2"]["state_shapes"]
    rng = np.random.default_rng(0)
    state = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    state["pos_embed"] = np.zeros((1, 256, 312), np.float32)  # frozen buffers are accepted and ignored
    params = params_from_torch(state, create_model("EDT-S/2"))
    np.testing.assert_array_equal(params["blocks_3"]["attn"]["qkv"]["kernel"], state["blocks.3.attn.qkv.weight"].T)
    np.testing.assert_array_equal(params["x_embedder"]["proj"]["kernel"],
                                  state["x_embedder.proj.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(params["down_blocks_1"]["adaLN_modulation"]["linear"]["bias"],
                                  state["down_blocks.1.adaLN_modulation.1.bias"])


def test_dit_layouts_match_the_published_models():
    # DiT's train.py prints every parameter including the frozen pos_embed: 675,129,632 for DiT-XL/2.
    model = create_model("DiT-XL/2")
    flat = traverse_util.flatten_dict(abstract_params(model))
    pos_embed = 256 * 1152
    assert sum(int(np.prod(leaf.shape)) for leaf in flat.values()) + pos_embed == 675_129_632
    assert "blocks.27.adaLN_modulation.1.weight" in {official_name(p) for p in flat}
    # The DiT paper's Gflops (Table 4) are these MAC counts.
    assert [round(count_macs(create_model(n)) / 1e9, 2) for n in ("DiT-S/2", "DiT-B/2")] == [6.06, 23.01]
    assert round(count_macs(model) / 1e9, 1) == 118.6
