"""Train an offline feature extractor (the classifier behind FD_shapes / FD_mnist5k) and write its weights.

    python -m launch.train_extractor --dataset shapes --output edt_jax/metrics/weights/shapes_classifier.npz
    python -m launch.train_extractor --dataset mnist5k --output edt_jax/metrics/weights/mnist5k_classifier.npz

The training recipe and the held-out splits: ``edt_jax.metrics.extractor_training``.
"""

from __future__ import annotations

from absl import app, flags

from edt_jax.metrics import extractors as ex
from edt_jax.metrics.extractor_training import train_extractor
from launch import common

common.define_flag(flags.DEFINE_enum, "dataset", None, list(ex.SPECS), "dataset whose classifier to train")
common.define_flag(flags.DEFINE_string, "output", None, "path of the .npz weights file to write")
common.define_flag(flags.DEFINE_integer, "steps", None, "training steps (default: 1500 for shapes, 1000 for mnist5k)")
common.define_flag(flags.DEFINE_integer, "batch_size", 128, "training batch size")
common.define_flag(flags.DEFINE_float, "learning_rate", 4e-3, "peak Adam learning rate (linear warmup, cosine decay)")
common.define_flag(flags.DEFINE_integer, "seed", 0, "seed of the initialisation and of the batch order")
common.define_flag(flags.DEFINE_integer, "log_every", 250, "steps between progress lines")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    common.quiet_library_logs()
    f = flags.FLAGS
    try:
        train_extractor(f.dataset, f.output, steps=f.steps, batch_size=f.batch_size, learning_rate=f.learning_rate,
                        seed=f.seed, log_every=f.log_every)
    except common.USER_ERRORS as err:  # bad flags/inputs: one line, no traceback
        common.exit_with_error(err)


if __name__ == "__main__":
    flags.mark_flags_as_required(["dataset", "output"])
    app.run(main)
