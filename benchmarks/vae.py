"""VAE benchmark: encode and decode throughput of the SD VAE (diffusers AutoencoderKL layout).

Random parameters (the throughput does not depend on their values), default SD VAE configuration
(83.65 M parameters), images of ``--size`` pixels (256 -> 32x32x4 latents). For each compute dtype:
images/s of ``encode`` (images -> posterior mean and log-variance) and of ``decode`` (latents ->
images), each jit-compiled at the given batch size on the current default device.

Run from the repository root:

    python -m benchmarks.vae                      # batch 32, bf16 and fp32, 10 repeats (GPU/TPU)
    python -m benchmarks.vae --quick              # batch 1, one repeat: a CPU smoke run

Writes ``benchmarks/results/vae_<backend>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time

import jax
import numpy as np

from benchmarks.bench_utils import command_line, machine_info, md_table, time_call, write_results
from edt_jax.models.vae import abstract_vae_params, create_vae


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=256, help="image side in pixels (a multiple of 8)")
    p.add_argument("--dtypes", default="bfloat16,float32", help="comma-separated compute dtypes")
    p.add_argument("--repeats", type=int, default=10, help="timed runs per measurement (after one warm-up)")
    p.add_argument("--quick", action="store_true", help="batch 1 and one repeat (overrides --batch/--repeats)")
    p.add_argument("--out_dir", default="benchmarks/results")
    args = p.parse_args()
    if args.quick:
        args.batch, args.repeats = 1, 1
    if args.size % 8:
        p.error(f"--size must be a multiple of 8 (the SD VAE downsamples 8x), got {args.size}")
    return args


def benchmark_dtype(dtype: str, args: argparse.Namespace) -> dict:
    vae = create_vae(dtype=dtype)
    keys = jax.random.split(jax.random.key(0), 3)
    size, latent = args.size, args.size // vae.downscale
    images = jax.random.uniform(keys[0], (args.batch, size, size, 3), minval=-1.0, maxval=1.0)
    latents = jax.random.normal(keys[1], (args.batch, latent, latent, vae.latent_channels))
    # Initialise on the smallest image the encoder accepts: the parameter shapes do not depend on it.
    variables = jax.jit(vae.init)(keys[2], images[:1, :vae.downscale, :vae.downscale])

    def encode(v, x):
        return vae.apply(v, x, method=vae.encode)

    def decode(v, z):
        return vae.apply(v, z, method=vae.decode)

    result = {}
    for mode, fn, data in (("encode", encode, images), ("decode", decode, latents)):
        compile_s, runs = time_call(fn, (variables, data), args.repeats)
        seconds = statistics.median(runs)
        result[mode] = {"compile_s": compile_s, "median_s": seconds, "images_per_s": args.batch / seconds}
        print(f"{dtype} {mode}: {args.batch / seconds:,.2f} img/s (compile {compile_s:.1f} s)", flush=True)
    return result


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    params = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(abstract_vae_params(create_vae())))
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    results = {dtype: benchmark_dtype(dtype, args) for dtype in dtypes}
    elapsed = time.perf_counter() - start

    rows = [[dtype, f"{r['encode']['images_per_s']:,.2f}", f"{r['decode']['images_per_s']:,.2f}",
             f"{r['encode']['compile_s']:.0f} / {r['decode']['compile_s']:.0f}"] for dtype, r in results.items()]
    table = md_table(["compute dtype", "encode img/s", "decode img/s", "compile s (enc / dec)"], rows)
    backend = jax.default_backend()
    latent = args.size // 8
    report = (f"# VAE benchmark ({backend})\n\n- date: {datetime.datetime.now().isoformat(timespec='seconds')}\n"
              f"- machine: {machine_info()}\n- command: `{command_line()}`\n"
              f"- SD VAE layout ({params:,} parameters, random values, float32 parameters), batch {args.batch}, "
              f"{args.size}x{args.size}x3 images <-> {latent}x{latent}x4 latents; median of {args.repeats} "
              f"run(s) after a warm-up\n"
              f"- encode: images -> posterior (mean, logvar); decode: latents -> images\n"
              f"- total runtime: {elapsed:.0f} s\n\n{table}\n")
    print(report)
    print(f"wrote {write_results(args.out_dir, f'vae_{backend}', report, {'args': vars(args), 'results': results})}")


if __name__ == "__main__":
    main()
