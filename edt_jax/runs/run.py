"""A trained run as a library object.

    import edt_jax
    run = edt_jax.load_run("/tmp/mnist_quick")                  # config.json + the newest checkpoint's EMA params
    images = run.sample(labels=[0, 1, 2], steps=20, guidance_scale=3.0, seed=0)   # (3, H, W, C) in [-1, 1]
    report = run.evaluate(["fd_mnist5k", "acc_mnist5k"], num_samples=512, guidance_scale=3.0)
    denoise = run.x0_predictor()                                 # the frozen network for DP-IR: (params, x_t, t) -> x0

``launch.sample``, ``launch.evaluate`` and ``launch.analyze`` are flags around these calls: for the same
options and seed they write exactly what the ``Run`` returns. Sampling options default to the run config's
``sample`` section.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from edt_jax import paths
from edt_jax.batching import round_up
from edt_jax.data.pixels import to_uint8
from edt_jax.mesh import batch_devices, create_mesh
from edt_jax.metrics.evaluation import compute_metrics
from edt_jax.runs import build
from edt_jax.runs.generate import make_decoder, make_generator, per_call_guidance, sample_in_batches
from edt_jax.samplers.wrappers import noise_predictor, x0_predictor
from edt_jax.training.step import model_example
from edt_jax.training.train_state import load_params, model_init

if TYPE_CHECKING:
    from edt_jax.t2i.pipeline import StableDiffusion

# What ``Run.sample`` takes when an option is None: the run config's ``sample`` section, else these.
SAMPLING_DEFAULTS = dict(sampler="unipc", steps=25, order=2, variant="bh1", skip_type="time_uniform",
                         algorithm="dpmsolver++", guidance_scale=1.0, amm=True)


@dataclasses.dataclass
class Run:
    """A ``launch.train`` run: its config, network, schedule and parameters, placed on a device mesh.

    Attributes:
      workdir: the run directory (``config.json``, ``checkpoints/``).
      config: the training config (``ml_collections.ConfigDict``).
      model: the Flax network (EDT, DiT or MDTv2): ``model.apply({"params": params}, x, t_input, labels)``.
      schedule: the discrete ``NoiseScheduleVP`` it was trained on (``schedule.tables``: the DDPM tables).
      params: the EMA parameters (or the raw ones, ``use_ema=False``), sharded over ``mesh``.
      mesh: the device mesh (every device of this process's job).
      step: the checkpoint's training step.
      use_ema: whether ``params`` are the EMA parameters.
    """

    workdir: str
    config: ml_collections.ConfigDict
    model: Any
    schedule: Any
    params: Any
    mesh: jax.sharding.Mesh
    step: int
    use_ema: bool = True
    vae_path: str | None = None
    _vae: Any = dataclasses.field(default=None, repr=False)
    _generators: dict = dataclasses.field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------------------------------------ facts
    @property
    def prediction(self) -> str:
        """What the network predicts: "eps", "x0" or "v" (the training loss's ``loss.prediction``)."""
        return self.config.get("loss", {}).get("prediction", "eps")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of what the network denoises: images, or latents for a latent run."""
        return (self.model.input_size, self.model.input_size, self.model.in_channels)

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @property
    def default_num_samples(self) -> int:
        """How many samples a call draws when it names no count: the config's ``sample.num_samples``."""
        return self.config.get("sample", {}).get("num_samples", 64)

    @property
    def is_latent(self) -> bool:
        """A latent-space run (not 1 or 3 channels): samples go through the run's VAE when it has one."""
        return self.model.in_channels not in (1, 3)

    # ------------------------------------------------------------------------------------------ sampling
    def sampling_options(self, *, sampler: str | None = None, steps: int | None = None, order: int | None = None,
                         variant: str | None = None, skip_type: str | None = None, algorithm: str | None = None,
                         amm: bool | None = None, guidance_scale=None, guided_fraction: float = 1.0,
                         guidance_after: str = "cond", guidance_interval: tuple[float, float] | None = None) -> dict:
        """The keyword arguments of ``make_generator`` for these options: None takes the config's ``sample``
        default. Guiding only some calls (``guided_fraction`` < 1, or ``guidance_interval`` = (t_lo, t_hi) in
        training timesteps) makes ``guidance_scale`` a per-call array."""
        given = dict(sampler=sampler, steps=steps, order=order, variant=variant, skip_type=skip_type,
                     algorithm=algorithm, amm=amm, guidance_scale=guidance_scale)
        defaults = self.config.get("sample", {})
        options = {k: v if v is not None else defaults.get(k, SAMPLING_DEFAULTS[k]) for k, v in given.items()}
        options["guidance_scale"] = per_call_guidance(
            options["guidance_scale"], options["steps"], schedule=self.schedule, sampler=options["sampler"],
            guided_fraction=guided_fraction, after=guidance_after,
            interval=None if guidance_interval is None else tuple(guidance_interval),
            skip_type=options["skip_type"])
        return options

    def generator(self, *, return_trajectory: bool = False, label_switch_calls: int | None = None,
                  **options) -> Callable:
        """``make_generator`` of this run: ``generate(params, labels (N,), seed) -> (N, H, W, C)`` before any
        decoding; ``options`` as ``sampling_options``'. The same options give the same compiled generator."""
        resolved = self.sampling_options(**options)
        key = (return_trajectory, label_switch_calls,
               *((k, tuple(np.ravel(v).tolist()) if isinstance(v, np.ndarray) else v) for k, v in resolved.items()))
        if key not in self._generators:
            self._generators[key] = make_generator(
                self.model, self.schedule, mesh=self.mesh, prediction=self.prediction,
                return_trajectory=return_trajectory, label_switch_calls=label_switch_calls, **resolved)
        return self._generators[key]

    def draw_labels(self, num_samples: int, seed: int = 0) -> np.ndarray:
        """(num_samples,) labels drawn uniformly from the classes with ``seed``: what ``sample`` uses when it is
        given no labels."""
        return np.random.default_rng(seed).integers(0, self.num_classes, num_samples)

    def resolve_labels(self, labels: Sequence[int] | None, num_samples: int | None, seed: int) -> np.ndarray:
        """The (N,) labels of a ``sample`` call: ``labels`` cycled to ``num_samples`` (default: as many as given),
        or drawn with ``seed``; one-line errors for labels outside [0, num_classes)."""
        if labels is None:
            return self.draw_labels(self.default_num_samples if num_samples is None else num_samples, seed)
        given = np.asarray(labels, np.int64).reshape(-1)
        if given.size == 0 or given.min() < 0 or given.max() >= self.num_classes:
            raise ValueError(f"labels must be in [0, {self.num_classes}), got {given.tolist()}")
        return np.resize(given, len(given) if num_samples is None else num_samples)

    def decoder(self, vae_path: str | None = None) -> Callable[[np.ndarray], np.ndarray] | None:
        """``decode(latents) -> images`` in [-1, 1] with the run's VAE (``vae_path``, else ``config.vae.path``);
        None for pixel runs and for latent runs without VAE weights (they sample latents)."""
        if not self.is_latent:
            return None
        if self._vae is None or vae_path is not None:
            built = build.build_vae(self.config, vae_path or self.vae_path)
            if built is None:
                return None
            self._vae = make_decoder(*built, self.mesh)
        return self._vae

    def sample(self, labels: Sequence[int] | None = None, num_samples: int | None = None, *, seed: int = 0,
               batch_size: int | None = None, decode: bool = True, as_uint8: bool = False,
               return_trajectory: bool = False, **options):
        """Samples for ``labels`` (cycled to ``num_samples``; drawn with ``seed`` when None).

        Returns (N, H, W, C) floats in [-1, 1] (uint8 with ``as_uint8``): images, decoded by the run's VAE for a
        latent run that has one, its latents otherwise (or with ``decode=False``). ``options``: ``sampler``,
        ``steps``, ``order``, ``variant``, ``skip_type``, ``algorithm``, ``amm``, ``guidance_scale``,
        ``guided_fraction``, ``guidance_after``, ``guidance_interval`` (``sampling_options``).

        Any count: one batch padded to the device count, its noise drawn from ``seed`` (``launch.sample``); with
        ``batch_size``, batches of that size whose noise batch i draws from (seed, i) (``launch.evaluate``).
        ``return_trajectory`` (one batch, ODE samplers): ``(samples, Trajectory)`` of the undecoded states.
        """
        labels = self.resolve_labels(labels, num_samples, seed)
        generate = self.generator(return_trajectory=return_trajectory, **options)
        decode_fn = self.decoder() if decode else None
        if return_trajectory and (batch_size is not None or decode_fn is not None):
            raise ValueError("return_trajectory gives one batch of undecoded states: use it without batch_size "
                             "and with decode=False for a latent run")
        if batch_size is not None:
            return sample_in_batches(generate, self.params, labels, batch_size, seed, self.mesh, decode=decode_fn,
                                     as_uint8=as_uint8)
        num = len(labels)
        out = generate(self.params, np.resize(labels, round_up(num, self.batch_devices)), seed)
        samples, trajectory = out if return_trajectory else (out, None)
        samples = samples[:num] if decode_fn is None else decode_fn(samples[:num])
        samples = to_uint8(samples) if as_uint8 else samples
        if trajectory is None:
            return samples
        return samples, jax.tree.map(lambda a: a[:, :num] if a.ndim > 1 else a, trajectory)

    @property
    def batch_devices(self) -> int:
        """How many ways a sampling batch is split over the mesh."""
        return batch_devices(self.mesh)

    # ---------------------------------------------------------------------------------------- evaluation
    def evaluate(self, metrics: Sequence[str], num_samples: int | None = None, *, labels: Sequence[int] | None = None,
                 seed: int = 0, batch_size: int = 256, reference: str | None = None,
                 inception_weights: str | None = None, samples_path: str | None = None, **options) -> dict:
        """Generate ``num_samples`` images (``sample(..., batch_size=batch_size)``) and score them
        (``edt_jax.metrics.evaluation``: FD / precision-recall / class accuracy with the shipped classifiers, FID,
        IS). Returns the report ``launch.evaluate`` writes: the sampling options, ``metrics`` and ``seconds``.
        ``samples_path`` also writes the images as an ADM-evaluator ``.npz`` (arr_0 uint8, arr_1 labels)."""
        sampling = self.sampling_options(**options)
        num = self.default_num_samples if num_samples is None else num_samples
        labels = self.resolve_labels(labels, num, seed)
        start = time.time()
        images = self.sample(labels, seed=seed, batch_size=batch_size, as_uint8=True, **options)
        generation_s = time.time() - start
        start = time.time()
        results = compute_metrics(images, list(metrics), labels=labels, reference=reference,
                                  inception_weights=inception_weights, seed=seed,
                                  shapes_source=self.config.get("data", {}).get("source"))
        if samples_path:
            with paths.as_path(samples_path).open("wb") as f:
                np.savez(f, arr_0=images, arr_1=labels)
        sampling["guidance_scale"] = np.asarray(sampling["guidance_scale"]).tolist()  # per-call arrays as lists
        return dict(workdir=str(self.workdir), step=int(self.step), num_samples=int(num), seed=seed,
                    use_ema=bool(self.use_ema), **sampling, metrics=results,
                    seconds=dict(generation=round(generation_s, 1), metrics=round(time.time() - start, 1)))

    # ------------------------------------------------------------------------- the frozen network (DP-IR, DisDiff)
    def unconditional_network(self, *, amm: bool = True) -> Callable:
        """``network(params, x, t_input) -> raw output`` with the null label (the only class of a one-class run):
        the frozen denoiser DP-IR and DisDiff build on."""
        model = self.model
        label = 0 if model.num_classes == 1 else model.num_classes

        def network(params, x, t_input):
            y = jnp.full((x.shape[0],), label, jnp.int32)
            return model.apply({"params": params}, x, t_input, y, train=False, amm=amm)

        return network

    def x0_predictor(self) -> Callable:
        """``(params, x_t, t_input) -> x0``: the unconditional network as a data predictor (pass ``run.params``)."""
        return x0_predictor(self.unconditional_network(), self.schedule, self.prediction, self.model.learn_sigma)

    def noise_predictor(self) -> Callable:
        """``(params, x_t, t_input) -> eps``: the unconditional network as a noise predictor (pass ``run.params``)."""
        return noise_predictor(self.unconditional_network(), self.schedule, self.prediction, self.model.learn_sigma)

    def check_image_shape(self, image_shape: Sequence[int], *, role: str = "denoiser",
                          user: str = "this config restores") -> None:
        """One-line error unless the run was trained on ``image_shape`` (H, W, C) images."""
        if tuple(image_shape) != self.image_shape:
            raise ValueError(f"the {role} in {self.workdir} was trained on {self.image_shape} images, {user} "
                             f"{tuple(image_shape)} images; train one on the same image size and channels")


def load_frozen_run(workdir, image_shape: Sequence[int], *, role: str, user: str) -> Run:
    """The run in ``workdir`` as the frozen network of another system (DP-IR's denoiser, DisDiff's DPM): one-line
    errors naming ``role`` when the directory is missing or the run was not trained on ``image_shape`` (H, W, C)
    images (``user`` says who needs them, e.g. "this config restores")."""
    if not paths.as_path(workdir).is_dir():
        raise FileNotFoundError(f"the {role} workdir {workdir} does not exist; give a launch.train run directory")
    run = load_run(workdir)
    if not isinstance(run, Run):
        raise ValueError(f"the {role} workdir {workdir} is a text-to-image run; give a launch.train run of an "
                         f"image model (eps / x0 / v network of images)")
    run.check_image_shape(image_shape, role=role, user=user)
    return run


def load_run(workdir, step: int | None = None, use_ema: bool | None = True, *, vae_path: str | None = None,
             mesh: jax.sharding.Mesh | None = None) -> Run | StableDiffusion:
    """The run in ``workdir`` (a ``launch.train`` directory): its ``config.json`` and the parameters of the
    checkpoint at ``step`` (default: the newest), EMA ones unless ``use_ema=False`` (None: the config's
    ``sample.use_ema``). Only those parameters are
    read (no optimizer is built), sharded over ``mesh`` (default: all devices, batch-parallel) by the run's
    sharding rules. ``vae_path`` overrides ``config.vae.path`` for latent runs. One-line errors when the
    directory is not a run or holds no checkpoint.

    A text-to-image run (``configs/shapes_t2i.py``) loads as what it is used as, a pixel-space
    ``edt_jax.t2i.StableDiffusion`` pipeline (``edt_jax.t2i.training.load_text_run``), not a ``Run``."""
    workdir = paths.expand(workdir)
    config = build.read_config(workdir)
    if build.is_text_to_image(config):
        from edt_jax.t2i.training import load_text_run  # the t2i stack (tokenizer, sd, clip) only when needed

        if vae_path is not None:
            raise ValueError(f"vae_path={vae_path!r}: the text-to-image run {workdir} is in pixel space")
        return load_text_run(workdir, step=step, use_ema=True if use_ema is None else use_ema, mesh=mesh)
    model = build.build_model(config)
    if use_ema is None:
        use_ema = bool(config.get("sample", {}).get("use_ema", True))
    mesh = create_mesh() if mesh is None else mesh
    params, step = load_params(paths.as_path(workdir) / "checkpoints", model_init(model, model_example(model)), mesh,
                               step=step, ema=use_ema, rules=build.build_sharding_rules(config))
    return Run(workdir=workdir, config=config, model=model, schedule=build.build_schedule(config), params=params,
               mesh=mesh, step=step, use_ema=use_ema, vae_path=vae_path)
