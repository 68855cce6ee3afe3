"""EDT/DiT behaviour: AMM, masking, label dropout, precision, remat, sharding, input errors, loaders."""

from __future__ import annotations

import itertools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_helpers import apply, official_state_dict, random_params

from edt_jax.models import create_model
from edt_jax.models.amm import modulation_matrix
from edt_jax.models.convert import load_state_dict, official_name, params_from_torch
from edt_jax.models.masking import draw_keep_mask
from edt_jax.training import sharding

TINY = dict(dims=(32, 48, 64, 48, 32), num_heads=(2, 2, 4, 2, 2), depths=(1, 1, 1, 1, 1), input_size=16,
            in_channels=4, num_classes=10, amm_blocks=(3, 4))


def inputs(batch: int = 4, size: int = 16, seed: int = 1):
    x = jax.random.normal(jax.random.key(seed), (batch, size, size, 4))
    return x, jnp.linspace(0.0, 999.0, batch), jnp.arange(batch) % 10


@pytest.fixture(scope="module")
def tiny():
    model = create_model("EDT", **TINY)
    return model, random_params(model)


def test_amm_values_and_kept_fraction():
    for n in (16, 8):
        matrix = modulation_matrix(n)
        assert matrix.shape == (n * n, n * n)
        period = 4 * (n - 1) * math.sqrt(2)
        radius = math.sqrt((n - 1) ** 2 + 4)
        kept = 0
        for (r1, c1), (r2, c2) in itertools.product(itertools.product(range(n), repeat=2), repeat=2):
            d = math.hypot(r1 - r2, c1 - c2)
            value = matrix[r1 * n + c1, r2 * n + c2]
            if d <= radius + 1e-9:
                kept += 1
                assert value == pytest.approx(0.5 * math.exp(math.cos(2 * math.pi * d / period)), rel=1e-12)
            else:
                assert value == 0.0
        assert np.count_nonzero(matrix) == kept
        assert matrix[0, 0] == pytest.approx(0.5 * math.e)
        assert matrix[0, 3 * n - 1] > 0.0 and matrix[0, 3 * n] == pytest.approx(
            0.5 * math.exp(math.cos(2 * math.pi * math.hypot(3, 0) / period)))
        # The smallest kept value sits at the bound token pair (0, 3n - 1), distance sqrt((n-1)^2 + 4).
        assert matrix[matrix > 0].min() == pytest.approx(0.5 * math.exp(math.cos(2 * math.pi * radius / period)))
    # Kept token pairs: 62,692 of 65,536 (95.66 %) for 16x16, 3,916 of 4,096 (95.61 %) for 8x8.
    assert np.count_nonzero(modulation_matrix(16)) == 62692
    assert np.count_nonzero(modulation_matrix(8)) == 3916
    assert modulation_matrix(16)[0, 47] == pytest.approx(0.77262603, rel=1e-7)


def test_amm_acts_only_in_eval_and_only_on_its_blocks(tiny):
    model, params = tiny
    x, t, y = inputs()
    with_amm = apply(model, params, x, t, y, train=False, amm=True)
    without = apply(model, params, x, t, y, train=False, amm=False)
    assert float(jnp.abs(with_amm - without).max()) > 1e-3
    rngs = {"dropout": jax.random.key(3)}
    train_amm = apply(model, params, x, t, y, train=True, amm=True, rngs=rngs)
    train_plain = apply(model, params, x, t, y, train=True, amm=False, rngs=rngs)
    np.testing.assert_array_equal(train_amm, train_plain)
    no_blocks = create_model("EDT", **{**TINY, "amm_blocks": ()})
    np.testing.assert_allclose(apply(no_blocks, params, x, t, y, amm=True), without, atol=1e-5)


def test_label_dropout_replaces_labels_by_the_null_label(tiny):
    model, params = tiny
    x, t, y = inputs(batch=8)
    cond = apply(model, params, x, t, y, amm=False)
    null = apply(model, params, x, t, jnp.full_like(y, 10), amm=False)
    dropped = apply(create_model("EDT", **{**TINY, "class_dropout_prob": 0.5}), params, x, t, y, train=True,
                    rngs={"dropout": jax.random.key(0)})
    is_cond = np.isclose(dropped, cond, atol=1e-5).all(axis=(1, 2, 3))
    is_null = np.isclose(dropped, null, atol=1e-5).all(axis=(1, 2, 3))
    assert np.all(is_cond ^ is_null) and is_cond.any() and is_null.any()


def test_keep_masks_of_ones_are_the_plain_pass_and_masks_act(tiny):
    model, params = tiny
    x, t, y = inputs()
    plain = apply(model, params, x, t, y, amm=False)
    ones = [jnp.ones(s) for s in model.keep_mask_shapes(4)]
    np.testing.assert_allclose(apply(model, params, x, t, y, amm=False, keep_masks=ones), plain, atol=1e-6)
    drawn = apply(model, params, x, t, y, amm=False, masked=True, rngs={"mask": jax.random.key(0)})
    again = apply(model, params, x, t, y, amm=False, masked=True, rngs={"mask": jax.random.key(0)})
    np.testing.assert_array_equal(drawn, again)
    assert float(jnp.abs(drawn - plain).max()) > 1e-3


def test_keep_mask_ratio_follows_its_range():
    means = [float(draw_keep_mask(jax.random.key(i), (64, 256), (0.4, 0.5)).mean()) for i in range(20)]
    assert 0.5 - 0.01 < min(means) and max(means) < 0.6 + 0.01
    assert max(means) - min(means) > 0.02  # one ratio per call, varying between calls


def test_mid_mask_of_ones_is_identity_and_zeros_inject_position_embedding():
    model = create_model("EDT", **{**TINY, "depths": (6, 1, 1, 1, 1), "amm_blocks": (), "mid_mask": True})
    params = random_params(model)
    x, t, y = inputs()
    ones = [jnp.ones(s) for s in model.keep_mask_shapes(4)]
    tokens = (4, 64)
    plain = apply(model, params, x, t, y)
    kept = apply(model, params, x, t, y, keep_masks=ones, mid_keep_mask=jnp.ones(tokens))
    np.testing.assert_allclose(kept, plain, atol=1e-6)
    zeroed = apply(model, params, x, t, y, keep_masks=ones, mid_keep_mask=jnp.zeros(tokens))
    other_x = apply(model, params, -x, t, y, keep_masks=ones, mid_keep_mask=jnp.zeros(tokens))
    # All stage-0 tokens are replaced before block 4; x still reaches the output through the long skip.
    assert float(jnp.abs(zeroed - plain).max()) > 1e-3 and not np.allclose(zeroed, other_x)
    with pytest.raises(ValueError, match="'mask' RNG"):
        apply(model, params, x, t, y, masked=True)


def test_bfloat16_compute_tracks_float32(tiny):
    model, params = tiny
    x, t, y = inputs()
    ref = apply(model, params, x, t, y)
    bf16 = create_model("EDT", **TINY, dtype="bfloat16")
    out = apply(bf16, params, x, t, y)
    assert out.dtype == jnp.bfloat16
    err = float(jnp.abs(out.astype(jnp.float32) - ref).max()) / float(jnp.abs(ref).max())
    assert err < 5e-2
    init = jax.eval_shape(bf16.init, jax.random.key(0), x, t, y)
    assert {leaf.dtype for leaf in jax.tree.leaves(nn.meta.unbox(init))} == {jnp.dtype("float32")}


def test_remat_gives_identical_values_and_gradients(tiny):
    model, params = tiny
    x, t, y = inputs()
    remat = create_model("EDT", **TINY, remat=True)

    def loss(p, m):
        return jnp.mean(m.apply({"params": p}, x, t, y, amm=True) ** 2)

    v1, g1 = jax.jit(jax.value_and_grad(loss), static_argnums=1)(params, model)
    v2, g2 = jax.jit(jax.value_and_grad(loss), static_argnums=1)(params, remat)
    np.testing.assert_allclose(v1, v2, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_fsdp_sharded_jit_matches_unsharded(tiny):
    model, params = tiny
    x, t, y = inputs(batch=8)
    mesh = sharding.create_mesh(data=1, fsdp=8)
    boxed = jax.eval_shape(model.init, jax.random.key(0), x, t, y)
    shardings = sharding.variable_shardings(boxed, mesh)
    specs = {tuple(s.spec) for s in jax.tree.leaves(shardings["params"])}
    assert any("fsdp" in spec for spec in specs)
    variables = jax.device_put({"params": params}, shardings)
    assert variables["params"]["blocks_0"]["mlp"]["fc1"]["kernel"].sharding.spec[0] == "fsdp"
    batch = sharding.batch_sharding(mesh)
    fn = jax.jit(lambda v, x, t, y: model.apply(v, x, t, y), in_shardings=(shardings, batch, batch, batch),
                 out_shardings=batch)
    with jax.set_mesh(mesh):
        sharded = fn(variables, jax.device_put(x, batch), jax.device_put(t, batch), jax.device_put(y, batch))
    np.testing.assert_allclose(sharded, apply(model, params, x, t, y), atol=2e-5)


def test_dit_runs_with_and_without_amm():
    model = create_model("DiT", hidden_size=32, depth=3, num_heads=2, input_size=16, num_classes=10,
                         amm_blocks=(1,))
    params = random_params(model)
    x, t, y = inputs()
    out = apply(model, params, x, t, y, amm=True)
    assert out.shape == (4, 16, 16, 8)
    assert float(jnp.abs(out - apply(model, params, x, t, y, amm=False)).max()) > 1e-3
    assert official_name(("blocks_2", "attn", "qkv", "kernel")) == "blocks.2.attn.qkv.weight"


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="EDT-M/2"), "unknown model name 'EDT-M/2'"),
    (dict(name="EDT-S/2", input_size=36), "input_size 36 of EDT-S/2 must be divisible by 8"),
    (dict(name="EDT", dims=(32, 48, 32), num_heads=(2, 2, 2), depths=(1, 1)), "same odd number of stages"),
    (dict(name="EDT", dims=(32, 48, 64, 48, 40), num_heads=(2,) * 5, depths=(1,) * 5), "must be symmetric"),
    (dict(name="EDT", **{**TINY, "amm_blocks": (2,)}), "runs on a 2x2 token grid"),
    (dict(name="EDT", **{**TINY, "amm_blocks": (9,)}), "out of range"),
    (dict(name="EDT-S/2", hidden_size=3), "unknown argument"),
    (dict(name="EDT", dims=(32,)), "needs num_heads, depths"),
    (dict(name="DiT", hidden_size=30, depth=2, num_heads=4), "divisible by num_heads"),
])
def test_bad_model_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        create_model(**kwargs)
    assert "\n" not in str(info.value)


def test_bad_call_inputs(tiny):
    model, params = tiny
    x, t, y = inputs()
    with pytest.raises(ValueError, match=r"x must be NHWC of shape \(B, 16, 16, 4\).*got \(4, 4, 16, 16\)"):
        apply(model, params, jnp.transpose(x, (0, 3, 1, 2)), t, y)
    with pytest.raises(ValueError, match=r"keep_masks\[1\] must have shape \(4, 16\)"):
        apply(model, params, x, t, y, keep_masks=(jnp.ones((4, 64)), jnp.ones((4, 64))))
    with pytest.raises(ValueError, match="one mask per down-sampling module"):
        apply(model, params, x, t, y, keep_masks=(jnp.ones((4, 64)),))


def test_converter_round_trip_and_errors(tiny):
    model, params = tiny
    state = official_state_dict(params)
    again = params_from_torch({f"module.{k}": v for k, v in state.items()}, model)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(a, b)
    missing = {k: v for k, v in state.items() if k != "blocks.2.mlp.fc2.bias"}
    with pytest.raises(ValueError, match=r"no tensor 'blocks.2.mlp.fc2.bias'"):
        params_from_torch(missing, model)
    bad = {**state, "blocks.1.attn.qkv.weight": np.zeros((96, 48), np.float32)}
    with pytest.raises(ValueError, match=r"'blocks.1.attn.qkv.weight' has shape \(96, 48\), but this model needs "
                                         r"\(144, 48\)"):
        params_from_torch(bad, model)
    with pytest.raises(ValueError, match="does not use, e.g. 'extra.weight'"):
        params_from_torch({**state, "extra.weight": np.zeros(3)}, model)


def test_loaders(tmp_path, tiny):
    model, params = tiny
    state = official_state_dict(params)
    np.savez(tmp_path / "w.npz", **state)
    np.testing.assert_array_equal(load_state_dict(tmp_path / "w.npz")["blocks.0.mlp.fc1.weight"],
                                  state["blocks.0.mlp.fc1.weight"])
    with pytest.raises(FileNotFoundError, match="nothing is fetched at run time"):
        load_state_dict(tmp_path / "missing.pt")
    (tmp_path / "w.ckpt").write_bytes(b"")
    with pytest.raises(ValueError, match="unsupported checkpoint format '.ckpt'"):
        load_state_dict(tmp_path / "w.ckpt")
    safetensors = pytest.importorskip("safetensors.numpy", reason="safetensors is not installed")
    safetensors.save_file(state, str(tmp_path / "w.safetensors"))
    loaded = load_state_dict(tmp_path / "w.safetensors")
    params_from_torch(loaded, model)


def test_torch_checkpoint_loader(tmp_path, tiny):
    """An official-style training checkpoint: {"model", "ema", "opt", "args"}; the EMA weights are read."""
    torch = pytest.importorskip("torch", reason="torch (the optional 'torch' extra) is not installed")
    import argparse

    model, params = tiny
    state = official_state_dict(params)
    ema = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}
    raw = {k: torch.zeros_like(v) for k, v in ema.items()}
    torch.save({"model": raw, "ema": ema, "opt": {}, "args": argparse.Namespace(model="EDT")}, tmp_path / "c.pt")
    loaded = load_state_dict(tmp_path / "c.pt")
    np.testing.assert_array_equal(loaded["blocks.0.attn.qkv.weight"], state["blocks.0.attn.qkv.weight"])
    assert not load_state_dict(tmp_path / "c.pt", key="model")["blocks.0.attn.qkv.weight"].any()
    params_from_torch(loaded, model)
