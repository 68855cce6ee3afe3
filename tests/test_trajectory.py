"""``return_trajectory=True``: what every sampler records of its model calls, and ``call_times``."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from edt_jax import samplers
from edt_jax.diffusion import DiscreteDiffusion, GaussianMixture, NoiseScheduleVP, beta_schedule, space_timesteps

NS = NoiseScheduleVP.discrete(betas=np.linspace(1e-4, 0.02, 1000))


@pytest.fixture(scope="module")
def gmm():
    rng = np.random.default_rng(7)
    return GaussianMixture(rng.standard_normal((3, 8)), np.array([0.3, 0.5, 0.7]), np.array([0.2, 0.3, 0.5]))


ODE_CASES = [
    ("unipc", dict(steps=5, order=3, solver_space="noise", skip_type="logSNR", denoise_to_zero=True)),
    ("unipc", dict(steps=6, order=2, variant="bh2", thresholding=(0.9, 1.0), denoise_to_zero=True)),
    ("dpm_solver", dict(steps=7, order=2, t_start=0.8, t_end=0.02)),
    ("ddim", dict(steps=5, skip_type="time_quadratic")),
]


@pytest.mark.parametrize("name,kwargs", ODE_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(ODE_CASES)])
def test_ode_trajectory_records_every_model_call(gmm, name, kwargs):
    sampler = getattr(samplers, name)
    fn = samplers.model_wrapper(gmm.model(NS), NS)
    x_T = jax.random.normal(jax.random.key(0), (4, 8))
    plain = jax.jit(lambda x: sampler(fn, x, NS, **kwargs))(x_T)
    out, traj = jax.jit(lambda x: sampler(fn, x, NS, return_trajectory=True, **kwargs))(x_T)
    denoise = kwargs.get("denoise_to_zero", False)
    steps = kwargs["steps"] + int(denoise)
    assert isinstance(traj, samplers.Trajectory)
    assert traj.t.shape == (steps,) and traj.x.shape == (steps, 4, 8) and traj.denoised.shape == (steps, 4, 8)
    np.testing.assert_allclose(out, plain, atol=1e-6)
    np.testing.assert_array_equal(traj.x[0], x_T)
    grid = {k: kwargs[k] for k in ("skip_type", "t_start", "t_end") if k in kwargs}
    np.testing.assert_allclose(traj.t, samplers.call_times(NS, kwargs["steps"], denoise_to_zero=denoise, **grid),
                               rtol=1e-6)

    @jax.jit
    def data_prediction(x, t):  # the model's x0 at the recorded state and time (thresholded when asked)
        eps = fn(x.reshape(steps * 4, 8), jnp.repeat(t, 4)).reshape(steps, 4, 8)
        x0 = (x - NS.marginal_std(t)[:, None, None] * eps) / NS.marginal_alpha(t)[:, None, None]
        if kwargs.get("thresholding"):
            x0 = jax.vmap(lambda v: samplers.dynamic_thresholding(v, *kwargs["thresholding"]))(x0)
        return x0

    np.testing.assert_allclose(traj.denoised, data_prediction(traj.x, traj.t), atol=2e-5)
    if denoise:  # the last call's data prediction is the sample itself
        np.testing.assert_array_equal(traj.denoised[-1], out)


def test_trajectory_is_float32_with_a_bfloat16_model():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, t_input):
            h = jnp.concatenate([x, jnp.sin(t_input / 1000.0)[:, None]], -1).astype(jnp.bfloat16)
            return nn.Dense(x.shape[-1], dtype=jnp.bfloat16)(nn.gelu(nn.Dense(16, dtype=jnp.bfloat16)(h)))

    x_T = jax.random.normal(jax.random.key(0), (3, 6))
    params = Net().init(jax.random.key(1), x_T, jnp.zeros(3))
    fn = samplers.model_wrapper(lambda x, t: Net().apply(params, x, t), NS)
    out, traj = jax.jit(lambda x: samplers.unipc(fn, x, NS, steps=5, order=3, return_trajectory=True))(x_T)
    assert out.dtype == traj.x.dtype == traj.denoised.dtype == traj.t.dtype == jnp.float32
    np.testing.assert_array_equal(out, jax.jit(lambda x: samplers.unipc(fn, x, NS, steps=5, order=3))(x_T))


def test_no_trajectory_means_no_scan_outputs(gmm):
    fn = samplers.model_wrapper(gmm.model(NS), NS)
    jaxpr = jax.make_jaxpr(lambda x: samplers.unipc(fn, x, NS, steps=6))(jnp.zeros((2, 8)))
    scan = [e for e in jaxpr.eqns if e.primitive.name == "scan"]
    assert len(scan) == 1
    # Outputs are the carry (x_prev, x_next, history) only: nothing stacked over the 6 steps.
    assert all(v.aval.shape[0] != 6 for v in scan[0].outvars)
    jaxpr = jax.make_jaxpr(lambda x: samplers.unipc(fn, x, NS, steps=6, return_trajectory=True))(jnp.zeros((2, 8)))
    scan = [e for e in jaxpr.eqns if e.primitive.name == "scan"]
    # x and denoised are stacked (t, a scanned input, is forwarded by JAX without being stacked again).
    assert len(scan) == 1 and [v.aval.shape for v in scan[0].outvars if v.aval.shape[0] == 6] == [(6, 2, 8)] * 2


def test_trajectory_under_vmap(gmm):
    fn = samplers.model_wrapper(gmm.model(NS), NS)
    x_T = jax.random.normal(jax.random.key(4), (3, 2, 8))
    out, traj = jax.jit(jax.vmap(lambda x: samplers.dpm_solver(fn, x, NS, steps=5, return_trajectory=True)))(x_T)
    assert traj.denoised.shape == (3, 5, 2, 8)
    single, single_traj = jax.jit(lambda x: samplers.dpm_solver(fn, x, NS, steps=5, return_trajectory=True))(x_T[1])
    np.testing.assert_allclose(traj.denoised[1], single_traj.denoised, atol=1e-5)
    np.testing.assert_allclose(out[1], single, atol=1e-5)


def test_ddpm_trajectory_records_states_and_x0():
    diffusion = DiscreteDiffusion.from_betas(beta_schedule("linear", 1000))
    rng = np.random.default_rng(0)
    gmm = GaussianMixture(rng.standard_normal((2, 4)), np.array([0.4, 0.6]), np.array([0.5, 0.5]))
    net = gmm.model(NS)  # eps at the discrete timestep t_input, as ADM's network
    x_T = jax.random.normal(jax.random.key(0), (5, 4))
    key = jax.random.key(1)
    plain = jax.jit(lambda x: samplers.ddpm(net, x, diffusion, key=key, steps=10, variance="fixed_small"))(x_T)
    out, traj = jax.jit(lambda x: samplers.ddpm(net, x, diffusion, key=key, steps=10, variance="fixed_small",
                                                return_trajectory=True))(x_T)
    np.testing.assert_array_equal(out, plain)
    assert traj.t.shape == (10,) and traj.x.shape == (10, 5, 4)
    timesteps = np.sort(np.asarray(list(space_timesteps(1000, "10"))))[::-1]  # scan order: the noisiest first
    np.testing.assert_allclose(traj.t, (timesteps + 1) / 1000, rtol=1e-6)
    np.testing.assert_array_equal(traj.x[0], x_T)
    acp = diffusion.alphas_cumprod[timesteps[-1]]
    eps_last = jax.jit(net)(traj.x[-1], jnp.full((5,), timesteps[-1], jnp.float32))
    x0_last = (traj.x[-1] - np.sqrt(1 - acp) * eps_last) / np.sqrt(acp)
    np.testing.assert_allclose(traj.denoised[-1], x0_last, atol=1e-4)
    np.testing.assert_allclose(traj.denoised[-1], out, atol=1e-4)  # the last step returns the posterior mean at t=0
