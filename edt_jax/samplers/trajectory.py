"""What a sampler saw on its way: the ``Trajectory`` of model calls, and the times at which it calls the model.

Every sampler takes ``return_trajectory=True`` and then returns ``(sample, Trajectory)``. The trajectory is
stacked from the outputs of the sampler's one ``lax.scan`` (no host callbacks), so it works under the caller's
``jax.jit`` and ``vmap``; without the flag the scan emits nothing and nothing is stored.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from edt_jax.diffusion.ddpm import space_timesteps
from edt_jax.diffusion.schedules import NoiseScheduleVP
from edt_jax.samplers import validation


class Trajectory(NamedTuple):
    """The S model calls of one sampling run, in call order (S = steps, + 1 with ``denoise_to_zero``).

    t:        (S,) continuous time of call k (``call_times``); for ``ddpm``, (n + 1) / N of the timestep n; for
              ``diffusers_sampler``, diffusers' integer timestep n itself.
    x:        (S, B, ...) the state the model saw at call k (``x[0]`` is x_T), in the sampler's state dtype.
    denoised: (S, B, ...) the data prediction at call k, (x - sigma_t eps) / alpha_t (after the sampler's
              thresholding or clipping, when it uses one), in the state dtype.
    """

    t: jax.Array
    x: jax.Array
    denoised: jax.Array


def stack_calls(scanned: Trajectory, extra: Trajectory | None = None) -> Trajectory:
    """The scan's per-call outputs, with one more call (the ``denoise_to_zero`` one, unstacked) appended."""
    if extra is None:
        return scanned
    return Trajectory(*(jnp.concatenate([s, e[None].astype(s.dtype)]) for s, e in zip(scanned, extra, strict=True)))


def call_times(ns: NoiseScheduleVP, steps: int, skip_type: str = "time_uniform", t_start: float | None = None,
               t_end: float | None = None, denoise_to_zero: bool = False) -> np.ndarray:
    """(S,) float64 continuous time of each model call of ``unipc`` / ``dpm_solver`` / ``ddim`` with these settings.

    The samplers visit the grid t_0 > t_1 > ... > t_steps (``ns.time_grid``) and call the model at every grid point
    but the last: call k is at t_k. ``denoise_to_zero`` adds one call at t_end (S = steps + 1). Use it to place
    guidance by time (``guidance_interval``) or to read a ``Trajectory`` against time.
    """
    grid = validation.check_trajectory(ns, steps, 1, 1, skip_type, t_start, t_end)
    times = grid.t[:-1]
    return np.append(times, grid.t[-1]) if denoise_to_zero else times


def call_timesteps(ns: NoiseScheduleVP, steps: int, skip_type: str = "time_uniform", *, sampler: str = "unipc",
                   t_start: float | None = None, t_end: float | None = None) -> np.ndarray:
    """(steps,) float64 network time (the training timestep ``t_input``) of each model call of ``sampler``.

    The ODE samplers call the network at ``ns.model_time(call_times(...))``; the ancestral ``ddpm`` at the
    respaced training timesteps (ADM's ``space_timesteps``), newest first. Guidance intervals and label switches
    given in training timesteps are placed with it.
    """
    if sampler == "ddpm":
        if t_start is not None or t_end is not None:
            raise ValueError("call_timesteps of ddpm covers the full chain; t_start / t_end apply to the ODE samplers")
        return np.asarray(sorted(space_timesteps(ns.total_N, str(steps)), reverse=True), np.float64)
    return np.asarray(ns.model_time(call_times(ns, steps, skip_type, t_start, t_end)), np.float64)
