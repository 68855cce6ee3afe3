"""Compiled sampling of a class-conditional diffusion network on a mesh, in batches, with VAE decoding.

``Run.sample`` and ``Run.evaluate`` are built on these; the analyses use them directly when they need the
trajectory, a label switch or one compiled sampler for many guidance schedules::

    generate = make_generator(model, schedule, mesh=mesh, sampler="unipc", steps=20, guidance_scale=3.0,
                              prediction="v")
    images = generate(params, labels, seed)                          # (N, H, W, C) numpy
    pixels = sample_in_batches(generate, params, labels, 256, seed, mesh)   # uint8, any N
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from edt_jax import samplers
from edt_jax.batching import map_in_batches, round_up
from edt_jax.data.pixels import to_uint8
from edt_jax.diffusion import NoiseScheduleVP, check_prediction
from edt_jax.mesh import batch_devices, batch_sharding, replicated
from edt_jax.samplers import label_switch


def per_call_guidance(scale: float, steps: int, *, schedule: NoiseScheduleVP, sampler: str = "unipc",
                      guided_fraction: float = 1.0, after: str = "cond",
                      interval: tuple[float, float] | None = None, skip_type: str = "time_uniform"):
    """The ``guidance_scale`` of a generator: ``scale`` itself when every call is guided, else the per-call
    array of ``samplers.guidance_schedule`` (the first ``guided_fraction`` of the calls, then conditional or
    unconditional only) or, with ``interval`` = (t_lo, t_hi) in training timesteps, of
    ``samplers.guidance_interval`` (guidance where t_lo <= t <= t_hi, else 1). A per-call array given as
    ``scale`` is returned as it is."""
    if np.ndim(scale) == 1:
        if interval is not None or guided_fraction != 1.0:
            raise ValueError("a per-call guidance_scale array already says which calls it guides; give no guided "
                             "fraction or interval with it")
        return np.asarray(scale, np.float64)
    if interval is not None:
        if guided_fraction != 1.0:
            raise ValueError(f"give either a guidance interval or a guided fraction, got interval {interval} and "
                             f"fraction {guided_fraction}")
        if len(interval) != 2:
            raise ValueError(f"a guidance interval is (t_lo, t_hi) in training timesteps, got {interval!r}")
        times = samplers.call_timesteps(schedule, steps, skip_type, sampler=sampler)
        return samplers.guidance_interval(scale, times, *interval)
    if guided_fraction == 1.0:
        return float(scale)
    return samplers.guidance_schedule(scale, steps, guided_fraction, after=after)


def make_generator(model, schedule: NoiseScheduleVP, *, mesh, sampler: str, steps: int, order: int = 2,
                   guidance_scale=1.0, amm: bool = True, variant: str = "bh1", skip_type: str = "time_uniform",
                   algorithm: str = "dpmsolver++", prediction: str = "eps", return_trajectory: bool = False,
                   label_switch_calls: int | None = None) -> Callable:
    """``generate(params, labels (N,), seed, guidance_scale=None) -> samples (N, H, W, C)`` (numpy), compiled once
    per N and reused for every batch; the batch is sharded over the mesh's batch axes (N must split over them).

    ``prediction`` is what the network was trained to predict (the run's ``loss.prediction``: eps, x0 or v).
    ``guidance_scale`` is a float or a (steps,) per-call array (``per_call_guidance``); an array is an argument of
    the compiled sampler, so ``generate(..., guidance_scale=another)`` of the same length reuses it. The noise is
    ``normal(key(seed))`` of the batch's shape; ``ddpm`` draws its step noise from ``fold_in(key(seed), 1)``.
    ``return_trajectory``: return ``(samples, samplers.Trajectory)`` as numpy. ``label_switch_calls``: labels
    are (N, 2), the first label for that many model calls and the second after (``samplers.label_switch``).
    """
    prediction = check_prediction(prediction)
    per_call = np.ndim(guidance_scale) == 1
    switch = None
    if label_switch_calls is not None:
        if sampler == "ddpm":
            raise ValueError("a label switch needs an ODE sampler (unipc, dpm_solver or ddim), got ddpm")
        times = samplers.call_timesteps(schedule, steps, skip_type, sampler=sampler)
        switch = label_switch.switch_threshold(times, label_switch_calls)
    shape = (model.input_size, model.input_size, model.in_channels)

    @jax.jit
    def run(params, labels, key, scales):
        def net(x, t_input, y):
            return model.apply({"params": params}, x, t_input, y, train=False, amm=amm)

        x_T = jax.random.normal(key, (labels.shape[0], *shape))
        null = jnp.full((labels.shape[0],), model.num_classes, labels.dtype)
        if switch is None:
            network, cond, uncond = net, labels, null
        else:
            network = label_switch.switched_network(net, switch)
            cond, uncond = {"before": labels[:, 0], "after": labels[:, 1]}, {"before": null, "after": null}
        # A scale of exactly 1 runs the conditional pass alone; others one batched call on [null; labels].
        return samplers.sample(sampler, network, x_T, schedule, steps=steps, prediction=prediction,
                               learned_sigma=model.learn_sigma, condition=cond, unconditional_condition=uncond,
                               guidance_scale=scales if per_call else guidance_scale,
                               key=jax.random.fold_in(key, 1), order=order, variant=variant, algorithm=algorithm,
                               skip_type=skip_type, return_trajectory=return_trajectory)

    default_scales = np.asarray(guidance_scale, np.float32) if per_call else None

    def generate(params, labels: np.ndarray, seed: int, guidance_scale=None):
        scales = default_scales
        if guidance_scale is not None:
            scales = np.asarray(guidance_scale, np.float32)
            if not per_call or scales.shape != default_scales.shape:
                raise ValueError(f"guidance_scale override of shape {scales.shape} needs a generator made with a "
                                 f"per-call array of the same length ({steps} calls)")
        labels = jax.device_put(jnp.asarray(labels, jnp.int32), batch_sharding(mesh))
        return jax.tree_util.tree_map(np.asarray, run(params, labels, jax.random.key(seed), scales))

    return generate


def batch_seed(seed: int, index: int) -> int:
    """The noise seed of batch ``index`` of a batched run with ``seed``: the same noise whatever the guidance."""
    return int(np.random.default_rng([seed, index]).integers(2**31))


def sample_in_batches(generate: Callable, params, labels: np.ndarray, batch_size: int, seed: int, mesh, *,
                      decode: Callable | None = None, as_uint8: bool = True, progress: str | None = "generated",
                      **call_kwargs) -> np.ndarray:
    """Images (N, H, W, C) for ``labels`` (N, ...) from ``make_generator``'s ``generate`` (given ``call_kwargs``),
    uint8 (or floats in [-1, 1] without ``as_uint8``), in batches of ``batch_size`` rounded up to the devices, the
    last one padded; batch i draws its noise from ``batch_seed(seed, i)``. ``decode`` maps latents to images.
    Logs the progress with an ETA."""
    batch_size = round_up(batch_size, batch_devices(mesh))
    seeds = np.repeat(np.arange(-(-len(labels) // batch_size)), batch_size)[:len(labels)]

    def one_batch(batch_labels, batch_index):
        x = generate(params, batch_labels, batch_seed(seed, int(batch_index[0])), **call_kwargs)
        x = decode(x) if decode is not None else x
        return to_uint8(x) if as_uint8 else x

    return map_in_batches(one_batch, np.asarray(labels), seeds, batch_size=batch_size, progress=progress)


def make_decoder(vae, params, scale: float, mesh, batch_size: int = 32) -> Callable[[np.ndarray], np.ndarray]:
    """``decode(latents (N, h, w, c)) -> images (N, H, W, 3)`` in [-1, 1] for latents as the diffusion model sees
    them; batches of a fixed size (one compile), sharded over the mesh."""
    decode_batch = jax.jit(lambda p, z: jnp.clip(vae.apply({"params": p}, z / scale, method=vae.decode), -1.0, 1.0))
    params = jax.device_put(params, replicated(mesh))
    size = round_up(batch_size, batch_devices(mesh))

    def decode(latents: np.ndarray) -> np.ndarray:
        return map_in_batches(lambda z: decode_batch(params, z), latents, batch_size=size,
                              sharding=batch_sharding(mesh))

    return decode
