"""Row-wise sharded tables on a device mesh: IDs routed to the device that owns their row.

A table ``[rows, D]`` is split over one axis of a :class:`jax.sharding.Mesh` of ``n``
devices: device ``k`` holds rows ``k R .. (k + 1) R - 1``, ``R = rows / n``. A lookup runs
inside :func:`jax.shard_map`, every device with its slice of the batch:

1. each device makes its requests distinct (one request per row it needs),
2. writes them into a send buffer ``[n, capacity]``, row ``r`` to device ``r // R``,
3. :func:`jax.lax.all_to_all` exchanges the buffers: device ``k`` receives ``[n, capacity]``,
   what every device asked of its rows, in device order,
4. gathers those rows from its shard, ``[n, capacity, D]``, and
5. a second ``all_to_all`` sends them back, where each request reads its own.

XLA's CPU backend has no ragged all-to-all, so the buffers have a fixed ``capacity`` per
destination. A device that needs more than ``capacity`` rows from one device overflows:
the functions here count it and report how much capacity would have been enough; the
host-level callers (:func:`lookup`, :func:`phoenix_lib.train.make_sharded_step`,
:func:`phoenix_lib.mpzch.write` on a sharded table) raise instead of dropping an ID.

Mesh axes are Auto (GSPMD) axes; :func:`mesh` makes one.
"""

from __future__ import annotations

import functools
import math
import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


def mesh(num_devices: int | None = None, axis: str = "shard") -> Mesh:
    """A one-axis mesh over the first ``num_devices`` devices (default: all of them)."""
    devices = jax.devices()
    n = len(devices) if num_devices is None else num_devices
    if not 1 <= n <= len(devices):
        raise ValueError(
            f"num_devices must be in [1, {len(devices)}] (the devices JAX sees), got {n}; "
            "simulate more CPU devices with JAX_NUM_CPU_DEVICES before JAX starts"
        )
    return Mesh(np.array(devices[:n]), (axis,))


def axis_size(mesh_: Mesh, axis: str) -> int:
    """The number of devices along ``axis``; a clear error for an axis the mesh lacks."""
    if axis not in mesh_.shape:
        raise ValueError(f"the mesh has axes {tuple(mesh_.shape)}, not {axis!r}")
    return mesh_.shape[axis]


def check_divides(what: str, size: int, mesh_: Mesh, axis: str) -> int:
    """The axis size ``n``, after checking that it divides ``size`` (else a ValueError
    naming ``what`` and the sizes that would do)."""
    n = axis_size(mesh_, axis)
    if size % n:
        raise ValueError(
            f"{what} ({size}) must be a multiple of the mesh axis {axis!r} size ({n}): "
            f"use {math.ceil(size / n) * n}, or a mesh whose size divides {size}"
        )
    return n


def put(value, sharding: NamedSharding) -> jax.Array:
    """``value`` placed as ``sharding`` says, also when the mesh spans several processes
    (each process then places its own devices' parts of the value it holds: every process
    must pass the same value). A global array already on a mesh is moved (resharded)."""
    if isinstance(value, jax.Array) and not value.is_fully_addressable:
        return jax.device_put(value, sharding)
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def shard_rows(array, mesh_: Mesh, axis: str) -> jax.Array:
    """``array`` ``[N, ...]`` placed row-wise over ``axis`` (device ``k`` holds the ``k``-th
    of ``n`` equal blocks of rows)."""
    check_divides("the number of rows", np.shape(array)[0], mesh_, axis)
    return put(array, NamedSharding(mesh_, P(axis)))


def replicate(tree, mesh_: Mesh):
    """Every leaf of ``tree`` copied whole to every device of the mesh."""
    return jax.tree.map(lambda leaf: put(leaf, NamedSharding(mesh_, P())), tree)


def placement(array) -> tuple[Mesh, str] | None:
    """``(mesh, axis)`` if ``array`` is a concrete array split row-wise over a mesh axis of
    more than one device, else ``None`` (a single device, replicated, or a tracer)."""
    sharding = getattr(array, "sharding", None) if not isinstance(array, jax.core.Tracer) else None
    if not isinstance(sharding, NamedSharding) or not sharding.spec or sharding.spec[0] is None:
        return None
    axis = sharding.spec[0]
    if not isinstance(axis, str) or sharding.mesh.shape[axis] == 1:
        return None
    return sharding.mesh, axis


class Routed(NamedTuple):
    """What :func:`route` sent, per device: the received buffers and how to send replies back.

    ``received``: the payload pytree, each leaf ``[n, capacity, ...]`` (``received[s]`` came
    from device ``s``, in its order); ``valid``: bool ``[n, capacity]``; ``index``: int32
    ``[N]``, where each local item sits in the send buffer (``dest * capacity + rank``;
    ``-1`` when it was not sent); ``needed``: int32 ``[1]``, the most items this device had
    for one destination (the capacity that would have held them all; one entry per device,
    so that :func:`jax.shard_map` stacks them).
    """

    received: object
    valid: jax.Array
    index: jax.Array
    needed: jax.Array


def route(payload, dest: jax.Array, capacity: int, axis: str) -> Routed:
    """Send item ``i`` of ``payload`` (leaves ``[N, ...]``) to device ``dest[i]`` along ``axis``.

    Per device, inside :func:`jax.shard_map`. ``dest`` int32 ``[N]``, ``-1`` for items not
    to send. Items keep their order: the ``j``-th item for device ``d`` fills slot ``j`` of
    buffer ``d``. Items past ``capacity`` for one destination are not sent; ``needed``
    says so (the callers raise).
    """
    n = jax.lax.psum(1, axis)
    sent = dest >= 0
    onehot = (dest[:, None] == jnp.arange(n, dtype=jnp.int32)).astype(jnp.int32)  # [N, n]
    counts = jnp.cumsum(onehot, axis=0)
    rank = jnp.take_along_axis(counts, jnp.maximum(dest, 0)[:, None], axis=1)[:, 0] - 1
    index = jnp.where(sent & (rank < capacity), dest * capacity + rank, -1)
    target = jnp.where(index >= 0, index, n * capacity)

    def exchange(leaf):
        buffer = jnp.zeros((n * capacity, *leaf.shape[1:]), leaf.dtype)
        buffer = buffer.at[target].set(leaf, mode="drop").reshape(n, capacity, *leaf.shape[1:])
        return jax.lax.all_to_all(buffer, axis, 0, 0, tiled=True)

    received = jax.tree_util.tree_map(exchange, payload)
    valid = exchange(index >= 0)
    needed = jnp.max(counts[-1]) if dest.shape[0] else jnp.int32(0)
    return Routed(received, valid, index, needed.astype(jnp.int32)[None])


def route_back(reply: jax.Array, routed: Routed, axis: str) -> jax.Array:
    """The replies ``[n, capacity, ...]`` to what a device received, returned to the items
    that asked: ``[N, ...]``, zeros where an item was not sent. Differentiable in ``reply``
    (the transpose of an all-to-all is the all-to-all back)."""
    back = jax.lax.all_to_all(reply, axis, 0, 0, tiled=True)
    flat = back.reshape(-1, *reply.shape[2:])
    keep = (routed.index >= 0).reshape(-1, *([1] * (reply.ndim - 2)))
    return jnp.where(keep, flat[jnp.maximum(routed.index, 0)], jnp.zeros((), reply.dtype))


# ------------------------------------------------------------------ sharded embedding tables


class Requests(NamedTuple):
    """A device's requests for rows of a sharded table (see :func:`request_rows`).

    ``routed.received`` is int32 ``[n, capacity]``: the rows *of this device's shard* that
    the devices asked for; ``inverse`` int32 ``[N]``: each request's place among this
    device's distinct requests; ``kind`` int32 ``[N]``: 0 for row 0 (padding), 1 for a row
    of the table, 2 for an index outside it.
    """

    routed: Routed
    inverse: jax.Array
    kind: jax.Array


def request_rows(
    rows: jax.Array, shard_rows_: int, axis: str, capacity: int, *, padding_row: bool = True
) -> Requests:
    """Route the global rows ``rows`` [N] of a table split ``shard_rows_`` rows per device.

    Per device, inside :func:`jax.shard_map`. Rows outside the table are not sent, and
    neither is row 0 when it is the ``padding_row`` of the book's hash tables: :func:`deliver`
    gives them NaNs and zeros, as :func:`phoenix_lib.tables.gather` does. With
    ``padding_row=False`` row 0 is a row like the others (an MPZCH table's slot 0). Each
    distinct row is sent once per device.
    """
    n = jax.lax.psum(1, axis)
    num_rows = n * shard_rows_
    wanted = (rows >= int(padding_row)) & (rows < num_rows)
    key = jnp.where(wanted, rows, num_rows)
    distinct, inverse = jnp.unique(
        key, size=rows.shape[0], fill_value=num_rows, return_inverse=True
    )
    dest = jnp.where(distinct < num_rows, distinct // shard_rows_, -1)
    routed = route(distinct % shard_rows_, dest, capacity, axis)
    kind = jnp.where(wanted, 1, jnp.where(rows == 0, 0, 2)).astype(jnp.int32)
    return Requests(routed, inverse.reshape(-1), kind)


def serve(shard: jax.Array, requests: Requests) -> jax.Array:
    """The requested rows of this device's ``shard`` [R, D]: ``[n, capacity, D]``."""
    got = shard[requests.routed.received]
    return jnp.where(requests.routed.valid[..., None], got, jnp.zeros((), shard.dtype))


def deliver(got: jax.Array, requests: Requests, axis: str) -> jax.Array:
    """The rows served (``got`` ``[n, capacity, D]`` on their owners) at the requests:
    ``[N, D]``; zeros for row 0, NaNs for rows outside the table. Differentiable in ``got``."""
    rows = route_back(got, requests.routed, axis)[requests.inverse]
    rows = jnp.where((requests.kind == 2)[:, None], jnp.nan, rows)
    return jnp.where((requests.kind == 0)[:, None], jnp.zeros((), got.dtype), rows)


@functools.partial(jax.jit, static_argnames=("mesh_", "axis", "capacity", "padding_row"))
def _lookup(table, rows, *, mesh_: Mesh, axis: str, capacity: int, padding_row: bool = True):
    shard_size = table.shape[0] // mesh_.shape[axis]

    def per_device(shard, rows):
        requests = request_rows(rows.reshape(-1), shard_size, axis, capacity,
                                padding_row=padding_row)  # fmt: skip
        out = deliver(serve(shard, requests), requests, axis)
        return out.reshape(*rows.shape, shard.shape[1]), requests.routed.needed

    return jax.shard_map(
        per_device, mesh=mesh_, in_specs=(P(axis), P(axis)), out_specs=(P(axis), P(axis))
    )(table, rows)


def lookup(
    table: jax.Array, rows, *, capacity: int | None = None, padding_row: bool = True
) -> jax.Array:
    """Rows of a row-sharded ``table`` for bucket indices ``rows`` ``[B, ...]`` -> ``[B, ..., D]``,
    equal to :func:`phoenix_lib.tables.gather` (row 0 zeros, an index outside the table NaNs),
    by explicit routing (module docstring). The batch is split over the table's mesh axis.

    Args:
      table: ``[N, D]``, placed by :func:`shard_rows`.
      rows: int ``[B, ...]``; ``B`` a multiple of the axis size.
      capacity: distinct rows one device may ask of another per call; default the
        per-device batch (``rows.size / n``), which can never overflow.
      padding_row: row 0 reads as zeros (the book's hash tables); ``False`` for a table
        whose row 0 is a real row, such as the rows behind a co-sharded MPZCH table.

    Raises:
      ValueError: a table that is not sharded, a batch the axis does not divide, or a
        capacity too small for this batch (with the capacity that would do).
    """
    where = placement(table)
    if where is None:
        raise ValueError("table is not split row-wise over a mesh axis: place it with shard_rows")
    mesh_, axis = where
    n = check_divides("the batch size (rows.shape[0])", np.shape(rows)[0], mesh_, axis)
    capacity = np.size(rows) // n if capacity is None else capacity
    rows = put(rows, NamedSharding(mesh_, P(axis)))
    out, needed = _lookup(
        table, rows, mesh_=mesh_, axis=axis, capacity=capacity, padding_row=padding_row
    )
    check_capacity(needed, capacity)
    return out


def to_host(array) -> np.ndarray:
    """A global array as NumPy on every process (gathered from all processes when the
    array is split over several)."""
    if getattr(array, "is_fully_addressable", True) or array.is_fully_replicated:
        return np.asarray(array)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def check_capacity(needed, capacity: int) -> None:
    """Raise unless every device's ``needed`` (:attr:`Routed.needed`) fits ``capacity``."""
    top = int(to_host(needed).max(initial=0))
    if top > capacity:
        raise ValueError(
            f"capacity {capacity} is too small: a device had {top} items for one device; "
            f"pass capacity >= {top} (None: the per-device batch, which never overflows)"
        )


# ------------------------------------------------------------------ what the programs move

_COLLECTIVES = ("all-to-all", "all-gather", "all-reduce", "reduce-scatter", "collective-permute")
_ITEMSIZE = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
             "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8}  # fmt: skip


def collectives(hlo_text: str, num_devices: int) -> list[dict]:
    """The collectives of a compiled program (``jit(f).lower(...).compile().as_text()``).

    One dict per collective: ``kind``, ``shape`` (its result, as HLO writes it),
    ``result_bytes`` (per device) and ``sent_bytes``: what one device sends over the
    network, by the usual ring algorithms: ``(n - 1) / n`` of the result for all-to-all and
    all-gather, twice that for all-reduce, ``(n - 1)`` times the result for reduce-scatter,
    the whole result for collective-permute.
    """
    found = []
    n = num_devices
    pattern = re.compile(r"=\s*(.+?)\s+(" + "|".join(_COLLECTIVES) + r")(-start)?\(")
    for line in hlo_text.splitlines():
        match = pattern.search(line)
        if not match:
            continue
        shape, kind = match.group(1), match.group(2)
        size = sum(
            _ITEMSIZE[dtype] * math.prod(int(d) for d in dims.split(",") if d)
            for dtype, dims in re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", shape)
            if dtype in _ITEMSIZE
        )
        factor = {"all-to-all": (n - 1) / n, "all-gather": (n - 1) / n,
                  "all-reduce": 2 * (n - 1) / n, "reduce-scatter": n - 1,
                  "collective-permute": 1.0}[kind]  # fmt: skip
        found.append({"kind": kind, "shape": shape, "result_bytes": size,
                      "sent_bytes": size * factor})  # fmt: skip
    return found


def lookup_traffic(table, rows, mesh_: Mesh, axis: str) -> dict:
    """What one device sends to look up ``rows`` ``[B, ...]`` in ``table`` ``[N, D]`` split
    row-wise over ``axis`` (the batch split over it too), read from the compiled programs.

    Returns a dict: ``minimum`` (bytes: each device receives every distinct row it needs
    from another device once, the mean over devices), ``explicit`` (routing at the
    default capacity, the per-device batch), ``explicit_tight`` (routing at
    ``tight_capacity``, the smallest capacity this batch fits), ``gspmd`` (XLA's own
    partitioning of :func:`phoenix_lib.tables.gather`), and ``collectives``: each
    program's list from :func:`collectives`.
    """
    from phoenix_lib.tables import gather

    n = check_divides("the batch size (rows.shape[0])", np.shape(rows)[0], mesh_, axis)
    rows = np.asarray(rows)
    placed = shard_rows(table, mesh_, axis)
    spread = put(rows, NamedSharding(mesh_, P(axis)))
    size, itemsize = np.shape(table)[0] // n, np.dtype(placed.dtype).itemsize
    per_device = np.split(rows.reshape(n, -1), n)
    distinct = [np.unique(r[(r > 0) & (r < size * n)]) for r in per_device]
    tight = max(int(np.bincount(d // size, minlength=n).max()) for d in distinct)
    remote = np.mean([np.sum(d // size != k) for k, d in enumerate(distinct)])
    out = {"minimum": float(remote * np.shape(table)[1] * itemsize), "tight_capacity": tight,
           "collectives": {}}  # fmt: skip
    programs = {
        "explicit": functools.partial(_lookup, mesh_=mesh_, axis=axis, capacity=rows.size // n),
        "explicit_tight": functools.partial(_lookup, mesh_=mesh_, axis=axis, capacity=tight),
        "gspmd": gather,
    }
    for name, fn in programs.items():
        program = jax.jit(fn).lower(placed, spread).compile().as_text()
        found = collectives(program, n)
        out["collectives"][name] = found
        out[name] = float(sum(c["sent_bytes"] for c in found))
    return out
