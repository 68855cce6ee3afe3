"""Turn a network into the noise-prediction ``model_fn(x, t_continuous)`` the samplers integrate.

``model_wrapper`` converts the network's time convention and output type (noise / x_start / v /
score) and applies classifier-free guidance as ONE batched call on [uncond; cond]. The guidance scale
may be a per-step array (one value per model call): steps whose scale is exactly 1 then run only the
conditional half, so stopping guidance early really saves compute.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from edt_jax.checks import check_choice
from edt_jax.diffusion.schedules import NoiseScheduleVP
from edt_jax.samplers.core import STEP_KWARG_ATTR
from edt_jax.samplers.validation import GUIDANCE_STEPS_ATTR

MODEL_TYPES = ("noise", "x_start", "v", "score")
GUIDANCE_TYPES = ("uncond", "classifier-free")


def _per_sample(v: jax.Array, x: jax.Array) -> jax.Array:
    """(B,) -> (B, 1, ..., 1) so schedule values broadcast over image-shaped x."""
    return v.reshape((-1,) + (1,) * (x.ndim - 1))


def output_to_noise(output: jax.Array, x: jax.Array, t_continuous: jax.Array, ns: NoiseScheduleVP,
                    model_type: str) -> jax.Array:
    """Convert a network output of ``model_type`` at (x, t) (B, ...) into a noise prediction."""
    if model_type == "noise":
        return output
    alpha = _per_sample(ns.marginal_alpha(t_continuous), x).astype(x.dtype)
    sigma = _per_sample(ns.marginal_std(t_continuous), x).astype(x.dtype)
    if model_type == "x_start":
        return (x - alpha * output) / sigma
    if model_type == "v":
        return alpha * output + sigma * x
    return -sigma * output  # score = -eps / sigma


def _concat_conditions(uncond, cond):
    return jax.tree_util.tree_map(lambda u, c: jnp.concatenate([u, c], axis=0), uncond, cond)


def guidance_schedule(scale: float, num_calls: int, guided_fraction: float = 1.0) -> np.ndarray:
    """(num_calls,) scales: ``scale`` for the first ``guided_fraction`` of model calls, then 1.

    Pass the result as ``model_wrapper(guidance_scale=...)``; the unguided calls skip the
    unconditional half of the batch.
    """
    if not 0.0 <= guided_fraction <= 1.0:
        raise ValueError(f"guided_fraction must be in [0, 1], got {guided_fraction}")
    guided = int(round(guided_fraction * num_calls))
    return np.where(np.arange(num_calls) < guided, float(scale), 1.0)


def model_wrapper(model: Callable, ns: NoiseScheduleVP, model_type: str = "noise", guidance_type: str = "uncond",
                  condition=None, unconditional_condition=None, guidance_scale=1.0,
                  learned_sigma: bool = False) -> Callable:
    """Wrap ``model(x, t_input[, cond])`` into ``model_fn(x, t_continuous) -> eps``.

    Args:
      model: the network; ``t_input = ns.model_time(t)`` (1000 (t - 1/N) for discrete schedules).
      ns: the noise schedule the sampler uses.
      model_type: what the network predicts: "noise" | "x_start" | "v" | "score".
      guidance_type: "uncond" or "classifier-free".
      condition, unconditional_condition: (B, ...) arrays or pytrees of them (e.g. labels, and
        the null label); with classifier-free guidance the network sees [uncond; cond] in one call.
      guidance_scale: a float, or a (num_model_calls,) array with one scale per model call
        (``guidance_schedule`` builds one that stops guiding after a fraction of the steps).
      learned_sigma: the network returns 2C channels on the last axis (eps and a variance
        interpolation, as DiT/EDT); only the first C are used.
    """
    check_choice("model_type", model_type, MODEL_TYPES)
    check_choice("guidance_type", guidance_type, GUIDANCE_TYPES)
    scales = np.asarray(guidance_scale) if isinstance(guidance_scale, (list, tuple, np.ndarray)) else None
    if scales is not None and (scales.ndim != 1 or scales.size == 0):
        raise ValueError(f"guidance_scale must be a float or a 1-D array of one scale per model call, "
                         f"got shape {scales.shape}")
    if guidance_type == "classifier-free" and condition is None:
        raise ValueError("guidance_type 'classifier-free' needs condition=...")

    def network_eps(x, t_continuous, cond):
        t_input = ns.model_time(t_continuous)
        out = model(x, t_input) if cond is None else model(x, t_input, cond)
        if learned_sigma:
            out = out[..., : x.shape[-1]]
        return output_to_noise(out.astype(x.dtype), x, t_continuous, ns, model_type)

    def guided_eps(x, t_continuous, scale):
        x_in = jnp.concatenate([x, x], axis=0)
        t_in = jnp.concatenate([t_continuous, t_continuous], axis=0)
        eps_u, eps_c = jnp.split(network_eps(x_in, t_in, _concat_conditions(unconditional_condition, condition)),
                                 2, axis=0)
        return eps_u + scale * (eps_c - eps_u)

    if guidance_type == "uncond":
        def model_fn(x, t_continuous):
            return network_eps(x, t_continuous, None)
        return model_fn

    if scales is None:
        static_one = isinstance(guidance_scale, (int, float)) and float(guidance_scale) == 1.0
        if static_one or unconditional_condition is None:
            def model_fn(x, t_continuous):
                return network_eps(x, t_continuous, condition)
        else:
            def model_fn(x, t_continuous):
                return guided_eps(x, t_continuous, jnp.asarray(guidance_scale, x.dtype))
        return model_fn

    if unconditional_condition is None:
        raise ValueError("a per-step guidance_scale needs unconditional_condition=...")
    table = jnp.asarray(scales.astype(np.float64))

    def model_fn(x, t_continuous, step=None):
        if step is None:
            raise ValueError("this model_fn has a per-step guidance_scale; call it through a sampler "
                             "(or pass step=the model-call index)")
        scale = table[step].astype(x.dtype)
        # Calls with scale exactly 1 need only the conditional half of the batch.
        return jax.lax.cond(scale == 1, lambda: network_eps(x, t_continuous, condition),
                            lambda: guided_eps(x, t_continuous, scale))

    setattr(model_fn, STEP_KWARG_ATTR, True)
    setattr(model_fn, GUIDANCE_STEPS_ATTR, int(scales.size))
    return model_fn
