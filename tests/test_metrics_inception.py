"""FID Inception-v3 against pytorch-fid (``fid_inception_recipe.npz``) and its weight converter.

The fixture's weights are rebuilt from its numpy recipe (see tests/fixtures/README.md). One jit of
``net.apply`` is compiled for the 299x299 network and reused by every test that runs it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from reference_fixtures import inception_recipe_state_dict, load_npz

from edt_jax.metrics.inception import WEIGHTS_FILE, create_fid_inception, inception_params_from_torch
from edt_jax.metrics.inception_convert import WRAPPER_PREFIX, load_inception_weights

# pytorch_fid.inception.InceptionV3 regroups torchvision's modules: blocks.<i>.<j> -> raw-file name.
TORCHVISION_NAMES = {
    "blocks.0": ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"],
    "blocks.1": ["Conv2d_3b_1x1", "Conv2d_4a_3x3"],
    "blocks.2": ["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"],
    "blocks.3": ["Mixed_7a", "Mixed_7b", "Mixed_7c"],
}


def _to_torchvision(name: str) -> str:
    """'blocks.2.3.branch3x3.conv.weight' -> 'Mixed_6a.branch3x3.conv.weight'."""
    block, index, module, rest = name.split(".", 3)
    return f"{TORCHVISION_NAMES[f'{block}.{index}'][int(module)]}.{rest}"


@pytest.fixture(scope="module")
def recipe():
    """Fixture data, the recipe state dict, the network, its variables and the single jitted apply."""
    data = load_npz("fid_inception_recipe.npz")
    names = [str(n) for n in data["names"]]
    state = inception_recipe_state_dict(data)
    net = create_fid_inception()
    variables = inception_params_from_torch(state, net)
    apply = jax.jit(net.apply)
    x = jnp.asarray(data["x"].transpose(0, 2, 3, 1))  # NCHW -> NHWC
    pool3 = np.asarray(apply(variables, x))
    return dict(data=data, names=names, state=state, net=net, variables=variables, apply=apply, x=x, pool3=pool3)


def _relative_errors(out: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max |a-b| / max |b|, max per-element |a-b| / (|b| + 1e-3 max |b|))."""
    scale = np.abs(ref).max()
    return float(np.abs(out - ref).max() / scale), float((np.abs(out - ref) / (np.abs(ref) + 1e-3 * scale)).max())


def test_pool3_matches_pytorch_fid(recipe):
    out, ref = recipe["pool3"], recipe["data"]["pool3"]
    assert out.shape == ref.shape == (2, 2048) and out.dtype == np.float32
    rel, per_element = _relative_errors(out, ref)
    print(f"pool3 parity: max rel {rel:.3e}, per-element rel {per_element:.3e}")
    assert rel <= 1e-4 and per_element <= 1e-3


def test_eval_mode_is_deterministic(recipe):
    again = np.asarray(recipe["apply"](recipe["variables"], recipe["x"]))
    np.testing.assert_array_equal(again, recipe["pool3"])
    # Batch independence: eval-mode BatchNorm uses running statistics, not the batch's.
    single = np.asarray(recipe["apply"](recipe["variables"], jnp.concatenate([recipe["x"][:1]] * 2)))
    np.testing.assert_allclose(single[0], recipe["pool3"][0], rtol=1e-5, atol=1e-6)


def test_torchvision_names_of_the_real_file(recipe):
    assert _to_torchvision("blocks.2.3.branch3x3.conv.weight") == "Mixed_6a.branch3x3.conv.weight"
    assert all(WRAPPER_PREFIX[tv] == f"{block}.{j}" for block, tvs in TORCHVISION_NAMES.items()
               for j, tv in enumerate(tvs))
    rng = np.random.default_rng(7)
    state = {_to_torchvision(k): v for k, v in recipe["state"].items()}
    state["fc.weight"] = rng.standard_normal((1008, 2048)).astype(np.float32) * 0.02
    state["fc.bias"] = rng.standard_normal(1008).astype(np.float32)
    state["AuxLogits.fc.weight"] = np.zeros((1008, 768), np.float32)  # ignored (training-only head)
    variables = inception_params_from_torch(state, recipe["net"])
    assert variables["params"]["fc"]["kernel"].shape == (2048, 1008)
    flat = traverse_util.flatten_dict(variables)
    reference = traverse_util.flatten_dict(recipe["variables"])
    assert set(flat) - set(reference) == {("params", "fc", "kernel"), ("params", "fc", "bias")}
    for path, value in reference.items():
        np.testing.assert_array_equal(flat[path], value, err_msg="/".join(path))
    # Same tree structure without fc, so the compiled function is reused.
    without_fc = {"params": {k: v for k, v in variables["params"].items() if k != "fc"},
                  "batch_stats": variables["batch_stats"]}
    pool3 = np.asarray(recipe["apply"](without_fc, recipe["x"]))
    assert _relative_errors(pool3, recipe["data"]["pool3"])[0] <= 1e-4
    # The logits head (dropout is the identity in eval mode): fc(pool3).
    logits = np.asarray(recipe["net"].apply(variables, jnp.asarray(pool3), method="classify"))
    expected = pool3.astype(np.float64) @ state["fc.weight"].T.astype(np.float64) + state["fc.bias"]
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="no 'fc' logits head"):
        recipe["net"].apply(recipe["variables"], jnp.asarray(pool3), method="classify")


def test_converter_names_every_problem(recipe):
    state = dict(recipe["state"])
    del state["blocks.3.2.branch_pool.bn.running_var"]
    state["blocks.0.0.conv.weight"] = np.zeros((32, 3, 5, 5), np.float32)
    state["blocks.9.extra.weight"] = np.zeros(3, np.float32)
    message = (r"pytorch_fid InceptionV3 \(blocks\.\*\) names: "
               r"1 missing: blocks\.3\.2\.branch_pool\.bn\.running_var; "
               r"1 mis-shaped: blocks\.0\.0\.conv\.weight \(32, 3, 5, 5\) \(needs \(32, 3, 3, 3\)\); "
               r"1 unexpected: blocks\.9\.extra\.weight$")
    with pytest.raises(ValueError, match=message):
        inception_params_from_torch(state, recipe["net"])


def test_preprocess_matches_torch_interpolate():
    torch = pytest.importorskip("torch")
    net = create_fid_inception()
    for size in (64, 512):  # up- and down-scaling (F.interpolate does not antialias)
        x = np.random.default_rng(size).random((2, 3, size, size)).astype(np.float32)
        ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=(299, 299), mode="bilinear",
                                              align_corners=False).numpy() * 2 - 1
        out = np.asarray(net.apply({}, jnp.asarray(x.transpose(0, 2, 3, 1)), method="preprocess"))
        np.testing.assert_allclose(out.transpose(0, 3, 1, 2), ref, atol=1e-6)
    with pytest.raises(ValueError, match=r"NHWC RGB images \(B, H, W, 3\).*got shape \(2, 3, 8, 8\)"):
        net.apply({}, jnp.zeros((2, 3, 8, 8)), method="preprocess")


def test_missing_weights_file_message(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{WEIGHTS_FILE} from the pytorch-fid GitHub releases"):
        load_inception_weights(tmp_path / "absent.pth")
    with pytest.raises(FileNotFoundError, match=f"{WEIGHTS_FILE}' not found"):
        load_inception_weights(tmp_path)  # a folder: the standard file name inside it


def test_weights_file_formats(tmp_path, recipe):
    subset = {k: v for k, v in list(recipe["state"].items())[:12]}
    np.savez(tmp_path / "fid_inception.npz", **subset)
    loaded = load_inception_weights(tmp_path / "fid_inception.npz")
    assert list(loaded) == list(subset)
    np.testing.assert_array_equal(loaded["blocks.0.0.conv.weight"], subset["blocks.0.0.conv.weight"])
