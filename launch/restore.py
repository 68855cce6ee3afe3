"""DP-IR: train the IR and fusion networks, restore images, evaluate (``configs/dpir_*.py``).

    python -m launch.restore --config configs/dpir_mnist_sr4.py --workdir DIR --mode train_ir
    python -m launch.restore --config configs/dpir_mnist_sr4.py --workdir DIR --mode train_fusion \\
        --config.denoiser_workdir=/tmp/mnist_edt
    python -m launch.restore --config configs/dpir_mnist_sr4.py --workdir DIR --mode evaluate \\
        --config.denoiser_workdir=/tmp/mnist_edt --config.sample.tau=0.25 --config.sample.steps=5
    python -m launch.restore --config ... --workdir DIR --mode restore --input degraded/ --output restored/
        # --degrade: --input holds clean images, degraded here first (both written to --output)

    python -m launch.restore --config configs/dpir_photos_sr4.py --workdir DIR --mode train_denoiser   # then
        # train_fusion / evaluate with --config.denoiser=gaussian: DP-IR on the Gaussian CNN denoiser

Modes train_ir / train_ir_alt / train_fusion / train_conditional / train_denoiser write ``DIR/<network>/``
(``DIR/fusion_gaussian/`` for the fusion net of ``--config.denoiser=gaussian``) through the library's one trainer
(resumable, kill -9 safe); evaluate prints and writes ``DIR/eval.json``. Each mode is one
call of ``edt_jax.restoration.tasks`` (``train``, ``evaluate``, ``restore_folder``).
"""

from __future__ import annotations

from absl import app, flags

from edt_jax import paths
from edt_jax.restoration import tasks
from edt_jax.restoration.build import network_summary
from edt_jax.training.checkpoint import UnreadableCheckpointError
from launch import common

MODES = ("train_ir", "train_ir_alt", "train_fusion", "train_conditional", "train_denoiser", "restore", "evaluate")

common.define_config_flag()
common.define_flag(flags.DEFINE_string, "workdir", None, "directory of the run's networks and results")
common.define_flag(flags.DEFINE_enum, "mode", None, MODES, "what to do")
common.define_flag(flags.DEFINE_string, "input", None, "restore: a folder of degraded (or, with --degrade, clean) "
                   "images")
common.define_flag(flags.DEFINE_string, "output", None, "restore: the folder the restored PNGs go to")
common.define_flag(flags.DEFINE_bool, "degrade", False, "restore: --input holds clean images; degrade them first")
common.define_flag(flags.DEFINE_string, "method", "dpir", "restore / evaluate: dpir | ir | ddnm | conditional | "
                   "dpir_ir_alt")


def result_line(result: dict) -> str:
    """The line ``--mode evaluate`` prints: every entry of the result but its sampling options."""
    return " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()
                    if k != "sample")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    common.quiet_library_logs()
    f = flags.FLAGS
    config, workdir = f.config, paths.as_path(f.workdir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        if f.mode.startswith("train_"):
            name = f.mode.removeprefix("train_")
            print(network_summary(config, name))  # bad architecture settings fail before any data is read
            tasks.train(config, workdir, name)
        elif f.mode == "evaluate":
            print(result_line(tasks.evaluate(config, workdir, f.method)))
        else:
            if not f.input or not f.output:
                raise ValueError("--mode restore needs --input and --output folders")
            done = tasks.restore_folder(config, workdir, f.input, f.output, clean_input=f.degrade,
                                        method=f.method)
            print(f"wrote {done['num_images']} restored images ({done['method']}, {done['nfe']} NFE) to "
                  f"{done['output']}")
    except (*common.USER_ERRORS, UnreadableCheckpointError) as err:
        common.exit_with_error(err)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "workdir", "mode"])
    app.run(main)
