"""The Python-loop sampler twins against the official UniPC / DPM-Solver outputs and known identities."""

from __future__ import annotations

import numpy as np
import pytest
from fixture_cases import (
    case_ids,
    fixture_cases,
    gmm_from_fixture,
    load_sampler_fixture,
    numpy_eps_model,
    schedule_from_spec,
)
from loop_twin import CountingModel, dpm_solver_loop, unipc_loop

from edt_jax.diffusion import GaussianMixture, NoiseScheduleVP

TOL = 1e-6


@pytest.fixture(scope="module")
def fixture() -> dict:
    return load_sampler_fixture()


def _run_case(case: dict, data: dict, model_fn) -> np.ndarray:
    ns = schedule_from_spec(case["schedule"])
    thresholding = case.get("thresholding")
    if isinstance(thresholding, dict):
        thresholding = (thresholding["ratio"], thresholding["max_val"])
    common = {"steps": case["steps"], "order": case["order"], "skip_type": case["skip_type"],
              "t_start": case.get("t_start"), "t_end": case.get("t_end"),
              "lower_order_final": case.get("lower_order_final", True),
              "denoise_to_zero": case.get("denoise_to_zero", False), "thresholding": thresholding}
    if case["sampler"] == "unipc":
        prediction = {"data_prediction": "data", "noise_prediction": "noise"}[case["algorithm_type"]]
        return unipc_loop(model_fn, data["x_T"], ns, variant=case["variant"], solver_space=prediction, **common)
    if case["sampler"] == "dpm_solver":
        return dpm_solver_loop(model_fn, data["x_T"], ns, algorithm=case["algorithm_type"], **common)
    raise ValueError(f"unknown sampler {case['sampler']!r}")


@pytest.mark.parametrize("case", fixture_cases(), ids=case_ids)
def test_matches_official_fixture(case: dict, fixture: dict) -> None:
    ns = schedule_from_spec(case["schedule"])
    eps = numpy_eps_model(gmm_from_fixture(fixture), ns, case["model_type"], case.get("guidance"), fixture["cond"])
    model = CountingModel(eps)
    out = _run_case(case, fixture, model)
    expected = fixture[f"x_final/{case['name']}"]
    assert out.shape == expected.shape
    err = float(np.max(np.abs(out - expected)))
    print(f"{case['name']}: max abs error {err:.3e}")
    assert err <= TOL, f"{case['name']}: max abs error {err:.3e} > {TOL:g}"
    assert model.calls == case["steps"] + int(case.get("denoise_to_zero", False))


@pytest.fixture(scope="module")
def gmm_setup():
    """A self-made mixture (no fixture file needed) for the identity and call-count tests."""
    rng = np.random.default_rng(0)
    gmm = GaussianMixture(rng.standard_normal((3, 16)), np.array([0.3, 0.5, 0.7]), np.array([0.2, 0.3, 0.5]))
    ns = NoiseScheduleVP.discrete(betas=np.linspace(1e-4, 0.02, 1000))
    x_t = rng.standard_normal((5, 4, 2, 2))
    return ns, numpy_eps_model(gmm, ns, "noise", None, np.zeros(5, np.int64)), x_t


def test_unipc_order1_is_ddim_plus_unic1(gmm_setup) -> None:
    ns, eps, x_t = gmm_setup
    a = unipc_loop(eps, x_t, ns, steps=7, order=1, variant="bh1")
    b = dpm_solver_loop(eps, x_t, ns, steps=7, order=1, algorithm="dpmsolver++", corrector="unic_bh1")
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    # Noise-prediction forms agree too.
    a = unipc_loop(eps, x_t, ns, steps=7, order=1, variant="bh1", solver_space="noise")
    b = dpm_solver_loop(eps, x_t, ns, steps=7, order=1, algorithm="dpmsolver", corrector="unic_bh1")
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_unipc_bh2_order2_is_dpmpp_2m_plus_unic(gmm_setup) -> None:
    ns, eps, x_t = gmm_setup
    a = unipc_loop(eps, x_t, ns, steps=8, order=2, variant="bh2")
    b = dpm_solver_loop(eps, x_t, ns, steps=8, order=2, algorithm="dpmsolver++", corrector="unic_bh2")
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    # The corrector changes the result, so the identity is not vacuous.
    c = dpm_solver_loop(eps, x_t, ns, steps=8, order=2, algorithm="dpmsolver++")
    assert np.max(np.abs(a - c)) > 1e-6


def test_unipc_order1_without_corrector_is_ddim(gmm_setup) -> None:
    """UniC at the last step is skipped, so a 1-step UniPC-1 is exactly one DDIM step."""
    ns, eps, x_t = gmm_setup
    a = unipc_loop(eps, x_t, ns, steps=1, order=1)
    b = dpm_solver_loop(eps, x_t, ns, steps=1, order=1)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("denoise_to_zero", [False, True])
@pytest.mark.parametrize("sampler,order,corrector", [
    ("unipc", 1, None), ("unipc", 2, None), ("unipc", 3, None),
    ("dpm", 1, None), ("dpm", 2, None), ("dpm", 3, None), ("dpm", 3, "unic_bh1"), ("dpm", 2, "unic_bh2"),
])
def test_model_call_count(gmm_setup, sampler: str, order: int, corrector: str | None, denoise_to_zero: bool) -> None:
    ns, eps, x_t = gmm_setup
    steps = 6
    model = CountingModel(eps)
    if sampler == "unipc":
        out = unipc_loop(model, x_t, ns, steps=steps, order=order, denoise_to_zero=denoise_to_zero)
    else:
        out = dpm_solver_loop(model, x_t, ns, steps=steps, order=order, corrector=corrector,
                              denoise_to_zero=denoise_to_zero)
    assert np.all(np.isfinite(out))
    assert model.calls == steps + int(denoise_to_zero)


def test_thresholding_bounds_denoised_output(gmm_setup) -> None:
    ns, eps, x_t = gmm_setup
    out = unipc_loop(eps, x_t, ns, steps=5, order=2, denoise_to_zero=True, thresholding=(0.995, 1.0))
    assert np.max(np.abs(out)) <= 1.0 + 1e-12
