"""Encode an image source into an ArrayRecord dataset of VAE latents (EDT/DiT's extract_features.py).

    python -m launch.extract_latents --config configs/edt_s_imagenet256.py --vae ~/sd-vae-ft-ema \\
        --output ~/tensorflow_datasets

What it stores and how it resumes: ``edt_jax.runs.latents``. The result is the TFDS dataset named by
``config.data.source`` (``tfds:<name>``) in ``--output``, ready for ``launch.train``.
"""

from __future__ import annotations

from absl import app, flags, logging

from edt_jax.runs.latents import STORE_MODES, extract
from launch import common

common.define_config_flag()
common.define_flag(flags.DEFINE_string, "vae", None,
                   "local diffusers VAE folder or weights file (default: the config's vae.path)")
common.define_flag(flags.DEFINE_string, "output", None, "TFDS data_dir to write the latent dataset into")
common.define_flag(flags.DEFINE_string, "source", None,
                   "image source to encode (default: the config's data.image_source)")
common.define_flag(flags.DEFINE_enum, "store", "sample", STORE_MODES,
                   "store a posterior sample (EDT) or its mean and std")
common.define_flag(flags.DEFINE_integer, "batch_size", 64,
                   "images per VAE call on this process (split over its devices)")
common.define_flag(flags.DEFINE_integer, "chunk_size", 4096, "records per resumable chunk")
common.define_flag(flags.DEFINE_integer, "num_examples", None, "encode only the first N records (default: all)")
common.define_flag(flags.DEFINE_integer, "seed", 0, "seed of the flips and posterior samples")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    common.quiet_library_logs()
    common.maybe_initialize_distributed()
    f = flags.FLAGS
    try:
        name = extract(f.config, f.vae, f.output, source_spec=f.source, store=f.store, batch_size=f.batch_size,
                       chunk_size=f.chunk_size, num_examples=f.num_examples, seed=f.seed)
    except common.USER_ERRORS as err:
        common.exit_with_error(err)
    logging.info("wrote the latent dataset %r to %s (train with data.source=tfds:%s, data.data_dir=%s)", name,
                 f.output, name, f.output)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "output"])
    app.run(main)
