"""Sample from a trained run: EMA (or raw) parameters of the newest checkpoint in --workdir.

    python -m launch.sample --workdir /tmp/shapes_edt --sampler unipc --steps 20 --num_samples 64 \\
        --output /tmp/shapes_edt/samples.png
    python -m launch.sample --workdir /tmp/mnist_edt --guidance_scale 2 --guided_fraction 0.4   # guide 8 of 20 calls

Writes a PNG grid and an ``.npz`` beside it with ``samples`` (N, H, W, C) in [-1, 1] and ``labels``: exactly
``edt_jax.load_run(workdir).sample(labels, num_samples, seed=..., ...)`` for the same options. Latent-space models
(in_channels 4) decode their latents with the VAE of the run's config (``vae.path``, or ``--vae``) and also
store the ``latents``; without a VAE they write the latents only.
"""

from __future__ import annotations

import numpy as np
from absl import app, flags

import edt_jax
from edt_jax import paths
from edt_jax.data.pixels import save_grid
from launch import common

common.define_sampling_flags()
common.define_flag(flags.DEFINE_string, "output", None,
                   "PNG path (default WORKDIR/samples.png); the .npz goes beside it")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    common.quiet_library_logs()
    f = flags.FLAGS
    try:
        run = edt_jax.load_run(f.workdir, f.step, f.use_ema, vae_path=f.vae)
        num = run.default_num_samples if f.num_samples is None else f.num_samples
        labels = run.resolve_labels(common.parse_labels(f.labels), num, f.seed)
        samples = run.sample(labels, seed=f.seed, decode=False, **common.sampling_options())
        decode, latents = run.decoder(), None
        if decode is not None:
            latents, samples = samples, decode(samples)
    except common.USER_ERRORS as err:
        common.exit_with_error(err)
    output = paths.as_path(f.output) if f.output else paths.as_path(run.workdir) / "samples.png"
    output.parent.mkdir(parents=True, exist_ok=True)
    arrays = output.with_suffix(".npz")
    with arrays.open("wb") as file:
        np.savez(file, samples=samples, labels=labels, step=run.step,
                 **({} if latents is None else {"latents": latents}))
    if samples.shape[-1] in (1, 3):
        save_grid(samples, output)
        # stdout, not the log: the one line a user needs after the command returns.
        print(f"wrote {len(samples)} samples (step {run.step}, {'EMA' if run.use_ema else 'raw'} parameters): the "
              f"grid {output.resolve()} and the arrays {arrays.resolve()}")
    else:
        print(f"wrote {len(samples)} latents to {arrays.resolve()} (pass --vae or set vae.path to decode them)")


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir"])  # here, not at import: launch.analyze reuses these flags
    app.run(main)
