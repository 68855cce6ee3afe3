"""Where the official reference fixtures live, and skipping loaders for them.

The fixture folder sits beside the repository (``../shared/fixtures``); the environment variable
``EDT_JAX_FIXTURES`` points elsewhere (e.g. on a machine where only the repository was copied).
A test that needs a file skips with a clear reason when it is absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(os.environ.get("EDT_JAX_FIXTURES", Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"))


def fixture_path(name: str) -> Path:
    """Path of fixture ``name``; skips the calling test when it is absent."""
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"official fixture {name} not found at {path} (the shared/fixtures folder is absent)")
    return path


def load_npz(name: str) -> dict[str, np.ndarray]:
    with np.load(fixture_path(name), allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def load_json(name: str):
    return json.loads(fixture_path(name).read_text())


def inception_recipe_state_dict(fixture: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The FID Inception state dict rebuilt from ``fid_inception_recipe.npz`` by the recipe in the fixtures' README."""
    names = [str(n) for n in fixture["names"]]
    shapes = json.loads(str(fixture["shapes_json"]))
    state = {}
    for i, (name, shape) in enumerate(zip(names, shapes, strict=True)):
        z = np.random.default_rng(1000 + i).standard_normal(shape)
        if name.endswith("num_batches_tracked"):
            state[name] = np.zeros(shape, np.int64)
            continue
        if name.endswith("running_var"):
            value = 1 + 0.1 * np.abs(z)
        elif name.endswith("running_mean"):
            value = 0.1 * z
        elif name.endswith("bn.weight"):
            value = 1 + 0.1 * z
        elif name.endswith("bn.bias"):
            value = 0.1 * z
        else:
            value = z * np.sqrt(2 / np.prod(shape[1:]))
        state[name] = value.astype(np.float32)
    return state
