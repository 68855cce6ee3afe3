"""The device-mesh vocabulary shared by the data pipeline and the trainer.

Every mesh of the library has the axes ``MESH_AXES = ("data", "fsdp", "tensor")``; a batch's leading
axis is split over ``BATCH_AXES = ("data", "fsdp")``. This module sits below both ``edt_jax.data``
(which places host batches on the mesh) and ``edt_jax.training`` (which shards the state), so neither
imports the other for it.

    mesh = create_mesh(fsdp=jax.device_count())
    batch = jax.device_put(host_batch, batch_sharding(mesh))
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


def create_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh over ``devices`` (default: all); one size may be -1 (the rest)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = [data, fsdp, tensor]
    if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
        raise ValueError(f"mesh sizes (data, fsdp, tensor) must be positive with at most one -1, got {tuple(shape)}")
    known = int(np.prod([s for s in shape if s != -1]))
    if -1 in shape:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices cannot be split into a mesh with fixed sizes {tuple(shape)}")
        shape[shape.index(-1)] = len(devices) // known
    if int(np.prod(shape)) != len(devices):
        raise ValueError(f"mesh (data, fsdp, tensor) = {tuple(shape)} needs {int(np.prod(shape))} devices, "
                         f"got {len(devices)}")
    return jax.make_mesh(tuple(shape), MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def batch_devices(mesh: Mesh) -> int:
    """How many ways a batch is split: the product of the mesh's batch axes."""
    return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``data`` x ``fsdp``; the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())
