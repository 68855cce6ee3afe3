"""Convergence order on the analytic Gaussian-mixture ODE against a converged reference.

UniPC-p is of order p + 1 (its corrector adds one order), DDIM of order 1. We use the smooth linear
VP schedule, a logSNR grid and ``lower_order_final=False`` (the lowered final steps would cap the
asymptotic order at 2 by design), and measure the slope of log2(error) as the steps double.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from edt_jax import samplers
from edt_jax.diffusion import GaussianMixture, NoiseScheduleVP

STEPS = (80, 160, 320)
KW = dict(skip_type="logSNR", t_end=1e-2)


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(1)
    gmm = GaussianMixture(rng.standard_normal((3, 16)), np.array([0.3, 0.5, 0.8]), np.array([0.3, 0.3, 0.4]))
    ns = NoiseScheduleVP.linear()
    with jax.enable_x64(True):
        model_fn = samplers.model_wrapper(gmm.model(ns), ns)
        x_T = jax.random.normal(jax.random.key(0), (64, 16), jnp.float64)
        reference = samplers.unipc(model_fn, x_T, ns, steps=3000, order=3, lower_order_final=False, **KW)
    return ns, model_fn, x_T, reference


def _slopes(problem, sample) -> np.ndarray:
    ns, model_fn, x_T, reference = problem
    with jax.enable_x64(True):
        errs = np.array([float(jnp.sqrt(jnp.mean((sample(model_fn, x_T, ns, n) - reference) ** 2))) for n in STEPS])
    return np.log2(errs[:-1] / errs[1:])


def test_ddim_is_first_order(problem):
    slopes = _slopes(problem, lambda f, x, ns, n: samplers.ddim(f, x, ns, steps=n, **KW))
    assert np.all(np.abs(slopes - 1.0) < 0.1), slopes  # observed 0.9999, 0.9995


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_unipc_order_p_converges_at_p_plus_1(problem, order, variant):
    slopes = _slopes(problem, lambda f, x, ns, n: samplers.unipc(
        f, x, ns, steps=n, order=order, variant=variant, lower_order_final=False, **KW))
    # Observed (80->160, 160->320): p=1 1.93-1.98; p=2 2.91-3.01; p=3 4.53, 4.02 (pre-asymptotic first).
    assert abs(slopes[-1] - (order + 1)) < 0.25, slopes
