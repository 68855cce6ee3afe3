"""Sample a diffusers-trained model exactly as its ``scheduler_config.json`` says, on this library's sampler core.

    sample = samplers.diffusers_sampler(json.load(open("scheduler/scheduler_config.json")), 20)
    x0 = jax.jit(lambda x: sample(network, x))(x_T)

diffusers' UniPC, DPM-Solver(++) and DDIM schedulers step over integer training timesteps with their own rules:
timestep spacings (``linspace`` [999, 899, ..., 100], ``leading`` with ``steps_offset``, ``trailing``), Karras
sigmas mapped back to rounded timesteps, a last step to sigma = 0 (``final_sigmas_type="zero"``, first order),
DPM-Solver's ``heun`` second order and ``euler_at_final``, DDIM's ``set_alpha_to_one`` and ``clip_sample`` (the
clipped x0 moved along the unclipped eps). These are not the continuous-time grids of ``samplers.unipc`` /
``dpm_solver`` / ``ddim``, so results differ from those even at equal settings. Here the host turns the config
into the float64 ``Plan`` of the shared step functions (``unip_step``, ``unic_step``, ``dpm_solver_step``,
``first_order_terms``) over diffusers' own alpha_t, sigma_t, and ``core.run_plan`` runs it as one ``lax.scan``.

The network is ``network(x, t)`` (``network(x, t, cond)`` with a condition): ``t`` (B,) int32 is the timestep
diffusers hands its model at that call, the output is what the config's ``prediction_type`` says. It is
converted to the noise prediction with diffusers' alpha_t, sigma_t of that call (for Karras sigmas those of the
Karras sigma, not of the rounded timestep).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from edt_jax.diffusion.predictions import to_eps
from edt_jax.samplers import validation
from edt_jax.samplers.core import STEP_KWARG_ATTR, run_plan
from edt_jax.samplers.diffusers_config import (
    DDIM,
    DPM,
    alphas_cumprod,
    ddim_timesteps,
    multistep_schedule,
    resolve_config,
)
from edt_jax.samplers.dpm_solver import dpm_solver_step
from edt_jax.samplers.plan import LinearStep, Plan, TimeGrid, build_plan, first_order_terms, warmup_orders
from edt_jax.samplers.unipc import unic_step, unip_step
from edt_jax.samplers.wrappers import guided_network

# diffusers' prediction_type -> this library's prediction (the official UniPC code says noise / v / x_start).
PREDICTION_OF_TYPE = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}


@dataclasses.dataclass(frozen=True)
class DiffusersRun:
    """What the host derives from a config and a step count; ``run_plan`` needs nothing else.

    config: the resolved options (every key of the class, diffusers' defaults filled in).
    timesteps: (S,) int64 timestep of each model call, as ``scheduler.timesteps``.
    alphas, sigmas: (S,) float64 alpha_t, sigma_t diffusers converts call k's output with.
    """

    config: dict[str, Any]
    plan: Plan
    timesteps: np.ndarray
    alphas: np.ndarray
    sigmas: np.ndarray
    prediction: str
    clip_range: float | None  # DDIM's clip_sample range, None without clipping


def diffusers_run(config: Mapping[str, Any], num_inference_steps: int) -> DiffusersRun:
    """The host half of ``diffusers_sampler``: check the config and build the plan of its trajectory."""
    cfg = resolve_config(config)
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)) \
            or not 1 <= num_inference_steps <= cfg["num_train_timesteps"]:
        raise ValueError(f"num_inference_steps must be an integer in [1, num_train_timesteps="
                         f"{cfg['num_train_timesteps']}], got {num_inference_steps!r}")
    steps = int(num_inference_steps)
    if cfg["_class_name"] == DDIM:
        return _ddim_run(cfg, steps)
    return _multistep_run(cfg, steps)


def _identity_step(size: int) -> LinearStep:
    """A step of zero length (lambda_t = lambda_s): every solver formula reduces to x_t = x_s."""
    return LinearStep(x_coef=1.0, hist_coef=np.zeros(size))


def _multistep_run(cfg: dict[str, Any], steps: int) -> DiffusersRun:
    timesteps, sig = multistep_schedule(cfg, steps)
    # diffusers' _sigma_to_alpha_sigma_t of its float32 sigma = sqrt((1 - a) / a), in float64 here.
    sig = sig.astype(np.float64)
    alpha = 1.0 / np.sqrt(sig ** 2 + 1.0)
    # The end point's "timestep": -1 past the clean end (sigma = 0), 0 at the table's smallest sigma.
    grid = TimeGrid.from_alpha_sigma(np.append(timesteps, -1 if sig[-1] == 0 else 0), alpha, sig * alpha)
    num = len(timesteps)
    _check_grid(cfg, grid)
    order = cfg["solver_order"]
    if cfg["_class_name"] == DPM:
        space = "data" if cfg["algorithm_type"] == "dpmsolver++" else "noise"
        # DPM-Solver lowers the last two orders only below 15 steps, and steps to sigma = 0 (or with
        # euler_at_final) at first order; UniPC lowers them always (min(order, steps left)).
        orders = warmup_orders(num, order, cfg["lower_order_final"] and num < 15)
        if cfg["euler_at_final"] or cfg["final_sigmas_type"] == "zero":
            orders[-1] = 1

        def predictor(j: int, o: int) -> LinearStep:
            return dpm_solver_step(grid, j, o, space, order, solver_type=cfg["solver_type"])

        correctors = [None] * (num - 1)
    else:
        space = "data" if cfg["predict_x0"] else "noise"
        orders = warmup_orders(num, order, cfg["lower_order_final"])
        variant = cfg["solver_type"]

        def predictor(j: int, o: int) -> LinearStep:
            return unip_step(grid, j, o, space, variant, order)

        # The corrector of step j runs at call j and is off when diffusers' step index j - 1 is listed.
        correctors = [None if j - 1 in cfg["disable_corrector"] else
                      unic_step(grid, j, int(orders[j - 1]), space, variant, order) for j in range(1, num)]
    if grid.lam[-1] == grid.lam[-2] and orders[-1] >= 3:
        raise ValueError(f"{cfg['_class_name']}: with use_karras_sigmas and final_sigmas_type='sigma_min' the last "
                         f"step has zero length, where diffusers' order-3 update returns NaN; set "
                         f"lower_order_final=true or solver_order <= 2")
    predictors = [_identity_step(order) if grid.lam[j] == grid.lam[j - 1] else predictor(j, int(orders[j - 1]))
                  for j in range(1, num + 1)]
    plan = build_plan(grid, predictors, correctors, space, order)
    return DiffusersRun(cfg, plan, timesteps, grid.alpha[:-1], grid.sigma[:-1],
                        PREDICTION_OF_TYPE[cfg["prediction_type"]], None)


def _check_grid(cfg: Mapping[str, Any], grid: TimeGrid) -> None:
    """Every step but the last must raise lambda; the last may also keep it (Karras with sigma_min ends there)."""
    h = np.diff(grid.lam)
    bad = np.flatnonzero(np.append(h[:-1] <= 0, h[-1] < 0))
    if bad.size:
        k = int(bad[0])
        raise ValueError(f"{cfg['_class_name']}: step {k} goes from timestep {int(grid.t[k])} to "
                         f"{int(grid.t[k + 1])} without lowering the noise (repeated timesteps); use fewer "
                         f"inference steps")


def _ddim_run(cfg: dict[str, Any], steps: int) -> DiffusersRun:
    """DDIM (eta = 0) as diffusers steps it: from the call's timestep t to t - N // steps, whatever the spacing
    (for ``linspace`` and ``trailing`` that is not always the next call's timestep), and to alpha-bar 1 (or
    alpha-bar_0 without ``set_alpha_to_one``) past timestep 0."""
    ac = alphas_cumprod(cfg).astype(np.float64)
    timesteps = ddim_timesteps(cfg, steps)
    final = 1.0 if cfg["set_alpha_to_one"] else ac[0]
    prev = timesteps - cfg["num_train_timesteps"] // steps
    ac_prev = np.where(prev >= 0, ac[np.maximum(prev, 0)], final)
    ac_t = ac[timesteps]
    clip = cfg["clip_sample_range"] if cfg["clip_sample"] else None
    predictors = []
    for a_s, a_p in zip(ac_t, ac_prev, strict=True):
        pair = TimeGrid.from_alpha_sigma(np.zeros(2), np.sqrt([a_s, a_p]), np.sqrt([1 - a_s, 1 - a_p]))
        if clip is None:
            terms = first_order_terms(pair, 1, "data")
            predictors.append(LinearStep(x_coef=terms.x_coef, hist_coef=np.array([terms.m0_coef])))
        else:
            # x_prev = alpha_p clip(x0) + sigma_p eps with eps the model's own (diffusers'
            # use_clipped_model_output=False), so the history holds clip(x0) and eps enters on its own.
            predictors.append(LinearStep(x_coef=0.0, hist_coef=np.array([pair.alpha[1]]), eps_coef=pair.sigma[1]))
    end = -1 if final == 1.0 else 0
    grid = TimeGrid.from_alpha_sigma(np.append(timesteps, end), np.sqrt(np.append(ac_t, final)),
                                     np.sqrt(1 - np.append(ac_t, final)))
    plan = build_plan(grid, predictors, [None] * (len(timesteps) - 1), "data", 1)
    return DiffusersRun(cfg, plan, timesteps, grid.alpha[:-1], grid.sigma[:-1],
                        PREDICTION_OF_TYPE[cfg["prediction_type"]], clip)


def noise_model(network: Callable, run: DiffusersRun) -> Callable:
    """``model_fn(x, t, step=k) -> eps`` for ``run_plan``: calls ``network`` with call k's integer timestep and
    converts its output with call k's alpha_t, sigma_t (``network`` may itself take ``step``, as a guided network
    with per-call scales does)."""
    takes_step = getattr(network, STEP_KWARG_ATTR, False)

    def model_fn(x, t, step):
        del t  # the scan's float copy of the timestep; the int table below is exact
        t_in = jnp.broadcast_to(jnp.asarray(run.timesteps, jnp.int32)[step], (x.shape[0],))
        out = network(x, t_in, step=step) if takes_step else network(x, t_in)
        alpha = jnp.asarray(run.alphas, x.dtype)[step]
        sigma = jnp.asarray(run.sigmas, x.dtype)[step]
        return to_eps(out.astype(x.dtype), x, alpha, sigma, run.prediction)

    setattr(model_fn, STEP_KWARG_ATTR, True)
    if hasattr(network, validation.GUIDANCE_STEPS_ATTR):
        setattr(model_fn, validation.GUIDANCE_STEPS_ATTR, getattr(network, validation.GUIDANCE_STEPS_ATTR))
    return model_fn


def diffusers_sampler(config: Mapping[str, Any], num_inference_steps: int) -> Callable:
    """A sampler that follows a diffusers scheduler config step for step.

    Args:
      config: the dict of a diffusers ``scheduler_config.json``; ``_class_name`` one of UniPCMultistepScheduler,
        DPMSolverMultistepScheduler, DDIMScheduler (eta = 0); left-out keys take diffusers' defaults, keys
        starting with ``_`` are ignored. Unsupported features (flow / exponential / beta / Lu sigmas, dynamic
        shifting, thresholding, zero-terminal-SNR betas, learned variance, the sde- algorithms, ``solver_p``)
        raise a one-line ``ValueError`` unless at their default.
      num_inference_steps: as diffusers' ``set_timesteps``, in [1, num_train_timesteps].
    Returns:
      ``sample(network, x_T, *, condition=None, unconditional_condition=None, guidance_scale=1.0,
      return_trajectory=False)``: x_T (B, ...) -> x0 (B, ...) float32 (float64 for a float64 x_T under x64),
      or ``(x0, Trajectory)`` whose ``t`` are the called timesteps. ``network(x, t[, cond])`` gets t (B,) int32,
      diffusers' timestep; classifier-free guidance as ``samplers.sample``'s (a number, a traced scalar, or one
      scale per model call). ``sample.timesteps`` (S,) are the calls' timesteps (``scheduler.timesteps``).
      Traceable: use it inside ``jax.jit``.
    """
    run = diffusers_run(config, num_inference_steps)

    def sample(network: Callable, x_T: jax.Array, *, condition=None, unconditional_condition=None,
               guidance_scale=1.0, return_trajectory: bool = False):
        net = guided_network(network, condition=condition, unconditional_condition=unconditional_condition,
                             guidance_scale=guidance_scale)
        model_fn = noise_model(net, run)
        validation.check_guidance_length(model_fn, run.plan.steps, False)
        x0_transform = None
        if run.clip_range is not None:
            def x0_transform(x0):
                return jnp.clip(x0, -run.clip_range, run.clip_range)
        return run_plan(model_fn, x_T, run.plan, x0_transform=x0_transform, return_trajectory=return_trajectory)

    sample.timesteps = run.timesteps.copy()
    return sample
