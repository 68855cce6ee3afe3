"""One vocabulary: ``prediction`` everywhere, one schedule object, one sampler entry point; renamed names still work
and warn once (CHANGELOG.md lists them)."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from edt_jax import deprecation, disentangle, restoration, samplers
from edt_jax.diffusion import DiscreteDiffusion, GaussianMixture, NoiseScheduleVP, as_schedule, training_losses
from edt_jax.samplers.dispatch import solve_ode

NS = NoiseScheduleVP.discrete(betas=np.linspace(1e-4, 0.02, 1000))
GMM = GaussianMixture(np.random.default_rng(3).standard_normal((3, 8)), np.array([0.3, 0.5, 0.7]),
                      np.array([0.2, 0.3, 0.5]))
X_T = jax.random.normal(jax.random.key(0), (4, 8))
LABELS = jnp.array([0, 1, 2, 0])
NULL = jnp.full((4,), 3)


@pytest.fixture(autouse=True)
def fresh_warnings():
    """Each test sees the first use of a deprecated name (the warnings are once per process otherwise)."""
    deprecation._warned.clear()
    yield
    deprecation._warned.clear()


def deprecated_calls(fn, *args, **kwargs):
    """(result of two calls, the DeprecationWarnings they raised)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
        fn(*args, **kwargs)
    return out, [w for w in caught if issubclass(w.category, DeprecationWarning)]


def test_one_schedule_object_gives_tables_and_the_continuous_view():
    tables = NS.tables
    reference = DiscreteDiffusion.from_betas(np.linspace(1e-4, 0.02, 1000))
    np.testing.assert_array_equal(tables.alphas_cumprod, reference.alphas_cumprod)
    np.testing.assert_array_equal(NS.alphas_cumprod, reference.alphas_cumprod)
    np.testing.assert_allclose(NS.marginal_alpha(np.array([0.5])), reference.to_noise_schedule().marginal_alpha(0.5))
    assert as_schedule(reference).tables is reference and as_schedule(NS) is NS
    assert NoiseScheduleVP.named("linear", 1000).tables.num_steps == 1000
    with pytest.raises(ValueError, match="'cosine' schedule is continuous and has no discrete DDPM tables"):
        _ = NoiseScheduleVP.cosine().tables
    # The training losses take the schedule and its tables alike.
    x0, noise = jnp.ones((2, 2, 2, 1)), jnp.full((2, 2, 2, 1), 0.5)
    t = jnp.array([3, 700])
    loss = training_losses(lambda x, t: x, x0, t, noise, NS, learn_sigma=False)
    np.testing.assert_array_equal(loss["loss"], training_losses(lambda x, t: x, x0, t, noise, reference,
                                                                learn_sigma=False)["loss"])


def test_the_entry_point_equals_the_hand_wired_samplers():
    net = GMM.model(NS, "v")
    guided = dict(condition=LABELS, unconditional_condition=NULL, guidance_scale=2.0)
    model_fn = samplers.model_wrapper(net, NS, "v", "classifier-free", **guided)
    np.testing.assert_array_equal(samplers.sample("unipc", net, X_T, NS, steps=6, prediction="v", **guided),
                                  samplers.unipc(model_fn, X_T, NS, steps=6))
    np.testing.assert_array_equal(samplers.sample("dpm_solver", net, X_T, NS, steps=6, prediction="v", order=3,
                                                  **guided),
                                  samplers.dpm_solver(model_fn, X_T, NS, steps=6, order=3))
    key = jax.random.key(1)
    eps_net = GMM.model(NS)
    np.testing.assert_array_equal(samplers.sample("ddpm", eps_net, X_T, NS, steps=5, key=key),
                                  samplers.ddpm(eps_net, X_T, NS, key=key, steps=5, variance="fixed_small"))
    with pytest.raises(ValueError, match="ddpm draws fresh noise at every step: pass key="):
        samplers.sample("ddpm", eps_net, X_T, NS, steps=5)
    with pytest.raises(ValueError, match="unknown sampler 'heun'"):
        samplers.sample("heun", eps_net, X_T, NS, steps=5)


def test_ddpm_guidance_per_call_and_scalar():
    net, key = GMM.model(NS), jax.random.key(2)
    guided = dict(condition=LABELS, unconditional_condition=NULL)
    scalar = samplers.sample("ddpm", net, X_T, NS, steps=4, key=key, guidance_scale=3.0, **guided)
    per_call = jax.jit(lambda x, s: samplers.sample("ddpm", net, x, NS, steps=4, key=key, guidance_scale=s,
                                                    **guided))
    np.testing.assert_allclose(per_call(X_T, jnp.full(4, 3.0)), scalar, atol=1e-5)
    cond_only = samplers.sample("ddpm", lambda x, t: net(x, t, LABELS), X_T, NS, steps=4, key=key)
    np.testing.assert_allclose(per_call(X_T, jnp.ones(4)), cond_only, atol=1e-6)
    assert np.max(np.abs(scalar - cond_only)) > 1e-3
    # The call times of ddpm are its respaced training timesteps, newest first; the ODE samplers' their grid's.
    np.testing.assert_array_equal(samplers.call_timesteps(NS, 4, sampler="ddpm"), [999, 666, 333, 0])
    np.testing.assert_allclose(samplers.call_timesteps(NS, 4), [999, 749.25, 499.5, 249.75])


def test_ddpm_starts_mid_chain_like_a_truncated_diffusion():
    net, key = GMM.model(NS), jax.random.key(3)
    truncated = DiscreteDiffusion.from_betas(NS.betas[:300])
    np.testing.assert_array_equal(samplers.ddpm(net, X_T, NS, key=key, steps=6, t_start=0.3, variance="fixed_small"),
                                  samplers.ddpm(net, X_T, truncated, key=key, steps=6, variance="fixed_small"))
    with pytest.raises(ValueError, match=r"steps=400 is not accepted; expected an integer in \[1, 300\]"):
        samplers.ddpm(net, X_T, NS, key=key, steps=400, t_start=0.3)


def test_renamed_names_keep_working_and_warn_once():
    net = GMM.model(NS)
    expected = samplers.model_wrapper(net, NS, prediction="eps")(X_T, jnp.full(4, 0.5))
    wrapped, caught = deprecated_calls(samplers.model_wrapper, net, NS, model_type="noise")
    np.testing.assert_array_equal(wrapped(X_T, jnp.full(4, 0.5)), expected)
    assert len(caught) == 1 and "model_type= is deprecated; use prediction=" in str(caught[0].message)

    x0_net = GMM.model(NS, "x0")
    legacy, caught = deprecated_calls(samplers.model_wrapper, x0_net, NS, "x_start")  # the old value, positional
    np.testing.assert_array_equal(legacy(X_T, jnp.full(4, 0.5)),
                                  samplers.model_wrapper(x0_net, NS, "x0")(X_T, jnp.full(4, 0.5)))
    assert len(caught) == 1 and "prediction='x_start' is deprecated; use prediction='x0'" in str(caught[0].message)

    model_fn = samplers.model_wrapper(net, NS)
    out, caught = deprecated_calls(samplers.unipc, model_fn, X_T, NS, steps=4, prediction="noise")
    np.testing.assert_array_equal(out, samplers.unipc(model_fn, X_T, NS, steps=4, solver_space="noise"))
    assert len(caught) == 1 and "use unipc(solver_space=...)" in str(caught[0].message)

    out, caught = deprecated_calls(samplers.solve, "ddim", model_fn, X_T, NS, steps=4, order=1)
    np.testing.assert_array_equal(out, solve_ode("ddim", model_fn, X_T, NS, steps=4))
    assert len(caught) == 1

    key = jax.random.key(4)
    out, caught = deprecated_calls(samplers.ddpm, net, X_T, key, NS.tables, steps=3, model_type="noise",
                                   variance="fixed_small")
    np.testing.assert_array_equal(out, samplers.ddpm(net, X_T, NS, key=key, steps=3, variance="fixed_small"))
    # The argument order warns; model_type= warned once already in this process, above.
    assert [str(w.message) for w in caught] == ["samplers.ddpm(model, x_T, key, diffusion) is deprecated; use "
                                                "samplers.ddpm(model, x_T, schedule, key=key)"]

    out, caught = deprecated_calls(disentangle.sample, net, X_T, key, NS, NS.tables, sampler="ddpm", steps=3)
    np.testing.assert_array_equal(out, samplers.sample("ddpm", net, X_T, NS, steps=3, key=key))
    assert len(caught) == 1

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert samplers.MODEL_TYPE_OF_PREDICTION == {"eps": "noise", "x0": "x_start", "v": "v"}
    assert "edt_jax.samplers.MODEL_TYPE_OF_PREDICTION is deprecated" in str(caught[0].message)


def test_restoration_and_disdiff_speak_prediction():
    network = lambda params, x, t: GMM.model(NS, "v")(x, t)  # noqa: E731
    t_input = jnp.full((4,), 400.0)
    x0 = restoration.x0_predictor(network, NS, "v")(None, X_T, t_input)
    x0_old, caught = deprecated_calls(restoration.x0_predictor, network, NS, model_type="v")
    np.testing.assert_array_equal(x0_old(None, X_T, t_input), x0)
    eps = disentangle.noise_predictor(network, NS, "v")(None, X_T, t_input)
    t = NS.continuous_time(t_input)[:, None]
    np.testing.assert_allclose(x0, (X_T - NS.marginal_std(t) * eps) / NS.marginal_alpha(t), atol=1e-5)

    model = lambda x, t_in: GMM.model(NS, "x0")(x, t_in)  # noqa: E731
    key = jax.random.key(5)
    new = restoration.restore(model, X_T, key, NS, sampler="ddpm", steps=3, tau=0.5)
    old, caught = deprecated_calls(restoration.restore, model, X_T, key, NS, NS.tables, sampler="ddpm", steps=3,
                                   tau=0.5)
    np.testing.assert_array_equal(old, new)
    assert len(caught) == 1
