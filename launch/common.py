"""What every launcher shares: flag definitions, the multi-process start, one-line errors, quiet logs.

Launchers parse flags, call the library (``edt_jax``) and print; nothing else lives in ``launch/``.
"""

from __future__ import annotations

import logging as std_logging
import sys

import jax
from absl import flags, logging
from ml_collections import config_flags

from edt_jax.diffusion.schedules import SKIP_TYPES
from edt_jax.samplers import SAMPLERS
from edt_jax.training.workdir_lock import LostWorkdirError, WorkdirBusyError

# Errors a launcher reports as one line (exit code 2) instead of a traceback: bad flags, configs, inputs, runs,
# and a workdir another live run holds (or took over).
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, ImportError, WorkdirBusyError, LostWorkdirError)

flags.DEFINE_string("coordinator_address", None, "host:port of process 0, to run as several processes")
flags.DEFINE_integer("num_processes", None, "number of processes (with --coordinator_address)")
flags.DEFINE_integer("process_id", None, "this process's index (with --coordinator_address)")
flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() with auto-detection (TPU pods, SLURM)")


def define_flag(define, name: str, *args, **kwargs) -> None:
    """``define(name, *args, **kwargs)`` (an absl ``flags.DEFINE_*``) unless ``name`` is already defined.

    Launchers share flag names (``--workdir``, ``--seed``...); when several are imported into one process
    (the tests import them all), the first definition serves them all instead of absl's duplicate-flag error.
    """
    if name not in flags.FLAGS:
        define(name, *args, **kwargs)


def define_config_flag() -> None:
    """``--config configs/<file>.py[:arg]`` (with ``--config.key=value`` overrides), defined once."""
    define_flag(config_flags.DEFINE_config_file, "config", None, "experiment config file (configs/*.py[:arg])",
                lock_config=True)


def define_sampling_flags() -> None:
    """The sampling flags of ``launch.sample``, ``launch.evaluate`` and ``launch.analyze`` (None: the run
    config's ``sample`` default), read by ``sampling_options``."""
    define_flag(flags.DEFINE_string, "workdir", None, "training run directory (checkpoints/ and config.json)")
    define_flag(flags.DEFINE_enum, "sampler", None, list(SAMPLERS), "sampler (default: the config's sample.sampler)")
    define_flag(flags.DEFINE_integer, "steps", None, "sampling steps (model calls)")
    define_flag(flags.DEFINE_integer, "order", None, "solver order for unipc / dpm_solver")
    define_flag(flags.DEFINE_enum, "variant", None, ["bh1", "bh2"], "UniPC variant (default bh1)")
    define_flag(flags.DEFINE_enum, "skip_type", None, list(SKIP_TYPES),
                "time grid of unipc / dpm_solver / ddim (default time_uniform)")
    define_flag(flags.DEFINE_enum, "algorithm", None, ["dpmsolver", "dpmsolver++"],
                "dpm_solver's algorithm (default dpmsolver++: data prediction)")
    define_flag(flags.DEFINE_float, "guidance_scale", None, "classifier-free guidance scale (1 = no guidance)")
    define_flag(flags.DEFINE_float, "guided_fraction", 1.0,
                "guide only the first fraction of the model calls (the rest run one network pass)")
    define_flag(flags.DEFINE_enum, "guidance_after", "cond", ["cond", "uncond"],
                "after the guided calls: the conditional prediction alone, or the unconditional one")
    define_flag(flags.DEFINE_list, "guidance_interval", None,
                "t_lo,t_hi in training timesteps: guide only the calls in [t_lo, t_hi] (Kynkaanniemi et al.)")
    define_flag(flags.DEFINE_integer, "num_samples", None, "number of images")
    define_flag(flags.DEFINE_string, "labels", None, "comma-separated class labels (cycled); default random")
    define_flag(flags.DEFINE_bool, "amm", None, "apply the Attention Modulation Matrix (EDT)")
    define_flag(flags.DEFINE_bool, "use_ema", None,
                "sample with the EMA parameters, else the raw ones (default: the config's sample.use_ema)")
    define_flag(flags.DEFINE_integer, "seed", 0, "sampling seed")
    define_flag(flags.DEFINE_integer, "step", None, "checkpoint step (default: newest)")
    define_flag(flags.DEFINE_string, "vae", None,
                "local diffusers VAE folder or weights file for latent models (default: the config's vae.path)")


def sampling_options() -> dict:
    """``Run.sample`` / ``Run.sampling_options`` keywords from the sampling flags."""
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
    return dict(sampler=f.sampler, steps=f.steps, order=f.order, variant=f.variant, skip_type=f.skip_type,
                algorithm=f.algorithm, amm=f.amm, guidance_scale=f.guidance_scale,
                guided_fraction=f.guided_fraction, guidance_after=f.guidance_after, guidance_interval=interval)


def parse_labels(text: str | None) -> list[int] | None:
    """``--labels 0,1,2`` -> [0, 1, 2] (None when not given); a one-line error for anything but integers."""
    if not text:
        return None
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"--labels must be comma-separated integers, got {text!r}") from None


def quiet_library_logs() -> None:
    """Hide orbax's per-save INFO lines (dozens per checkpoint); warnings and errors still show."""

    def keep(record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname

    logging.get_absl_handler().addFilter(keep)


def exit_with_error(err: BaseException, code: int = 2) -> None:
    """End a launcher on bad input (config, data, checkpoint): one line on stderr and in the log, no traceback."""
    logging.error("%s", err)
    print(f"error: {err}", file=sys.stderr)
    sys.exit(code)


def maybe_initialize_distributed() -> None:
    """Start the multi-process runtime when the flags (or --distributed) ask for it."""
    f = flags.FLAGS
    if f.coordinator_address:
        jax.distributed.initialize(f.coordinator_address, num_processes=f.num_processes, process_id=f.process_id)
    elif f.distributed:
        jax.distributed.initialize()
    if jax.process_count() > 1:
        logging.info("process %d of %d, %d local / %d global devices", jax.process_index(), jax.process_count(),
                     jax.local_device_count(), jax.device_count())
