"""The README's sampling example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import jax.numpy as jnp

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_unipc_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    example = next(b for b in blocks if "samplers.unipc" in b)
    namespace: dict = {}
    exec(compile(example, str(README), "exec"), namespace)
    x0 = namespace["x0"]
    assert x0.shape == (16, 8) and x0.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(x0)))
