"""Sample from a trained run: EMA (or raw) parameters of the newest checkpoint in --workdir.

    python -m launch.sample --workdir /tmp/shapes_edt --sampler unipc --steps 20 --num_samples 64 \\
        --output /tmp/shapes_edt/samples.png
    python -m launch.sample --workdir /tmp/mnist_edt --guidance_scale 2 --guided_fraction 0.4   # guide 8 of 20 calls

Writes a PNG grid and an ``.npz`` beside it with ``samples`` (N, H, W, C) in [-1, 1] and ``labels``.
Latent-space models (in_channels 4) decode their latents with the VAE of the run's config
(``vae.path``, or ``--vae``) and also store the ``latents``; without a VAE they write the latents only.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from PIL import Image

from edt_jax import samplers
from edt_jax.analysis import label_switch
from edt_jax.checks import check_choice
from edt_jax.diffusion import NoiseScheduleVP
from edt_jax.diffusion.schedules import SKIP_TYPES
from edt_jax.samplers.solve import MODEL_TYPE_OF_PREDICTION, ODE_SAMPLERS, solve  # noqa: F401 (re-exported)
from edt_jax.training import sharding
from edt_jax.training.checkpoint import CONFIG_FILENAME
from edt_jax.training.step import model_example
from edt_jax.training.train_state import load_state, model_init
from launch import builders

SAMPLERS = ("unipc", "dpm_solver", "ddim", "ddpm")
# The training loss's name for what the network predicts -> the samplers' name for it.
builders.define_flag(flags.DEFINE_string, "workdir", None, "training run directory (checkpoints/ and config.json)")
builders.define_flag(flags.DEFINE_enum, "sampler", None, SAMPLERS, "sampler (default: the config's sample.sampler)")
builders.define_flag(flags.DEFINE_integer, "steps", None, "sampling steps (model calls)")
builders.define_flag(flags.DEFINE_integer, "order", None, "solver order for unipc / dpm_solver")
builders.define_flag(flags.DEFINE_enum, "variant", None, ["bh1", "bh2"], "UniPC variant (default bh1)")
builders.define_flag(flags.DEFINE_enum, "skip_type", None, list(SKIP_TYPES),
                     "time grid of unipc / dpm_solver / ddim (default time_uniform)")
builders.define_flag(flags.DEFINE_enum, "algorithm", None, ["dpmsolver", "dpmsolver++"],
                     "dpm_solver's algorithm (default dpmsolver++: data prediction)")
builders.define_flag(flags.DEFINE_float, "guidance_scale", None, "classifier-free guidance scale (1 = no guidance)")
builders.define_flag(flags.DEFINE_float, "guided_fraction", 1.0,
                     "guide only the first fraction of the model calls (the rest run one network pass)")
builders.define_flag(flags.DEFINE_enum, "guidance_after", "cond", ["cond", "uncond"],
                     "after the guided calls: the conditional prediction alone, or the unconditional one")
builders.define_flag(flags.DEFINE_list, "guidance_interval", None,
                     "t_lo,t_hi in training timesteps: guide only the calls in [t_lo, t_hi] (Kynkaanniemi et al.)")
builders.define_flag(flags.DEFINE_integer, "num_samples", None, "number of images")
builders.define_flag(flags.DEFINE_string, "labels", None, "comma-separated class labels (cycled); default random")
builders.define_flag(flags.DEFINE_bool, "amm", None, "apply the Attention Modulation Matrix (EDT)")
builders.define_flag(flags.DEFINE_bool, "use_ema", None, "sample with the EMA parameters (else the raw ones)")
builders.define_flag(flags.DEFINE_integer, "seed", 0, "sampling seed")
builders.define_flag(flags.DEFINE_integer, "step", None, "checkpoint step (default: newest)")
builders.define_flag(flags.DEFINE_string, "vae", None,
                     "local diffusers VAE folder or weights file for latent models (default: the config's vae.path)")
builders.define_flag(flags.DEFINE_string, "output", None,
                     "PNG path (default WORKDIR/samples.png); the .npz goes beside it")


def option(name: str, config: ml_collections.ConfigDict):
    """The flag ``--name`` when given, else the run config's ``sample.name`` default."""
    value = getattr(flags.FLAGS, name)
    return config.sample.get(name) if value is None else value


def sampling_options(config: ml_collections.ConfigDict, diffusion) -> dict:
    """``make_generator``'s sampling keywords from the flags and the run config's ``sample`` defaults; the
    guidance flags become a per-call ``guidance_scale`` array when they guide only some calls."""
    options = {name: option(name, config) for name in ("sampler", "steps", "order", "variant", "skip_type",
                                                       "algorithm", "amm")}
    f = flags.FLAGS
    interval = None
    if f.guidance_interval:
        try:
            interval = tuple(float(v) for v in f.guidance_interval)
        except ValueError:
            interval = ()
        if len(interval) != 2:
            raise ValueError(f"--guidance_interval must be t_lo,t_hi in training timesteps, got "
                             f"{','.join(f.guidance_interval)!r}")
    options["guidance_scale"] = per_call_guidance(option("guidance_scale", config), options["steps"],
                                                  diffusion=diffusion, guided_fraction=f.guided_fraction,
                                                  after=f.guidance_after, interval=interval,
                                                  skip_type=options["skip_type"])
    return options


def load_run(workdir: Path, step: int | None):
    """(config, model, diffusion, params dict with 'params' and 'ema_params', step) of a training run."""
    config_path = workdir / CONFIG_FILENAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found; is {workdir} a launch.train workdir?")
    config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
    model = builders.build_model(config)
    tx = builders.build_optimizer(config)
    mesh = sharding.create_mesh()
    state, step = load_state(workdir / "checkpoints", model_init(model, model_example(model)), tx, mesh, step)
    return config, model, builders.build_diffusion(config), state, step, mesh


class FrozenDPM(NamedTuple):
    """A trained run as a frozen, unconditional network: ``network(params, x, t_input)`` is the raw output
    (the null label of a class-conditional run, or its one class), ``params`` its EMA parameters."""

    network: Callable
    params: object
    diffusion: object
    ns: NoiseScheduleVP
    model_type: str
    learn_sigma: bool


def load_frozen_dpm(workdir, image_shape: tuple[int, ...], *, role: str = "denoiser",
                    user: str = "this config restores") -> FrozenDPM:
    """The run in ``workdir`` as a ``FrozenDPM``; it must be trained on ``image_shape`` (H, W, C) images
    (one-line errors naming ``role`` otherwise, or when the workdir is not a run)."""
    workdir = Path(workdir).expanduser()
    if not workdir.is_dir():
        raise FileNotFoundError(f"the {role} workdir {workdir} does not exist; give a launch.train run directory")
    run_config, model, diffusion, state, _, _ = load_run(workdir, None)
    trained = (model.input_size, model.input_size, model.in_channels)
    if tuple(image_shape) != trained:
        raise ValueError(f"the {role} in {workdir} was trained on {trained} images, {user} "
                         f"{tuple(image_shape)} images; train one on the same image size and channels")
    label = 0 if model.num_classes == 1 else model.num_classes

    def network(params, x, t_input):
        return model.apply({"params": params}, x, t_input, jnp.full((x.shape[0],), label, jnp.int32), train=False)

    return FrozenDPM(network, state.ema_params, diffusion, NoiseScheduleVP.discrete(betas=diffusion.betas),
                     MODEL_TYPE_OF_PREDICTION[run_config.loss.prediction], model.learn_sigma)


def model_time_of_calls(diffusion, steps: int, skip_type: str | None = None) -> np.ndarray:
    """(steps,) the network time (training timestep) of each model call of the ODE samplers."""
    ns = NoiseScheduleVP.discrete(betas=diffusion.betas)
    return ns.model_time(samplers.call_times(ns, steps, skip_type=skip_type or "time_uniform"))


def per_call_guidance(scale: float, steps: int, *, diffusion, guided_fraction: float = 1.0, after: str = "cond",
                      interval: tuple[float, float] | None = None, skip_type: str | None = None):
    """The ``guidance_scale`` for ``make_generator``: ``scale`` itself when every call is guided, else the per-call
    array of ``samplers.guidance_schedule`` (the first ``guided_fraction`` of the calls, then conditional or
    unconditional only) or, with ``interval`` = (t_lo, t_hi) in training timesteps, of
    ``samplers.guidance_interval`` (guidance where t_lo <= t <= t_hi, else 1)."""
    if interval is not None:
        if guided_fraction != 1.0:
            raise ValueError(f"give either a guidance interval or a guided fraction, got interval {interval} and "
                             f"fraction {guided_fraction}")
        return samplers.guidance_interval(scale, model_time_of_calls(diffusion, steps, skip_type), *interval)
    if guided_fraction == 1.0:
        return float(scale)
    return samplers.guidance_schedule(scale, steps, guided_fraction, after=after)


def make_generator(model, diffusion, *, sampler: str, steps: int, order: int, guidance_scale, amm: bool,
                   mesh, variant: str | None = None, skip_type: str | None = None, algorithm: str | None = None,
                   prediction: str = "eps", return_trajectory: bool = False, label_switch_calls: int | None = None):
    """``generate_batch(params, labels (N,), seed) -> samples (N, H, W, C)`` (numpy), compiled once per N and
    reused for every batch; the batch is sharded over the mesh's batch axes.

    ``variant`` (UniPC), ``skip_type`` and ``algorithm`` (DPM-Solver) default to the samplers' own defaults when
    None. ``prediction`` is what the network was trained to predict (the run's ``loss.prediction``: eps, x0 or v).
    ``guidance_scale`` is a float or a (steps,) per-call array (``per_call_guidance``); an array is an argument of
    the compiled sampler, so ``generate_batch(..., guidance_scale=another)`` of the same length reuses it.
    ``return_trajectory``: return ``(samples, samplers.Trajectory)`` as numpy. ``label_switch_calls``: labels
    are (N, 2), the first label for that many model calls and the second after (``analysis.label_switch``).
    """
    check_choice("prediction", prediction, tuple(MODEL_TYPE_OF_PREDICTION))
    model_type = MODEL_TYPE_OF_PREDICTION[prediction]
    ns = NoiseScheduleVP.discrete(betas=diffusion.betas)
    per_call = np.ndim(guidance_scale) == 1
    if sampler == "ddpm" and (per_call or label_switch_calls is not None):
        raise ValueError("the ddpm sampler takes no per-call guidance and no label switch; use unipc, dpm_solver "
                         "or ddim")
    switch = None
    if label_switch_calls is not None:
        switch = label_switch.switch_threshold(model_time_of_calls(diffusion, steps, skip_type), label_switch_calls)

    @jax.jit
    def run(params, labels, key, scales):
        def net(x, t_input, y):
            return model.apply({"params": params}, x, t_input, y, train=False, amm=amm)

        x_T = jax.random.normal(key, (labels.shape[0], model.input_size, model.input_size, model.in_channels))
        if sampler == "ddpm":  # ADM ancestral sampling, learned-range variance, no guidance
            return samplers.ddpm(lambda x, t: net(x, t, labels), x_T, jax.random.fold_in(key, 1), diffusion,
                                 steps=steps, variance="learned_range" if model.learn_sigma else "fixed_small",
                                 model_type=model_type, return_trajectory=return_trajectory)
        null = jnp.full((labels.shape[0],), model.num_classes, labels.dtype)
        if switch is None:
            network, cond, uncond = net, labels, null
        else:
            network = label_switch.switched_network(net, switch)
            cond, uncond = {"before": labels[:, 0], "after": labels[:, 1]}, {"before": null, "after": null}
        # A scale of exactly 1 runs the conditional pass alone; others one batched call on [null; labels].
        model_fn = samplers.model_wrapper(network, ns, guidance_type="classifier-free", condition=cond,
                                          unconditional_condition=uncond,
                                          guidance_scale=scales if per_call else guidance_scale,
                                          learned_sigma=model.learn_sigma, model_type=model_type)
        return solve(sampler, model_fn, x_T, ns, steps=steps, order=order, variant=variant, skip_type=skip_type,
                     algorithm=algorithm, return_trajectory=return_trajectory)

    default_scales = np.asarray(guidance_scale, np.float32) if per_call else None

    def generate_batch(params, labels: np.ndarray, seed: int, guidance_scale=None):
        scales = default_scales
        if guidance_scale is not None:
            scales = np.asarray(guidance_scale, np.float32)
            if not per_call or scales.shape != default_scales.shape:
                raise ValueError(f"guidance_scale override of shape {scales.shape} needs a generator made with a "
                                 f"per-call array of the same length ({steps} calls)")
        labels = jax.device_put(jnp.asarray(labels, jnp.int32), sharding.batch_sharding(mesh))
        return jax.tree_util.tree_map(np.asarray, run(params, labels, jax.random.key(seed), scales))

    return generate_batch


def generate(model, diffusion, params, labels: np.ndarray, *, seed: int, mesh, **sampling) -> np.ndarray:
    """(N, H, W, C) samples for ``labels`` (N,); ``sampling`` as ``make_generator``'s keywords."""
    return make_generator(model, diffusion, mesh=mesh, **sampling)(params, labels, seed)


def make_decoder(vae, params, scale: float, mesh, batch_size: int = 32):
    """``decode(latents (N, h, w, c)) -> images (N, H, W, 3)`` in [-1, 1] for latents as the diffusion model sees
    them; batches of a fixed size (one compile), sharded over the mesh."""
    decode_batch = jax.jit(lambda p, z: jnp.clip(vae.apply({"params": p}, z / scale, method=vae.decode), -1.0, 1.0))
    params = jax.device_put(params, sharding.replicated(mesh))
    step = -(-batch_size // mesh.size) * mesh.size

    def decode(latents: np.ndarray) -> np.ndarray:
        images = []
        for start in range(0, len(latents), step):
            chunk = latents[start:start + step]
            pad = step - len(chunk)
            padded = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)]) if pad else chunk
            out = decode_batch(params, jax.device_put(padded, sharding.batch_sharding(mesh)))
            images.append(np.asarray(out)[:len(chunk)])
        return np.concatenate(images)

    return decode


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[-1, 1] float (N, H, W, C) -> uint8 pixels, rounded."""
    return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def save_grid(samples: np.ndarray, path: Path) -> None:
    """(N, H, W, C) in [-1, 1] -> a near-square PNG grid."""
    n, h, w, c = samples.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    pixels = to_uint8(samples)
    grid = np.zeros((rows * h, cols * w, c), np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[r * h:(r + 1) * h, q * w:(q + 1) * w] = pixels[i]
    Image.fromarray(grid[..., 0] if c == 1 else grid).save(path)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    builders.quiet_library_logs()
    f = flags.FLAGS
    workdir = Path(f.workdir)
    try:
        config, model, diffusion, state, step, mesh = load_run(workdir, f.step)
        num = option("num_samples", config)
        devices = mesh.shape["data"] * mesh.shape["fsdp"]
        padded = -(-num // devices) * devices  # the batch splits over the devices; extra samples are dropped
        rng = np.random.default_rng(f.seed)
        if f.labels:
            given = np.array([int(v) for v in f.labels.split(",")])
            if given.min() < 0 or given.max() >= model.num_classes:
                raise ValueError(f"labels must be in [0, {model.num_classes}), got {f.labels!r}")
            labels = np.resize(given, padded)
        else:
            labels = rng.integers(0, model.num_classes, padded)
        use_ema = option("use_ema", config)
        samples = generate(model, diffusion, state.ema_params if use_ema else state.params, labels,
                           prediction=config.loss.prediction, seed=f.seed, mesh=mesh,
                           **sampling_options(config, diffusion))[:num]
        latents = None
        if model.in_channels not in (1, 3):  # a latent-space model
            built = builders.build_vae(config, f.vae)
            if built is not None:
                latents = samples
                samples = make_decoder(*built, mesh)(latents)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    output = Path(f.output) if f.output else workdir / "samples.png"
    output.parent.mkdir(parents=True, exist_ok=True)
    extra = {} if latents is None else {"latents": latents}
    np.savez(output.with_suffix(".npz"), samples=samples, labels=labels[:num], step=step, **extra)
    if samples.shape[-1] in (1, 3):
        save_grid(samples, output)
        # stdout, not the log: the one line a user needs after the command returns.
        print(f"wrote {len(samples)} samples (step {step}, {'EMA' if use_ema else 'raw'} parameters): the grid "
              f"{output.resolve()} and the arrays {output.with_suffix('.npz').resolve()}")
    else:
        print(f"wrote {len(samples)} latents to {output.with_suffix('.npz').resolve()} (pass --vae or set vae.path "
              "to decode them)")


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir"])  # here, not at import: launch.analyze reuses these flags
    app.run(main)
