"""Turn a network into the noise-prediction ``model_fn(x, t_continuous)`` the samplers integrate.

``model_wrapper`` converts the network's time convention and output type (noise / x_start / v /
score) and applies classifier-free guidance as ONE batched call on [uncond; cond]. The guidance scale
may be a per-call array (one value per model call, ``samplers.guidance``): calls whose scale is exactly
1 run only the conditional half and calls whose scale is exactly 0 only the unconditional half, so
guiding only some calls really saves compute.
"""

from __future__ import annotations

import numbers
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


def prediction_reader(network: Callable, learned_sigma: bool) -> Callable:
    """``(params, x_t, t_input) -> prediction`` in float32: the network's output, or with ``learned_sigma`` its
    first C channels (the rest is the variance)."""

    def read(params, x_t, t_input):
        out = network(params, x_t, t_input).astype(jnp.float32)
        return out[..., : x_t.shape[-1]] if learned_sigma else out

    return read


def noise_predictor(network: Callable, ns: NoiseScheduleVP, model_type: str, learned_sigma: bool) -> Callable:
    """``(params, x_t, t_input) -> eps``: a network of any ``model_type`` ("noise", "x_start", "v", "score")
    as a noise predictor; ``t_input`` is the network's time (``ns.model_time``)."""
    check_choice("model_type", model_type, MODEL_TYPES)
    read = prediction_reader(network, learned_sigma)

    def eps(params, x_t, t_input):
        return output_to_noise(read(params, x_t, t_input), x_t, ns.continuous_time(t_input), ns, model_type)

    return eps


def _concat_conditions(uncond, cond):
    return jax.tree_util.tree_map(lambda u, c: jnp.concatenate([u, c], axis=0), uncond, cond)


def _guidance_scales(guidance_scale):
    """(static scalar float | None, dynamic scalar jax.Array | None, per-call array | None) of ``guidance_scale``.

    Python and NumPy numbers are static scalars; 0-d JAX arrays (concrete or traced) dynamic scalars; 1-D lists,
    NumPy and JAX arrays (traced ones too) one scale per model call. 0-d NumPy arrays count as numbers.
    """
    if isinstance(guidance_scale, (list, tuple)):
        guidance_scale = np.asarray(guidance_scale)
    if isinstance(guidance_scale, jax.Array):
        if guidance_scale.ndim == 0:
            return None, guidance_scale, None
        array = guidance_scale
    elif isinstance(guidance_scale, np.ndarray):
        if guidance_scale.ndim == 0:
            return float(guidance_scale), None, None
        array = guidance_scale
    elif isinstance(guidance_scale, numbers.Real) and not isinstance(guidance_scale, bool):
        return float(guidance_scale), None, None
    else:
        raise ValueError(f"guidance_scale must be a number or a 1-D array of one scale per model call (list, NumPy "
                         f"or JAX array), got {type(guidance_scale).__name__}")
    if array.ndim != 1 or array.size == 0 or not jnp.issubdtype(array.dtype, jnp.number):
        raise ValueError(f"guidance_scale must be a float or a 1-D array of one scale per model call, "
                         f"got shape {tuple(array.shape)} of dtype {array.dtype}")
    return None, None, array


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
      guidance_scale: eps = eps_u + s (eps_c - eps_u). A number, a 0-d JAX array (may be traced), or one scale
        per model call: a 1-D list, NumPy or JAX array (may be a traced jit argument; ``guidance_schedule`` and
        ``guidance_interval`` build them). A call whose scale is exactly 1 runs only the conditional half of
        the batch, one whose scale is exactly 0 only the unconditional half; any other scale the batched
        [uncond; cond] call. With a Python number this is decided when tracing; with arrays at run time, by a
        ``lax.switch`` inside the sampler's scan, so one compiled sampler serves every schedule of a length and
        still skips the work. Under ``vmap`` over the scales (a batched switch index) the switch becomes a
        select that runs every branch and saves nothing; ``vmap`` over x alone keeps the saving.
      learned_sigma: the network returns 2C channels on the last axis (eps and a variance
        interpolation, as DiT/EDT); only the first C are used.
    """
    check_choice("model_type", model_type, MODEL_TYPES)
    check_choice("guidance_type", guidance_type, GUIDANCE_TYPES)
    static_scale, dynamic_scale, scales = _guidance_scales(guidance_scale)
    if guidance_type == "classifier-free" and condition is None:
        raise ValueError("guidance_type 'classifier-free' needs condition=...")
    if guidance_type == "classifier-free" and unconditional_condition is None and static_scale != 1.0:
        raise ValueError(f"classifier-free guidance with guidance_scale {_describe(guidance_scale)} needs "
                         f"unconditional_condition=... (only a scale of exactly 1 runs without it)")

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

    def switched_eps(x, t_continuous, scale):
        # Branch 0: unconditional half only (s == 0); 1: conditional half only (s == 1); 2: both, batched.
        branch = jnp.where(scale == 0, 0, jnp.where(scale == 1, 1, 2))
        return jax.lax.switch(branch, [lambda: network_eps(x, t_continuous, unconditional_condition),
                                       lambda: network_eps(x, t_continuous, condition),
                                       lambda: guided_eps(x, t_continuous, scale)])

    if guidance_type == "uncond":
        def model_fn(x, t_continuous):
            return network_eps(x, t_continuous, None)
        return model_fn

    if static_scale is not None:
        if static_scale in (0.0, 1.0):
            only = condition if static_scale == 1.0 else unconditional_condition

            def model_fn(x, t_continuous):
                return network_eps(x, t_continuous, only)
        else:
            def model_fn(x, t_continuous):
                return guided_eps(x, t_continuous, jnp.asarray(static_scale, x.dtype))
        return model_fn

    if dynamic_scale is not None:
        def model_fn(x, t_continuous):
            return switched_eps(x, t_continuous, dynamic_scale.astype(x.dtype))
        return model_fn

    table = jnp.asarray(scales)

    def model_fn(x, t_continuous, step=None):
        if step is None:
            raise ValueError("this model_fn has a per-call guidance_scale; call it through a sampler "
                             "(or pass step=the model-call index)")
        return switched_eps(x, t_continuous, table[step].astype(x.dtype))

    setattr(model_fn, STEP_KWARG_ATTR, True)
    setattr(model_fn, GUIDANCE_STEPS_ATTR, int(scales.shape[0]))
    return model_fn


def _describe(guidance_scale) -> str:
    return f"of shape {tuple(np.shape(guidance_scale))}" if np.ndim(guidance_scale) else repr(guidance_scale)
