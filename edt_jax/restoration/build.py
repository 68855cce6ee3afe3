"""DP-IR from a ``configs/dpir_*.py`` config: its networks, their training and loading, the restoration methods.

    from edt_jax.restoration import build
    net, example = build.build_network(config, "ir")                    # a NAFNet and its example inputs
    restorers = build.Restorers(config, workdir, degradation, (32, 32, 3))
    restore = restorers.get("dpir", tau=0.25)                           # sampler / steps / tau: config.sample
    x_hat = restore(y, indices, seed)                                   # numpy in [-1, 1], jitted batches

Networks live in ``<workdir>/<name>``: ``ir`` and ``ir_alt`` (NAFNets), ``fusion`` and ``conditional`` (the
fusion-net architecture). ``config.denoiser`` picks DP-IR's denoiser x0_D: ``"dpm"`` (default), the
``launch.train`` run of ``config.denoiser_workdir`` (``edt_jax.load_run``), or ``"gaussian"``, the paper's kind:
a ``GaussianDenoiser`` trained here into ``<workdir>/denoiser`` (``gaussian.py``) on ``config.diffusion``'s
schedule, whose fusion net is ``<workdir>/fusion_gaussian``. ``tasks`` runs them (train, evaluate, restore a
folder); ``launch.restore`` is its flags.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from edt_jax import data as data_lib
from edt_jax import paths
from edt_jax.batching import map_in_batches
from edt_jax.checks import check_choice
from edt_jax.diffusion import NoiseScheduleVP
from edt_jax.restoration import dpir, gaussian
from edt_jax.restoration.baselines import ddnm_model
from edt_jax.restoration.data import check_estimate_shape
from edt_jax.restoration.degradations import image_keys, pseudo_inverse
from edt_jax.restoration.networks import FusionNet, GaussianDenoiser, NAFNet, count_params, lift
from edt_jax.runs import Run, load_frozen_run
from edt_jax.runs.build import build_schedule, loop_options
from edt_jax.training import sharding
from edt_jax.training.loop import TrainResult, train
from edt_jax.training.optimizers import create_optimizer
from edt_jax.training.task import Task
from edt_jax.training.train_state import load_params, model_init

NETWORKS = ("ir", "ir_alt", "fusion", "conditional", "denoiser")  # "denoiser": the Gaussian denoiser
DENOISERS = ("dpm", "gaussian")
METHODS = ("ir", "ir_alt", "dpir", "dpir_ir_alt", "ddnm", "conditional")


def denoiser_kind(config: ml_collections.ConfigDict) -> str:
    """``config.denoiser`` ("dpm" when the config has none), checked against ``DENOISERS``."""
    kind = config.get("denoiser", "dpm")
    check_choice("denoiser", kind, DENOISERS)
    return kind


def network_dir(config: ml_collections.ConfigDict, name: str) -> str:
    """The folder of network ``name`` in a workdir: its name, but ``fusion_gaussian`` for the fusion net of the
    Gaussian denoiser (a fusion net learns its own denoiser's x0_D, so the two routes keep one each)."""
    return "fusion_gaussian" if name == "fusion" and denoiser_kind(config) == "gaussian" else name


def build_network(config: ml_collections.ConfigDict, name: str):
    """(Flax module, example call arguments) of network ``name`` (``NETWORKS``)."""
    check_choice("network", name, NETWORKS)
    size, channels = config.data.image_size, config.data.channels
    image = jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)
    if name == "denoiser":
        if "gaussian" not in config:
            raise ValueError("this config has no Gaussian denoiser settings (config.gaussian); see "
                             "configs/dpir_photos_sr4.py")
        g = config.gaussian
        net = GaussianDenoiser(g.width, tuple(g.enc_blocks), g.middle_blocks, tuple(g.dec_blocks))
        return net, (image, jax.ShapeDtypeStruct((1,), jnp.float32))
    part = config[name]
    if name in ("ir", "ir_alt"):
        net = NAFNet(part.width, tuple(part.enc_blocks), part.middle_blocks, tuple(part.dec_blocks))
        if size % 2 ** len(part.enc_blocks):
            raise ValueError(f"{name}: NAFNet with {len(part.enc_blocks)} levels needs the image size divisible by "
                             f"{2 ** len(part.enc_blocks)}, got {size}")
        return net, (image,)
    net = FusionNet(part.width, part.num_blocks, use_x_t=part.get("use_x_t", False))
    return net, (image, image, image, jax.ShapeDtypeStruct((1,), jnp.float32))


def network_summary(config: ml_collections.ConfigDict, name: str) -> str:
    """One line on network ``name`` and its training: "ir: NAFNet with 12,345 parameters, 400 steps of 16 images"."""
    net, example = build_network(config, name)
    part = config["gaussian" if name == "denoiser" else name]
    params = jax.eval_shape(model_init(net, example), jax.random.key(0))
    return (f"{name}: {type(net).__name__} with {count_params(params):,} parameters, {part.steps} steps of "
            f"{part.batch_size} images")


def _optimizer(part: ml_collections.ConfigDict):
    return create_optimizer("adamw", part.learning_rate, schedule="linear_decay", decay_steps=part.steps,
                            end_learning_rate=part.learning_rate * 0.01)


def conditional_schedule(config: ml_collections.ConfigDict) -> NoiseScheduleVP:
    """The schedule of ``config.diffusion``: the conditional baseline's, and the chain of the Gaussian denoiser."""
    return build_schedule(config)


def train_network(config: ml_collections.ConfigDict, workdir: paths.PathLike, name: str, source, degradation, *,
                  denoise=None, frozen=None, frozen_ns=None) -> TrainResult:
    """Train ``name`` with the library's trainer into ``workdir/<name>`` (resumes; kill -9 safe).

    The fusion net also takes the frozen denoiser: ``denoise`` (``(params, x_t, t_input) -> x0``), its params
    ``frozen`` and its schedule ``frozen_ns``.
    """
    net, example = build_network(config, name)
    part = config["gaussian" if name == "denoiser" else name]
    apply = lambda p, *args: net.apply({"params": p}, *args)  # noqa: E731
    if name in ("ir", "ir_alt"):
        loss_fn = dpir.ir_loss(apply, degradation, part.loss)
    elif name == "denoiser":  # clean images only: the degradation plays no part
        loss_fn = gaussian.denoiser_loss(apply, gaussian.sigma_range(conditional_schedule(config)))
    else:
        if name == "fusion":
            ns = frozen_ns
            predict, condition = dpir.fusion_inputs(apply, denoise), lambda batch, key: batch["x0_ir"]
        else:
            ns = conditional_schedule(config)

            def predict(params, frozen, y_lifted, x_t, t_input):
                return apply(params, y_lifted, x_t, x_t, t_input)

            def condition(batch, key):
                return lift(degradation.apply(batch["image"], key), batch["image"].shape)
        loss_fn = dpir.x0_regression_loss(predict, ns, condition, part.loss)
    mesh = sharding.create_mesh()
    host_batch = data_lib.host_batch_size(part.batch_size, mesh=mesh)
    paired = name == "fusion"  # a flip would separate x0 from its precomputed x0_IR
    dataset = data_lib.create_dataset(source, host_batch, seed=part.get("seed", config.seed), label_key=None,
                                      random_flip=config.data.random_flip and not paired, keep_keys=("x0_ir",))
    task = Task(init_params=model_init(net, example), loss_fn=loss_fn, frozen=frozen, ema_decay=part.ema_decay)
    options = loop_options(config, total_steps=part.steps, seed=part.get("seed", config.seed))
    return train(task, _optimizer(part), dataset, mesh, paths.as_path(workdir) / network_dir(config, name), options,
                 config={"network": name, **config.to_dict()})


def load_network(config: ml_collections.ConfigDict, workdir: paths.PathLike, name: str) -> tuple[object, Callable]:
    """(EMA params, fn) of a trained network; for the IR nets ``fn(y) -> x0_IR`` (it lifts y itself)."""
    net, example = build_network(config, name)
    directory = paths.as_path(workdir) / network_dir(config, name) / "checkpoints"
    if not directory.is_dir():
        route = f" with --config.denoiser={denoiser_kind(config)}" if name == "fusion" else ""
        raise FileNotFoundError(f"no {network_dir(config, name)} network in {workdir}; run --mode train_{name}"
                                f"{route} first")
    params, _ = load_params(directory, model_init(net, example), sharding.create_mesh())
    if name in ("ir", "ir_alt"):
        shape = example[0].shape[1:]
        return params, lambda y: net.apply({"params": params}, lift(y, (y.shape[0], *shape)))
    return params, lambda *args: net.apply({"params": params}, *args)


@dataclasses.dataclass(frozen=True)
class FrozenDenoiser:
    """The Gaussian route's denoiser, read as a ``Run`` is: ``x0_predictor()``, ``params``, ``schedule``."""

    denoise: dpir.X0Fn
    params: object
    schedule: NoiseScheduleVP

    def x0_predictor(self) -> dpir.X0Fn:
        return self.denoise


def load_denoiser(config: ml_collections.ConfigDict, image_shape: tuple[int, ...], *,
                  workdir: paths.PathLike | None = None) -> Run | FrozenDenoiser:
    """DP-IR's frozen x0_D (``.x0_predictor()``: ``(params, x_t, t_input) -> x0``, ``.params``, ``.schedule``).

    ``config.denoiser == "dpm"``: the run of ``config.denoiser_workdir``, trained on ``image_shape`` (H, W, C)
    images (one-line errors otherwise, or when the config names no run or a missing directory).
    ``"gaussian"``: ``<workdir>/denoiser`` through ``gaussian.x0_predictor`` on ``config.diffusion``'s schedule.
    """
    if denoiser_kind(config) == "gaussian":
        if workdir is None:
            raise ValueError("config.denoiser='gaussian' reads <workdir>/denoiser; pass the workdir")
        net, _ = build_network(config, "denoiser")
        params, _ = load_network(config, workdir, "denoiser")
        ns = conditional_schedule(config)
        return FrozenDenoiser(gaussian.x0_predictor(lambda p, x, s: net.apply({"params": p}, x, s), ns), params, ns)
    if not config.denoiser_workdir:
        raise ValueError("config.denoiser_workdir is empty; give a launch.train run on the same images "
                         "(--config.denoiser_workdir=DIR)")
    return load_frozen_run(config.denoiser_workdir, image_shape, role="denoiser",
                           user="this config restores")


class Restorer:
    """``restorer(y, indices, seed) -> x_hat`` (numpy, [-1, 1]) in jitted batches; ``nfe`` network calls per image.

    ``fn(y, keys, key)``: a batch of measurements, their degradation keys (``image_keys(degradation_seed,
    indices)``) and the batch's sampling key, ``fold_in(key(seed), offset)`` with offset the batch's first row.
    """

    def __init__(self, fn: Callable, nfe: int, batch_size: int, degradation_seed: int):
        self._fn, self.nfe, self.batch_size, self.degradation_seed = jax.jit(fn), nfe, batch_size, degradation_seed

    def __call__(self, y: np.ndarray, indices: np.ndarray, seed: int) -> np.ndarray:
        base = jax.random.key(seed)
        offsets = np.arange(len(y)) // self.batch_size * self.batch_size  # each row's batch: its sampling key

        def batch(chunk, idx, offset):
            key = jax.random.fold_in(base, int(offset[0]))
            return self._fn(jnp.asarray(chunk), image_keys(self.degradation_seed, idx), key)

        return map_in_batches(batch, y, np.asarray(indices), offsets, batch_size=self.batch_size)


class Restorers:
    """Every restoration method of a run, its networks loaded once: ``Restorers(...).get("dpir", tau=0.25)``."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: paths.PathLike, degradation,
                 image_shape: tuple[int, ...]):
        self.config, self.workdir, self.degradation = config, paths.as_path(workdir), degradation
        self.image_shape = tuple(image_shape)
        self._cache: dict[str, object] = {}

    def _loaded(self, what: str):
        if what not in self._cache:
            if what == "denoiser":
                self._cache[what] = load_denoiser(self.config, self.image_shape, workdir=self.workdir)
            else:
                params, fn = load_network(self.config, self.workdir, what)
                if what in ("ir", "ir_alt"):
                    y_shape = self.degradation.output_shape((1, *self.image_shape))
                    check_estimate_shape(jax.eval_shape(fn, jax.ShapeDtypeStruct(y_shape, jnp.float32)).shape,
                                         (1, *self.image_shape), what=f"the {what} network")
                self._cache[what] = (params, fn)
        return self._cache[what]

    def get(self, method: str, *, sampler: str | None = None, steps: int | None = None,
            tau: float | None = None) -> Restorer:
        """The restorer of ``method`` (``METHODS``); sampler / steps / tau default to ``config.sample``."""
        check_choice("method", method, METHODS)
        s = self.config.sample
        sampler, steps, tau = sampler or s.sampler, steps or s.steps, s.tau if tau is None else tau
        dpir.start_timestep(tau, 1000)  # a bad tau fails here, before anything compiles
        degradation, batch = self.degradation, self.config.eval.batch_size
        if method in ("ir", "ir_alt"):
            ir_fn = self._loaded(method)[1]
            return Restorer(lambda y, keys, key: ir_fn(y), 1, batch, self.config.seed)

        def run(model, x_start, key, schedule):
            return dpir.restore(model, x_start, key, schedule, sampler=sampler, steps=steps, tau=tau, order=s.order)

        if method == "conditional":
            cond_fn = self._loaded("conditional")[1]
            ns = conditional_schedule(self.config)

            def fn(y, keys, key):  # starts from lift(y) where tau < 1
                y_lifted = lift(y, (y.shape[0], *self.image_shape))

                def model(x_t, t_input):
                    return cond_fn(y_lifted, x_t, x_t, jnp.broadcast_to(t_input, (x_t.shape[0],)))

                return run(model, y_lifted, key, ns)

            return Restorer(fn, steps, batch, self.config.seed)
        denoiser = self._loaded("denoiser")
        denoise, denoiser_params = denoiser.x0_predictor(), denoiser.params
        if method in ("dpir", "dpir_ir_alt"):
            ir_fn = self._loaded("ir" if method == "dpir" else "ir_alt")[1]
            fusion_params, fusion_fn = self._loaded("fusion")
            predict = dpir.fusion_inputs(lambda p, *a: fusion_fn(*a), denoise)

            def fn(y, keys, key):
                x0_ir = ir_fn(y)
                model = dpir.fused_model(predict, fusion_params, denoiser_params, x0_ir)
                return run(model, x0_ir, key, denoiser.schedule)

            return Restorer(fn, steps + 1, batch, self.config.seed)  # + 1: the IR network

        def fn(y, keys, key):  # DDNM, from A^+ y where tau < 1
            cg = dict(iters=self.config.ddnm.iters, damping=self.config.ddnm.damping)
            x_init = pseudo_inverse(degradation, y, keys, (y.shape[0], *self.image_shape), **cg)
            return run(ddnm_model(denoise, denoiser_params, degradation, y, keys, **cg), x_init, key,
                       denoiser.schedule)

        return Restorer(fn, steps, batch, self.config.seed)
