"""Data parallelism over a 1-D ``jax.sharding.Mesh`` with axis ``'data'``.

The batch is sharded along its leading axis, the train state is replicated; the jitted
step functions are unchanged (jit infers the partitioning from its inputs' shardings and
inserts the gradient all-reduce).
"""

from __future__ import annotations

import collections
from typing import Any, Iterable, Iterator, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_data_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A 1-D mesh with axis ``'data'`` over ``devices`` (default: all devices)."""
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def resolve_mesh(mesh: Optional[Mesh] = None) -> Optional[Mesh]:
    """``mesh`` if given; else a data mesh over all devices when there are several; else None."""
    if mesh is not None:
        return mesh
    if jax.device_count() > 1:
        return make_data_mesh()
    return None


def mesh_size(mesh: Optional[Mesh]) -> int:
    return 1 if mesh is None else int(mesh.devices.size)


def check_batch_size(batch_size: int, mesh: Optional[Mesh], what: str = "batch_size") -> None:
    n = mesh_size(mesh)
    if batch_size % n != 0:
        raise ValueError(
            f"{what}={batch_size} is not divisible by the number of devices in the data mesh "
            f"({n}); choose a multiple of {n}.")


def data_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def shard_batch(batch: Any, mesh: Optional[Mesh]) -> Any:
    """Put a host batch (pytree of arrays with a leading batch axis) on device(s), split
    along ``'data'`` when a mesh is given."""
    if mesh is None:
        return jax.device_put(batch)
    for x in jax.tree_util.tree_leaves(batch):
        check_batch_size(int(np.shape(x)[0]), mesh, "batch dimension")
    return jax.device_put(batch, data_sharding(mesh))


def replicate(tree: Any, mesh: Optional[Mesh]) -> Any:
    """Replicate a pytree (e.g. the train state) over the mesh (no-op without a mesh)."""
    if mesh is None:
        return tree
    return jax.device_put(tree, replicated_sharding(mesh))


def prefetch_to_device(batches: Iterable[Any], mesh: Optional[Mesh], size: int = 2) -> Iterator[Any]:
    """Yield the host ``batches`` on device(s) (``shard_batch``), ``size`` batches ahead.

    With ``size=2`` (double buffering) batch k+1 is already ``jax.device_put`` (sharded
    along ``'data'`` with a mesh) when batch k is handed out, so its transfer overlaps the
    asynchronously dispatched step k. Same batches in the same order as without
    prefetching; ``size <= 1`` puts each batch when it is asked for.
    """
    queue: collections.deque = collections.deque()
    depth = max(int(size), 1)
    for batch in batches:
        queue.append(shard_batch(batch, mesh))
        if len(queue) >= depth:
            yield queue.popleft()
    while queue:
        yield queue.popleft()
