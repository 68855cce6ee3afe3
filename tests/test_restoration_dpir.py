"""DP-IR's pieces: x0 predictors, tau-start, sampling from a data predictor, the networks, DDNM's projection."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from edt_jax.diffusion import NoiseScheduleVP
from edt_jax.restoration import (
    FusionNet,
    NAFNet,
    count_params,
    create_degradation,
    ddnm_model,
    image_keys,
    lift,
    restore,
    start_state,
    start_timestep,
    x0_predictor,
)
from edt_jax.restoration.networks import _pixel_shuffle

NS = NoiseScheduleVP.named("linear", 1000)
RNG = np.random.default_rng(0)
X0 = jnp.asarray(RNG.uniform(-1, 1, (4, 8, 8, 1)), jnp.float32)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v", "score"])
def test_x0_predictor_inverts_every_parameterisation(prediction):
    t_input = jnp.asarray([0.0, 100.0, 500.0, 999.0])
    t = t_input / 1000.0 + 1.0 / 1000
    alpha = NS.marginal_alpha(t)[:, None, None, None]
    sigma = NS.marginal_std(t)[:, None, None, None]
    eps = jnp.asarray(RNG.standard_normal(X0.shape), jnp.float32)
    x_t = alpha * X0 + sigma * eps
    target = {"eps": eps, "x0": X0, "v": alpha * eps - sigma * X0, "score": -eps / sigma}[prediction]
    # learned_sigma: the network's second half of channels must be ignored
    network = lambda params, x, t_in: jnp.concatenate([target, jnp.full_like(target, 7.0)], -1)  # noqa: E731
    got = jax.jit(x0_predictor(network, NS, prediction, learned_sigma=True))(None, x_t, t_input)
    np.testing.assert_allclose(got, X0, atol=2e-4 if prediction != "x0" else 0)


def test_start_timestep_and_its_errors():
    assert start_timestep(1.0, 1000) == 1000 and start_timestep(0.25, 1000) == 250
    assert start_timestep(1e-5, 1000) == 1
    for bad in (0.0, 1.5, -0.1, True, "0.5", None):
        with pytest.raises(ValueError, match=r"tau must be a fraction of T in \(0, 1\]"):
            start_timestep(bad, 1000)


def test_start_state_mixes_the_ir_estimate_and_noise_at_tau():
    x0_ir = jnp.full((256, 8, 8, 1), 0.5)
    x, t_start = start_state(x0_ir, jax.random.key(0), NS, 0.25)
    assert t_start == 0.25
    alpha, sigma = float(NS.marginal_alpha(0.25)), float(NS.marginal_std(0.25))
    assert np.mean(x) == pytest.approx(0.5 * alpha, abs=0.01) and np.std(x) == pytest.approx(sigma, rel=0.02)


@pytest.mark.parametrize(("sampler", "tau"), [("ddim", 1.0), ("unipc", 0.3), ("ddpm", 1.0), ("ddpm", 0.3)])
def test_an_exact_data_predictor_restores_exactly_from_any_tau(sampler, tau):
    model = lambda x, t_input: jnp.broadcast_to(X0, x.shape)  # noqa: E731 - the oracle x0
    out = jax.jit(lambda k: restore(model, X0 * 0.3, k, NS, sampler=sampler, steps=5, tau=tau))(
        jax.random.key(1))
    # ODE samplers stop at t = 1/N, where x keeps sigma_end eps (sigma_end = 0.01); ancestral DDPM ends on x0 itself.
    atol = 1e-4 if sampler == "ddpm" else 5 * float(NS.marginal_std(1e-3))
    np.testing.assert_allclose(out, X0, atol=atol)


def test_restore_errors():
    model = lambda x, t: x  # noqa: E731
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        restore(model, X0, jax.random.key(0), NS, sampler="euler")
    with pytest.raises(ValueError, match=r"steps=20 ancestral steps do not fit in the 10 timesteps below tau=0.01"):
        restore(model, X0, jax.random.key(0), NS, sampler="ddpm", steps=20, tau=0.01)


def test_fusion_net_starts_from_the_ir_estimate_and_has_the_papers_size():
    x = jnp.asarray(RNG.uniform(-1, 1, (2, 16, 16, 3)), jnp.float32)
    net = FusionNet(width=16, num_blocks=2, use_x_t=True)
    params = jax.jit(net.init)(jax.random.key(0), x, -x, 2 * x, jnp.zeros(2))["params"]
    np.testing.assert_array_equal(jax.jit(net.apply)({"params": params}, x, -x, 2 * x, jnp.full(2, 300.0)), x)
    shape = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    paper = jax.eval_shape(FusionNet(64, 8).init, jax.random.key(0), shape, shape, shape, jnp.zeros(1))
    assert 0.6e6 < count_params(paper["params"]) < 0.8e6  # the paper's ~0.7M


def test_nafnet_shapes_levels_and_pixel_shuffle_order():
    net = NAFNet(width=8, enc_blocks=(1, 1), middle_blocks=1, dec_blocks=(1, 1))
    x = jnp.zeros((2, 16, 16, 3))
    params = jax.jit(net.init)(jax.random.key(0), x)  # jit: eager init runs op by op, seconds on a CPU
    assert jax.jit(net.apply)(params, x).shape == x.shape
    with pytest.raises(ValueError, match="needs H and W divisible by 4, got 18x18"):
        net.init(jax.random.key(0), jnp.zeros((1, 18, 18, 3)))
    # torch.nn.PixelShuffle: out[c, h r + i, w r + j] = in[c r^2 + i r + j, h, w] (channels-first)
    a = np.arange(2 * 3 * 2 * 8).reshape(2, 3, 2, 8).astype(np.float32)  # NHWC, C = 2 * 2^2
    out = np.asarray(_pixel_shuffle(jnp.asarray(a), 2))
    for c, i, j in np.ndindex(2, 2, 2):
        np.testing.assert_array_equal(out[:, i::2, j::2, c], a[..., c * 4 + i * 2 + j])


def test_lift_upsamples_only_when_needed():
    y = jnp.ones((2, 4, 4, 1))
    assert lift(y, (2, 16, 16, 1)).shape == (2, 16, 16, 1) and lift(y, y.shape) is y


def test_ddnm_model_output_is_consistent_with_the_measurement():
    degradation = create_degradation("sr4")
    x = jnp.asarray(RNG.uniform(-1, 1, (2, 16, 16, 1)), jnp.float32)
    keys = image_keys(0, [0, 1])
    y = degradation.apply(x, keys)
    model = ddnm_model(lambda p, x_t, t: jnp.zeros_like(x_t), None, degradation, y, keys)
    x0 = jax.jit(model)(jnp.zeros_like(x), jnp.full((2,), 10.0))
    np.testing.assert_allclose(degradation.operator(x0, keys), y, atol=1e-4)
    with pytest.raises(ValueError, match="DDNM needs a linear degradation"):
        ddnm_model(None, None, _NonLinear(), y, keys)


class _NonLinear:
    linear = False

    def spec(self):
        return "clip"


def test_nafnet_loads_an_official_layout_state_dict_by_name():
    from flax import traverse_util

    from edt_jax.restoration.networks import nafnet_official_name, nafnet_params_from_torch

    net = NAFNet(width=4, enc_blocks=(1,), middle_blocks=1, dec_blocks=(1,))
    params = jax.jit(net.init)(jax.random.key(3), jnp.zeros((1, 8, 8, 3)))["params"]
    flat = traverse_util.flatten_dict(params)
    # The official layout: conv (out, in, kh, kw), beta / gamma (1, C, 1, 1), names as megvii-research/NAFNet.
    state = {}
    for path, value in flat.items():
        array = np.asarray(value)
        array = array.transpose(3, 2, 0, 1) if array.ndim == 4 else array
        state[nafnet_official_name(path)] = array.reshape(1, -1, 1, 1) if path[-1] in ("beta", "gamma") else array
    assert state["encoders.0.0.conv2.weight"].shape == (8, 1, 3, 3)  # depthwise over 2C channels
    assert state["middle_blks.0.sca.1.weight"].shape == (8, 8, 1, 1) and state["ups.0.0.weight"].shape == (16, 8, 1, 1)
    assert state["decoders.0.0.beta"].shape == (1, 4, 1, 1) and "encoders.0.0.norm1.weight" in state
    loaded = nafnet_params_from_torch(state, net, (8, 8, 3))
    for path, value in traverse_util.flatten_dict(loaded).items():
        np.testing.assert_array_equal(value, flat[path])
    del state["ending.bias"]
    with pytest.raises(ValueError, match=r"does not fit NAFNet\(width=4, .*\): 1 missing: ending.bias"):
        nafnet_params_from_torch(state, net, (8, 8, 3))
