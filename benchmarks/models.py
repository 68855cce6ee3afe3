"""Model benchmark: parameters, analytic GFLOPs and measured throughput of EDT and DiT.

For each model: trainable parameters, the official analytic MAC count (GFLOPs = 2 x MACs), and the
measured images/s of (a) an inference forward pass (eval mode, AMM on) and (b) a training
forward+backward pass (train mode, label dropout, gradients of an MSE loss w.r.t. all parameters),
both jit-compiled at the given batch size and compute dtype, with model FLOPs utilisation (MFU)
against the device's dense peak (training counts 3x the forward FLOPs).

Run from the repository root:

    python -m benchmarks.models                                   # batch 256, bf16, all six models (GPU/TPU)
    python -m benchmarks.models --models EDT-S/2,DiT-S/2 --batch 8 --repeats 3   # small CPU run

Writes ``benchmarks/results/models_<backend>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.bench_utils import command_line, machine_info, md_table, random_model_inputs, time_call, write_results
from edt_jax.models import count_macs, create_model
from edt_jax.models.convert import abstract_params

MODELS = ("EDT-S/2", "EDT-B/2", "EDT-XL/2", "DiT-S/2", "DiT-B/2", "DiT-XL/2")

# Dense bf16 peak TFLOP/s by device kind (vendor datasheets; sparsity excluded).
PEAK_TFLOPS = {
    "H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0,
    "TPU v4": 275.0, "TPU v5 lite": 197.0, "TPU v5e": 197.0, "TPU v5p": 459.0, "TPU v6 lite": 918.0,
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated model names")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--input_size", type=int, default=32, help="latent side (32 for 256x256 images)")
    p.add_argument("--dtype", default="bfloat16", help="compute dtype (parameters stay float32)")
    p.add_argument("--repeats", type=int, default=10, help="timed runs per measurement (after one warm-up)")
    p.add_argument("--peak_tflops", type=float, default=None, help="override the device's dense peak")
    p.add_argument("--out_dir", default="benchmarks/results")
    return p.parse_args()


def device_peak_tflops(override: float | None) -> float | None:
    if override:
        return override
    kind = jax.devices()[0].device_kind
    return next((v for k, v in PEAK_TFLOPS.items() if k.lower() in kind.lower()), None)


def benchmark_model(name: str, args: argparse.Namespace, peak: float | None) -> dict:
    model = create_model(name, input_size=args.input_size, dtype=args.dtype)
    params = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(abstract_params(model)))
    macs = count_macs(model)
    variables, x, t, y = random_model_inputs(model, args.batch)
    dropout_key = jax.random.key(1)

    def forward(v, x, t, y):
        return model.apply(v, x, t, y, train=False, amm=True)

    def train_grads(v, x, t, y, key):
        def loss(v):
            out = model.apply(v, x, t, y, train=True, rngs={"dropout": key})
            return jnp.mean(jnp.square(out.astype(jnp.float32)[..., :4] - x))
        return jax.grad(loss)(v)

    result = {"params": params, "gflops": 2 * macs / 1e9}
    for mode, fn, fn_args, flop_factor in [("forward", forward, (variables, x, t, y), 1),
                                           ("train", train_grads, (variables, x, t, y, dropout_key), 3)]:
        compile_s, runs = time_call(fn, fn_args, args.repeats)
        seconds = statistics.median(runs)
        achieved = flop_factor * 2 * macs * args.batch / seconds / 1e12
        result[mode] = {"compile_s": compile_s, "median_s": seconds, "images_per_s": args.batch / seconds,
                        "tflops": achieved, "mfu": achieved / peak if peak else None}
        print(f"{name} {mode}: {args.batch / seconds:,.1f} img/s (compile {compile_s:.1f} s)", flush=True)
    return result


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    peak = device_peak_tflops(args.peak_tflops)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    results = {name: benchmark_model(name, args, peak) for name in names}
    elapsed = time.perf_counter() - start

    def mfu(r):
        return f"{100 * r['mfu']:.1f} %" if r["mfu"] is not None else "n/a"

    rows = [[name, f"{r['params'] / 1e6:.2f} M", f"{r['gflops']:.2f}",
             f"{r['forward']['images_per_s']:,.1f}", mfu(r["forward"]),
             f"{r['train']['images_per_s']:,.1f}", mfu(r["train"]),
             f"{r['forward']['compile_s']:.0f} / {r['train']['compile_s']:.0f}"] for name, r in results.items()]
    table = md_table(["model", "params", "GFLOPs", "fwd img/s", "fwd MFU", "fwd+bwd img/s", "train MFU",
                      "compile s (fwd / train)"], rows)
    backend = jax.default_backend()
    report = (f"# Model benchmark ({backend})\n\n- date: {datetime.datetime.now().isoformat(timespec='seconds')}\n"
              f"- machine: {machine_info()}\n- command: `{command_line()}`\n"
              f"- batch {args.batch}, {args.input_size}x{args.input_size}x4 latents, compute {args.dtype}, "
              f"float32 parameters; median of {args.repeats} runs after a warm-up\n"
              f"- GFLOPs = 2 x the official analytic MACs per image; MFU against a dense peak of "
              f"{f'{peak:g} TFLOP/s' if peak else 'unknown (pass --peak_tflops)'}; training counts 3x forward\n"
              f"- total runtime: {elapsed:.0f} s\n\n{table}\n")
    print(report)
    print(f"wrote {write_results(args.out_dir, f'models_{backend}', report, {'args': vars(args), 'results': results})}")


if __name__ == "__main__":
    main()
