"""Train a diffusion model from a config; resumes from the newest complete checkpoint in --workdir.

    python -m launch.train --config configs/shapes_edt_tiny.py --workdir /tmp/shapes_edt
    python -m launch.train --config configs/edt_s_imagenet256.py --workdir DIR --config.batch_size=512

Several processes: add --coordinator_address host:port --num_processes N --process_id i (or
--distributed on TPU pods / SLURM, where jax.distributed.initialize() finds the cluster itself).
The run is ``edt_jax.runs.train(config, workdir)``; ``edt_jax.load_run(workdir)`` loads it.
"""

from __future__ import annotations

from absl import app, flags, logging

from edt_jax import runs
from edt_jax.training.checkpoint import UnreadableCheckpointError
from launch import common

common.define_config_flag()
common.define_flag(flags.DEFINE_string, "workdir", None, "directory for checkpoints, metrics.jsonl and the config")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    common.quiet_library_logs()
    common.maybe_initialize_distributed()
    try:
        # Text-to-image configs train the SD UNet and text encoder (edt_jax.t2i), the rest a class-conditional run.
        result = runs.train(flags.FLAGS.config, flags.FLAGS.workdir)
    # Bad configs / inputs / checkpoints: one line, no traceback.
    except (*common.USER_ERRORS, UnreadableCheckpointError) as err:
        common.exit_with_error(err)
    except FloatingPointError as err:  # NaN/inf loss: the last good checkpoint is kept
        common.exit_with_error(err, 3)
    logging.info("stopped at step %d%s", result.step, " (preempted)" if result.preempted else "")


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
