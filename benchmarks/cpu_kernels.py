"""The XLA CPU slow paths behind the training-step rewrite, each timed against the form the library now uses.

    python -m benchmarks.cpu_kernels

Shapes are EDT-S/2's first stage at batch 8 (256 tokens, width 312, 6 heads). Cases:

    dense gradient     gradient of a (8, 256, 312) x (312, 1248) Linear: on the 3-D input (nn.Dense) vs on the
                       flattened (2048, 312) matrix (edt_jax.models.layers.TokenDense)
    batch sum          summing an (8, 6, 256, 256) gradient over its batch axis: jnp.sum vs a product with ones
                       (edt_jax.models.layers.sum_over_batch)
    attention gradient gradient of softmax(q k^T + bias) v with a shared (1, 6, 256, 256) bias: autodiff of
                       jax.nn.dot_product_attention (the previous code) vs explicit_attention's written gradient

Writes ``benchmarks/results/cpu_kernels_<backend>.md/.json``.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from benchmarks.bench_utils import command_line, machine_info, md_table, time_call, write_results
from edt_jax.models.blocks import explicit_attention
from edt_jax.models.layers import sum_over_batch

B, L, D, H = 8, 256, 312, 6


def cases() -> dict[str, tuple]:
    keys = jax.random.split(jax.random.key(0), 6)
    x = jax.random.normal(keys[0], (B, L, D))
    w = jax.random.normal(keys[1], (D, 4 * D)) * D ** -0.5
    grad_of = lambda f: jax.grad(lambda *a: jnp.sum(f(*a) ** 2), argnums=(0, 1))  # noqa: E731
    dense_3d = grad_of(lambda w, x: jnp.einsum("bld,df->blf", x, w))
    dense_2d = grad_of(lambda w, x: (x.reshape(-1, D) @ w).reshape(B, L, 4 * D))
    g = jax.random.normal(keys[2], (B, H, L, L))
    q, k, v = (jax.random.normal(key, (B, L, H, D // H)) for key in keys[3:6])
    bias = jax.random.normal(keys[2], (1, H, L, L))

    def fused(q, k, v, bias):
        return jax.nn.dot_product_attention(q, k, v, bias=bias)

    def explicit(q, k, v, bias):
        heads_first = [a.transpose(0, 2, 1, 3) for a in (q * (D // H) ** -0.5, k, v)]
        return explicit_attention(*heads_first, bias, None).transpose(0, 2, 1, 3)

    attention_grad = lambda f: jax.grad(lambda *a: jnp.sum(f(*a) ** 2), argnums=(0, 1, 2, 3))  # noqa: E731
    return {
        "dense gradient": ((dense_3d, (w, x)), (dense_2d, (w, x))),
        "batch sum": ((lambda g: jnp.sum(g, axis=0), (g,)), (sum_over_batch, (g,))),
        "attention gradient": ((attention_grad(fused), (q, k, v, bias)), (attention_grad(explicit), (q, k, v, bias))),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out_dir", default=str(Path(__file__).resolve().parent / "results"))
    args = p.parse_args()
    start = time.perf_counter()
    rows, results = [], {}
    for name, ((slow, slow_args), (fast, fast_args)) in cases().items():
        before = statistics.median(time_call(slow, slow_args, args.repeats)[1])
        after = statistics.median(time_call(fast, fast_args, args.repeats)[1])
        results[name] = {"previous_ms": 1000 * before, "now_ms": 1000 * after}
        rows.append([name, f"{1000 * before:.2f}", f"{1000 * after:.2f}", f"{before / after:.1f}x"])
        print(rows[-1], flush=True)
    backend = jax.default_backend()
    report = (f"# XLA CPU slow paths and the forms the library uses ({backend})\n\n"
              f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}\n- machine: {machine_info()}\n"
              f"- command: `{command_line()}`\n- EDT-S/2 first-stage shapes at batch 8, float32; "
              f"median of {args.repeats} jitted runs after a warm-up\n"
              f"- total runtime: {time.perf_counter() - start:.0f} s\n\n"
              f"{md_table(['case', 'previous form ms', 'library form ms', 'ratio'], rows)}\n")
    print(report)
    print(f"wrote {write_results(args.out_dir, f'cpu_kernels_{backend}', report, results)}")


if __name__ == "__main__":
    main()
