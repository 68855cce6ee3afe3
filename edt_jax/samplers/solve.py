"""One entry point to the library's ODE samplers by name, and the prediction-to-``model_type`` names.

    x0 = samplers.solve("unipc", model_fn, x_T, ns, steps=10, order=2)
    x0 = samplers.solve("ddim", model_fn, x_tau, ns, steps=5, order=1, t_start=0.3)   # start mid-way
"""

from __future__ import annotations

import jax

from edt_jax.checks import check_choice
from edt_jax.diffusion import NoiseScheduleVP
from edt_jax.samplers.dpm_solver import ddim, dpm_solver
from edt_jax.samplers.unipc import unipc

# What a network trained with the loss's ``prediction`` returns, in ``model_wrapper``'s names.
MODEL_TYPE_OF_PREDICTION = {"eps": "noise", "x0": "x_start", "v": "v"}
ODE_SAMPLERS = ("unipc", "dpm_solver", "ddim")


def solve(sampler: str, model_fn, x: jax.Array, ns: NoiseScheduleVP, *, steps: int, order: int,
          variant: str | None = None, skip_type: str | None = None, algorithm: str | None = None,
          t_start: float | None = None, return_trajectory: bool = False):
    """Run the ODE solver ``sampler`` (one of ``ODE_SAMPLERS``) on ``model_fn`` (x, t -> eps) from ``x`` (B, ...)
    at ``t_start`` (default T) down to the end of ``ns``. ``variant``, ``skip_type`` and ``algorithm`` default to
    the samplers' own defaults when None. With ``return_trajectory``, ``(sample, samplers.Trajectory)``."""
    check_choice("sampler", sampler, ODE_SAMPLERS)
    kwargs = {"skip_type": skip_type} if skip_type else {}
    if t_start is not None:
        kwargs["t_start"] = t_start
    kwargs["return_trajectory"] = return_trajectory
    if sampler == "unipc":
        return unipc(model_fn, x, ns, steps=steps, order=order, variant=variant or "bh1", **kwargs)
    if sampler == "dpm_solver":
        return dpm_solver(model_fn, x, ns, steps=steps, order=order, algorithm=algorithm or "dpmsolver++", **kwargs)
    return ddim(model_fn, x, ns, steps=steps, **kwargs)
