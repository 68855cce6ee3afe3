"""``samplers.diffusers_sampler`` against diffusers' own schedulers (fixture), a plain-loop twin of their ``step``
functions (options the fixture does not cover), and diffusers' timestep formulas for the configs people use."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from diffusers_twin import ddim_loop, multistep_loop
from reference_fixtures import load_npz

from edt_jax import samplers
from edt_jax.samplers.diffusers_config import resolve_config

FIXTURE = load_npz("diffusers_schedulers.npz")
CASES = sorted({key.split("/")[0] for key in FIXTURE})
TOL = 1e-5
# diffusers' golden mean |x_0| of its own scheduler tests (tests/schedulers/test_scheduler_{unipc,dpm_multi}.py).
GOLDEN_MEAN = {"unipc_bh2_o2_sigmamin": 0.2464, "unipc_bh2_o2_sigmamin_karras": 0.2925,
               "unipc_bh2_o2_sigmamin_v": 0.1014, "dpmpp_o2_midpoint_sigmamin": 0.3301,
               "dpmpp_o2_sigmamin_v": 0.2251}
SD = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "steps_offset": 1}
UNIPC, DPM, DDIM = "UniPCMultistepScheduler", "DPMSolverMultistepScheduler", "DDIMScheduler"


def network(x: jax.Array, t: jax.Array) -> jax.Array:
    """The fixture's model x * t / (t + 1), t (B,) the integer timestep."""
    t = t.reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype)
    return x * t / (t + 1)


def numpy_network(x: np.ndarray, t: int) -> np.ndarray:
    return x * t / (t + 1)


def case(name: str) -> dict:
    return {key.split("/", 1)[1]: FIXTURE[key] for key in FIXTURE if key.startswith(name + "/")}


@pytest.mark.parametrize("name", CASES)
def test_every_fixture_case_step_for_step(name):
    c = case(name)
    sample = samplers.diffusers_sampler(json.loads(str(c["config"])), int(c["steps"]))
    np.testing.assert_array_equal(sample.timesteps, c["timesteps"])
    x0, traj = jax.jit(lambda x: sample(network, x, return_trajectory=True))(jnp.asarray(c["x_T"]))
    np.testing.assert_allclose(x0, c["x_0"], rtol=0, atol=TOL)
    # Call k + 1 sees the sample after step k; the last step's sample is x_0.
    np.testing.assert_allclose(traj.x[1:], c["xs"][:-1], rtol=0, atol=TOL)
    np.testing.assert_allclose(c["xs"][-1], c["x_0"], rtol=0, atol=TOL)
    np.testing.assert_array_equal(traj.t, c["timesteps"])
    if name in GOLDEN_MEAN:
        assert round(float(jnp.mean(jnp.abs(x0))), 4) == GOLDEN_MEAN[name]


def test_fixture_in_float64_and_the_twin_on_the_fixture():
    """float64 lands as close as float32 (the gap is diffusers' own float32 arithmetic); the twin reproduces
    diffusers on every case, which is what entitles it to judge the options below."""
    for name in CASES:
        c = case(name)
        cfg = json.loads(str(c["config"]))
        with jax.enable_x64(True):
            x0 = samplers.diffusers_sampler(cfg, int(c["steps"]))(network, jnp.asarray(c["x_T"], jnp.float64))
        assert x0.dtype == jnp.float64
        np.testing.assert_allclose(x0, c["x_0"], rtol=0, atol=1e-6)
        resolved = resolve_config(cfg)
        loop = ddim_loop if resolved["_class_name"] == DDIM else multistep_loop
        twin, seen = loop(resolved, int(c["steps"]), numpy_network, c["x_T"])
        np.testing.assert_allclose(twin, c["x_0"], rtol=0, atol=1e-6)
        assert seen == c["timesteps"].tolist()


TWIN_CONFIGS = [  # (config, steps): the options the fixture leaves out
    ({"_class_name": DPM, "solver_type": "heun"}, 7),
    ({"_class_name": DPM, "solver_type": "heun", "final_sigmas_type": "sigma_min", "lower_order_final": False}, 7),
    ({"_class_name": DPM, "algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min", "solver_order": 3}, 8),
    ({"_class_name": DPM, "algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min", "solver_type": "heun",
      "prediction_type": "sample"}, 6),
    ({"_class_name": DPM, "solver_order": 3, "use_karras_sigmas": True, **SD}, 16),  # >= 15: orders stay high
    ({"_class_name": DPM, "solver_order": 3, "euler_at_final": True, "lower_order_final": False,
      "final_sigmas_type": "sigma_min", "timestep_spacing": "trailing"}, 9),
    ({"_class_name": DPM, "beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1,
      "use_karras_sigmas": True}, 7),  # fractional cosine Karras timesteps, truncated
    ({"_class_name": DPM, "beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1,
      "timestep_spacing": "leading"}, 7),
    ({"_class_name": UNIPC, "solver_type": "bh1", "solver_order": 3, "final_sigmas_type": "sigma_min"}, 7),
    ({"_class_name": UNIPC, "solver_order": 3, "disable_corrector": [0, 1, 5]}, 8),
    ({"_class_name": UNIPC, "predict_x0": False, "final_sigmas_type": "sigma_min",
      "prediction_type": "v_prediction"}, 7),
    ({"_class_name": UNIPC, "prediction_type": "sample", "timestep_spacing": "leading", **SD}, 7),
    ({"_class_name": UNIPC, "use_karras_sigmas": True, "lower_order_final": False, "sigma_max": 20.0,
      "final_sigmas_type": "sigma_min"}, 7),  # the zero-length last step of Karras + sigma_min, at order 2
    ({"_class_name": UNIPC, "timestep_spacing": "trailing", "trained_betas": np.linspace(1e-4, 0.02, 1000).tolist()},
     5),
    ({"_class_name": DDIM, "set_alpha_to_one": False, **SD}, 7),
    ({"_class_name": DDIM, "timestep_spacing": "linspace", "prediction_type": "v_prediction",
      "clip_sample_range": 0.5}, 7),  # linspace steps to t - N // steps, not to the next call's timestep
    ({"_class_name": DDIM, "timestep_spacing": "trailing", "prediction_type": "sample"}, 7),
]


@pytest.mark.parametrize("config, steps", TWIN_CONFIGS, ids=lambda v: "-".join(
    f"{k}={v[k]}" for k in v if k not in ("_class_name", "trained_betas", *SD)) if isinstance(v, dict) else None)
def test_options_outside_the_fixture_match_diffusers_step_functions(config, steps):
    # A wide x_T so that DDIM's clip_sample acts (the fixture's x0 never leaves [-1, 1]).
    x_T = (np.arange(2 * 3 * 4 * 4, dtype=np.float64).reshape(2, 3, 4, 4) / 48.0 - 0.5) * 6.0
    cfg = resolve_config(config)
    loop = ddim_loop if cfg["_class_name"] == DDIM else multistep_loop
    twin, seen = loop(cfg, steps, numpy_network, x_T)
    sample = samplers.diffusers_sampler(config, steps)
    assert sample.timesteps.tolist() == seen
    with jax.enable_x64(True):
        x0 = sample(network, jnp.asarray(x_T))
    np.testing.assert_allclose(x0, twin, rtol=0, atol=1e-10)


def test_ddim_clip_sample_moves_the_clipped_x0_along_the_unclipped_eps():
    cfg = {"_class_name": DDIM, "timestep_spacing": "trailing"}
    x_T = jnp.linspace(-4.0, 4.0, 2 * 16).reshape(2, 4, 4, 1)
    x0, traj = samplers.diffusers_sampler(cfg, 5)(network, x_T, return_trajectory=True)
    assert float(jnp.abs(traj.denoised).max()) == 1.0  # the trajectory reports the clipped x0
    unclipped = samplers.diffusers_sampler({**cfg, "clip_sample": False}, 5)(network, x_T)
    assert float(jnp.abs(x0 - unclipped).max()) > 0.1


def test_timestep_grids_follow_diffusers_formulas():
    def grid(cls, steps, **options):
        return samplers.diffusers_sampler({"_class_name": cls, **options}, steps).timesteps.tolist()

    # UniPC / DPM-Solver: linspace(0, N - 1, n + 1) rounded, reversed, the 0 dropped (np.round: 499.5 -> 500).
    assert grid(UNIPC, 10) == grid(DPM, 10) == [999, 899, 799, 699, 599, 500, 400, 300, 200, 100]
    # leading: (0..n) * (N // (n + 1)), reversed, the 0 dropped, + steps_offset; Stable Diffusion's setting.
    assert grid(UNIPC, 10, timestep_spacing="leading", **SD) == [901, 811, 721, 631, 541, 451, 361, 271, 181, 91]
    assert grid(DPM, 10, timestep_spacing="leading", **SD) == grid(UNIPC, 10, timestep_spacing="leading", **SD)
    # trailing: arange(N, 0, -N / n) rounded, - 1 (steps_offset unused).
    trailing = [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    assert grid(UNIPC, 10, timestep_spacing="trailing", **SD) == grid(DPM, 10, timestep_spacing="trailing") \
        == grid(DDIM, 10, timestep_spacing="trailing") == trailing
    assert grid(UNIPC, 4, timestep_spacing="trailing") == [999, 749, 499, 249]
    # DDIM spaces n points, not n + 1: leading (0..n-1) * (N // n) + steps_offset; linspace(0, N - 1, n).
    assert grid(DDIM, 10, **SD) == [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
    assert grid(DDIM, 10, timestep_spacing="linspace") == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    assert grid(DDIM, 4, timestep_spacing="leading", num_train_timesteps=100) == [75, 50, 25, 0]
    # steps_offset moves only the leading grid.
    assert grid(UNIPC, 10, steps_offset=1) == grid(UNIPC, 10)
    # Karras sigmas: rho = 7 between the table's ends, each mapped to the nearest timestep in log sigma, rounded.
    assert grid(UNIPC, 10, use_karras_sigmas=True) == [999, 937, 864, 775, 663, 511, 301, 102, 18, 0]


def test_the_config_diffusers_writes_equals_the_short_one():
    """A full scheduler_config.json (every key at its default, as save_pretrained writes it) loads silently."""
    full = {"_class_name": UNIPC, "_diffusers_version": "0.42.1", "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "beta_start": 0.00085, "disable_corrector": [], "dynamic_thresholding_ratio": 0.995,
            "final_sigmas_type": "zero", "flow_shift": 1.0, "lower_order_final": True, "num_train_timesteps": 1000,
            "predict_x0": True, "prediction_type": "epsilon", "rescale_betas_zero_snr": False,
            "sample_max_value": 1.0, "shift_terminal": None, "sigma_max": None, "sigma_min": None,
            "solver_order": 2, "solver_p": None, "solver_type": "bh2", "steps_offset": 1, "thresholding": False,
            "time_shift_type": "exponential", "timestep_spacing": "linspace", "trained_betas": None,
            "use_beta_sigmas": False, "use_dynamic_shifting": False, "use_exponential_sigmas": False,
            "use_flow_sigmas": False, "use_karras_sigmas": False}
    x_T = jnp.linspace(-1.0, 1.0, 32).reshape(2, 4, 4, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x_full = samplers.diffusers_sampler(full, 6)(network, x_T)
    np.testing.assert_array_equal(x_full, samplers.diffusers_sampler({"_class_name": UNIPC, **SD}, 6)(network, x_T))
    # Stable Diffusion 1.x ships a PNDMScheduler config: relabelled, its PNDM-only keys are ignored (with a warning,
    # as diffusers' from_config does); diffusers' own rewrites apply ("deis" runs DPM-Solver++).
    pndm = {**SD, "_class_name": UNIPC, "skip_prk_steps": True, "set_alpha_to_one": False, "clip_sample": False}
    with pytest.warns(UserWarning, match="takes no option clip_sample, set_alpha_to_one, skip_prk_steps"):
        np.testing.assert_array_equal(samplers.diffusers_sampler(pndm, 6)(network, x_T), x_full)
    deis = samplers.diffusers_sampler({"_class_name": DPM, "algorithm_type": "deis", "solver_type": "logrho"}, 6)
    np.testing.assert_array_equal(deis(network, x_T), samplers.diffusers_sampler({"_class_name": DPM}, 6)(network, x_T))


@pytest.mark.parametrize("config, steps, message", [
    ({"_class_name": UNIPC, "use_flow_sigmas": True}, 10, "use_flow_sigmas=True is not supported; only its diffusers "
                                                          "default False is"),
    ({"_class_name": DPM, "thresholding": True}, 10, "thresholding=True is not supported"),
    ({"_class_name": DDIM, "rescale_betas_zero_snr": True}, 10, "rescale_betas_zero_snr=True"),
    ({"_class_name": DPM, "variance_type": "learned_range"}, 10, "variance_type='learned_range'"),
    ({"_class_name": DPM, "use_lu_lambdas": True}, 10, "use_lu_lambdas=True"),
    ({"_class_name": UNIPC, "use_dynamic_shifting": True}, 10, "use_dynamic_shifting=True"),
    ({"_class_name": DPM, "algorithm_type": "sde-dpmsolver++"}, 10, "algorithm_type='sde-dpmsolver++' is not "
                                                                      "supported; accepted: the deterministic"),
    ({"_class_name": UNIPC, "prediction_type": "flow_prediction"}, 10, "accepted: 'epsilon', 'v_prediction', "
                                                                       "'sample'"),
    ({"_class_name": UNIPC, "timestep_spacing": "uniform"}, 10, "accepted: 'linspace', 'leading', 'trailing'"),
    ({"_class_name": DPM, "solver_type": "euler"}, 10, "accepted: 'midpoint', 'heun' ('logrho', 'bh1', 'bh2' run as"),
    ({"_class_name": UNIPC, "solver_order": 4}, 10, "solver_order=4 is not supported; accepted: an integer in [1, 3]"),
    ({"_class_name": DPM, "algorithm_type": "dpmsolver"}, 10, "final_sigmas_type='zero' is not supported; "
                                                              "algorithm_type='dpmsolver' needs 'sigma_min'"),
    ({"_class_name": UNIPC, "solver_type": "bh1"}, 10, "solver_type='bh1' needs 'sigma_min' (diffusers returns NaN)"),
    ({"_class_name": UNIPC, "predict_x0": False}, 10, "predict_x0=false needs 'sigma_min'"),
    ({"_class_name": UNIPC, "lower_order_final": False}, 10, "lower_order_final=false with solver_order > 1"),
    ({"_class_name": UNIPC, "use_karras_sigmas": True, "solver_order": 3, "lower_order_final": False,
      "final_sigmas_type": "sigma_min"}, 10, "order-3 update returns NaN"),
    ({"_class_name": "EulerDiscreteScheduler"}, 10, "unsupported diffusers scheduler _class_name "
                                                    "'EulerDiscreteScheduler'; accepted: 'UniPCMultistepScheduler', "
                                                    "'DPMSolverMultistepScheduler', 'DDIMScheduler'"),
    ({}, 10, "_class_name None"),
    ({"_class_name": UNIPC}, 0, "num_inference_steps must be an integer in [1, num_train_timesteps=1000], got 0"),
    ({"_class_name": DDIM}, 1001, "got 1001"),
    ({"_class_name": DPM}, 2.5, "got 2.5"),
    ({"_class_name": DPM}, True, "got True"),
    ({"_class_name": DDIM, "steps_offset": 200}, 10, "gives timesteps [1100, 1000] outside [0, 999]"),
    ({"_class_name": UNIPC, "timestep_spacing": "trailing"}, 61, "gives timesteps [-1] outside [0, 999]"),
    ({"_class_name": UNIPC}, 1000, "step 499 goes from timestep 500 to 500 without lowering the noise"),
])
def test_unsupported_configs_fail_in_one_line(config, steps, message):
    with pytest.raises(ValueError) as err:
        samplers.diffusers_sampler(config, steps)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unsupported_keys_at_their_default_and_inert_keys_load():
    quiet = {"_class_name": DPM, "thresholding": False, "use_flow_sigmas": False, "variance_type": None,
             "flow_shift": 3.0, "sample_max_value": 2.0, "dynamic_thresholding_ratio": 0.9}
    assert samplers.diffusers_sampler(quiet, 5).timesteps.tolist() == [999, 799, 599, 400, 200]


def conditional_network(x, t, cond):
    return network(x, t) + 0.05 * cond.reshape((-1,) + (1,) * (x.ndim - 1)) * x


def test_guidance_equals_the_combination_by_hand_and_runs_inside_jit():
    sample = samplers.diffusers_sampler({"_class_name": UNIPC, "prediction_type": "v_prediction", **SD}, 6)
    x_T = jnp.linspace(-1.0, 1.0, 2 * 16).reshape(2, 4, 4, 1)
    cond, null = jnp.array([1.0, 2.0]), jnp.zeros(2)

    def by_hand(scale_of_t):
        def net(x, t):
            u, c = conditional_network(x, t, null), conditional_network(x, t, cond)
            return u + scale_of_t(t).reshape((-1, 1, 1, 1)) * (c - u)
        return net

    guided = jax.jit(lambda x: sample(conditional_network, x, condition=cond, unconditional_condition=null,
                                      guidance_scale=3.0))(x_T)
    np.testing.assert_allclose(guided, sample(by_hand(lambda t: jnp.full(t.shape, 3.0)), x_T), rtol=0, atol=1e-6)
    # Scale 1 is the conditional network alone (and needs no unconditional_condition).
    np.testing.assert_array_equal(sample(conditional_network, x_T, condition=cond, guidance_scale=1.0),
                                  sample(lambda x, t: conditional_network(x, t, cond), x_T))
    # One traced scale per model call: call k guided with scales[k], located by its timestep.
    scales = samplers.guidance_schedule(4.0, len(sample.timesteps), guided_fraction=0.5, after="uncond")
    per_call = jax.jit(lambda x, s: sample(conditional_network, x, condition=cond, unconditional_condition=null,
                                           guidance_scale=s, return_trajectory=True))
    x0, traj = per_call(x_T, jnp.asarray(scales, jnp.float32))
    timesteps = jnp.asarray(sample.timesteps)
    hand = sample(by_hand(lambda t: jnp.asarray(scales, jnp.float32)[jnp.argmax(timesteps == t[0])]), x_T)
    np.testing.assert_allclose(x0, hand, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(traj.t, sample.timesteps)
    with pytest.raises(ValueError, match="guidance_scale has 3 values but this trajectory makes 6 model calls"):
        sample(conditional_network, x_T, condition=cond, unconditional_condition=null, guidance_scale=[2.0] * 3)


def test_network_gets_int32_timesteps_and_bfloat16_outputs_are_fine():
    seen = []

    def recording(x, t):
        seen.append(t.dtype)
        return network(x, t).astype(jnp.bfloat16)

    x_T = jnp.linspace(-1.0, 1.0, 32).reshape(2, 4, 4, 1)
    x0 = samplers.diffusers_sampler({"_class_name": DPM}, 4)(recording, x_T)
    assert seen == [jnp.int32] and x0.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(x0)))


def test_docs_example_runs():
    page = (Path(__file__).resolve().parents[1] / "docs" / "samplers.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", page, flags=re.S | re.M)
    example = next(b for b in blocks if "diffusers_sampler(" in b)
    namespace: dict = {}
    exec(compile(example, "docs/samplers.md", "exec"), namespace)
    x0 = namespace["x0"]
    assert x0.shape == (2, 8, 8, 4) and bool(jnp.all(jnp.isfinite(x0)))
