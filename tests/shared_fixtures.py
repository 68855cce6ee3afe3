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
