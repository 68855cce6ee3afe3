"""Bad input raises a one-line ValueError naming the value and what is accepted, before any tracing."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from edt_jax import samplers
from edt_jax.diffusion import NoiseScheduleVP

NS = NoiseScheduleVP.discrete(betas=np.linspace(1e-4, 0.02, 1000))
X = jnp.zeros((2, 4))


def _never_called(x, t):
    raise AssertionError("the model must not be traced when the arguments are invalid")


SAMPLER_CASES = [
    (samplers.unipc, dict(variant="bh3"), r"unknown variant 'bh3'; expected one of 'bh1', 'bh2'"),
    (samplers.unipc, dict(solver_space="x0"), r"unknown solver_space 'x0'; expected one of 'data', 'noise'"),
    (samplers.unipc, dict(skip_type="karras"), r"unknown skip_type 'karras'; expected one of 'time_uniform'"),
    (samplers.unipc, dict(steps=0), r"steps must be an integer >= 1, got 0"),
    (samplers.unipc, dict(steps=2.5), r"steps must be an integer >= 1, got 2.5"),
    (samplers.unipc, dict(order=4), r"order must be an integer in \[1, 3\], got 4"),
    (samplers.unipc, dict(order=0), r"order must be an integer in \[1, 3\], got 0"),
    (samplers.unipc, dict(steps=2, order=3), r"order 3 needs at least 3 steps, got steps=2"),
    (samplers.unipc, dict(t_start=0.3, t_end=0.5), r"t_end must be in \(0, t_start=0.3\), got t_end=0.5"),
    (samplers.unipc, dict(t_start=0.3, t_end=0.3), r"t_end must be in \(0, t_start=0.3\), got t_end=0.3"),
    (samplers.unipc, dict(t_start=1.5), r"t_start must be in \(0, 1.0\] for this schedule, got 1.5"),
    (samplers.unipc, dict(thresholding=(1.5, 1.0)), r"needs 0 < ratio <= 1 and max_val > 0, got \(1.5, 1.0\)"),
    (samplers.unipc, dict(thresholding="yes"), r"thresholding must be None or \(ratio, max_val\), got 'yes'"),
    (samplers.dpm_solver, dict(algorithm="dpmsolver+"), r"unknown algorithm 'dpmsolver\+'; expected one of"),
    (samplers.dpm_solver, dict(order=5), r"order must be an integer in \[1, 3\], got 5"),
    (samplers.dpm_solver, dict(corrector="unic"), r"unknown corrector 'unic'; expected one of 'unic_bh1'"),
    (samplers.ddim, dict(steps=-3), r"steps must be an integer >= 1, got -3"),
]


@pytest.mark.parametrize("sampler,kwargs,message", SAMPLER_CASES,
                         ids=[f"{s.__name__}-{'-'.join(k)}" for s, k, _ in SAMPLER_CASES])
def test_bad_sampler_arguments(sampler, kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        sampler(_never_called, X, NS, **kwargs)
    assert "\n" not in str(info.value)


def test_bad_x_T_dtype():
    with pytest.raises(ValueError, match="x_T must be a floating-point array, got dtype int32"):
        samplers.unipc(_never_called, jnp.zeros((2, 4), jnp.int32), NS, steps=3)


def test_bad_wrapper_arguments():
    with pytest.raises(ValueError, match=r"unknown prediction 'noise_pred'; expected one of 'eps', 'x0', 'v', 'score'"):
        samplers.model_wrapper(_never_called, NS, prediction="noise_pred")
    with pytest.raises(ValueError, match=r"unknown guidance_type 'classifier'; expected one of 'uncond'"):
        samplers.model_wrapper(_never_called, NS, guidance_type="classifier")
    with pytest.raises(ValueError, match="guidance_type 'classifier-free' needs condition"):
        samplers.model_wrapper(_never_called, NS, guidance_type="classifier-free")
    with pytest.raises(ValueError, match=r"1-D array of one scale per model call, got shape \(2, 2\)"):
        samplers.model_wrapper(_never_called, NS, guidance_type="classifier-free", condition=jnp.zeros(2),
                               unconditional_condition=jnp.zeros(2), guidance_scale=np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"guided_fraction must be in \[0, 1\], got 1.5"):
        samplers.guidance_schedule(3.0, 10, guided_fraction=1.5)


@pytest.mark.parametrize("denoise_to_zero,length,calls", [(False, 5, 6), (True, 6, 7), (False, 7, 6)])
def test_guidance_array_of_wrong_length(denoise_to_zero, length, calls):
    model_fn = samplers.model_wrapper(_never_called, NS, guidance_type="classifier-free", condition=jnp.zeros(2),
                                      unconditional_condition=jnp.zeros(2), guidance_scale=[2.0] * length)
    with pytest.raises(ValueError, match=f"guidance_scale has {length} values but this trajectory makes {calls} "
                                         f"model calls"):
        samplers.unipc(model_fn, X, NS, steps=6, denoise_to_zero=denoise_to_zero)


def test_model_output_of_wrong_shape_is_named():
    with pytest.raises(ValueError, match=r"model_fn returned shape \(2, 8\) for x of shape \(2, 4\)"):
        samplers.unipc(lambda x, t: jnp.concatenate([x, x], -1), X, NS, steps=3)
