"""Input pipelines on grain: per-host slices, seeded shuffling and epochs, preprocessing, batches,
checkpointable iterators, and global arrays sharded over a device mesh.

Each process reads the records ``process_index::process_count`` of the source, shuffles them with
its own seeded permutation per epoch, preprocesses, and batches ``global_batch / process_count``
records; ``global_batches`` then assembles the host batches of all processes into one global
``jax.Array`` per field, split over the mesh's batch axes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import grain
import jax
from absl import flags
from jax.sharding import Mesh

from edt_jax.checks import check_int
from edt_jax.data.preprocess import Preprocess, random_horizontal_flip, sample_latent
from edt_jax.mesh import BATCH_AXES, batch_devices, batch_sharding


def host_batch_size(global_batch: int, process_count: int | None = None, mesh: Mesh | None = None) -> int:
    """Per-process batch size; one-line error unless the global batch splits evenly.

    It must divide over the processes and, with a mesh, over the devices along its batch axes.
    """
    process_count = jax.process_count() if process_count is None else process_count
    check_int("batch_size", global_batch, 1)
    if global_batch % process_count:
        raise ValueError(f"batch_size {global_batch} is not divisible by the number of processes ({process_count})")
    if mesh is not None:
        devices = batch_devices(mesh)
        if global_batch % devices:
            raise ValueError(f"batch_size {global_batch} is not divisible by the {devices} devices of the mesh's "
                             f"batch axes {BATCH_AXES}")
    return global_batch // process_count


def create_dataset(source: Sequence, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                   num_epochs: int | None = None, image_size: int | None = None, channels: int | None = None,
                   label_key: str | None = "label", latent_scale: float = 1.0, random_flip: bool = False,
                   keep_keys: tuple[str, ...] = ("factors",), drop_remainder: bool = True,
                   process_index: int | None = None, process_count: int | None = None, num_threads: int | None = None,
                   num_workers: int = 0) -> grain.IterDataset:
    """A grain dataset of host batches (dicts of numpy arrays, leading axis ``batch_size``).

    Args:
      source: random-access records (``__len__``/``__getitem__``), e.g. from ``create_source``.
      batch_size: records per batch on this process (see ``host_batch_size``).
      seed: shuffling and flip seed; the same seed gives the same stream.
      shuffle: reshuffle every epoch; ``num_epochs`` None repeats forever.
      image_size, channels, label_key, latent_scale, keep_keys: see ``Preprocess``.
      random_flip: flip images left-right with probability 1/2 (seeded per record).
      process_index, process_count: this process's slice (default: from ``jax``).
      num_threads: reader threads (default: a quarter of the CPU cores, 1 to 8; decoding is mostly
        GIL-bound, so on 2 cores one thread measured fastest); ``num_workers`` > 0 moves reading and
        preprocessing to that many worker processes.

    The iterator of the result (``iter(ds)``) has ``get_state()``/``set_state()`` for checkpoints.
    """
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if not 0 <= index < count:
        raise ValueError(f"process_index {index} must be in [0, {count})")
    if len(source) < count:
        raise ValueError(f"the source has {len(source)} records, fewer than the {count} processes reading it")
    ds = grain.MapDataset.source(source)[index::count]
    if len(ds) < batch_size and drop_remainder:
        raise ValueError(f"this process's slice has {len(ds)} records, fewer than one batch of {batch_size}")
    ds = ds.seed(seed + index)
    if shuffle:
        ds = ds.shuffle()
    ds = ds.repeat(num_epochs)
    ds = ds.map(Preprocess(image_size, channels, label_key, latent_scale, keep_keys))
    if "latent_mean" in source[0]:  # a cache of VAE posteriors: a fresh latent sample per record and epoch
        ds = ds.random_map(sample_latent)
    if random_flip:
        ds = ds.random_map(random_horizontal_flip)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if num_threads is None:
        num_threads = max(1, min(8, (os.cpu_count() or 1) // 4))
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * batch_size))
    if num_workers > 0:
        if not flags.FLAGS.is_parsed():
            # grain's worker processes read absl flags; outside an absl app nobody has parsed them.
            flags.FLAGS.mark_as_parsed()
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    return it_ds


def to_global(host_batch: dict, mesh: Mesh) -> dict:
    """Host batch (this process's rows) -> global ``jax.Array``s sharded over the batch axes."""
    sharding = batch_sharding(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), host_batch)


def global_batches(iterator: Iterator[dict], mesh: Mesh) -> Iterator[dict]:
    """Wrap an iterator of host batches into one of global, mesh-sharded batches."""
    for host_batch in iterator:
        yield to_global(host_batch, mesh)
