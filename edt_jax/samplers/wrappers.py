"""Turn a network into the noise-prediction ``model_fn(x, t_continuous)`` the samplers integrate.

``model_wrapper`` converts the network's time (``t_input``) and its ``prediction`` ("eps" | "x0" | "v" |
"score") and applies classifier-free guidance as ONE batched call on [uncond; cond]. ``guided_network`` applies
the same guidance to a network's raw output, for the ancestral ``ddpm`` sampler. The guidance scale
may be a per-call array (one value per model call, ``samplers.guidance``): calls whose scale is exactly
1 run only the conditional half and calls whose scale is exactly 0 only the unconditional half, so
guiding only some calls really saves compute.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from edt_jax.checks import check_choice
from edt_jax.diffusion.predictions import resolve_prediction, to_eps
from edt_jax.diffusion.schedules import NoiseScheduleVP
from edt_jax.samplers.core import STEP_KWARG_ATTR
from edt_jax.samplers.validation import GUIDANCE_STEPS_ATTR

GUIDANCE_TYPES = ("uncond", "classifier-free")


def _per_sample(v: jax.Array, x: jax.Array) -> jax.Array:
    """(B,) -> (B, 1, ..., 1) so schedule values broadcast over image-shaped x."""
    return v.reshape((-1,) + (1,) * (x.ndim - 1))


def output_to_noise(output: jax.Array, x: jax.Array, t_continuous: jax.Array, ns: NoiseScheduleVP,
                    prediction: str | None = None, *, model_type: str | None = None) -> jax.Array:
    """Convert a network output of ``prediction`` ("eps" | "x0" | "v" | "score") at (x, t) (B, ...) into a
    noise prediction; ``t_continuous`` is the samplers' time."""
    prediction = resolve_prediction(prediction, model_type)
    if prediction == "eps":
        return output
    alpha = _per_sample(ns.marginal_alpha(t_continuous), x).astype(x.dtype)
    sigma = _per_sample(ns.marginal_std(t_continuous), x).astype(x.dtype)
    return to_eps(output, x, alpha, sigma, prediction)


def prediction_reader(network: Callable, learned_sigma: bool) -> Callable:
    """``(params, x_t, t_input) -> prediction`` in float32: the network's output, or with ``learned_sigma`` its
    first C channels (the rest is the variance)."""

    def read(params, x_t, t_input):
        out = network(params, x_t, t_input).astype(jnp.float32)
        return out[..., : x_t.shape[-1]] if learned_sigma else out

    return read


def noise_predictor(network: Callable, ns: NoiseScheduleVP, prediction: str | None = None,
                    learned_sigma: bool = False, *, model_type: str | None = None) -> Callable:
    """``(params, x_t, t_input) -> eps``: a network that predicts ``prediction`` ("eps", "x0", "v", "score") as a
    noise predictor; ``t_input`` is the network's time (``ns.model_time``)."""
    prediction = resolve_prediction(prediction, model_type)
    read = prediction_reader(network, learned_sigma)

    def eps(params, x_t, t_input):
        return output_to_noise(read(params, x_t, t_input), x_t, ns.continuous_time(t_input), ns, prediction)

    return eps


def x0_predictor(network: Callable[[Any, jax.Array, jax.Array], jax.Array], ns: NoiseScheduleVP,
                 prediction: str | None = None, learned_sigma: bool = False, *,
                 model_type: str | None = None) -> Callable:
    """``(params, x_t, t_input) -> x0``: a denoiser that predicts ``prediction`` ("eps", "x0", "v", "score")
    turned into a data predictor. ``network(params, x_t, t_input)`` returns (B, ..., C) or, with
    ``learned_sigma``, (B, ..., 2C) whose first C channels are the prediction (``model_type=`` is the
    deprecated name of ``prediction``)."""
    prediction = resolve_prediction(prediction, model_type)
    read, noise = prediction_reader(network, learned_sigma), noise_predictor(network, ns, prediction, learned_sigma)

    def x0(params, x_t, t_input):
        if prediction == "x0":
            return read(params, x_t, t_input)
        eps = noise(params, x_t, t_input)
        t = ns.continuous_time(t_input)
        alpha = _per_sample(ns.marginal_alpha(t), x_t).astype(x_t.dtype)
        sigma = _per_sample(ns.marginal_std(t), x_t).astype(x_t.dtype)
        return (x_t - sigma * eps) / alpha

    return x0


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


def model_wrapper(model: Callable, ns: NoiseScheduleVP, prediction: str | None = None, guidance_type: str = "uncond",
                  condition=None, unconditional_condition=None, guidance_scale=1.0,
                  learned_sigma: bool = False, *, model_type: str | None = None) -> Callable:
    """Wrap ``model(x, t_input[, cond])`` into ``model_fn(x, t_continuous) -> eps``.

    Args:
      model: the network; ``t_input = ns.model_time(t)`` (1000 (t - 1/N) for discrete schedules).
      ns: the noise schedule the sampler uses.
      prediction: what the network predicts: "eps" (default) | "x0" | "v" | "score" (``model_type=`` and its
        values "noise" | "x_start" are the deprecated names).
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
    prediction = resolve_prediction(prediction, model_type)

    def network_eps(x, t_continuous, cond):
        t_input = ns.model_time(t_continuous)
        out = model(x, t_input) if cond is None else model(x, t_input, cond)
        if learned_sigma:
            out = out[..., : x.shape[-1]]
        return output_to_noise(out.astype(x.dtype), x, t_continuous, ns, prediction)

    def combine(x, eps_u, eps_c, scale):
        return eps_u + scale * (eps_c - eps_u)

    return classifier_free(network_eps, guidance_type, condition, unconditional_condition, guidance_scale, combine)


def guided_network(model: Callable, *, condition=None, unconditional_condition=None, guidance_scale=1.0) -> Callable:
    """``net(x, t_input) -> raw output`` of ``model(x, t_input[, cond])`` with classifier-free guidance on its
    prediction channels, for the ancestral ``ddpm`` sampler, which reads the network's raw output.

    The first C channels (C = x's) are guided, eps_u + s (eps_c - eps_u) in the network's own prediction (an
    affine function of eps, so the result equals guiding eps); further channels (a learned variance) are the
    conditional pass's (DiT's ``forward_with_cfg``). ``guidance_scale`` as ``model_wrapper``'s; without a
    ``condition`` the network is called unconditionally.
    """
    guidance_type = "uncond" if condition is None else "classifier-free"

    def call(x, t_input, cond):
        return model(x, t_input) if cond is None else model(x, t_input, cond)

    def combine(x, out_u, out_c, scale):
        channels = x.shape[-1]
        guided = out_u[..., :channels] + scale * (out_c[..., :channels] - out_u[..., :channels])
        return jnp.concatenate([guided, out_c[..., channels:]], axis=-1) if out_c.shape[-1] > channels else guided

    return classifier_free(call, guidance_type, condition, unconditional_condition, guidance_scale, combine)


def classifier_free(call: Callable, guidance_type: str, condition, unconditional_condition, guidance_scale,
                    combine: Callable) -> Callable:
    """``fn(x, t[, step])`` running ``call(x, t, cond)`` with classifier-free guidance: ``combine(x, out_u, out_c,
    scale)`` of one batched call on [uncond; cond], or one half alone where the scale is exactly 0 or 1 (see
    ``model_wrapper`` for the kinds of ``guidance_scale``). Per-call scales make ``fn`` take the model-call index
    ``step`` (the samplers pass it)."""
    check_choice("guidance_type", guidance_type, GUIDANCE_TYPES)
    static_scale, dynamic_scale, scales = _guidance_scales(guidance_scale)
    if guidance_type == "classifier-free" and condition is None:
        raise ValueError("guidance_type 'classifier-free' needs condition=...")
    if guidance_type == "classifier-free" and unconditional_condition is None and static_scale != 1.0:
        raise ValueError(f"classifier-free guidance with guidance_scale {_describe(guidance_scale)} needs "
                         f"unconditional_condition=... (only a scale of exactly 1 runs without it)")

    def guided(x, t, scale):
        x_in = jnp.concatenate([x, x], axis=0)
        t_in = jnp.concatenate([t, t], axis=0)
        out_u, out_c = jnp.split(call(x_in, t_in, _concat_conditions(unconditional_condition, condition)), 2, axis=0)
        return combine(x, out_u, out_c, scale)

    def switched(x, t, scale):
        # Branch 0: unconditional half only (s == 0); 1: conditional half only (s == 1); 2: both, batched.
        branch = jnp.where(scale == 0, 0, jnp.where(scale == 1, 1, 2))
        return jax.lax.switch(branch, [lambda: call(x, t, unconditional_condition),
                                       lambda: call(x, t, condition),
                                       lambda: guided(x, t, scale)])

    if guidance_type == "uncond":
        def fn(x, t):
            return call(x, t, None)
        return fn

    if static_scale is not None:
        if static_scale in (0.0, 1.0):
            only = condition if static_scale == 1.0 else unconditional_condition

            def fn(x, t):
                return call(x, t, only)
        else:
            def fn(x, t):
                return guided(x, t, jnp.asarray(static_scale, x.dtype))
        return fn

    if dynamic_scale is not None:
        def fn(x, t):
            return switched(x, t, dynamic_scale.astype(x.dtype))
        return fn

    table = jnp.asarray(scales)

    def fn(x, t, step=None):
        if step is None:
            raise ValueError("this model_fn has a per-call guidance_scale; call it through a sampler "
                             "(or pass step=the model-call index)")
        return switched(x, t, table[step].astype(x.dtype))

    setattr(fn, STEP_KWARG_ATTR, True)
    setattr(fn, GUIDANCE_STEPS_ATTR, int(scales.shape[0]))
    return fn


def _describe(guidance_scale) -> str:
    return f"of shape {tuple(np.shape(guidance_scale))}" if np.ndim(guidance_scale) else repr(guidance_scale)
