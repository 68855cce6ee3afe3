"""Device meshes and logical-axis sharding rules (data parallel, FSDP and tensor parallel).

Models name their parameter axes logically (``embed``, ``mlp``, ``heads``, ...; see
``edt_jax.models.layers``); ``LOGICAL_RULES`` maps those names onto the mesh axes ``data``, ``fsdp``,
``tensor``. An axis whose size the mesh axis does not divide is replicated instead, so odd tables
(relative-position biases, the 1001-row label table) never block a layout.

Typical use::

    mesh = create_mesh(fsdp=jax.device_count())
    abstract = jax.eval_shape(model.init, key, x, t, y)          # boxed with logical names
    shardings = variable_shardings(abstract, mesh)
    step = jax.jit(fn, in_shardings=(shardings, batch_sharding(mesh)))
"""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

# The mesh vocabulary lives in edt_jax.mesh (below the data pipeline); re-exported for the trainer's users.
from edt_jax.mesh import BATCH_AXES, MESH_AXES, batch_sharding, create_mesh, replicated

__all__ = ["BATCH_AXES", "LOGICAL_RULES", "MESH_AXES", "batch_sharding", "create_mesh", "replicated",
           "variable_shardings"]

# Logical axis -> mesh axis (or None: replicated). FSDP shards the model width of every matrix;
# tensor parallelism splits the wide hidden dimensions (MLP, qkv, heads, adaLN outputs).
LOGICAL_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("qkv", "tensor"),
    ("heads", "tensor"),
    ("adaln", "tensor"),
    ("merged", "tensor"),
    ("embed_out", None),
    ("patch_out", None),
    ("vocab", None),
    ("relpos", None),
)


def variable_shardings(abstract_variables, mesh: Mesh, rules=LOGICAL_RULES):
    """NamedShardings for a (boxed, abstract) variable tree such as ``jax.eval_shape(model.init, ...)``.

    Leaves without logical names are replicated; a logical axis is replicated where its mesh axes'
    total size does not divide the array dimension. Returns a tree matching the *unboxed* variables.
    """
    specs = nn.get_partition_spec(abstract_variables)
    shapes = nn.meta.unbox(abstract_variables)
    rule_map = dict(rules)

    def to_sharding(spec: PartitionSpec, leaf) -> NamedSharding:
        axes, taken = [], set()
        for dim, name in zip(leaf.shape, tuple(spec) + (None,) * (len(leaf.shape) - len(spec)), strict=True):
            mesh_axes = rule_map.get(name) if name is not None else None
            names = (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes or ())
            size = int(np.prod([mesh.shape[a] for a in names])) if names else 1
            usable = names and size > 1 and dim % size == 0 and taken.isdisjoint(names)
            axes.append(mesh_axes if usable else None)
            taken.update(names if usable else ())
        return NamedSharding(mesh, PartitionSpec(*axes))

    return jax.tree.map(to_sharding, specs, shapes, is_leaf=lambda x: isinstance(x, PartitionSpec))
