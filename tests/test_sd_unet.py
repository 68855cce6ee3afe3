"""diffusers' UNet2DConditionModel (SD 1.x / 2.x layouts) against the reference: parity, folders, variants, errors."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from reference_fixtures import FIXTURES, load_npz

from edt_jax.models.layers import timestep_embedding
from edt_jax.models.sd import (
    UNet2DConditionModel,
    abstract_unet_params,
    load_unet,
    unet_config_from_dict,
    unet_name,
    unet_params_from_torch,
)
from edt_jax.models.sd_blocks import timestep_features

PIPELINE = FIXTURES / "sd_tiny_pipeline"


# One compiled function per distinct module (modules are hashable and compare by configuration).
_run = jax.jit(lambda module, params, x, t, c: module.apply({"params": params}, x, t, c), static_argnums=0)


@pytest.fixture(scope="module")
def tiny():
    """The fixture's config dict, state dict and NHWC inputs / reference output."""
    data = load_npz("sd_tiny_public.npz")
    state = {k.removeprefix("unet/state/"): v for k, v in data.items() if k.startswith("unet/state/")}
    return {"config": json.loads(str(data["unet/config"])), "state": state,
            "x": jnp.asarray(data["unet/sample"].transpose(0, 2, 3, 1)), "t": jnp.asarray(data["unet/timestep"]),
            "context": jnp.asarray(data["unet/encoder_hidden_states"]), "out": data["unet/out"].transpose(0, 2, 3, 1)}


@pytest.fixture(scope="module")
def sd1(tiny):
    """(module, params, float32 output) of the SD 1.x layout converted from the fixture's state dict."""
    module = UNet2DConditionModel(unet_config_from_dict(tiny["config"]))
    params = unet_params_from_torch(tiny["state"], module)
    return module, params, np.asarray(_run(module, params, tiny["x"], tiny["t"], tiny["context"]))


def _variant(tiny, **changes):
    return unet_config_from_dict({**tiny["config"], **changes})


def test_sd1_matches_diffusers(tiny, sd1):
    _, params, out = sd1
    # Measured on CPU, float32: 1.8e-6.
    assert out.dtype == np.float32 and out.shape == tiny["out"].shape == (2, 16, 16, 4)
    np.testing.assert_allclose(out, tiny["out"], atol=1e-4, rtol=0)
    assert np.ptp(tiny["out"]) > 0.1  # the comparison is not vacuous
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))


def test_timestep_features():
    t = jnp.asarray([0.0, 1.0, 321.0, 999.0])
    # The SD settings (flip_sin_to_cos, no shift) are the library's own [cos, sin] table.
    np.testing.assert_array_equal(timestep_features(t, 32), timestep_embedding(t, 32))
    sin_first = timestep_features(t, 33, flip_sin_to_cos=False, freq_shift=1)
    freqs = np.exp(-np.log(10000.0) * np.arange(16) / 15)
    expected = np.concatenate([np.sin(np.outer(t, freqs)), np.cos(np.outer(t, freqs)), np.zeros((4, 1))], axis=1)
    np.testing.assert_allclose(sin_first, expected, atol=2e-4)


def test_pipeline_folder_loads(tiny, sd1):
    module, params = load_unet(PIPELINE / "unet")
    root_module, root_params = load_unet(PIPELINE)  # the pipeline root finds its unet/
    assert module == root_module and module.config == sd1[0].config  # the same configuration as the npz
    assert module.sample_size == 16  # config.json's latent side, for callers choosing a default size
    jax.tree.map(np.testing.assert_array_equal, params, root_params)
    out = np.asarray(_run(module, params, tiny["x"], tiny["t"], tiny["context"]))
    flat, npz_flat = traverse_util.flatten_dict(params), traverse_util.flatten_dict(sd1[1])
    same_weights = all(np.array_equal(flat[path], npz_flat[path]) for path in flat)
    if same_weights:
        np.testing.assert_allclose(out, tiny["out"], atol=1e-4, rtol=0)
    else:  # the pipeline was saved with other random weights: it must load and run
        assert out.shape == tiny["out"].shape and np.isfinite(out).all() and np.ptp(out) > 0.1


def test_sd2_linear_projection(tiny):
    """SD 2.x: Linear proj_in / proj_out. A 1x1 conv is that Linear, so the converted weights give the same output."""
    module = UNet2DConditionModel(_variant(tiny, use_linear_projection=True))
    state = {k: (v[:, :, 0, 0] if ".proj_in.weight" in k or ".proj_out.weight" in k else v)
             for k, v in tiny["state"].items()}
    assert sum(v.ndim == 2 for k, v in state.items() if ".proj_" in k) == 8  # 4 transformers x (in, out)
    params = unet_params_from_torch(state, module)
    assert params["mid_block"]["attentions_0"]["proj_in"]["kernel"].shape == (64, 64)
    out = np.asarray(_run(module, params, tiny["x"], tiny["t"], tiny["context"]))
    np.testing.assert_allclose(out, tiny["out"], atol=1e-4, rtol=0)


def test_per_block_heads(tiny, sd1):
    module, params, out = sd1
    repeated = _variant(tiny, attention_head_dim=[4, 4])
    assert repeated == module.config  # a list repeating the int is the same model
    np.testing.assert_array_equal(_run(UNet2DConditionModel(repeated), params, tiny["x"], tiny["t"], tiny["context"]),
                                  out)
    assert _variant(tiny, num_attention_heads=[4, 4], attention_head_dim=8) == module.config  # the explicit name wins
    mixed = UNet2DConditionModel(_variant(tiny, attention_head_dim=[2, 4]))
    assert mixed.config.num_attention_heads == (2, 4)
    mixed_params = unet_params_from_torch(tiny["state"], mixed)  # heads do not change any tensor shape
    mixed_out = np.asarray(_run(mixed, mixed_params, tiny["x"], tiny["t"], tiny["context"]))
    assert np.isfinite(mixed_out).all() and np.abs(mixed_out - out).max() > 1e-3  # the heads were used


def test_bfloat16_compute(tiny, sd1):
    module, params, out = sd1
    half = UNet2DConditionModel(module.config, dtype=jnp.bfloat16)
    got = np.asarray(_run(half, params, tiny["x"], tiny["t"], tiny["context"]))
    # Measured on CPU: 0.017 against outputs spanning 2.5.
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, out, atol=0.06, rtol=0)


def test_remat(tiny, sd1):
    module, params, out = sd1
    remat = UNet2DConditionModel(module.config, remat=True)
    got = np.asarray(_run(remat, params, tiny["x"], tiny["t"], tiny["context"]))
    np.testing.assert_allclose(got, out, atol=1e-6, rtol=0)

    def checkpoints(m) -> int:
        jaxpr = jax.make_jaxpr(lambda p: m.apply({"params": p}, tiny["x"], tiny["t"], tiny["context"]))(params)
        return sum(eqn.primitive.name.startswith(("checkpoint", "remat")) for eqn in jaxpr.jaxpr.eqns)

    # 8 resnets and 4 transformers are rematerialised, nothing without the option.
    assert (checkpoints(remat), checkpoints(module)) == (12, 0)


def test_inputs(tiny, sd1):
    module, params, _ = sd1
    context = tiny["context"][:1]
    # Sides that are not multiples of 2 (diffusers' forward_upsample_size) and a scalar timestep.
    shape = jax.eval_shape(lambda x: module.apply({"params": params}, x, 7, context), jnp.zeros((1, 15, 13, 4)))
    assert shape.shape == (1, 15, 13, 4) and shape.dtype == jnp.float32
    with pytest.raises(ValueError, match=r"NHWC latents \(B, H, W, 4\)"):
        module.apply({"params": params}, jnp.zeros((1, 4, 16, 16)), 7, context)
    with pytest.raises(ValueError, match="encoder_hidden_states must be"):
        module.apply({"params": params}, jnp.zeros((1, 16, 16, 4)), 7, jnp.zeros((1, 77, 16)))
    with pytest.raises(ValueError, match="timesteps must be"):
        module.apply({"params": params}, jnp.zeros((1, 16, 16, 4)), jnp.zeros(3), context)


@pytest.mark.parametrize("change, message", [
    ({"class_embed_type": "timestep"}, "class_embed_type='timestep' is not supported; accepted: None"),
    ({"time_cond_proj_dim": 256}, "time_cond_proj_dim=256"),
    ({"addition_embed_type": "text_time"}, "addition_embed_type='text_time'"),
    ({"encoder_hid_dim": 32}, "encoder_hid_dim=32"),
    ({"resnet_time_scale_shift": "scale_shift"}, "resnet_time_scale_shift='scale_shift'.*accepted: 'default'"),
    ({"act_fn": "gelu"}, "act_fn='gelu'.*'silu' or 'swish'"),
    ({"down_block_types": ["AttnDownBlock2D", "DownBlock2D"]}, "down_block_types entry 'AttnDownBlock2D'"),
    ({"mid_block_type": "UNetMidBlock2DSimpleCrossAttn"}, "mid_block_type='UNetMidBlock2DSimpleCrossAttn'"),
    ({"attention_head_dim": [2, 4, 8]}, "attention_head_dim must be an integer or a list of 2"),
    ({"cross_attention_dim": [32, 64]}, r"cross_attention_dim=\[32, 64\]"),
    ({"norm_num_groups": 7}, "divisible by norm_num_groups = 7"),
    ({"some_new_key": 1}, r"unknown .* config key\(s\) \['some_new_key'\]"),
])
def test_config_errors(tiny, change, message):
    with pytest.raises(ValueError, match=message):
        _variant(tiny, **change)


def test_defaults_and_ignored_keys(tiny):
    # Keys at their defaults, and keys these block types never read, are accepted.
    assert _variant(tiny, class_embed_type=None, upcast_attention=True, resnet_out_scale_factor=2.0,
                    mid_block_only_cross_attention=True) == _variant(tiny)


def test_state_dict_errors(tiny, sd1):
    module = sd1[0]
    state = dict(tiny["state"])
    del state["mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"]
    state["down_blocks.0.resnets.0.conv1.weight"] = np.zeros((32, 32, 1, 1), np.float32)
    state["add_embedding.linear_1.weight"] = np.zeros((4, 4), np.float32)
    with pytest.raises(ValueError) as error:
        unet_params_from_torch(state, module)
    message = str(error.value)
    assert "\n" not in message
    assert "1 missing: mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight" in message
    assert "down_blocks.0.resnets.0.conv1.weight (32, 32, 1, 1) (needs (32, 32, 3, 3))" in message
    assert "1 unexpected: add_embedding.linear_1.weight" in message


def test_names_match_the_state_dict(tiny, sd1):
    names = {unet_name(path) for path in traverse_util.flatten_dict(abstract_unet_params(sd1[0]))}
    assert names == set(tiny["state"])
    assert unet_name(("time_embedding", "linear_1", "kernel")) == "time_embedding.linear_1.weight"
    assert unet_name(("up_blocks_1", "attentions_0", "transformer_blocks_0", "ff", "net_0", "proj", "bias")) == \
        "up_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj.bias"


SD15_CONFIG = {  # runwayml/stable-diffusion-v1-5 unet/config.json (the shape-relevant keys)
    "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"], "layers_per_block": 2,
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, "sample_size": 64,
}


@pytest.mark.parametrize("changes, count", [
    ({}, 859_520_964),  # SD 1.x
    ({"attention_head_dim": [5, 10, 20, 20], "cross_attention_dim": 1024, "use_linear_projection": True,
      "upcast_attention": True, "sample_size": 96}, 865_910_724),  # stabilityai/stable-diffusion-2-1
])
def test_full_layouts(changes, count):
    module = UNet2DConditionModel(unet_config_from_dict({**SD15_CONFIG, **changes}))
    abstract = abstract_unet_params(module)  # eval_shape only: nothing of size is allocated
    assert sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(abstract)) == count


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected a unet/ folder holding config.json and diffusion_pytorch"):
        load_unet(tmp_path)
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text((PIPELINE / "unet" / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="nothing is fetched"):  # a config without weights
        load_unet(tmp_path)
