"""One entry point to every sampler of the library, from the network itself.

    x0 = samplers.sample("unipc", network, x_T, ns, steps=20, prediction="v", learned_sigma=True,
                         condition=labels, unconditional_condition=null_labels, guidance_scale=3.0)
    x0 = samplers.sample("ddpm", network, x_T, ns, steps=250, key=key)          # ancestral, ADM's variance
    x0 = samplers.sample("ddim", denoiser, x_tau, ns, steps=5, prediction="x0", t_start=0.3)   # start mid-way

``network(x, t_input[, cond])`` is called in its own convention: ``t_input`` the training timestep
(``ns.model_time``), the output what it was trained to predict (``prediction``), with 2C channels when it
learns its variance (``learned_sigma``). The ODE samplers (``unipc``, ``dpm_solver``, ``ddim``) see it through
``model_wrapper``; the ancestral ``ddpm`` through ``guided_network`` (it reads the raw output, variance
included). Classifier-free guidance (a number, a traced scalar or one scale per model call) works for all four.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

from edt_jax.checks import check_choice
from edt_jax.deprecation import warn_deprecated
from edt_jax.diffusion.ddpm import as_schedule
from edt_jax.diffusion.predictions import PREDICTIONS, SAMPLER_PREDICTIONS, check_prediction
from edt_jax.samplers.ddpm import ddpm
from edt_jax.samplers.dpm_solver import ddim, dpm_solver
from edt_jax.samplers.unipc import unipc
from edt_jax.samplers.wrappers import guided_network, model_wrapper

ODE_SAMPLERS = ("unipc", "dpm_solver", "ddim")
SAMPLERS = (*ODE_SAMPLERS, "ddpm")


def sample(sampler: str, network: Callable, x_T: jax.Array, schedule, *, steps: int, prediction: str = "eps",
           learned_sigma: bool = False, condition=None, unconditional_condition=None, guidance_scale=1.0,
           key: jax.Array | None = None, order: int = 2, variant: str = "bh1", algorithm: str = "dpmsolver++",
           skip_type: str = "time_uniform", t_start: float | None = None, variance: str | None = None,
           return_trajectory: bool = False):
    """Run ``sampler`` (one of ``SAMPLERS``) with ``network`` from ``x_T`` (B, ...) to a sample (B, ...).

    Args:
      sampler: "unipc" | "dpm_solver" | "ddim" (probability-flow ODE solvers) | "ddpm" (ancestral, ADM).
      network: ``network(x, t_input)`` or, with a ``condition``, ``network(x, t_input, cond)``.
      x_T: the state at ``t_start`` (default T): standard normal noise, or a noised estimate to start mid-way.
      schedule: a ``NoiseScheduleVP`` (``ddpm`` needs a discrete one) or a ``DiscreteDiffusion``.
      steps: model evaluations (network passes of the conditional batch).
      prediction: what the network predicts: "eps" | "x0" | "v" (| "score" for the ODE solvers).
      learned_sigma: the network returns 2C channels (prediction, then ADM's variance interpolation).
      condition, unconditional_condition, guidance_scale: classifier-free guidance as ``model_wrapper``'s
        (no ``condition``: an unconditional network).
      key: ``ddpm``'s noise (required there, unused by the ODE solvers).
      order, variant, algorithm, skip_type: the ODE solvers' options (``unipc``: order and variant;
        ``dpm_solver``: order and algorithm; the time grid of all three).
      t_start: start at this continuous time (a fraction of T) instead of T; ``ddpm`` starts at timestep
        round(t_start N) - 1.
      variance: ``ddpm``'s variance: "learned_range" (default with ``learned_sigma``) | "fixed_small" (default
        otherwise) | "fixed_large".
      return_trajectory: also return the ``Trajectory`` of the model calls.
    """
    check_choice("sampler", sampler, SAMPLERS)
    ns = as_schedule(schedule)
    if sampler == "ddpm":
        prediction = check_prediction(prediction, PREDICTIONS)
        if variance is None:
            variance = "learned_range" if learned_sigma else "fixed_small"
        if learned_sigma and variance != "learned_range":  # a fixed variance reads the prediction channels only
            network = _prediction_channels(network)
        net = guided_network(network, condition=condition, unconditional_condition=unconditional_condition,
                             guidance_scale=guidance_scale)
        return ddpm(net, x_T, ns, key=key, steps=steps, variance=variance, prediction=prediction, t_start=t_start,
                    return_trajectory=return_trajectory)
    prediction = check_prediction(prediction, SAMPLER_PREDICTIONS)
    model_fn = model_wrapper(network, ns, prediction, "uncond" if condition is None else "classifier-free",
                             condition=condition, unconditional_condition=unconditional_condition,
                             guidance_scale=guidance_scale, learned_sigma=learned_sigma)
    return solve_ode(sampler, model_fn, x_T, ns, steps=steps, order=order, variant=variant, skip_type=skip_type,
                     algorithm=algorithm, t_start=t_start, return_trajectory=return_trajectory)


def solve_ode(sampler: str, model_fn, x: jax.Array, ns, *, steps: int, order: int = 2, variant: str = "bh1",
              skip_type: str = "time_uniform", algorithm: str = "dpmsolver++", t_start: float | None = None,
              return_trajectory: bool = False):
    """Run the ODE solver ``sampler`` (one of ``ODE_SAMPLERS``) on a wrapped ``model_fn(x, t) -> eps``."""
    check_choice("sampler", sampler, ODE_SAMPLERS)
    kwargs = dict(skip_type=skip_type, t_start=t_start, return_trajectory=return_trajectory)
    if sampler == "unipc":
        return unipc(model_fn, x, ns, steps=steps, order=order, variant=variant, **kwargs)
    if sampler == "dpm_solver":
        return dpm_solver(model_fn, x, ns, steps=steps, order=order, algorithm=algorithm, **kwargs)
    return ddim(model_fn, x, ns, steps=steps, **kwargs)


def solve(sampler: str, model_fn, x: jax.Array, ns, *, steps: int, order: int, variant: str | None = None,
          skip_type: str | None = None, algorithm: str | None = None, t_start: float | None = None,
          return_trajectory: bool = False):
    """Deprecated: ``samplers.sample`` (from the network) or ``samplers.dispatch.solve_ode`` (a wrapped model_fn)."""
    warn_deprecated("samplers.solve", "samplers.sample (or samplers.dispatch.solve_ode for a wrapped model_fn)")
    return solve_ode(sampler, model_fn, x, ns, steps=steps, order=order, variant=variant or "bh1",
                     skip_type=skip_type or "time_uniform", algorithm=algorithm or "dpmsolver++", t_start=t_start,
                     return_trajectory=return_trajectory)


def _prediction_channels(network: Callable) -> Callable:
    """The first half of a learned-sigma network's channels, for a ddpm run with a fixed variance."""

    def net(x, t_input, *cond):
        return network(x, t_input, *cond)[..., : x.shape[-1]]

    return net
