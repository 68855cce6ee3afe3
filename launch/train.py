"""Train a diffusion model from a config; resumes from the newest complete checkpoint in --workdir.

    python -m launch.train --config configs/shapes_edt_tiny.py --workdir /tmp/shapes_edt
    python -m launch.train --config configs/edt_s_imagenet256.py --workdir DIR --config.batch_size=512

Several processes: add --coordinator_address host:port --num_processes N --process_id i (or
--distributed on TPU pods / SLURM, where jax.distributed.initialize() finds the cluster itself).
"""

from __future__ import annotations

import jax
from absl import app, flags, logging

from edt_jax.training.checkpoint import UnreadableCheckpointError
from edt_jax.training.loop import LoopOptions, train
from edt_jax.training.step import diffusion_task
from launch import builders

builders.define_config_flag()
builders.define_flag(flags.DEFINE_string, "workdir", None, "directory for checkpoints, metrics.jsonl and the config")
flags.mark_flags_as_required(["config", "workdir"])


def run(config, workdir: str):
    mesh = builders.build_mesh(config)
    model = builders.build_model(config)
    dataset, _ = builders.build_dataset(config, mesh)
    builders.check_batch_matches_model(next(iter(dataset)), model)
    tx = builders.build_optimizer(config)
    options = LoopOptions(total_steps=config.total_steps, log_every_steps=config.log_every_steps,
                          checkpoint_every_steps=config.checkpoint_every_steps,
                          keep_checkpoints=config.get("keep_checkpoints", 3), seed=config.seed)
    logging.info("mesh %s, %d devices, global batch %d", dict(mesh.shape), jax.device_count(), config.batch_size)
    task = diffusion_task(model, builders.build_diffusion(config), builders.build_loss_config(config, model),
                          builders.build_timestep_sampler(config))
    return train(task, tx, dataset, mesh, workdir, options, config=config.to_dict(),
                 rules=builders.build_sharding_rules(config))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    builders.quiet_library_logs()
    builders.maybe_initialize_distributed()
    try:
        result = run(flags.FLAGS.config, flags.FLAGS.workdir)
    # Bad configs / inputs / checkpoints: one line, no traceback.
    except (ValueError, FileNotFoundError, ImportError, UnreadableCheckpointError) as err:
        builders.exit_with_error(err)
    except FloatingPointError as err:  # NaN/inf loss: the last good checkpoint is kept
        builders.exit_with_error(err, 3)
    logging.info("stopped at step %d%s", result.step, " (preempted)" if result.preempted else "")


if __name__ == "__main__":
    app.run(main)
