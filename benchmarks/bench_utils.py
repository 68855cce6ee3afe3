"""Helpers shared by the benchmark scripts: markdown tables, the command line, machine description, compiled timing."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax

from edt_jax.reporting import md_table, spread  # noqa: F401  (re-exported for the benchmark scripts)


def load_config(spec: str):
    """The ``get_config(arg)`` of a ``file.py[:arg]`` config, imported as ``launch.train`` does (``configs`` is a
    package at the repository root, on ``sys.path`` when a benchmark runs as ``python -m benchmarks.<name>``)."""
    import importlib

    path, _, arg = spec.partition(":")
    return importlib.import_module(path.removesuffix(".py").replace("/", ".")).get_config(arg or None)


def command_line() -> str:
    """The command that started this process as the reports quote it: ``python -m benchmarks.<name> ARGS``."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    program = ["-m", spec.name] if spec is not None else sys.argv[:1]
    return shlex.join(["python", *program, *sys.argv[1:]])


def machine_info() -> str:
    cpu = platform.processor()
    if not cpu and Path("/proc/cpuinfo").exists():
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
        cpu = names[0] if names else ""
    dev = jax.devices()[0]
    return (f"CPU `{cpu or platform.machine()}`, os.cpu_count() = {os.cpu_count()}, jax {jax.__version__}, "
            f"backend `{jax.default_backend()}` ({dev.device_kind}, {jax.device_count()} device(s))")


def time_call(fn: Callable, args: tuple, repeats: int) -> tuple[float, list[float]]:
    """(compile seconds, list of run seconds) of ``jax.jit(fn)`` on ``args``."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(*args))  # warm-up
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        runs.append(time.perf_counter() - t0)
    return compile_s, runs


def random_model_inputs(model, batch: int) -> tuple:
    """(variables, x, t, y) for a diffusion network: initialised parameters and a random NHWC batch."""
    keys = jax.random.split(jax.random.key(0), 4)
    size = model.input_size
    x = jax.random.normal(keys[0], (batch, size, size, model.in_channels))
    t = jax.random.uniform(keys[1], (batch,), maxval=999.0)
    y = jax.random.randint(keys[2], (batch,), 0, model.num_classes)
    variables = jax.jit(model.init)(keys[3], x[:1], t[:1], y[:1])
    return variables, x, t, y


def write_results(out_dir: str | Path, stem: str, report: str, payload) -> Path:
    """Write ``<stem>.md`` (the printed report) and ``<stem>.json`` (the raw numbers) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(report)
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=1))
    return out / f"{stem}.md"
