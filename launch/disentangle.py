"""DisDiff and its baselines: train, score the representation, swap factors (``configs/shapes_disdiff.py``).

    python -m launch.disentangle --config configs/shapes_disdiff.py --workdir DIR --mode train \\
        --dpm_workdir /tmp/shapes_full_dpm
    python -m launch.disentangle --config configs/shapes_disdiff.py --workdir DIR --mode evaluate
    python -m launch.disentangle --config configs/shapes_disdiff.py --workdir DIR --mode swap
    python -m launch.disentangle --config configs/shapes_betavae.py --workdir DIR --mode train

train: the library's one trainer (resumable, kill -9 safe) into DIR. evaluate: FactorVAE / DCI / MIG on the
config's ground-truth data (DisDiff's PCA(1)-per-chunk protocol and the raw codes) -> DIR/eval.json
(``--untrained``: the encoder at initialisation, the random-encoder baseline -> DIR/eval_untrained.json).
swap: regenerate images with one factor's code taken from another image -> DIR/swap.png (rows: sources,
reconstructions, one row per factor, donors) and, on 32x32 shapes, DIR/what_changes.json: for each swapped
factor, the fraction of images whose true factors (read by the shipped shapes classifier) changed.
Each mode is one call of ``edt_jax.disentangle.tasks`` (``train``, ``evaluate``, ``swap``).
"""

from __future__ import annotations

import json

from absl import app, flags, logging

from edt_jax import paths
from edt_jax.disentangle import tasks
from edt_jax.training.checkpoint import UnreadableCheckpointError
from launch import common

MODES = ("train", "evaluate", "swap")

common.define_config_flag()
common.define_flag(flags.DEFINE_string, "workdir", None, "directory of the run")
common.define_flag(flags.DEFINE_enum, "mode", None, MODES, "what to do")
common.define_flag(flags.DEFINE_string, "dpm_workdir", None, "the frozen DPM (a launch.train run); default: "
                   "config.dpm_workdir, or the one the run was trained on")
common.define_flag(flags.DEFINE_bool, "untrained", False, "evaluate: score the encoder at initialisation")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    common.quiet_library_logs()
    f = flags.FLAGS
    config, workdir = f.config, paths.as_path(f.workdir)
    try:
        if f.mode == "train":
            result = tasks.train(config, workdir, f.dpm_workdir)
            logging.info("stopped at step %d%s", result.step, " (preempted)" if result.preempted else "")
        elif f.mode == "evaluate":
            print(json.dumps(tasks.evaluate(config, workdir, f.untrained)["scores"], indent=1))
        else:
            print(json.dumps(tasks.swap(config, workdir, f.dpm_workdir), indent=1))
    except (*common.USER_ERRORS, UnreadableCheckpointError) as err:
        common.exit_with_error(err)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "workdir", "mode"])
    app.run(main)
