"""The SD VAE (diffusers AutoencoderKL) against the reference: tiny parity, the full layout, conversion errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from reference_fixtures import load_json, load_npz

from edt_jax.models.vae import (
    SD_VAE_SCALE,
    abstract_vae_params,
    create_vae,
    find_vae_weights,
    load_vae_weights,
    posterior_mode,
    sample_posterior,
    vae_params_from_torch,
)

SD_VAE_PARAMS = 83_653_863


@pytest.fixture(scope="module")
def tiny():
    """The fixture's VAE, its diffusers state dict, converted params and the fixture arrays."""
    data = load_npz("vae_tiny.npz")
    vae = create_vae(tuple(int(c) for c in data["block_out_channels"]), int(data["layers_per_block"]),
                     int(data["norm_num_groups"]))
    state = {k.removeprefix("param/"): v for k, v in data.items() if k.startswith("param/")}
    return vae, state, vae_params_from_torch(state, vae), data


def _nhwc(a) -> jnp.ndarray:
    return jnp.asarray(np.asarray(a).transpose(0, 2, 3, 1))


def _nchw(a) -> np.ndarray:
    return np.asarray(a).transpose(0, 3, 1, 2)


def _encode_decode(vae, params, data):
    variables = {"params": params}
    mean, logvar = vae.apply(variables, _nhwc(data["x"]), method=vae.encode)
    decoded = vae.apply(variables, _nhwc(data["z"]), method=vae.decode)
    return _nchw(mean), _nchw(logvar), _nchw(decoded)


def test_matches_diffusers(tiny):
    vae, _, params, data = tiny
    mean, logvar, decoded = _encode_decode(vae, params, data)
    # Measured on CPU, float32: mean 1.9e-6, logvar 1.8e-6, decoded 3.3e-6.
    for name, got in (("mean", mean), ("logvar", logvar), ("decoded", decoded)):
        assert got.dtype == np.float32 and got.shape == data[name].shape
        np.testing.assert_allclose(got, data[name], atol=1e-4, rtol=0, err_msg=name)
    # Guards against a vacuous comparison: the outputs vary on the scale of the tolerance x 1000.
    assert min(np.ptp(data["mean"]), np.ptp(data["decoded"])) > 0.1


def test_posterior_helpers(tiny):
    vae, _, params, data = tiny
    variables = {"params": params}
    mean, logvar = vae.apply(variables, _nhwc(data["x"]), method=vae.encode)
    assert posterior_mode(mean, logvar) is mean
    draws = jax.vmap(lambda k: sample_posterior(mean, logvar, k))(jax.random.split(jax.random.key(0), 64))
    z = (draws - mean) / jnp.exp(0.5 * logvar)
    assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1) < 0.05
    recon = vae.apply(variables, _nhwc(data["x"]))  # __call__: decode(posterior mode)
    np.testing.assert_allclose(recon, vae.apply(variables, mean, method=vae.decode), atol=1e-6)
    assert SD_VAE_SCALE == 0.18215


def test_sd_vae_layout_matches_diffusers():
    ref = load_json("sd_vae_shapes.json")
    vae = create_vae()
    abstract = abstract_vae_params(vae)  # eval_shape only: nothing of size is allocated
    assert sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(abstract)) == ref["params"] == SD_VAE_PARAMS
    # A read-only zero view per tensor: the converter sees the real layout without 335 MB of inputs.
    zero = np.zeros((), np.float32)
    state = {name: np.broadcast_to(zero, shape) for name, shape in ref["state_shapes"].items()}
    params = vae_params_from_torch(state, vae)  # would raise on any unconsumed JSON entry
    got = {p: tuple(a.shape) for p, a in traverse_util.flatten_dict(params).items()}
    assert got == {p: tuple(a.shape) for p, a in traverse_util.flatten_dict(abstract).items()}
    assert len(got) == len(ref["state_shapes"])


def _renamed_old_style(state: dict, conv_shaped: bool) -> dict:
    old = {}
    for name, value in state.items():
        for new, legacy in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")):
            if f".{new}." in name:
                name = name.replace(f".{new}.", f".{legacy}.")
                if conv_shaped and value.ndim == 2:
                    value = value[:, :, None, None]
        old[name] = value
    return old


@pytest.mark.parametrize("conv_shaped", [False, True])
def test_old_attention_names_are_accepted(tiny, conv_shaped):
    vae, state, params, data = tiny
    old = _renamed_old_style(state, conv_shaped)
    assert any(".proj_attn." in k for k in old) and not any(".to_q." in k for k in old)
    converted = vae_params_from_torch(old, vae)
    jax.tree.map(np.testing.assert_array_equal, converted, params)


def test_conversion_errors_name_every_bad_tensor(tiny):
    vae, state, _, _ = tiny
    broken = dict(state)
    del broken["decoder.conv_in.bias"]
    broken["encoder.conv_out.weight"] = np.zeros((8, 64, 1, 1), np.float32)
    broken["encoder.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError) as err:
        vae_params_from_torch(broken, vae)
    message = str(err.value)
    assert "\n" not in message
    assert "1 missing: decoder.conv_in.bias" in message
    assert "encoder.conv_out.weight (8, 64, 1, 1) (needs (8, 64, 3, 3))" in message
    assert "1 unexpected: encoder.extra.weight" in message
    # A checkpoint of another configuration: the message names the configuration and every kind of mismatch.
    with pytest.raises(ValueError, match=r"block_out_channels=\(32, 64, 64\).*30 missing.*, \.\.\. \(25 more\); "
                                         r"14 mis-shaped.*; 2 unexpected"):
        vae_params_from_torch(state, create_vae((32, 64, 64), 1, 8))


def test_missing_weights_say_what_to_download(tmp_path):
    for path in (tmp_path, tmp_path / "nope.safetensors"):
        with pytest.raises(FileNotFoundError) as err:
            load_vae_weights(path, create_vae((8,), 1, 4))
        message = str(err.value)
        assert "\n" not in message and str(path) in message
        for part in ("diffusion_pytorch_model.safetensors", ".bin", "torch", "stabilityai/sd-vae-ft-ema",
                     "stabilityai/sd-vae-ft-mse", "nothing is fetched"):
            assert part in message


def test_weights_folder_is_read(tmp_path, tiny):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    vae, state, params, _ = tiny
    folder = tmp_path / "sd" / "vae"
    folder.mkdir(parents=True)
    safetensors_numpy.save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "diffusion_pytorch_model.bin").write_bytes(b"")  # the .safetensors file wins
    for path in (folder, folder.parent, folder / "diffusion_pytorch_model.safetensors"):
        assert find_vae_weights(path).name == "diffusion_pytorch_model.safetensors"
    jax.tree.map(np.testing.assert_array_equal, load_vae_weights(folder.parent, vae), params)


@pytest.mark.parametrize("kwargs, match", [
    ({"block_out_channels": ()}, "block_out_channels must be a non-empty sequence"),
    ({"block_out_channels": (32, 60)}, r"block_out_channels\[1\] = 60 must be divisible by norm_num_groups = 8"),
    ({"block_out_channels": (32, 0)}, r"block_out_channels\[1\] must be an integer >= 1, got 0"),
    ({"layers_per_block": 0}, "layers_per_block must be an integer >= 1, got 0"),
    ({"latent_channels": 2.5}, "latent_channels must be an integer >= 1"),
    ({"dtype": "int8"}, "dtype must be a floating dtype"),
    ({"param_dtype": "nonsense"}, "param_dtype must be a floating dtype"),
])
def test_bad_arguments(kwargs, match):
    args = {"block_out_channels": (32, 64), "layers_per_block": 1, "norm_num_groups": 8, **kwargs}
    with pytest.raises(ValueError, match=match) as err:
        create_vae(**args)
    assert "\n" not in str(err.value)


def test_bad_input_shapes(tiny):
    vae, _, params, _ = tiny
    variables = {"params": params}
    cases = [(vae.encode, (1, 31, 32, 3), "image sides 31x32 must be divisible by 2"),
             (vae.encode, (1, 32, 32, 4), r"encode needs NHWC images \(B, H, W, 3\), got shape \(1, 32, 32, 4\)"),
             (vae.encode, (32, 32, 3), r"got shape \(32, 32, 3\)"),
             (vae.decode, (1, 16, 16, 3), r"decode needs NHWC latents \(B, h, w, 4\), got shape \(1, 16, 16, 3\)")]
    for method, shape, match in cases:
        with pytest.raises(ValueError, match=match) as err:
            vae.apply(variables, jnp.zeros(shape), method=method)
        assert "\n" not in str(err.value)


def test_bfloat16_compute_stays_close(tiny):
    vae, _, params, data = tiny
    vae16 = create_vae(vae.block_out_channels, vae.layers_per_block, vae.norm_num_groups, dtype="bfloat16")
    mean, logvar, decoded = _encode_decode(vae16, params, data)
    assert mean.dtype == decoded.dtype == np.float32  # outputs are returned in float32
    for name, got in (("mean", mean), ("logvar", logvar), ("decoded", decoded)):
        assert np.isfinite(got).all()
        scale = np.abs(data[name]).max()
        # Measured: 1.2 %, 1.1 %, 1.3 % of the largest |value| for mean, logvar, decoded.
        assert np.abs(got - data[name]).max() < 0.05 * scale, name
