"""Resumable latent caches: encode a source chunk by chunk into ``.npz`` files, then one ArrayRecord dataset.

Encoding ImageNet with the SD VAE takes hours, so the work is cut into fixed chunks of consecutive
records. Each finished chunk is one file in ``<dir>/chunks`` (locally written to a temporary name and
renamed; on object stores such as ``gs://`` one atomic object write), so a file that exists is complete; a
restarted extraction skips the chunks that exist. Once all are there, ``build_dataset_from_chunks`` streams
them into a regular TFDS ArrayRecord dataset (the same layout as ``edt_jax.data.folder.build_latent_dataset``),
read back with ``create_source("tfds:<name>")``.

    store = ChunkStore(cache_dir, num_examples=len(source), chunk_size=1024, settings={...})
    for i in store.pending():
        store.write(i, {"latent": ..., "label": ...})      # arrays with leading axis store.chunk_len(i)
    name = build_dataset_from_chunks(store, data_dir, "imagenet256_sd_vae_latents")

The ``settings`` (VAE file, image size, seed, what is stored...) are kept in ``manifest.json``: a cache
made with other settings is refused rather than silently mixed.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from edt_jax import paths
from edt_jax.data.folder import _check_name, _fingerprint, _reuse, _write, latent_features

MANIFEST = "manifest.json"


class ChunkStore:
    """Chunk files of an extraction in ``directory``; chunk ``i`` holds records ``[i * chunk_size, ...)``.

    Args:
      directory: the cache folder (created; a ``manifest.json`` records the layout and settings).
      num_examples: records in the source.
      chunk_size: records per chunk (the last chunk may be shorter).
      settings: JSON-serialisable description of how the chunks are made; resuming with different
        settings raises ``ValueError`` naming the differences.
    """

    def __init__(self, directory: paths.PathLike, num_examples: int, chunk_size: int,
                 settings: Mapping[str, Any] | None = None):
        if num_examples < 1 or chunk_size < 1:
            raise ValueError(f"num_examples ({num_examples}) and chunk_size ({chunk_size}) must be >= 1")
        self.directory = paths.as_path(directory)
        self.num_examples, self.chunk_size = int(num_examples), int(chunk_size)
        manifest = {"num_examples": self.num_examples, "chunk_size": self.chunk_size,
                    "settings": json.loads(json.dumps(dict(settings or {}), default=str))}
        path = self.directory / MANIFEST
        if path.is_file():
            stored = json.loads(path.read_text())
            if stored != manifest:
                changed = sorted(k for k in set(stored) | set(manifest) if stored.get(k) != manifest.get(k))
                changed += sorted(f"settings.{k}" for k in set(stored.get("settings", {})) | set(manifest["settings"])
                                  if stored.get("settings", {}).get(k) != manifest["settings"].get(k))
                raise ValueError(f"the latent cache {str(self.directory)!r} was made with other settings "
                                 f"({', '.join(c for c in changed if c != 'settings')}); delete it or use another "
                                 f"output folder")
        else:
            (self.directory / "chunks").mkdir(parents=True, exist_ok=True)
            _write_atomic(path, json.dumps(manifest, indent=2).encode())
        self.manifest = manifest

    @property
    def num_chunks(self) -> int:
        return -(-self.num_examples // self.chunk_size)

    def chunk_range(self, index: int) -> range:
        """Record indices of chunk ``index``."""
        start = index * self.chunk_size
        return range(start, min(start + self.chunk_size, self.num_examples))

    def path(self, index: int) -> epath.Path:
        return self.directory / "chunks" / f"{index:06d}.npz"

    def is_done(self, index: int) -> bool:
        return self.path(index).is_file()

    def pending(self, process_index: int = 0, process_count: int = 1) -> list[int]:
        """Chunks not yet written that belong to this process (chunk ``i`` goes to process ``i % count``)."""
        return [i for i in range(process_index, self.num_chunks, process_count) if not self.is_done(i)]

    def write(self, index: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Store chunk ``index`` (every array has ``len(chunk_range(index))`` rows); atomic."""
        rows = len(self.chunk_range(index))
        bad = {k: np.shape(v) for k, v in arrays.items() if np.shape(v)[:1] != (rows,)}
        if bad:
            raise ValueError(f"chunk {index} holds {rows} records, but arrays have shapes {bad}")
        self.path(index).parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
        _write_atomic(self.path(index), buffer.getvalue(), temporary=self.path(index).with_suffix(".tmp.npz"))

    def read(self, index: int) -> dict[str, np.ndarray]:
        with paths.open_npz(self.path(index)) as data:
            return {k: data[k] for k in data.files}


def _write_atomic(path: epath.Path, payload: bytes, temporary: epath.Path | None = None) -> None:
    """Write ``payload`` so that ``path`` is complete or absent: an object write is atomic by itself, a local file is
    written to ``temporary`` (default ``<path>.tmp``) and renamed."""
    if paths.is_url(path):
        path.write_bytes(payload)
        return
    temporary = temporary or path.with_name(path.name + ".tmp")
    temporary.write_bytes(payload)
    os.replace(temporary, path)


def build_dataset_from_chunks(store: ChunkStore, data_dir: str | os.PathLike, name: str, *, split: str = "train",
                              overwrite: bool = False) -> str:
    """Stream all chunks of ``store`` into the ArrayRecord TFDS dataset ``data_dir/<name>``; returns ``name``.

    Every array field becomes a float32 tensor feature except ``label`` (int64 scalar). Records keep the
    source order. A dataset already built from the same complete cache is reused.
    """
    _check_name(name, split)
    missing = [i for i in range(store.num_chunks) if not store.is_done(i)]
    if missing:
        raise ValueError(f"the latent cache {str(store.directory)!r} misses {len(missing)} of {store.num_chunks} "
                         f"chunks (first: {missing[0]}); finish the extraction first")
    first = store.read(0)
    labels = "label" in first
    shapes = {k: v.shape[1:] for k, v in first.items() if k != "label"}
    fingerprint = _fingerprint(split, store.manifest, "chunks")
    if _reuse(data_dir, name, fingerprint, overwrite):
        return name

    def examples() -> Iterator[tuple[int, dict[str, Any]]]:
        for index in range(store.num_chunks):
            chunk = store.read(index)
            for row, key in enumerate(store.chunk_range(index)):
                record = {k: np.asarray(chunk[k][row], np.float32) for k in shapes}
                if labels:
                    record["label"] = np.int64(chunk["label"][row])
                yield key, record

    features: dict[str, tfds.features.FeatureConnector] = latent_features(shapes)
    if labels:
        features["label"] = tfds.features.Scalar(dtype=np.int64)
    description = (f"{', '.join(f'{k} {s}' for k, s in shapes.items())} float32 of {store.num_examples} records"
                   f"{' with labels' if labels else ''}; made with {json.dumps(store.manifest['settings'])}.")
    return _write(name, data_dir, split, tfds.features.FeaturesDict(features), examples(), description, fingerprint)
