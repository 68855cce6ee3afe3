"""Train the diffusion model a config describes into a workdir: what ``launch.train`` runs.

    run_result = edt_jax.runs.train(config, "/tmp/shapes_edt")   # resumes from the newest checkpoint there
    run = edt_jax.load_run("/tmp/shapes_edt")                    # then sample, evaluate, restore, disentangle
"""

from __future__ import annotations

import jax
import ml_collections
from absl import logging

from edt_jax.runs import build
from edt_jax.training.loop import TrainResult
from edt_jax.training.loop import train as train_loop
from edt_jax.training.step import diffusion_task
from edt_jax.training.workdir_lock import hold_workdir


def train(config: ml_collections.ConfigDict, workdir: str) -> TrainResult:
    """Train (or resume) the run of ``config`` in ``workdir``: checkpoints, ``metrics.jsonl`` and ``config.json``
    there. Raises one-line ``ValueError``s for configs the data or the model cannot serve, and ``WorkdirBusyError``
    at once when another live run holds ``workdir`` (a local path or a URL such as ``gs://bucket/run``).

    A text-to-image config (``configs/shapes_t2i.py``) trains its SD UNet and text encoder
    (``edt_jax.t2i.training.train``), as ``load_run`` loads it back as a pipeline."""
    if build.is_text_to_image(config):
        from edt_jax.t2i.training import train as train_text  # the t2i stack only when needed
        return train_text(config, workdir)
    with hold_workdir(workdir):
        return _train(config, workdir)


def _train(config: ml_collections.ConfigDict, workdir: str) -> TrainResult:
    mesh = build.build_mesh(config)
    model = build.build_model(config)
    dataset, _ = build.build_dataset(config, mesh)
    build.check_batch_matches_model(next(iter(dataset)), model)
    tx = build.build_optimizer(config)
    options = build.loop_options(config)
    logging.info("mesh %s, %d devices, global batch %d", dict(mesh.shape), jax.device_count(), config.batch_size)
    task = diffusion_task(model, build.build_schedule(config), build.build_loss_config(config, model),
                          build.build_timestep_sampler(config))
    return train_loop(task, tx, dataset, mesh, workdir, options, config=config.to_dict(),
                      rules=build.build_sharding_rules(config))
