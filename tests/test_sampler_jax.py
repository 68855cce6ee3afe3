"""The samplers as JAX citizens: jit with parameters as arguments, vmap, sharding, bf16 models, guidance."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from edt_jax import samplers
from edt_jax.diffusion import GaussianMixture, NoiseScheduleVP

NS = NoiseScheduleVP.discrete(betas=np.linspace(1e-4, 0.02, 1000))


class TinyEpsNet(nn.Module):
    """A small MLP noise predictor on (B, D) inputs; ``dtype`` is its compute precision."""

    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, t_input):
        emb = jnp.stack([jnp.sin(t_input / 1000.0), jnp.cos(t_input / 1000.0)], axis=-1).astype(self.dtype)
        h = jnp.concatenate([x.astype(self.dtype), emb], axis=-1)
        h = nn.gelu(nn.Dense(32, dtype=self.dtype)(h))
        return nn.Dense(x.shape[-1], dtype=self.dtype)(h)


@pytest.fixture(scope="module")
def gmm():
    rng = np.random.default_rng(3)
    return GaussianMixture(rng.standard_normal((3, 8)), np.array([0.3, 0.5, 0.7]), np.array([0.2, 0.3, 0.5]))


def test_jit_with_parameters_as_arguments_compiles_once():
    net = TinyEpsNet()
    x_T = jax.random.normal(jax.random.key(0), (4, 6))
    params_a = net.init(jax.random.key(1), x_T, jnp.zeros(4))
    params_b = net.init(jax.random.key(2), x_T, jnp.zeros(4))

    @jax.jit
    def sample(params, x):
        model_fn = samplers.model_wrapper(lambda x, t: net.apply(params, x, t), NS)
        return samplers.unipc(model_fn, x, NS, steps=5, order=2)

    out_a, out_b = sample(params_a, x_T), sample(params_b, x_T)
    assert sample._cache_size() == 1
    assert float(jnp.abs(out_a - out_b).max()) > 1e-3
    eager = samplers.unipc(samplers.model_wrapper(lambda x, t: net.apply(params_a, x, t), NS), x_T, NS, steps=5)
    np.testing.assert_allclose(out_a, eager, atol=1e-5)


def test_vmap_over_independent_batches(gmm):
    model_fn = samplers.model_wrapper(gmm.model(NS), NS)
    x_T = jax.random.normal(jax.random.key(0), (3, 5, 8))

    def sample(x):
        return samplers.dpm_solver(model_fn, x, NS, steps=6, order=3)

    batched = jax.vmap(sample)(x_T)
    for i in range(3):
        np.testing.assert_allclose(batched[i], sample(x_T[i]), atol=1e-5)


def test_sharded_x_T_matches_unsharded(gmm):
    devices = jax.devices("cpu")
    assert len(devices) == 8, "tests/conftest.py asks for 8 CPU devices"
    mesh = Mesh(np.array(devices), ("data",))
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    model_fn = samplers.model_wrapper(gmm.model(NS), NS)
    x_T = jax.random.normal(jax.random.key(0), (16, 2, 2, 2))
    x_sharded = jax.device_put(x_T, sharding)

    def sample(x):
        return samplers.unipc(model_fn, x, NS, steps=7, order=3, variant="bh2", thresholding=(0.99, 1.0))

    expected = sample(x_T)
    np.testing.assert_allclose(sample(x_sharded), expected, atol=1e-6)
    out = jax.jit(sample, in_shardings=sharding, out_shardings=sharding)(x_sharded)
    assert out.sharding.is_equivalent_to(sharding, out.ndim)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def _scan_carry_dtypes(fn, *args):
    jaxpr = jax.make_jaxpr(fn)(*args)
    scans = [e for e in jaxpr.eqns if e.primitive.name == "scan"]
    assert len(scans) == 1, "the trajectory must be exactly one scan"
    # The sampler's scan stacks no per-step outputs, so all its outputs are the final carry.
    return {str(v.aval.dtype) for v in scans[0].outvars}


def test_bfloat16_model_keeps_float32_state():
    net = TinyEpsNet(dtype=jnp.bfloat16)
    x_T = jax.random.normal(jax.random.key(0), (4, 6))
    params = net.init(jax.random.key(1), x_T, jnp.zeros(4))

    def sample(params, x, dtype):
        model = lambda x, t: TinyEpsNet(dtype=dtype).apply(params, x, t)  # noqa: E731
        return samplers.unipc(samplers.model_wrapper(model, NS), x, NS, steps=6, order=3)

    assert _scan_carry_dtypes(lambda p, x: sample(p, x, jnp.bfloat16), params, x_T) == {"float32"}
    out_bf16 = sample(params, x_T, jnp.bfloat16)
    out_f32 = sample(params, x_T, jnp.float32)
    assert out_bf16.dtype == jnp.float32
    # bf16 has an 8-bit mantissa: outputs agree to bf16 precision, not exactly.
    np.testing.assert_allclose(out_bf16, out_f32, atol=0.1, rtol=0.05)
    # A bfloat16 x_T is promoted to a float32 state as well.
    assert samplers.ddim(samplers.model_wrapper(lambda x, t: x, NS), x_T.astype(jnp.bfloat16), NS).dtype == jnp.float32


def test_per_step_guidance_skips_the_unconditional_half_after_it_stops(gmm):
    labels = jnp.array([0, 1, 2, 0])
    null = jnp.full((4,), 3)
    x_T = jax.random.normal(jax.random.key(0), (4, 8))
    batch_sizes = []

    def model(x, t_input, y):
        jax.debug.callback(lambda: batch_sizes.append(x.shape[0]))
        return gmm.model(NS)(x, t_input, y)

    steps = 8
    scales = samplers.guidance_schedule(4.0, steps, guided_fraction=0.5)
    np.testing.assert_array_equal(scales, [4.0] * 4 + [1.0] * 4)
    fn = samplers.model_wrapper(model, NS, guidance_type="classifier-free", condition=labels,
                                unconditional_condition=null, guidance_scale=scales)
    out = jax.jit(lambda x: samplers.unipc(fn, x, NS, steps=steps, order=2, variant="bh2"))(x_T)
    assert batch_sizes == [8] * 4 + [4] * 4

    # Same trajectory by hand: one guided wrapper for the first half, one unguided for the rest.
    guided = samplers.model_wrapper(gmm.model(NS), NS, guidance_type="classifier-free", condition=labels,
                                    unconditional_condition=null, guidance_scale=4.0)
    plain = samplers.model_wrapper(gmm.model(NS), NS, guidance_type="classifier-free", condition=labels)
    calls = []

    def switching(x, t):
        calls.append(1)  # the loop twin calls eagerly, once per model evaluation
        return guided(x, t) if len(calls) <= 4 else plain(x, t)

    from loop_twin import unipc_loop
    expected = unipc_loop(lambda x, t: np.asarray(switching(jnp.asarray(x, jnp.float32), jnp.asarray(t, jnp.float32))),
                          np.asarray(x_T, np.float64), NS, steps=steps, order=2, variant="bh2")
    np.testing.assert_allclose(out, expected, atol=2e-4)


def test_constant_per_step_guidance_equals_scalar_guidance(gmm):
    labels, null = jnp.array([0, 2]), jnp.array([3, 3])
    x_T = jax.random.normal(jax.random.key(1), (2, 8))
    kw = dict(guidance_type="classifier-free", condition=labels, unconditional_condition=null)
    scalar = samplers.model_wrapper(gmm.model(NS), NS, guidance_scale=2.5, **kw)
    per_step = samplers.model_wrapper(gmm.model(NS), NS, guidance_scale=[2.5] * 7, **kw)
    a = samplers.dpm_solver(scalar, x_T, NS, steps=6, denoise_to_zero=True)
    b = samplers.dpm_solver(per_step, x_T, NS, steps=6, denoise_to_zero=True)
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("prediction", ["x0", "v", "score"])
def test_wrapper_converts_outputs_on_image_shaped_x(gmm, prediction):
    """alpha_t / sigma_t are per-sample (B,) and must broadcast over (B, H, W, C) images."""
    x = jax.random.normal(jax.random.key(0), (3, 2, 2, 2))
    t = jnp.array([0.2, 0.5, 0.9])
    eps_true = samplers.model_wrapper(gmm.model(NS), NS)(x, t)
    if prediction == "score":
        sigma = NS.marginal_std(t).reshape(-1, 1, 1, 1)
        net = lambda x, t_in: -gmm.model(NS)(x, t_in) / sigma  # noqa: E731
    else:
        net = gmm.model(NS, prediction)
    eps = samplers.model_wrapper(net, NS, prediction=prediction)(x, t)
    np.testing.assert_allclose(eps, eps_true, atol=2e-5)


def test_learned_sigma_outputs_use_only_the_first_half(gmm):
    x_T = jax.random.normal(jax.random.key(0), (3, 2, 2, 2))

    def two_c(x, t_input):
        eps = gmm.model(NS)(x, t_input)
        return jnp.concatenate([eps, 100.0 + x], axis=-1)

    a = samplers.unipc(samplers.model_wrapper(two_c, NS, learned_sigma=True), x_T, NS, steps=5)
    b = samplers.unipc(samplers.model_wrapper(gmm.model(NS), NS), x_T, NS, steps=5)
    np.testing.assert_array_equal(a, b)
