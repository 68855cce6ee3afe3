"""MDTv2 against the official PyTorch model (sail-sg/MDT): tiny passes, full-size layouts, the masking draw."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from reference_fixtures import fixture_path, load_json, load_npz

from edt_jax.models import MDT_CONFIGS, count_macs, create_model
from edt_jax.models.blocks import explicit_attention
from edt_jax.models.convert import (
    abstract_params,
    edt_params_from_torch,
    load_state_dict,
    official_name,
    official_shape,
    params_from_torch,
)
from edt_jax.models.mdt import draw_ids_keep, guided_output, kept_token_count

TOL = 1e-4


@pytest.fixture(scope="module")
def tiny():
    data = load_npz("mdt_tiny.npz")
    model = create_model("MDTv2", hidden_size=int(data["hidden_size"]), depth=int(data["depth"]),
                         num_heads=int(data["num_heads"]), decode_layer=int(data["decode_layer"]), input_size=16,
                         in_channels=4, num_classes=int(data["num_classes"]), patch_size=int(data["patch_size"]),
                         learn_sigma=bool(data["learn_sigma"]))
    params = params_from_torch(load_state_dict(fixture_path("mdt_tiny.npz")), model)
    return model, {"params": params}, data


def _nhwc(a):
    return jnp.asarray(a.transpose(0, 2, 3, 1))


def _nchw(out) -> np.ndarray:
    return np.asarray(out).transpose(0, 3, 1, 2)


def test_plain_pass_matches_official(tiny):
    model, variables, d = tiny
    out = model.apply(variables, _nhwc(d["x"]), jnp.asarray(d["t"]), jnp.asarray(d["y"]), train=False)
    np.testing.assert_allclose(_nchw(out), d["out"], atol=TOL, rtol=0)


def test_masked_pass_matches_official(tiny):
    model, variables, d = tiny
    out = model.apply(variables, _nhwc(d["x"]), jnp.asarray(d["t"]), jnp.asarray(d["y"]), train=False,
                      ids_keep=jnp.asarray(d["ids_keep"]))
    np.testing.assert_allclose(_nchw(out), d["out_masked"], atol=TOL, rtol=0)
    # The masked pass really differs from the plain one (the fixture would not catch a pass that ignores ids).
    assert np.abs(d["out_masked"] - d["out"]).max() > 100 * TOL


def test_padded_ids_keep_equal_the_unpadded_pass(tiny):
    """The fixed-length draw: extra (masked) entries flagged invalid change nothing."""
    model, variables, d = tiny
    ids = d["ids_keep"]
    padded = d["ids_shuffle"][:, :ids.shape[1] + 7]
    valid = np.arange(padded.shape[1])[None] < ids.shape[1]
    args = (_nhwc(d["x"]), jnp.asarray(d["t"]), jnp.asarray(d["y"]))
    out = model.apply(variables, *args, ids_keep=jnp.asarray(padded), key_valid=jnp.asarray(np.repeat(valid, 4, 0)))
    np.testing.assert_allclose(_nchw(out), d["out_masked"], atol=TOL, rtol=0)


def test_forward_with_cfg_matches_official(tiny):
    model, variables, d = tiny
    out = guided_output(model, variables, _nhwc(d["cfg_x"]), jnp.asarray(d["cfg_t"]), jnp.asarray(d["cfg_y"]),
                        float(d["cfg_scale"]), 1000, float(d["cfg_scale_pow"]))
    np.testing.assert_allclose(_nchw(out), d["out_cfg"], atol=TOL, rtol=0)


def test_amm_switches_on_in_eval_only(tiny):
    model, variables, d = tiny
    args = (_nhwc(d["x"]), jnp.asarray(d["t"]), jnp.asarray(d["y"]))
    amm_model = model.clone(amm_blocks=(6,))  # de_blocks_0 (blocks 0-2 en_in, 3-5 en_out)
    on = amm_model.apply(variables, *args, train=False)
    off = amm_model.apply(variables, *args, train=False, amm=False)
    np.testing.assert_allclose(_nchw(off), d["out"], atol=TOL, rtol=0)
    assert np.abs(_nchw(on) - d["out"]).max() > 1e-3
    # In training the AMM is off, as in the official code (``not self.training``).
    np.testing.assert_allclose(amm_model.apply(variables, *args, train=True, rngs={"dropout": jax.random.key(0)}),
                               model.apply(variables, *args, train=True, rngs={"dropout": jax.random.key(0)}),
                               atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", sorted(MDT_CONFIGS))
def test_full_size_layout_and_counts(name):
    ref = load_json("mdt_official_shapes.json")[name]
    for decode_layer, counts in ref["by_decode_layer"].items():
        flat = traverse_util.flatten_dict(abstract_params(create_model(name, decode_layer=int(decode_layer))))
        assert sum(int(np.prod(v.shape)) for v in flat.values()) == counts["total_params"]
    flat = traverse_util.flatten_dict(abstract_params(create_model(name)))
    ours = {official_name(k): official_shape(tuple(v.shape), k[-1]) for k, v in flat.items()}
    theirs = {k: tuple(v) for k, v in ref["state_shapes"].items() if k not in ref["buffers"]}
    assert ours == theirs


def test_converter_errors_and_alias(tiny):
    model, variables, d = tiny
    state = load_state_dict(fixture_path("mdt_tiny.npz"))
    assert edt_params_from_torch is params_from_torch
    with pytest.raises(ValueError, match="no tensor 'mask_token'"):
        params_from_torch({k: v for k, v in state.items() if k != "mask_token"}, model)
    with pytest.raises(ValueError, match="relative_position_bias_table' has shape"):
        params_from_torch({**state, "de_blocks.0.attn.rel_pos_bias.relative_position_bias_table":
                           np.zeros((225, 4), np.float32)}, model)  # EDT's (2n-1)^2 rows, not MDT's + 3


def test_count_macs_equals_the_products_of_the_parameter_tree(tiny):
    """count_macs against MACs read off the Linear kernels (rows x in x out) plus attention's 2 L^2 D."""
    model, variables, _ = tiny
    tokens, hidden, kept = model.grid ** 2, model.hidden_size, 36
    params = traverse_util.flatten_dict(variables["params"])

    def macs(encoder_tokens, with_side):
        total = 0
        for path, value in params.items():
            if path[-1] != "kernel":
                continue
            top = path[0]
            if top == "sideblocks_0" and not with_side:
                continue
            rows = encoder_tokens if top.startswith("en_") else tokens
            if "adaLN_modulation" in path or top == "t_embedder":
                rows = 1
            total += rows * int(np.prod(value.shape))
        blocks = [p for p in {q[0] for q in params} if "blocks" in p and (with_side or p != "sideblocks_0")]
        for block in blocks:
            n = encoder_tokens if block.startswith("en_") else tokens
            total += 2 * n * n * hidden
        return total

    assert count_macs(model) == macs(tokens, False)
    assert count_macs(model, kept_tokens=kept) == macs(kept, True)
    with pytest.raises(ValueError, match="kept_tokens"):
        count_macs(create_model("DiT-S/2"), kept_tokens=10)


def test_masking_draw_follows_the_official_formula():
    tokens, ratio = 256, 0.3
    width = kept_token_count(tokens, ratio)
    assert width == 179  # int(256 * (1 - 0.3)) in float32
    lengths = set()
    for seed in range(40):
        ids, valid = draw_ids_keep(jax.random.key(seed), 3, tokens, ratio)
        assert ids.shape == valid.shape == (3, width)
        n = int(valid[0].sum())
        assert (np.asarray(valid) == (np.arange(width) < n)).all()
        lengths.add(n)
        for row in np.asarray(ids):
            assert len(set(row.tolist())) == width and row.min() >= 0 and row.max() < tokens
    # len_keep = int(L (1 - r)), r in [0.3, 0.5): 128 <= len_keep <= 179, and it varies between draws.
    assert min(lengths) >= 128 and max(lengths) <= 179 and len(lengths) > 10


def test_masked_training_step_compiles_once():
    """The kept count changes every step; the padded draw keeps one compiled program."""
    model = create_model("MDTv2", hidden_size=32, depth=4, num_heads=2, decode_layer=2, input_size=8,
                         num_classes=3)
    x, t, y = jnp.ones((2, 8, 8, 4)), jnp.array([3.0, 600.0]), jnp.array([0, 2])
    variables = model.init(jax.random.key(0), x, t, y)

    @jax.jit
    def loss(variables, key):
        out = model.apply(variables, x, t, y, train=True, masked=True,
                          rngs={"mask": key, "dropout": jax.random.fold_in(key, 1)})
        return jnp.mean(out ** 2)

    grad = jax.jit(jax.grad(loss))
    for seed in range(4):
        loss(variables, jax.random.key(seed))
        grad(variables, jax.random.key(seed))
    assert loss._cache_size() == 1 and grad._cache_size() == 1
    with pytest.raises(ValueError, match="'mask' RNG"):
        model.apply(variables, x, t, y, masked=True)
    with pytest.raises(ValueError, match="ids_keep must have shape"):
        model.apply(variables, x, t, y, ids_keep=jnp.zeros((3, 5), jnp.int32))


def test_registry_validates_mdt_arguments():
    with pytest.raises(ValueError, match="depth - decode_layer must be even"):
        create_model("MDTv2", hidden_size=64, depth=8, num_heads=4, decode_layer=3)
    with pytest.raises(ValueError, match="mask_ratio"):
        create_model("MDTv2-S/2", mask_ratio=0.9)
    assert create_model("MDTv2-S/2").decode_layer == 4 and create_model("MDTv2-XL/2").depth == 28


@pytest.mark.parametrize("with_modulation", [False, True])
def test_explicit_attention_gradient_equals_autodiff(with_modulation):
    """The hand-written attention gradient against JAX's derivative of the same formula."""
    keys = jax.random.split(jax.random.key(0), 5)
    q, k, v = (jax.random.normal(key, (2, 3, 16, 8)) for key in keys[:3])
    bias = jax.random.normal(keys[3], (1, 3, 16, 16))
    modulation = jax.random.uniform(keys[4], (16, 16)) if with_modulation else None

    def reference(q, k, v, bias):
        w = jax.nn.softmax(jnp.einsum("bhqd,bhkd->bhqk", q, k) + bias, axis=-1)
        if modulation is not None:
            w = w * modulation
        return jnp.einsum("bhqk,bhkd->bhqd", w, v)

    def loss(fn):
        return lambda *a: jnp.sum(jnp.sin(fn(*a)))

    ours = jax.grad(loss(lambda *a: explicit_attention(*a, modulation)), argnums=(0, 1, 2, 3))(q, k, v, bias)
    theirs = jax.grad(loss(reference), argnums=(0, 1, 2, 3))(q, k, v, bias)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("config_name", ["mdt_s_imagenet256", "shapes_mdt_tiny"])
def test_configs_build_the_official_recipe(config_name):
    import importlib

    from edt_jax.runs import build as builders
    config = importlib.import_module(f"configs.{config_name}").get_config()
    model = builders.build_model(config)
    loss = builders.build_loss_config(config, model)
    assert loss.masked_pass and model.mask_ratio == 0.3
    if config_name == "mdt_s_imagenet256":
        assert (model.hidden_size, model.depth, model.decode_layer) == (384, 12, 6)
        assert loss.weighting == "none" and config.optimizer.learning_rate == 5e-4
        assert config.optimizer.grad_clip_norm == 1.0 and config.diffusion.timestep_sampler == "uniform"


def test_masked_training_step_on_the_shapes_variant():
    """Two steps of the library's diffusion step with MDTv2's masked pass: finite, both losses logged."""
    from configs import shapes_mdt_tiny
    from edt_jax.runs import build as builders
    from edt_jax.training import sharding
    from edt_jax.training.step import compile_train_step, make_train_step
    from edt_jax.training.train_state import create_train_state

    config = shapes_mdt_tiny.get_config("test")
    mesh, model, tx = builders.build_mesh(config), builders.build_model(config), builders.build_optimizer(config)
    example = (jax.ShapeDtypeStruct((1, 32, 32, 3), np.float32), jax.ShapeDtypeStruct((1,), np.float32),
               jax.ShapeDtypeStruct((1,), np.int32))
    state, shardings = create_train_state(model, tx, jax.random.key(0), example, mesh)
    step = compile_train_step(make_train_step(model, tx, builders.build_schedule(config),
                                              builders.build_loss_config(config, model)),
                              shardings, sharding.batch_sharding(mesh), sharding.replicated(mesh))
    rng = np.random.default_rng(0)
    batch = {"image": rng.standard_normal((8, 32, 32, 3)).astype(np.float32), "label": np.arange(8) % 3,
             "t": np.linspace(0, 999, 8).astype(np.int32), "t_weight": np.ones(8, np.float32)}
    for _ in range(2):
        state, metrics = step(state, batch, jax.random.key(1))
    # loss = plain + masked pass; both are positive diffusion losses.
    assert np.isfinite(float(metrics["loss"])) and 0 < float(metrics["masked_loss"]) < float(metrics["loss"])
