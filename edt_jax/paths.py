"""Every path a user gives (workdirs, data_dir, weights, outputs) as an ``etils.epath.Path``.

``as_path("gs://bucket/run")`` keeps the URL whole (``pathlib`` would fold ``gs://`` into ``gs:/``) and works
for every scheme epath knows (``gs://`` through gcsfs or TensorFlow's gfile, ``s3://``, ...); local paths get
``~`` expanded and behave as ``pathlib`` paths. The library finds storage emulators only through the standard
variables the clients read themselves (``STORAGE_EMULATOR_HOST`` for gcsfs, ``TENSORSTORE_GCS_HTTP_URL`` for
orbax's tensorstore); it reads none itself.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np
from etils import epath

PathLike = str | os.PathLike


def is_url(path: PathLike) -> bool:
    """Whether ``path`` names an object store or another remote scheme (``gs://...``), not a local file."""
    return "://" in str(path)


def expand(path: PathLike) -> str:
    """``path`` as a string: ``~`` expanded for local paths; URLs such as ``gs://bucket/dir`` unchanged."""
    return str(path) if is_url(path) else os.path.expanduser(os.fspath(path))


def as_path(path: PathLike) -> epath.Path:
    """``path`` (a string, ``pathlib.Path`` or epath) as an ``epath.Path``, ``~`` expanded for local paths."""
    return epath.Path(expand(path))


@contextlib.contextmanager
def open_npz(path: PathLike) -> Iterator[np.lib.npyio.NpzFile]:
    """``np.load`` of the ``.npz`` file at ``path`` (local or a URL), without pickles, open for the ``with`` body."""
    with as_path(path).open("rb") as f, np.load(f, allow_pickle=False) as data:
        yield data
