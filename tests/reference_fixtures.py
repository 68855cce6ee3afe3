"""The reference fixtures kept in ``tests/fixtures/`` (see the README there), and loaders for them.

The files are part of the repository, so a missing one is an error, not a reason to skip a test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parent / "fixtures"


class MissingFixtureError(FileNotFoundError):
    """A reference fixture that belongs in ``tests/fixtures/`` is not there."""


def fixture_path(name: str) -> Path:
    """Path of fixture ``name``; raises ``MissingFixtureError`` when the file is absent."""
    path = FIXTURES / name
    if not path.is_file():
        raise MissingFixtureError(
            f"reference fixture {name!r} is missing from {FIXTURES}; it is part of the repository "
            f"(see tests/fixtures/README.md): restore it, e.g. with `git checkout -- tests/fixtures/{name}`")
    return path


def load_npz(name: str) -> dict[str, np.ndarray]:
    with np.load(fixture_path(name), allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def load_json(name: str):
    return json.loads(fixture_path(name).read_text())


def inception_recipe_state_dict(fixture: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The FID Inception state dict rebuilt from ``fid_inception_recipe.npz`` (recipe: tests/fixtures/README.md)."""
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
