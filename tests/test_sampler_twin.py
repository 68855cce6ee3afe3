"""The lax.scan samplers equal the plain Python-loop twins, and call the model exactly `steps` times."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from loop_twin import CountingModel, dpm_solver_loop, unipc_loop

from edt_jax import samplers
from edt_jax.diffusion import GaussianMixture, NoiseScheduleVP

SCHEDULES = {
    "discrete": lambda: NoiseScheduleVP.discrete(betas=np.linspace(1e-4, 0.02, 1000)),
    "linear": lambda: NoiseScheduleVP.linear(),
    "cosine": lambda: NoiseScheduleVP.cosine(),
}


def _setup(schedule: str):
    rng = np.random.default_rng(0)
    gmm = GaussianMixture(rng.standard_normal((3, 12)), np.array([0.3, 0.5, 0.7]), np.array([0.2, 0.3, 0.5]))
    ns = SCHEDULES[schedule]()
    x_T = rng.standard_normal((5, 2, 2, 3))
    model_fn = samplers.model_wrapper(gmm.model(ns), ns)

    def numpy_model(x, t_vec):
        with jax.enable_x64(True):
            return np.asarray(model_fn(jnp.asarray(x), jnp.asarray(t_vec)))

    return ns, model_fn, numpy_model, x_T


UNIPC_CASES = [
    dict(schedule="discrete", steps=7, order=3, variant="bh2", solver_space="data", skip_type="time_quadratic"),
    dict(schedule="discrete", steps=6, order=3, variant="bh1", solver_space="noise", skip_type="logSNR"),
    dict(schedule="linear", steps=5, order=2, variant="bh1", solver_space="data", lower_order_final=False,
         t_end=1e-3, denoise_to_zero=True),
    dict(schedule="cosine", steps=4, order=1, variant="bh2", solver_space="noise", skip_type="time_uniform"),
    dict(schedule="discrete", steps=9, order=2, variant="bh2", solver_space="data", thresholding=(0.9, 1.2),
         denoise_to_zero=True),
    dict(schedule="discrete", steps=5, order=3, variant="bh1", solver_space="data", t_start=0.6, t_end=0.01),
    dict(schedule="linear", steps=3, order=3, variant="bh1", solver_space="data", skip_type="logSNR", t_end=1e-3),
]

DPM_CASES = [
    dict(schedule="discrete", steps=8, order=3, algorithm="dpmsolver++", skip_type="logSNR"),
    dict(schedule="discrete", steps=12, order=3, algorithm="dpmsolver", skip_type="time_uniform"),
    dict(schedule="linear", steps=6, order=2, algorithm="dpmsolver", t_end=1e-3, denoise_to_zero=True,
         thresholding=(0.95, 1.0)),
    dict(schedule="cosine", steps=7, order=3, algorithm="dpmsolver++", corrector="unic_bh2"),
    dict(schedule="discrete", steps=11, order=2, algorithm="dpmsolver", corrector="unic_bh1",
         skip_type="time_quadratic"),
    dict(schedule="discrete", steps=6, order=2, algorithm="dpmsolver++", thresholding=(0.8, 1.0),
         lower_order_final=False, t_start=0.7),
]


def _counting_jax_model(model_fn):
    """Counts calls at run time (jax.debug.callback), so a call inside the scan counts once per step."""
    calls = []

    def counted(x, t):
        jax.debug.callback(lambda: calls.append(1))
        return model_fn(x, t)

    return counted, calls


def _assert_scan_equals_loop(case: dict, loop, sampler) -> None:
    """The scan sampler equals the loop twin (float64) and both call the model `steps` (+1) times."""
    case = dict(case)
    ns, model_fn, numpy_model, x_T = _setup(case.pop("schedule"))
    twin_model = CountingModel(numpy_model)
    expected = loop(twin_model, x_T, ns, **case)
    with jax.enable_x64(True):
        counted, calls = _counting_jax_model(model_fn)
        out = np.asarray(jax.jit(lambda x: sampler(counted, x, ns, **case))(jnp.asarray(x_T)))
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-10)
    assert len(calls) == twin_model.calls == case["steps"] + int(case.get("denoise_to_zero", False))


@pytest.mark.parametrize("case", UNIPC_CASES, ids=lambda c: f"{c['schedule']}-o{c['order']}-{c['variant']}")
def test_unipc_scan_equals_loop(case):
    _assert_scan_equals_loop(case, unipc_loop, samplers.unipc)


@pytest.mark.parametrize("case", DPM_CASES, ids=lambda c: f"{c['schedule']}-o{c['order']}-{c['algorithm']}")
def test_dpm_solver_scan_equals_loop(case):
    _assert_scan_equals_loop(case, dpm_solver_loop, samplers.dpm_solver)


def test_ddim_is_first_order_dpm_solver_and_unipc1_is_ddim_plus_unic():
    ns, model_fn, numpy_model, x_T = _setup("discrete")
    with jax.enable_x64(True):
        x = jnp.asarray(x_T)
        ddim = samplers.ddim(model_fn, x, ns, steps=6)
        np.testing.assert_allclose(ddim, dpm_solver_loop(numpy_model, x_T, ns, steps=6, order=1), atol=1e-10)
        with_unic = samplers.ddim(model_fn, x, ns, steps=6, corrector="unic_bh1")
        np.testing.assert_allclose(with_unic, samplers.unipc(model_fn, x, ns, steps=6, order=1), atol=1e-12)
        assert float(jnp.abs(with_unic - ddim).max()) > 1e-4


def test_unipc_bh2_order2_is_dpmpp_2m_with_unic():
    """UniP-2 with B(h) = e^h - 1 is DPM-Solver++(2M); UniC is a reusable piece on top of it."""
    ns, model_fn, _, x_T = _setup("discrete")
    with jax.enable_x64(True):
        x = jnp.asarray(x_T)
        a = samplers.unipc(model_fn, x, ns, steps=8, order=2, variant="bh2")
        b = samplers.dpm_solver(model_fn, x, ns, steps=8, order=2, corrector="unic_bh2")
        np.testing.assert_allclose(a, b, atol=1e-12)
