"""Per-call guidance scales: parity with the official samplers, the one-pass calls, schedules and intervals."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fixture_cases import prediction_of, schedule_from_spec
from reference_fixtures import fixture_path, load_npz

from edt_jax import samplers
from edt_jax.diffusion import GaussianMixture, NoiseScheduleVP

NS = NoiseScheduleVP.discrete(betas=np.linspace(1e-4, 0.02, 1000))
REFERENCE = "guidance_windows_reference.npz"


def _reference_cases() -> list[dict]:
    with np.load(fixture_path(REFERENCE), allow_pickle=False) as data:
        cases = json.loads(str(data["cases_json"]))
    if not cases:
        raise ValueError(f"{REFERENCE} lists no cases")
    return cases


def _sample(case: dict, data: dict, scales, x_T: jax.Array) -> jax.Array:
    ns = schedule_from_spec(case["schedule"])
    gmm = GaussianMixture(data["gmm_means"], data["gmm_stds"], data["gmm_weights"])
    num_components = data["gmm_weights"].shape[0]
    model_fn = samplers.model_wrapper(gmm.model(ns, prediction_of(case)), ns, prediction=prediction_of(case),
                                      guidance_type="classifier-free", condition=jnp.asarray(data["cond"]),
                                      unconditional_condition=jnp.full(data["cond"].shape, num_components),
                                      guidance_scale=scales)
    common = dict(steps=case["steps"], order=case["order"], skip_type=case["skip_type"], t_start=case.get("t_start"),
                  t_end=case.get("t_end"), denoise_to_zero=case.get("denoise_to_zero", False))
    if case["sampler"] == "unipc":
        return jax.jit(lambda x: samplers.unipc(model_fn, x, ns, variant=case["variant"], solver_space="data",
                                                **common))(x_T)
    return jax.jit(lambda x: samplers.dpm_solver(model_fn, x, ns, algorithm=case["algorithm_type"], **common))(x_T)


@pytest.mark.parametrize("case", _reference_cases(), ids=lambda c: c["name"])
def test_per_call_scales_match_the_official_samplers(case):
    data = load_npz(REFERENCE)
    name = case["name"]
    scales = data[f"guidance_scale/{name}"]
    assert scales.shape == (case["num_model_calls"],)
    with jax.enable_x64(True):
        out = _sample(case, data, scales, jnp.asarray(data["x_T"], jnp.float64))
    err = float(np.max(np.abs(np.asarray(out) - data[f"x_final/{name}"])))
    assert err <= 1e-6, f"{name}: max abs error {err:.3e}"


@pytest.mark.parametrize("case", _reference_cases(), ids=lambda c: c["name"])
def test_call_times_and_schedules_rebuild_the_reference_arrays(case):
    data = load_npz(REFERENCE)
    name, rule = case["name"], case["guidance"]
    ns = schedule_from_spec(case["schedule"])
    times = samplers.call_times(ns, case["steps"], skip_type=case["skip_type"], t_start=case.get("t_start"),
                                t_end=case.get("t_end"), denoise_to_zero=case.get("denoise_to_zero", False))
    np.testing.assert_allclose(times, data[f"call_times/{name}"], rtol=1e-12, atol=1e-12)
    if rule["type"] == "interval":
        assert rule["other"] == 1.0
        scales = samplers.guidance_interval(rule["scale"], times, rule["t_lo"], rule["t_hi"])
    else:
        after = {1.0: "cond", 0.0: "uncond"}[rule["then"]]
        scales = samplers.guidance_schedule(rule["scale"], len(times), rule["first"] / len(times), after=after)
    np.testing.assert_array_equal(scales, data[f"guidance_scale/{name}"])


@pytest.fixture(scope="module")
def gmm():
    rng = np.random.default_rng(5)
    return GaussianMixture(0.5 * rng.standard_normal((3, 8)), np.array([0.3, 0.5, 0.7]), np.array([0.2, 0.3, 0.5]))


def _recording_wrapper(gmm, scales, seen):
    def model(x, t_input, y):
        jax.debug.callback(lambda labels: seen.append(tuple(np.asarray(labels).tolist())), y)
        return gmm.model(NS)(x, t_input, y)

    return samplers.model_wrapper(model, NS, guidance_type="classifier-free", condition=jnp.array([0, 1]),
                                  unconditional_condition=jnp.array([3, 3]), guidance_scale=scales)


def test_scale_one_runs_the_conditional_half_and_zero_the_unconditional_half(gmm):
    seen = []
    scales = np.array([2.0, 1.0, 0.0, 2.0, 0.0, 1.0])
    fn = _recording_wrapper(gmm, scales, seen)
    jax.jit(lambda x: samplers.dpm_solver(fn, x, NS, steps=6, order=2))(jnp.ones((2, 8)))
    jax.effects_barrier()
    assert seen == [(3, 3, 0, 1), (0, 1), (3, 3), (3, 3, 0, 1), (3, 3), (0, 1)]


def test_scalar_zero_and_one_are_single_passes_too(gmm):
    for scale, labels in ((1.0, (0, 1)), (0.0, (3, 3)), (2.5, (3, 3, 0, 1))):
        seen = []
        fn = _recording_wrapper(gmm, scale, seen)
        jax.jit(lambda x, fn=fn: samplers.ddim(fn, x, NS, steps=2))(jnp.ones((2, 8)))
        jax.effects_barrier()
        assert seen == [labels] * 2, scale


def test_jax_array_scales_equal_numpy_scales_and_a_0d_array_is_a_scalar(gmm):
    x_T = jax.random.normal(jax.random.key(2), (2, 8))
    kw = dict(guidance_type="classifier-free", condition=jnp.array([0, 2]), unconditional_condition=jnp.array([3, 3]))
    scales = samplers.guidance_schedule(3.0, 7, 0.4, after="uncond")

    def run(scale):
        fn = samplers.model_wrapper(gmm.model(NS), NS, guidance_scale=scale, **kw)
        return jax.jit(lambda x: samplers.unipc(fn, x, NS, steps=7, variant="bh2"))(x_T)

    per_call, scalar = run(scales), run(3.0)
    np.testing.assert_array_equal(run(jnp.asarray(scales)), per_call)
    np.testing.assert_array_equal(run(list(scales)), per_call)
    # A 0-d array is one scale for every call, not a per-feature broadcast (the old bug).
    np.testing.assert_allclose(run(jnp.asarray(3.0)), scalar, atol=1e-6)
    np.testing.assert_allclose(run(np.asarray(3.0)), scalar, atol=1e-6)


def test_one_compiled_sampler_serves_every_schedule_of_a_length(gmm):
    x_T = jax.random.normal(jax.random.key(3), (2, 8))
    kw = dict(guidance_type="classifier-free", condition=jnp.array([1, 2]), unconditional_condition=jnp.array([3, 3]))

    @jax.jit
    def run(scales):
        return samplers.unipc(samplers.model_wrapper(gmm.model(NS), NS, guidance_scale=scales, **kw), x_T, NS, steps=6)

    for fraction, after in ((1.0, "cond"), (0.5, "cond"), (0.5, "uncond"), (0.0, "cond")):
        scales = samplers.guidance_schedule(4.0, 6, fraction, after=after)
        fixed = samplers.model_wrapper(gmm.model(NS), NS, guidance_scale=scales, **kw)
        np.testing.assert_allclose(run(jnp.asarray(scales)), jax.jit(lambda x, fn=fixed: samplers.unipc(
            fn, x, NS, steps=6))(x_T), atol=1e-6)
    assert run._cache_size() == 1


def test_vmap_over_x_keeps_the_saving_but_vmap_over_scales_runs_every_branch(gmm):
    """What model_wrapper's docstring says: a batched switch index turns lax.switch into a select."""
    scales = np.array([2.0, 1.0])
    seen = []
    jax.jit(jax.vmap(lambda x: samplers.ddim(_recording_wrapper(gmm, scales, seen), x, NS, steps=2)))(
        jnp.ones((3, 2, 8)))
    jax.effects_barrier()
    assert seen == [(3, 3, 0, 1), (0, 1)]  # call 1 (scale 1) ran the conditional half alone
    seen.clear()
    jax.jit(jax.vmap(lambda s, x: samplers.ddim(_recording_wrapper(gmm, s, seen), x, NS, steps=2)))(
        jnp.stack([scales, scales]), jnp.ones((2, 2, 8)))
    jax.effects_barrier()
    assert sorted(set(seen)) == [(0, 1), (3, 3), (3, 3, 0, 1)] and len(seen) == 2 * 3 * 2  # calls x branches x batch


def test_guidance_interval_follows_call_times():
    times = samplers.call_times(NS, 10, skip_type="time_uniform")
    scales = samplers.guidance_interval(3.0, times, 0.25, 0.55)
    np.testing.assert_array_equal(scales, np.where((times >= 0.25) & (times <= 0.55), 3.0, 1.0))
    assert scales.tolist().count(3.0) == 3  # t = 0.5005, 0.4006, 0.3007


def test_guidance_schedule_rounds_half_up_and_after_modes():
    np.testing.assert_array_equal(samplers.guidance_schedule(2.0, 5, 0.5), [2, 2, 2, 1, 1])
    np.testing.assert_array_equal(samplers.guidance_schedule(2.0, 5, 0.4, after="uncond"), [2, 2, 0, 0, 0])
    np.testing.assert_array_equal(samplers.guidance_schedule(2.0, 4, 0.0), [1, 1, 1, 1])
    np.testing.assert_array_equal(samplers.guidance_schedule(2.0, 4, 1.0, after="uncond"), [2, 2, 2, 2])


@pytest.mark.parametrize("call,message", [
    (lambda: samplers.guidance_schedule(2.0, 10, 0.5, after="none"), r"unknown after 'none'; expected one of 'cond'"),
    (lambda: samplers.guidance_schedule(2.0, 0, 0.5), r"num_calls must be an integer >= 1, got 0"),
    (lambda: samplers.guidance_schedule("big", 4), r"scale must be a number, got 'big'"),
    (lambda: samplers.guidance_interval(2.0, [0.5, 0.1], 0.6, 0.2), r"needs finite t_lo <= t_hi, got t_lo=0.6"),
    (lambda: samplers.guidance_interval(2.0, np.ones((2, 2)), 0.1, 0.2), r"times must be a 1-D array .* \(2, 2\)"),
    (lambda: samplers.model_wrapper(lambda x, t, y: x, NS, guidance_type="classifier-free", condition=jnp.zeros(2),
                                    unconditional_condition=jnp.zeros(2), guidance_scale=jnp.ones((3, 2))),
     r"1-D array of one scale per model call, got shape \(3, 2\)"),
    (lambda: samplers.model_wrapper(lambda x, t, y: x, NS, guidance_type="classifier-free", condition=jnp.zeros(2),
                                    unconditional_condition=jnp.zeros(2), guidance_scale="4"),
     r"guidance_scale must be a number or a 1-D array .* got str"),
    (lambda: samplers.model_wrapper(lambda x, t, y: x, NS, guidance_type="classifier-free", condition=jnp.zeros(2),
                                    guidance_scale=jnp.asarray([2.0, 1.0])),
     r"guidance_scale of shape \(2,\) needs unconditional_condition"),
    (lambda: samplers.call_times(NS, 0), r"steps must be an integer >= 1, got 0"),
])
def test_bad_guidance_arguments_are_one_line_errors(call, message):
    with pytest.raises(ValueError, match=message) as info:
        call()
    assert "\n" not in str(info.value)
