"""Sample from a trained run: EMA (or raw) parameters of the newest checkpoint in --workdir.

    python -m launch.sample --workdir /tmp/shapes_edt --sampler unipc --steps 20 --num_samples 64 \\
        --output /tmp/shapes_edt/samples.png
    python -m launch.sample --workdir /tmp/mnist_edt --guidance_scale 2 --guided_fraction 0.4   # guide 8 of 20 calls
    python -m launch.sample --pipeline /data/stable-diffusion-v1-5 --prompt "an astronaut riding a horse" \
        --steps 25 --output /tmp/sd/astronaut.png

With --pipeline (a local diffusers Stable Diffusion folder) the prompts (--prompt, repeatable) are drawn with
``edt_jax.t2i.StableDiffusion``: the folder's scheduler unless --sampler names a library sampler, --steps 50 and
--guidance_scale 7.5 unless given; the ``.npz`` holds ``images`` (N, H, W, 3) in [0, 1], ``latents`` and
``prompts``.

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
from edt_jax.batching import map_in_batches
from edt_jax.data.pixels import save_grid
from launch import common

common.define_sampling_flags()
common.define_flag(flags.DEFINE_string, "output", None,
                   "PNG path (default WORKDIR/samples.png); the .npz goes beside it")
PIPELINE_BATCH = 8  # prompts per compiled call of --pipeline

common.define_flag(flags.DEFINE_string, "pipeline", None,
                   "a local diffusers Stable Diffusion folder to sample instead of a run")
common.define_flag(flags.DEFINE_multi_string, "prompt", None, "a prompt for --pipeline (repeat the flag for several)")
common.define_flag(flags.DEFINE_string, "negative_prompt", "",
                   "the negative prompt of --pipeline (the unconditional branch)")
common.define_flag(flags.DEFINE_enum, "dtype", "float32", ["float32", "bfloat16"],
                   "compute dtype of --pipeline's networks")


def sample_pipeline(f) -> None:
    """--pipeline: the prompts through ``StableDiffusion``; writes the grid and the arrays."""
    from edt_jax.t2i import StableDiffusion

    if not f.prompt:
        raise ValueError("--pipeline needs at least one --prompt")
    if f.output is None:
        raise ValueError("--pipeline needs --output (the PNG path; the .npz goes beside it)")
    pipe = StableDiffusion.from_pretrained(f.pipeline, dtype=f.dtype)
    prompts = np.asarray([p for p in f.prompt for _ in range(f.num_samples or 1)])
    steps, sampler = f.steps or 50, f.sampler or "scheduler"
    scales = pipe.guidance_scales(7.5 if f.guidance_scale is None else f.guidance_scale, steps, sampler=sampler,
                                  guided_fraction=f.guided_fraction, after=f.guidance_after)
    size = min(PIPELINE_BATCH, len(prompts))
    starts = np.arange(len(prompts)) // size * size  # each row's batch start: batch k draws from seed + start

    def one_batch(batch, batch_starts):
        out = pipe.sample(pipe.encode_prompt(list(batch)), pipe.encode_prompt([f.negative_prompt] * len(batch)),
                          num_inference_steps=steps, seed=f.seed + int(batch_starts[0]), sampler=sampler,
                          guidance_scale=scales)
        return out["images"], out["latents"]

    # Batches of one size (the last padded, then cut): one compile for any number of prompts.
    images, latents = map_in_batches(one_batch, prompts, starts, batch_size=size, progress="sampled")
    output = paths.as_path(f.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.with_suffix(".npz").open("wb") as file:
        np.savez(file, images=images, latents=latents, prompts=prompts)
    save_grid(images * 2 - 1, output)
    print(f"wrote {len(images)} images: the grid {output.resolve()} and the arrays "
          f"{output.with_suffix('.npz').resolve()}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    common.quiet_library_logs()
    f = flags.FLAGS
    if (f.workdir is None) == (f.pipeline is None):
        common.exit_with_error(ValueError("give exactly one of --workdir (a training run) and --pipeline "
                                          "(a diffusers Stable Diffusion folder)"))
    if f.pipeline is not None:
        try:
            return sample_pipeline(f)
        except common.USER_ERRORS as err:
            common.exit_with_error(err)
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
    app.run(main)
