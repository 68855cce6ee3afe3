"""Evaluate a training run: generate N samples with a chosen sampler and measure them against a reference.

    python -m launch.evaluate --workdir /tmp/shapes_edt --num_samples 2000 --sampler unipc --steps 10 \\
        --metrics fd_shapes,pr_shapes
    python -m launch.evaluate --workdir DIR --num_samples 50000 --guidance_scale 1.5 --vae ~/sd-vae-ft-ema \\
        --metrics fid,is,pr_inception --inception_weights ~/pt_inception-2015-12-05-6726825d.pth \\
        --reference ~/VIRTUAL_imagenet256_labeled.npz --save_samples DIR/samples_50k.npz

The metrics (``--metrics``, comma-separated) are those of ``edt_jax.metrics.evaluation``: fd_shapes, fd_mnist5k,
pr_shapes, pr_mnist5k, acc_shapes, acc_mnist5k (the shipped classifiers, offline), fid, is, pr_inception (the
FID Inception network, from a local weights file). The sampling flags are ``launch.sample``'s. Writes
``edt_jax.load_run(workdir).evaluate(...)``'s JSON report (``--report``, default
``WORKDIR/eval_<sampler>_<steps>.json``) and optionally the samples in the ADM evaluator's ``.npz`` layout.
"""

from __future__ import annotations

import json

from absl import app, flags, logging

import edt_jax
from edt_jax import paths
from edt_jax.metrics.evaluation import METRICS
from launch import common

common.define_sampling_flags()
common.define_flag(flags.DEFINE_list, "metrics", ["fd_shapes"], f"metrics to compute: {', '.join(METRICS)}")
common.define_flag(flags.DEFINE_integer, "batch_size", 256,
                   "samples generated per sampler call (split over the devices)")
common.define_flag(flags.DEFINE_string, "reference", None,
                   "FID / pr_inception reference: statistics or ADM batch .npz, or a data source (shapes, "
                   "mnist5k, tfds:<name>, folder:<dir>)")
common.define_flag(flags.DEFINE_string, "inception_weights", None,
                   "local pt_inception-2015-12-05-6726825d.pth (or .npz) for fid/is")
common.define_flag(flags.DEFINE_string, "report", None,
                   "JSON report path (default WORKDIR/eval_<sampler>_<steps>.json)")
common.define_flag(flags.DEFINE_string, "save_samples", None,
                   "also write the samples as an ADM-evaluator .npz (arr_0 uint8, arr_1 labels)")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    common.quiet_library_logs()
    f = flags.FLAGS
    try:
        run = edt_jax.load_run(f.workdir, f.step, f.use_ema, vae_path=f.vae)
        report = run.evaluate(list(f.metrics), f.num_samples, labels=common.parse_labels(f.labels), seed=f.seed,
                              batch_size=f.batch_size, reference=f.reference, inception_weights=f.inception_weights,
                              samples_path=f.save_samples, **common.sampling_options())
    except common.USER_ERRORS as err:
        common.exit_with_error(err)
    default = paths.as_path(run.workdir) / f"eval_{report['sampler']}_{report['steps']}.json"
    output = paths.as_path(f.report) if f.report else default
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    logging.info("%s: %s", output, json.dumps(report["metrics"]))
    print(json.dumps(report))


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir"])
    app.run(main)
