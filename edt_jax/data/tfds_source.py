"""Random access to prepared TFDS datasets, with TensorFlow absent and nothing downloaded.

``tfds.data_source`` reads ArrayRecord shards and decodes each record to a dict of numpy arrays (images to uint8
(H, W, C) with PIL). Its failures for a dataset that is not there are long multi-line texts (the list of all 245
registered datasets, or a misleading "file format TFRECORD is not supported"), so ``open_tfds`` re-raises them as
one line that names the directory TFDS looked in and how to prepare the dataset.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import tensorflow_datasets as tfds

from edt_jax import paths

_PREPARE_HINT = ("prepare it on a machine with network access with `tfds build {ds} --data_dir {root} "
                 "--file_format array_record` and copy {root}/{base} over")
_BUILD_HINT = ("check the name and data_dir, or write it there with edt_jax.data.folder.build_image_folder_dataset "
               "or build_latent_dataset")


def _default_data_dir() -> str:
    # Where TFDS looks when data_dir is None: $TFDS_DATA_DIR, else ~/tensorflow_datasets.
    return os.fspath(tfds.core.constants.get_default_data_dir())


def _split_names(split: str) -> list[str]:
    """Base split names in a split expression: 'train[:10%]+test' -> ['train', 'test']."""
    return [re.sub(r"\[.*\]$", "", part.strip()) for part in split.split("+")]


def _one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def _explain(name: str, split: str, data_dir: str | None, err: Exception) -> Exception:
    """Works out why ``tfds.data_source`` failed; returns a one-line exception to raise instead."""
    root = os.fspath(data_dir) if data_dir is not None else _default_data_dir()
    base = name.split("/")[0].split(":")[0]
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        where = paths.as_path(root) / base
        versions = sorted(p.name for p in where.iterdir() if p.is_dir()) if where.is_dir() else []
        found = f" (found versions {versions} there)" if versions else ""
        return FileNotFoundError(f"TFDS dataset {name!r} is not registered in TFDS and not prepared in {where}{found}; "
                                 f"{_BUILD_HINT}")
    except Exception as build_err:  # e.g. a malformed name: TFDS explains over a dozen lines
        return ValueError(f"Cannot open TFDS dataset {name!r} in {root}: {_one_line(build_err)}")
    if not builder.is_prepared():
        return FileNotFoundError(f"TFDS dataset {name!r} is not prepared in {builder.data_dir} "
                                 f"(nothing is downloaded); {_PREPARE_HINT.format(ds=name, root=root, base=base)}")
    formats = builder.info.available_file_formats()
    if not formats & tfds.core.FileFormat.with_random_access():
        found = ", ".join(sorted(f.value for f in formats)) or "unknown"
        return ValueError(f"TFDS dataset {name!r} in {builder.data_dir} is stored as {found}, but random access needs "
                          f"array_record; rebuild it with `tfds build {name} --data_dir {root} "
                          "--file_format array_record`")
    available = sorted(builder.info.splits.keys())
    unknown = [s for s in _split_names(str(split)) if s not in available]
    if unknown:
        return ValueError(f"TFDS dataset {name!r} in {builder.data_dir} has no split {unknown[0]!r}; "
                          f"available splits: {', '.join(available)}")
    return RuntimeError(f"Cannot open split {split!r} of TFDS dataset {name!r} in {builder.data_dir}: "
                        f"{_one_line(err)}")


def open_tfds(name: str, split: str = "train", data_dir: str | os.PathLike | None = None) -> Sequence[dict[str, Any]]:
    """Opens one split of a prepared ArrayRecord TFDS dataset for random access; never downloads.

    Args:
        name: TFDS name, optionally with config/version ('mnist', 'imagenet2012:5.1.0', or a name written by
            ``edt_jax.data.folder``).
        split: split expression, e.g. 'train', 'test', 'train[:90%]'.
        data_dir: TFDS data dir; None means TFDS' default ($TFDS_DATA_DIR, else ~/tensorflow_datasets).

    Returns:
        A sequence: ``len(source)`` records; ``source[i]`` is a dict of numpy arrays, e.g. for mnist
        ``{"image": uint8 (28, 28, 1), "label": int64 ()}``.

    Raises:
        FileNotFoundError: the dataset is not prepared in ``data_dir`` (one line: name, directory, how to prepare).
        ValueError: unknown split (lists the available ones), or not stored as array_record.
    """
    if data_dir is not None:
        data_dir = paths.expand(data_dir)
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as err:  # any TFDS failure: diagnosed and re-raised as one line below
        # Diagnose after the fact rather than check beforehand: tfds.testing.mock_data patches data_source's
        # internals (not builder.is_prepared), so a pre-check would reject mocked datasets.
        explained = _explain(name, split, data_dir, err)
        # Keep the TFDS traceback only when we could not tell what went wrong.
        raise explained from (err if isinstance(explained, RuntimeError) else None)
