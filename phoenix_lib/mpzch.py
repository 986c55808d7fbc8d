"""Multi-Probe Zero Collision Hashing (MPZCH): a collision-free ID-to-row table, jitted.

The table maps raw 64-bit IDs to rows ("slots") of an embedding table so that two
live IDs never share a row. It follows TorchRec's ``HashZchManagedCollisionModule``
and the FBGEMM kernel under it (``zero_collision_hash``), with two differences
that change no result FBGEMM can produce (Chapter 6 shows both):

* FBGEMM's only writing kernel is CUDA and resolves concurrent writers with
  atomics, so its result depends on thread timing. Here a batch is resolved in
  *rounds* with a fixed rule (below), so the same table and batch give the same
  result on every run and every backend, and a batch of one ID at a time is
  exactly FBGEMM's sequential logic.
* The search for an ID that is already resident scans its whole probe window;
  FBGEMM's stops at the first empty slot. The two agree on every table FBGEMM
  builds, because FBGEMM never empties a slot; :func:`sweep` does, and the full
  scan keeps every resident findable afterwards.

Layout. ``num_slots`` rows split into ``num_buckets`` equal contiguous ranges.
An ID's bucket is ``id % num_buckets``; its home slot is
``bucket * bucket_size + murmur_hash3_2x64(id) % bucket_size``; its probe window
is the ``max_probe`` slots from home on, wrapping inside the bucket.

Rows. A slot is a row of the embedding table behind the MPZCH table. The book's
tables keep row 0 as the padding row (:func:`phoenix_lib.tables.gather` reads it as
zeros), so a table made with ``padding_row=True`` sits in front of ``num_slots + 1``
rows and its entry points return rows (``slot + 1``; masked positions row 0) that go
straight into a batch's hash columns and into :func:`reset_rows`.

State. ``identity`` holds the owner of every slot (``-1`` = empty) as two
``uint32`` planes, so IDs stay exact without JAX's 64-bit mode
(:func:`identities` gives the ``int64`` view). ``metadata`` holds one ``int32``
per slot: with eviction on, the hour the slot expires. Time is in hours.

Write rule for one ID ``x`` at hour ``now`` (FBGEMM's, with ``ttl`` per call or per ID):

1. **hit** if ``x`` owns a slot in its window; the slot's metadata becomes
   ``max(old, now + ttl)`` (a stale write never shortens a fresher expiry).
2. Otherwise **insert** into the first slot in probe order that is free, or,
   with ``eviction="ttl"``, free *or expired* (``now > metadata``): TTL recycles
   an expired slot even when a free one lies further on. With ``eviction="lru"``
   a free slot is taken if there is one; only when the whole window is owned by
   others is the expired slot with the smallest metadata evicted (first in probe
   order on ties). The new owner's metadata is ``max(old, now + ttl)``.
3. Otherwise a **collision**: the home slot is returned and shared (the table is
   not changed), or ``-1`` with ``disable_fallback=True``.

Batches. Duplicated IDs are served once (by their first position), with the latest
expiry of their copies. Every
resident ID of the batch is a hit first, so its slot is fresh before any
eviction is considered. The misses then go in rounds: each picks its slot by
rule 2 against the current table; when several pick the same slot, the lowest
batch position wins it and the others pick again in the next round. Every
round settles at least one ID, so the loop ends.

Masks. ``write`` and ``lookup`` take ``mask=``: masked positions (padding) are
neither written nor counted. Host batches are padded to a power of two with masked
entries, so batches of any length share a few compiled programs.

Counters (TorchRec's meanings): per ID occurrence, ``hit``, ``insert`` (a new ID
got its own slot, free or evicted), ``eviction`` (an insert that displaced an
expired ID) and ``collision = total - hit - insert``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from phoenix_lib import sharding, u64
from phoenix_lib.checkpoint import npz_path
from phoenix_lib.hashing import _check_int, ids_and_mask, murmur_words
from phoenix_lib.tables import HashTables
from phoenix_lib.u64 import U64

EVICTION_POLICIES = (None, "ttl", "lru")
_EMPTY = np.uint32(0xFFFFFFFF)  # both planes of identity -1
_MAX_HOUR = 2**31 - 1
# Counter rows: IDs seen, hits, inserts, evictions, sum of eviction ages (hours).
_COUNTERS = ("total", "hit", "insert", "eviction", "eviction_age_sum")


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=("identity_hi", "identity_lo", "metadata", "clock", "counters_hi", "counters_lo"),
    meta_fields=(
        "num_slots",
        "num_buckets",
        "max_probe",
        "eviction",
        "ttl_hours",
        "disable_fallback",
        "padding_row",
    ),
)
@dataclasses.dataclass(frozen=True)
class MpzchState:
    """An MPZCH table: a pytree whose arrays change and whose settings are static.

    Arrays: ``identity_hi``/``identity_lo`` uint32 ``[num_slots]`` (the owner ID of
    each slot; all ones = empty), ``metadata`` int32 ``[num_slots]`` (expiry hour;
    unused without eviction), ``clock`` int32 ``[]`` (latest hour written),
    ``counters_hi``/``counters_lo`` uint32 ``[5]`` (64-bit counters, see
    :func:`metrics`).
    """

    identity_hi: jax.Array
    identity_lo: jax.Array
    metadata: jax.Array
    clock: jax.Array
    counters_hi: jax.Array
    counters_lo: jax.Array
    num_slots: int
    num_buckets: int
    max_probe: int
    eviction: str | None
    ttl_hours: int
    disable_fallback: bool
    padding_row: bool

    @property
    def bucket_size(self) -> int:
        return self.num_slots // self.num_buckets

    @property
    def row_offset(self) -> int:
        """What the entry points add to a slot to give a row: 1 with ``padding_row``, else 0."""
        return int(self.padding_row)

    def settings(self) -> dict:
        """The static settings, as keyword arguments of :func:`create`."""
        return {
            "num_slots": self.num_slots,
            "max_probe": self.max_probe,
            "num_buckets": self.num_buckets,
            "eviction": self.eviction,
            "ttl_hours": self.ttl_hours,
            "disable_fallback": self.disable_fallback,
            "padding_row": self.padding_row,
        }


def create(
    num_slots: int,
    *,
    max_probe: int | None = None,
    num_buckets: int = 1,
    eviction: str | None = None,
    ttl_hours: int = 24,
    disable_fallback: bool = False,
    padding_row: bool = False,
) -> MpzchState:
    """An empty table.

    Args:
      num_slots: rows of the embedding table behind it, in ``[1, 2**31 - 1]``.
      max_probe: probe window length, in ``[1, bucket_size]``; default FBGEMM's 128, or
        the bucket size (``num_slots // num_buckets``) if that is smaller.
      num_buckets: equal contiguous ranges; must divide ``num_slots``.
      eviction: ``None``, ``"ttl"`` or ``"lru"``.
      ttl_hours: default time to live of a written ID (``write`` may override it
        per ID), ``>= 0``; used only with eviction. An ID written at hour ``h`` expires
        after hour ``h + ttl_hours``: from hour ``h + ttl_hours + 1`` on, a newcomer may
        take its slot (so ``0`` keeps it for the hour it was written).
      disable_fallback: return ``-1`` instead of the shared home slot when no slot
        can be found.
      padding_row: put the table in front of an embedding table of ``num_slots + 1``
        rows whose row 0 is the padding row (:func:`phoenix_lib.tables.gather` reads it as
        zeros): :func:`write`, :func:`lookup` and :func:`sweep` then return table rows,
        slot ``s`` as row ``s + 1`` and masked positions as row 0. Without it they return
        slots, for a table of ``num_slots`` rows, and ``-1`` at masked positions.

    Raises:
      ValueError / TypeError naming the bad argument.
    """
    _check_int("num_slots", num_slots, 1, 2**31 - 1)
    _check_int("num_buckets", num_buckets, 1, num_slots)
    if num_slots % num_buckets:
        raise ValueError(
            f"num_slots ({num_slots}) must be a multiple of num_buckets ({num_buckets})"
        )
    if max_probe is None:
        max_probe = min(128, num_slots // num_buckets)
    _check_int("max_probe", max_probe, 1, num_slots // num_buckets)
    if eviction not in EVICTION_POLICIES:
        raise ValueError(f"eviction must be one of {EVICTION_POLICIES}, got {eviction!r}")
    _check_int("ttl_hours", ttl_hours, 0, _MAX_HOUR)
    for name, flag in (("disable_fallback", disable_fallback), ("padding_row", padding_row)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    empty = jnp.full((num_slots,), _EMPTY, jnp.uint32)
    zeros = jnp.zeros((len(_COUNTERS),), jnp.uint32)
    return MpzchState(
        identity_hi=empty,
        identity_lo=empty,
        metadata=jnp.zeros((num_slots,), jnp.int32),
        clock=jnp.zeros((), jnp.int32),
        counters_hi=zeros,
        counters_lo=zeros,
        num_slots=num_slots,
        num_buckets=num_buckets,
        max_probe=max_probe,
        eviction=eviction,
        ttl_hours=ttl_hours,
        disable_fallback=disable_fallback,
        padding_row=padding_row,
    )


# --------------------------------------------------------------------------- core


# Every ID first checks this many slots of its window; the few that are still
# unresolved are compacted and read their whole window afterwards (see _scan).
_FIRST_PROBES = 4
# Host batches are padded to a power of two, at least this long (see _padded_length).
_MIN_PADDED = 64
# Batches are compacted from this size on (it pays off only for large ones), and only into
# tables with at least _COMPACT_ROOM slots per ID of the batch (see _compacts).
_COMPACT_FROM = 1024
_COMPACT_ROOM = 4
# Rounds of grouping by hash in _first_occurrence before the rows left go one ID at a time.
_GROUPING_ROUNDS = 4


def _compacts(state: MpzchState, n: int) -> bool:
    """Whether ``n`` rows take the compacted passes (few slots first, the rest compacted).

    Compaction pays when most rows settle in their first slots. A batch that can fill a
    good part of the table (fewer than ``_COMPACT_ROOM`` slots per ID) leaves many rows
    to read whole windows, chunk by chunk, and there one pass over every whole window
    ran as fast or faster and its program compiled in less than half the time
    (measured with benchmarks/mpzch.py when the passes were written).
    """
    return n >= _COMPACT_FROM and state.num_slots >= _COMPACT_ROOM * n


def _compact_size(state: MpzchState, n: int, fraction: int) -> int:
    """Buffer size for compacting ``n`` rows: ``n // fraction``, or ``n`` when not compacted."""
    return max(n // fraction, 1) if _compacts(state, n) else n


@jax.jit
def _home(state: MpzchState, x: U64) -> tuple[jax.Array, jax.Array]:
    """Each ID's bucket start (a slot index) and home offset in its bucket: int32 ``[N]`` each.

    Jitted on its own and passed to :func:`_write` / :func:`_lookup` as arrays: inside
    one program XLA would recompute the 64-bit hash in each of the five or so fused
    loops that read ``home`` (more code to compile and more work to run).
    """
    size = state.bucket_size
    base = u64.mod(x, state.num_buckets).astype(jnp.int32) * size
    home = u64.mod(murmur_words(x, u64.constant(0)), size).astype(jnp.int32)
    return base, home


def _window(state: MpzchState, base: jax.Array, home: jax.Array, length: int) -> jax.Array:
    """The first ``length`` slots of each probe window, wrapping in the bucket: ``[R, length]``."""
    steps = jnp.arange(length, dtype=jnp.int32)
    return base[:, None] + (home[:, None] + steps) % state.bucket_size


def probe_windows(state: MpzchState, x: U64) -> jax.Array:
    """Slot indices of every ID's probe window, home slot first: int32 ``[N, max_probe]``."""
    return _window(state, *_home(state, x), state.max_probe)


def home_slots(state: MpzchState, x: U64) -> jax.Array:
    """Every ID's home slot, the first slot of its probe window: int32 ``[N]``."""
    base, home = _home(state, x)
    return base + home


def _compact(mask: jax.Array, size: int) -> jax.Array:
    """The first ``size`` indices where ``mask`` [N] is true, ascending, padded with ``N``:
    int32 ``[size]``. Equals ``jnp.nonzero(mask, size=size, fill_value=N)[0]``, whose
    cumulative sum XLA's CPU backend runs as a reduce-window; a log-depth scan of adds is
    faster there."""
    n = mask.shape[0]
    rank = jax.lax.associative_scan(jnp.add, mask.astype(jnp.int32)) - 1
    where = jnp.where(mask, rank, size)  # beyond size: dropped
    return jnp.full(size, n, jnp.int32).at[where].set(jnp.arange(n, dtype=jnp.int32), mode="drop")


def _on_rows(mask: jax.Array, fn, out, chunk: int):
    """``out`` with ``fn(rows)`` written at the rows where ``mask`` [N] is true.

    ``fn`` maps int32 row indices ``[chunk]`` to a pytree shaped like ``out`` with
    leading axis ``chunk``, each row independently of the others; unused entries
    of ``rows`` hold ``N`` (reads with them clamp, writes of them are dropped).
    The masked rows are compacted and handed over ``chunk`` at a time, so the
    cost follows how many rows need ``fn``, not ``N``.
    """
    n = mask.shape[0]
    if chunk >= n:  # small batch: every row at once, no loop
        values = fn(jnp.arange(n, dtype=jnp.int32))
        return jax.tree_util.tree_map(lambda o, v: jnp.where(mask, v, o), out, values)

    def body(carry):
        todo, out = carry
        rows = _compact(todo, chunk)
        out = jax.tree_util.tree_map(lambda o, v: o.at[rows].set(v, mode="drop"), out, fn(rows))
        return todo.at[rows].set(False, mode="drop"), out

    return jax.lax.while_loop(lambda carry: carry[0].any(), body, (mask, out))[1]


def _scan(state: MpzchState, base, home, mask, look, out):
    """Run ``look`` over the probe windows of the rows where ``mask`` [N] (``None``: all),
    in three passes.

    ``look(rows, slots, read)`` gets row indices ``[R]``, their window slots
    ``[R, L]`` in probe order and ``read(plane) -> [R, L]`` (a state array read at
    those slots); it returns ``(result, settled)``: a pytree shaped like ``out``
    with leading axis ``R``, and bool ``[R]``. Pass 1 reads the first
    ``_FIRST_PROBES`` slots of every window; rows that this did not settle read
    their whole window (pass 2). Both read a window as one contiguous slice per
    row, much cheaper than single reads; the rare window that wraps around its
    bucket's end within the slots a pass reads is left unsettled by pass 1 and
    read slot by slot in pass 3.
    """
    size, probes, n = state.bucket_size, state.max_probe, home.shape[0]

    def by_slot(length):
        def run(rows):
            slots = _window(state, base[rows], home[rows], length)
            return look(rows, slots, lambda plane: plane[slots])

        return run

    def by_slice(length):
        def run(rows):
            start = base[rows] + home[rows]
            slots = start[:, None] + jnp.arange(length, dtype=jnp.int32)
            cut = jax.vmap(
                lambda plane, s: jax.lax.dynamic_slice(plane, (s,), (length,)), (None, 0)
            )
            result, settled = look(rows, slots, lambda plane: cut(plane, start))
            return result, settled & (home[rows] <= size - length)  # wrapped: read wrong slots

        return run

    compacted = _compacts(state, n)
    if not compacted:  # whole windows, slot by slot, in one pass
        first = by_slot(probes)
    else:
        first = by_slice(min(_FIRST_PROBES, probes))
    # Pass 1 reads every row: the masks callers pass hold most of them.
    result, settled = first(jnp.arange(n, dtype=jnp.int32))
    if mask is None:
        mask, out = jnp.ones(n, bool), result
    else:
        out = jax.tree_util.tree_map(lambda o, r: jnp.where(mask, r, o), out, result)
    if not compacted:
        return out
    wraps = home > size - probes
    out, _ = _on_rows(
        mask & ~settled & ~wraps, by_slice(probes), (out, settled), _compact_size(state, n, 8)
    )
    rare = _compact_size(state, n, 1024)
    out, _ = _on_rows(mask & ~settled & wraps, by_slot(probes), (out, settled), rare)
    return out


def _first(mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per row of ``mask`` [R, L]: whether any entry is true, and the index of the first true
    one (``L - 1`` where none): ``[R]`` bool, ``[R]`` int32.

    One min-reduction over ``where(mask, position, L)``; ``argmax`` plus ``any`` would be
    two reductions, and XLA's CPU backend runs argmax's (value, index) reduction several
    times slower than a plain min.
    """
    length = mask.shape[1]
    first = jnp.min(jnp.where(mask, jnp.arange(length, dtype=jnp.int32), length), axis=1)
    return first < length, jnp.minimum(first, length - 1)


def _at(values: jax.Array, index: jax.Array) -> jax.Array:
    """``values[r, index[r]]`` for every row: ``[R, L]``, ``[R]`` -> ``[R]``."""
    return jnp.take_along_axis(values, index[:, None], axis=1)[:, 0]


def _find(state: MpzchState, x: U64, base: jax.Array, home: jax.Array, valid: jax.Array):
    """Whether each valid ID owns a slot in its window ``[N]`` bool (false where not
    ``valid``), and which slot ``[N]`` int32."""

    def look(rows, slots, read):
        owned = (read(state.identity_hi) == x.hi[rows, None]) & (
            read(state.identity_lo) == x.lo[rows, None]
        )
        found, first = _first(owned)
        whole = slots.shape[1] == state.max_probe  # a whole window settles a miss too
        return (found, _at(slots, first)), found | whole

    n = x.lo.shape[0]
    out = (jnp.zeros(n, bool), jnp.zeros(n, jnp.int32))
    found, slot = _scan(state, base, home, valid, look, out)
    return found & valid, slot


def _fallback(state: MpzchState, base: jax.Array, home: jax.Array) -> jax.Array:
    return jnp.full_like(base, -1) if state.disable_fallback else base + home


def _pick(state: MpzchState, slots, read, now: jax.Array):
    """Rule 2 over windows ``slots`` [R, L] (or their first L slots) of the current table.

    Returns ``((found, slot, was_free), settled)``, each ``[R]``: ``settled`` says
    the answer holds for the whole window (a partial window settles it unless
    LRU saw no free slot, since LRU prefers any free slot to an expired one).
    """
    free = (read(state.identity_hi) == _EMPTY) & (read(state.identity_lo) == _EMPTY)
    any_free, first_free = _first(free)
    if state.eviction is None:
        found, choice = any_free, first_free
    else:
        expiry = read(state.metadata)
        expired = ~free & (now > expiry)
        if state.eviction == "ttl":
            usable = free | expired
            found, choice = _first(usable)
        else:  # lru: the first of the expired slots with the earliest expiry
            earliest = jnp.min(jnp.where(expired, expiry, _MAX_HOUR), axis=1)
            any_expired, oldest = _first(expired & (expiry == earliest[:, None]))
            found = any_free | any_expired
            choice = jnp.where(any_free, first_free, oldest)
    slot = _at(slots, choice)
    was_free = _at(free, choice)
    settled = any_free if state.eviction == "lru" else found
    return (found, slot, was_free), settled | (slots.shape[1] == state.max_probe)


def _mix(x: U64, salt: jax.Array) -> jax.Array:
    """A 32-bit hash of both words of ``x`` [N], a different one for every uint32 ``salt``
    (odd multipliers, then a murmur-style xor-shift-multiply finish): uint32 [N]."""
    h = x.lo * (jnp.uint32(0x9E3779B1) + 2 * salt) ^ x.hi * (jnp.uint32(0x85EBCA77) + 2 * salt)
    h = (h ^ (h >> 15)) * jnp.uint32(0xC2B2AE3D)
    return h ^ (h >> 13)


def _first_occurrence(x: U64, mask: jax.Array, rounds: int = _GROUPING_ROUNDS) -> jax.Array:
    """For every row where ``mask``, the first such row holding the same ID; the row itself
    elsewhere: int32 ``[N]``.

    Grouping by hashing, in rounds: each pending row writes its position into a scratch
    array of ``4N`` cells at a hash of its ID, the smallest position winning a cell, and
    reads back its cell's winner. Every copy of an ID lands in the same cell, so a winner
    holding the row's own ID is the first copy, and all copies settle together; rows whose
    cell another ID won try again with a new hash (about 3% of them at one miss in ten).
    Whatever is left after ``rounds`` rounds (nothing, in practice) is settled one ID at a
    time: the lowest pending row and every pending copy of its ID. That is exact for any
    input, and costs ``O(N)`` per ID left, so it would only be slow for many IDs built to
    collide in every round. (A sort of the rows left, used before, ran several times slower
    than the rounds on CPU, and compiling it made every write's program about 0.4 s slower
    to compile.)
    """
    n = x.lo.shape[0]
    pos = jnp.arange(n, dtype=jnp.int32)
    bits = max(n - 1, 1).bit_length() + 2  # 4N cells (at least 8), a power of two

    def round_(carry):
        salt, todo, leader = carry
        cell = (_mix(x, salt) >> (32 - bits)).astype(jnp.int32)
        cells = jnp.full(2**bits, n, jnp.int32)
        winner = cells.at[jnp.where(todo, cell, 2**bits)].min(pos, mode="drop")[cell]
        same = todo & (x.hi[winner] == x.hi) & (x.lo[winner] == x.lo)
        return salt + 1, todo & ~same, jnp.where(same, winner, leader)

    _, todo, leader = jax.lax.while_loop(
        lambda carry: (carry[0] < rounds) & carry[1].any(), round_, (jnp.uint32(0), mask, pos)
    )

    def one_id(carry):  # exact, and rarely needed
        todo, leader = carry
        first = jnp.min(jnp.where(todo, pos, n))
        same = todo & (x.hi == x.hi[first]) & (x.lo == x.lo[first])
        return todo & ~same, jnp.where(same, first, leader)

    return jax.lax.while_loop(lambda carry: carry[0].any(), one_id, (todo, leader))[1]


def _add_counters(state: MpzchState, values: list[jax.Array]) -> dict:
    total = u64.add(
        U64(state.counters_hi, state.counters_lo),
        U64(jnp.zeros(len(_COUNTERS), jnp.uint32), jnp.stack(values).astype(jnp.uint32)),
    )
    return {"counters_hi": total.hi, "counters_lo": total.lo}


def _place(table: MpzchState, x: U64, base, home, pos, new, now: jax.Array, expiry):
    """Rule 2 and the conflict rule, in rounds, for the rows where ``new`` [M]: each pending
    row picks a slot in the current table, the lowest batch position ``pos`` [M] among the
    rows picking a slot wins it, the others pick again. ``x``, ``base``, ``home`` and
    ``expiry`` are per row ``[M]``.

    Returns ``(table, kind, slot, age)``, each ``[M]`` but the table: ``kind`` 2 inserted
    into a free slot, 3 evicted, 4 collision (no usable slot), 5 a row not in ``new``.
    """
    m = new.shape[0]
    evicting = table.eviction is not None
    unclaimed = jnp.iinfo(jnp.int32).max

    def pending(carry):
        return (carry[1] == 0).any()

    def round_(carry):
        table, kind, slot, age = carry
        no_pick = (jnp.zeros(m, bool), jnp.zeros(m, jnp.int32), jnp.zeros(m, bool))

        def look(rows, slots, read):
            return _pick(table, slots, read, now)

        found, choice, was_free = _scan(table, base, home, kind == 0, look, no_pick)
        contender = (kind == 0) & found
        target = jnp.where(contender, choice, table.num_slots)
        claims = jnp.full(table.num_slots, unclaimed, jnp.int32).at[target].min(pos, mode="drop")
        won = contender & (claims[choice] == pos)
        target = jnp.where(won, choice, table.num_slots)
        old_expiry = table.metadata[choice]
        table = dataclasses.replace(
            table,
            identity_hi=table.identity_hi.at[target].set(x.hi, mode="drop"),
            identity_lo=table.identity_lo.at[target].set(x.lo, mode="drop"),
            metadata=table.metadata.at[target].max(expiry, mode="drop")
            if evicting
            else table.metadata,
        )
        stuck = (kind == 0) & ~found
        kind = jnp.where(won, jnp.where(was_free, 2, 3), jnp.where(stuck, 4, kind))
        slot = jnp.where(won, choice, jnp.where(stuck, _fallback(table, base, home), slot))
        age = jnp.where(won & ~was_free, now - old_expiry, age)
        return table, kind, slot, age

    start = (table, jnp.where(new, 0, 5), jnp.full(m, -1, jnp.int32), jnp.zeros(m, jnp.int32))
    return jax.lax.while_loop(pending, round_, start)


@jax.jit
def _write(state: MpzchState, x: U64, base, home, valid, now: jax.Array, ttl: jax.Array):
    """Traceable write of flat IDs ``x`` [N] (bucket starts and home offsets from
    :func:`_home`) where ``valid`` [N], with per-ID ``ttl`` [N]; see the module docstring.
    Returns ``(state, rows, evicted rows)`` as the public :func:`write` does."""
    n = x.lo.shape[0]
    pos = jnp.arange(n, dtype=jnp.int32)
    expiry = now + ttl

    hit, hit_slot = _find(state, x, base, home, valid)
    leader = _first_occurrence(x, valid & ~hit)  # every copy of a resident ID is a hit anyway
    new = valid & ~hit & (leader == pos)
    # A new ID's expiry is the latest of its copies', as a resident's (below) is.
    copies = jnp.where(valid & ~hit, leader, n)
    latest = jnp.full(n, jnp.iinfo(jnp.int32).min).at[copies].max(expiry, mode="drop")
    if state.eviction is not None:  # refresh every hit before any eviction is considered
        metadata = state.metadata.at[jnp.where(hit, hit_slot, state.num_slots)].max(
            expiry, mode="drop"
        )
        state = dataclasses.replace(state, metadata=metadata)
    # Per position: 1 hit, 2 inserted into a free slot, 3 evicted, 4 collision, 5 a repeat,
    # 6 not valid (masked or padding).
    kind = jnp.where(hit, 1, jnp.where(valid, 5, 6))
    slot = jnp.where(hit, hit_slot, -1)
    age = jnp.zeros(n, jnp.int32)

    def placed(size):  # the rounds on `size` rows: they cost per row, and misses are few
        def run(state):
            rows = pos if size == n else _compact(new, size)
            mine = new[rows] & (rows < n)
            state, *parts = _place(
                state, U64(x.hi[rows], x.lo[rows]), base[rows], home[rows], rows, mine, now,
                latest[rows],
            )  # fmt: skip
            back = jnp.where(mine, rows, n)
            wholes = (kind, slot, age)
            return state, *(
                w.at[back].set(p, mode="drop") for w, p in zip(wholes, parts, strict=True)
            )

        return run

    small = _compact_size(state, n, 8)
    if small == n:
        state, kind, slot, age = placed(n)(state)
    else:
        state, kind, slot, age = jax.lax.cond(new.sum() <= small, placed(small), placed(n), state)
    # Repeats follow their first occurrence: a hit, unless that one collided.
    repeat = kind == 5
    slot = jnp.where(repeat, slot[leader], slot)
    kind = jnp.where(repeat, jnp.where(kind[leader] == 4, 4, 1), kind)
    counts = [
        valid.sum(),
        (kind == 1).sum(),
        ((kind == 2) | (kind == 3)).sum(),
        (kind == 3).sum(),
        age.sum(),
    ]
    clock = jnp.maximum(state.clock, now)
    state = dataclasses.replace(state, clock=clock, **_add_counters(state, counts))
    evicted = jnp.where(kind == 3, slot + state.row_offset, -1)
    return state, _rows(state, slot, valid), evicted


@jax.jit
def _lookup(state: MpzchState, x: U64, base, home, valid) -> jax.Array:
    found, slot = _find(state, x, base, home, valid)
    return _rows(state, jnp.where(found, slot, _fallback(state, base, home)), valid)


def _rows(state: MpzchState, slot: jax.Array, valid: jax.Array) -> jax.Array:
    """Slots ``[N]`` (``-1``: none) as what the entry points return: rows (``slot +
    row_offset``; ``-1`` stays), and at positions not ``valid``, the padding row 0 with
    ``padding_row`` or ``-1`` without."""
    found = jnp.where(slot >= 0, slot + state.row_offset, -1)
    return jnp.where(valid, found, 0 if state.padding_row else -1)


# ------------------------------------------------------------------ public entry points


def _padded_length(n: int) -> int:
    """The length a batch of ``n`` IDs is padded to: a power of two, at least
    ``_MIN_PADDED``, so that batches of every length share a few compiled programs."""
    return max(_MIN_PADDED, 1 << max(n - 1, 0).bit_length())


def _ids_as_words(ids, mask) -> tuple[U64, tuple[int, ...], jax.Array]:
    """Validated IDs and mask -> flat ``(U64 [P], shape, valid [P])``.

    Host input (NumPy/Python/JAX integers) is padded to ``P = _padded_length(n)`` with
    invalid entries. A ``U64`` word form (the form usable inside ``jax.jit``) is taken
    unpadded, its values checked only when concrete, with ``mask`` a bool array or tracer.
    """
    if isinstance(ids, U64):
        shape = tuple(ids.lo.shape)
        valid = jnp.ones(shape, bool) if mask is None else jnp.asarray(mask)
        if valid.shape != shape or valid.dtype != jnp.bool_:
            raise ValueError(f"mask must be bool {list(shape)} like ids, got {valid.dtype}"
                             f"{list(valid.shape)}")  # fmt: skip
        concrete = not isinstance(ids.hi, jax.core.Tracer) and not isinstance(
            valid, jax.core.Tracer
        )
        if concrete and (np.asarray(ids.hi)[np.asarray(valid)] >= 2**31).any():
            raise ValueError(
                "ids must be non-negative int64 values: a word-form ID has its top bit "
                "set (-1 marks an empty slot and is not an ID)"
            )
        return U64(jnp.ravel(ids.hi), jnp.ravel(ids.lo)), shape, jnp.ravel(valid)
    if isinstance(ids, jax.core.Tracer):
        raise TypeError("inside jax.jit pass ids in word form (phoenix_lib.u64.U64)")
    if mask is None and np.asarray(ids).dtype.kind == "i" and (np.asarray(ids) == -1).any():
        raise ValueError(
            "ids must not contain -1: it marks an empty slot in the identity tensor (to pad "
            "a batch, pass mask=)"
        )
    values, mask = ids_and_mask(ids, mask)
    if values.size and values.max() >= 2**63:
        raise ValueError(f"ids must fit in int64, got {values.max()}")
    n = values.size
    flat = np.zeros(_padded_length(n), np.uint64)
    flat[:n] = values.reshape(-1)
    valid = np.zeros(flat.size, bool)
    valid[:n] = mask.reshape(-1)
    return u64.from_numpy(flat), values.shape, jnp.asarray(valid)


def _check_hour(state: MpzchState, now_hour) -> jax.Array:
    """``now_hour`` as int32, checked when concrete: an integer in range, not before the clock."""
    if isinstance(now_hour, jax.core.Tracer):
        return now_hour.astype(jnp.int32)
    array = np.asarray(now_hour)
    if array.shape != () or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"now_hour must be an integer scalar, got {now_hour!r}")
    _check_int("now_hour", int(array), 0, _MAX_HOUR)
    if not isinstance(state.clock, jax.core.Tracer) and int(array) < int(state.clock):
        raise ValueError(
            f"now_hour ({int(array)}) is before the table's clock ({int(state.clock)}): "
            "time must not go backwards"
        )
    return jnp.int32(int(array))


def write(state: MpzchState, ids, now_hour, ttl_hours=None, *, mask=None, capacity=None):
    """Claim slots for ``ids`` at hour ``now_hour`` (training path).

    Args:
      state: the table.
      ids: raw IDs of any shape ``[...]``: non-negative integers (NumPy int64,
        Python ints, ...) or a ``U64`` word form (the only form usable inside
        ``jax.jit``). ``-1`` is rejected where ``mask`` is true: it means "empty".
      now_hour: the current hour, ``>=`` every hour written before.
      ttl_hours: optional per-ID time to live, int ``[...]`` like ``ids`` or a
        scalar; defaults to the table's ``ttl_hours``.
      mask: optional bool ``[...]``, ``True`` for the real IDs; the others (padding, with
        any integer there) are neither written nor counted in :func:`metrics`.

    Returns:
      ``(state, rows, evicted)``: int32 ``[...]`` each. ``rows`` is every ID's slot, or
      its table row ``slot + 1`` with ``padding_row`` (see :func:`create`); at masked
      positions ``-1``, or row 0 with ``padding_row``; ``-1`` for an ID that found no
      slot with ``disable_fallback``. ``evicted`` holds, in the same numbering, the slot
      an ID took from an expired owner and ``-1`` elsewhere: re-draw those rows
      (:func:`reset_rows`, :func:`phoenix_lib.train.reset_table_rows`).

    Batches from the host are padded to a power of two (at least 64 IDs) with masked
    entries, so a stream of batches of varying length compiles a few programs.

    A table placed on a mesh by :func:`shard` is written where its buckets live: each ID
    is routed to the device that owns its bucket (``capacity``: IDs one device may send
    to another, default the per-device batch, which never overflows; see
    :func:`phoenix_lib.sharding.route`), and the result is bit-identical to the same
    write on one device.
    """
    x, shape, valid = _ids_as_words(ids, mask)
    placed = _placement(state, capacity)
    now = _check_hour(state, now_hour)
    ttl = state.ttl_hours if ttl_hours is None else ttl_hours
    ttl = jnp.asarray(ttl)
    if not jnp.issubdtype(ttl.dtype, jnp.integer):
        raise TypeError(f"ttl_hours must be integers, got dtype {ttl.dtype}")
    if ttl.shape not in ((), shape):
        raise ValueError(f"ttl_hours shape {ttl.shape} must be () or the ids shape {shape}")
    if not isinstance(ttl, jax.core.Tracer) and ttl.size and int(ttl.min()) < 0:
        raise ValueError(f"ttl_hours must be non-negative, got {int(ttl.min())}")
    n = int(np.prod(shape))
    if n == 0:
        empty = jnp.zeros(shape, jnp.int32)
        return state, empty, empty
    ttl = jnp.broadcast_to(ttl.astype(jnp.int32), shape).reshape(-1)
    ttl = jnp.pad(ttl, (0, x.lo.shape[0] - n))
    if placed is not None:
        state, rows, evicted = _sharded(_write, state, x, valid, placed, capacity, now, ttl)
    else:
        state, rows, evicted = _write(state, x, *_home(state, x), valid, now, ttl)
    return state, rows[:n].reshape(shape), evicted[:n].reshape(shape)


def lookup(state: MpzchState, ids, *, mask=None, capacity=None) -> jax.Array:
    """Read-only rows for ``ids`` ``[...]`` -> int32 ``[...]`` (evaluation and serving).

    The owned slot of a resident ID; for any other ID its home slot, or ``-1``
    with ``disable_fallback``; numbered as :func:`write` numbers them (``slot + 1``
    with ``padding_row``), masked positions as there. Never changes the table. A sharded
    table (:func:`shard`) is read where its buckets live, as :func:`write` says.
    """
    x, shape, valid = _ids_as_words(ids, mask)
    placed = _placement(state, capacity)
    n = int(np.prod(shape))
    if n == 0:
        return jnp.zeros(shape, jnp.int32)
    if placed is not None:
        return _sharded(_lookup, state, x, valid, placed, capacity)[:n].reshape(shape)
    return _lookup(state, x, *_home(state, x), valid)[:n].reshape(shape)


# ------------------------------------------------------------------ tables on a mesh


def shard(state: MpzchState, mesh: Mesh, axis: str) -> MpzchState:
    """The table with its buckets split over ``axis`` of ``mesh`` (co-sharding, MPZCH paper).

    Device ``k`` of ``n`` holds buckets ``k B/n .. (k+1) B/n - 1``, i.e. the contiguous slots
    ``k S/n .. (k+1) S/n - 1``; the clock and counters are replicated. Put the embedding
    table behind it (``[num_slots, D]``) on the same mesh with
    :func:`phoenix_lib.sharding.shard_rows`: slot ``s`` and row ``s`` then live on the same
    device, and ``sharding.lookup(table, slots, padding_row=False)`` reads them there.
    :func:`write` and :func:`lookup` route each ID to its bucket's device and give
    the same slots, evictions, table and counters as on one device; a sharded table moves
    to another mesh (resharding; a one-device mesh gathers it) by calling :func:`shard`
    again, slots unchanged. :func:`save` takes it as it is.

    Raises:
      ValueError: ``num_buckets`` not a multiple of the axis size (no device may own part
        of a bucket), or a table made with ``padding_row=True`` (its rows are shifted by
        one against the slots, so row and slot would not share a device).
    """
    n = sharding.check_divides("num_buckets", state.num_buckets, mesh, axis)
    if state.padding_row and n > 1:
        raise ValueError(
            "a sharded table numbers rows as slots: create it with padding_row=False (its "
            "embedding table then has num_slots rows, row s on the device that owns slot s)"
        )
    rows, whole = NamedSharding(mesh, P(axis)), NamedSharding(mesh, P())
    return dataclasses.replace(
        state,
        identity_hi=sharding.put(state.identity_hi, rows),
        identity_lo=sharding.put(state.identity_lo, rows),
        metadata=sharding.put(state.metadata, rows),
        clock=sharding.put(state.clock, whole),
        counters_hi=sharding.put(state.counters_hi, whole),
        counters_lo=sharding.put(state.counters_lo, whole),
    )


def _placement(state: MpzchState, capacity) -> tuple[Mesh, str] | None:
    """The table's ``(mesh, axis)`` when sharded (checked consistent), else ``None``."""
    placed = sharding.placement(state.identity_hi)
    if placed is None:
        if capacity is not None:
            raise ValueError("capacity applies to a sharded table only (see shard)")
        return None
    for name in ("identity_lo", "metadata"):
        if sharding.placement(getattr(state, name)) != placed:
            raise ValueError(
                f"the table's {name} is not on the mesh and axis of its identity: place the "
                "whole table with mpzch.shard"
            )
    return placed


def _sharded(kernel, state, x, valid, placed, capacity, *args):
    """``kernel`` (:func:`_write` or :func:`_lookup`) on a sharded table: the host batch
    padded to a multiple of the axis size, then :func:`_on_mesh`."""
    mesh, axis = placed
    n = mesh.shape[axis]
    size = -(-x.lo.shape[0] // n) * n
    pad = size - x.lo.shape[0]
    split, whole = NamedSharding(mesh, P(axis)), NamedSharding(mesh, P())
    x = U64(*(sharding.put(np.pad(w, (0, pad)), split) for w in x))
    valid = sharding.put(np.pad(valid, (0, pad)), split)
    args = tuple(sharding.put(np.pad(a, (0, pad)) if a.ndim else a, split if a.ndim else whole)
                 for a in args)  # fmt: skip
    capacity = size // n if capacity is None else capacity
    out, needed = _on_mesh(kernel, state, x, valid, *args, mesh=mesh, axis=axis, capacity=capacity)
    sharding.check_capacity(needed, capacity)
    return out


@functools.partial(jax.jit, static_argnums=0, static_argnames=("mesh", "axis", "capacity"))
def _on_mesh(kernel, state, x, valid, *args, mesh, axis, capacity):
    """Route every ID to the device owning its bucket, run ``kernel`` there on that
    device's buckets as a table of their own, and route the slots back.

    Each device receives its IDs ordered by source device, and within a source in batch
    order: the batch order per bucket is kept, and the write rule only compares IDs of one
    bucket, so the result equals the unsharded one. Counter increments (int32 sums, which
    wrap as the unsharded sums do) are added up over the devices. Each device runs the
    kernel on its whole receive buffer (``n * capacity`` entries, most of them empty at the
    default capacity): exact, but ``n`` times the work of one device's share.
    """
    n = mesh.shape[axis]
    local_slots = state.num_slots // n
    base, home = _home(state, x)
    owner = base // local_slots
    settings = {**state.settings(), "num_slots": local_slots,
                "num_buckets": state.num_buckets // n}  # fmt: skip
    zeros = jnp.zeros(len(_COUNTERS), jnp.uint32)
    writes = kernel is _write

    def per_device(hi, lo, base, home, owner, valid, identity_hi, identity_lo, metadata,
                   clock, *args):  # fmt: skip
        payload = (hi, lo, base - owner * local_slots, home, *(a for a in args if a.ndim))
        routed = sharding.route(payload, jnp.where(valid, owner, -1), capacity, axis)
        r_hi, r_lo, r_base, r_home, *r_args = (a.reshape(-1) for a in routed.received)
        local = MpzchState(identity_hi, identity_lo, metadata, clock, zeros, zeros, **settings)
        now = [a for a in args if not a.ndim]
        out = kernel(local, U64(r_hi, r_lo), r_base, r_home, routed.valid.reshape(-1),
                     *now, *r_args)  # fmt: skip
        local, slots = (out[0], out[1:]) if writes else (local, (out,))
        offset = jax.lax.axis_index(axis) * local_slots
        slots = jnp.stack([jnp.where(s >= 0, s + offset, -1) for s in slots], axis=-1)
        back = sharding.route_back(slots.reshape(n, capacity, -1), routed, axis)
        back = jnp.where((routed.index >= 0)[:, None], back, -1)
        table = (local.identity_hi, local.identity_lo, local.metadata, local.counters_lo[None])
        return table, back, routed.needed

    rows, whole = P(axis), P()
    arg_specs = tuple(rows if a.ndim else whole for a in args)
    (identity_hi, identity_lo, metadata, deltas), back, needed = jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(rows,) * 9 + (whole,) + arg_specs,
        out_specs=((rows,) * 4, rows, rows),
        check_vma=False,  # the kernels' loops start from constants the devices share
    )(x.hi, x.lo, base, home, owner, valid, state.identity_hi, state.identity_lo,
      state.metadata, state.clock, *args)  # fmt: skip
    if not writes:
        return back[:, 0], needed
    now = args[0]
    state = dataclasses.replace(
        state, identity_hi=identity_hi, identity_lo=identity_lo, metadata=metadata,
        clock=jnp.maximum(state.clock, now),
        **_add_counters(state, list(jnp.sum(deltas, axis=0, dtype=jnp.uint32))),
    )  # fmt: skip
    return (state, back[:, 0], back[:, 1]), needed


@jax.jit
def _sweep(state: MpzchState, now: jax.Array):
    occupied = (state.identity_hi != _EMPTY) | (state.identity_lo != _EMPTY)
    expired = occupied & (now > state.metadata)
    state = dataclasses.replace(
        state,
        identity_hi=jnp.where(expired, _EMPTY, state.identity_hi),
        identity_lo=jnp.where(expired, _EMPTY, state.identity_lo),
        metadata=jnp.where(expired, 0, state.metadata),
        clock=jnp.maximum(state.clock, now),
    )
    slots = jnp.arange(state.num_slots, dtype=jnp.int32)
    return state, jnp.where(expired, slots + state.row_offset, -1)


def sweep(state: MpzchState, now_hour):
    """Empty every expired slot without writing anything (an eviction-only pass).

    Returns ``(state, evicted)``, int32 ``[num_slots]``: where a slot was emptied its
    index (its row ``slot + 1`` with ``padding_row``), ``-1`` elsewhere, ready for
    :func:`reset_rows`.
    """
    if state.eviction is None:
        raise ValueError("sweep needs a table created with eviction='ttl' or 'lru'")
    return _sweep(state, _check_hour(state, now_hour))


# ------------------------------------------------------------------ rows behind the table


def reset_rows(
    key: jax.Array,
    table: jax.Array,
    rows: jax.Array,
    opt_state=None,
    *,
    stddev: float | None = None,
):
    """Give ``rows`` of ``table`` a fresh start: new random rows, zero optimizer moments.

    Args:
      key: PRNG key for the new rows.
      table: the embedding table behind an MPZCH table, ``[num_slots, D]``, or
        ``[num_slots + 1, D]`` with ``padding_row``.
      rows: int ``[...]`` rows of ``table``, as :func:`write` and :func:`sweep` return
        them in ``evicted`` (slots, or ``slot + 1`` with ``padding_row``); ``-1`` entries
        are ignored.
      opt_state: optional optimizer state; every leaf with one entry per row of
        ``table`` (leading dimension ``num_slots``: Adam's ``mu`` and ``nu``, row-wise
        Adagrad's accumulator, lazy Adam's per-row step count) gets those rows
        zeroed. Pass only this table's part of the state (``opt_state.tables.post``,
        say): a state that holds every table's part (a ``HashTables`` inside) is
        refused, since another table with as many rows would be zeroed too;
        :func:`phoenix_lib.train.reset_table_rows` finds a table's part by name. A
        global step count (optax's Adam) is not per row and cannot be reset: a reset
        row then takes first steps up to ``(1 - b1) / sqrt(1 - b2)`` times too large;
        :func:`phoenix_lib.optimizers.lazy_adam` counts per row.
      stddev: of the new rows, ``N(0, stddev^2)``; default ``1/sqrt(D)`` as
        :func:`phoenix_lib.tables.init_tables`.

    Returns:
      ``(table, opt_state)``.

    Raises:
      ValueError: a row past the table (checked when ``rows`` holds values): a table in
        front of which sits an MPZCH table with ``padding_row`` needs ``num_slots + 1`` rows.
    """
    placed = sharding.placement(table)
    for leaf in jax.tree.leaves(opt_state):
        if getattr(leaf, "shape", ())[:1] == table.shape[:1] and sharding.placement(leaf) != placed:
            raise ValueError(
                "opt_state's per-row state is not on the table's mesh and axis: place both "
                "with phoenix_lib.sharding.shard_rows on the same mesh"
            )
    rows = jnp.asarray(rows)
    if not isinstance(rows, jax.core.Tracer) and rows.size and int(rows.max()) >= table.shape[0]:
        raise ValueError(
            f"rows holds row {int(rows.max())}, past the table's {table.shape[0]} rows (an MPZCH "
            "table made with padding_row=True numbers rows 1 to num_slots: its embedding "
            "table needs num_slots + 1 rows)"
        )
    return _reset_rows(key, table, rows, opt_state, stddev=stddev)


@functools.partial(jax.jit, static_argnames=("stddev",))
def _reset_rows(key, table, rows, opt_state, *, stddev):
    nodes = jax.tree_util.tree_leaves(opt_state, is_leaf=lambda n: isinstance(n, HashTables))
    if any(isinstance(node, HashTables) for node in nodes):
        raise TypeError(
            "opt_state holds the state of every hash table; pass only this table's part "
            "(e.g. opt_state.tables.post) or use phoenix_lib.train.reset_table_rows"
        )
    flat = rows.reshape(-1)
    target = jnp.where(flat < 0, table.shape[0], flat)
    scale = stddev if stddev is not None else 1.0 / np.sqrt(table.shape[1])
    new = jax.random.normal(key, (flat.shape[0], table.shape[1]), table.dtype) * scale
    return table.at[target].set(new, mode="drop"), zero_row_state(opt_state, rows, table.shape[0])


def zero_row_state(opt_state, rows: jax.Array, num_rows: int):
    """Zero ``rows`` (``-1`` ignored) in every leaf of ``opt_state`` with ``num_rows``
    entries along its first axis: one table's per-row optimizer state (see :func:`reset_rows`)."""
    flat = rows.reshape(-1)
    target = jnp.where(flat < 0, num_rows, flat)

    def zero_rows(leaf):
        if getattr(leaf, "shape", ())[:1] == (num_rows,):
            return leaf.at[target].set(0, mode="drop")
        return leaf

    return jax.tree_util.tree_map(zero_rows, opt_state)


# ------------------------------------------------------------------ export, metrics, files


def identities(state: MpzchState) -> np.ndarray:
    """The identity tensor as NumPy int64 ``[num_slots]`` (``-1`` = empty), TorchRec's layout."""
    words = U64(sharding.to_host(state.identity_hi), sharding.to_host(state.identity_lo))
    return u64.to_numpy(words).view(np.int64)


def from_identities(identity, *, metadata=None, clock: int = 0, **settings) -> MpzchState:
    """A table holding a given identity tensor (e.g. TorchRec's ``_hash_zch_identities``).

    Args:
      identity: int64 ``[num_slots]`` or ``[num_slots, 1]``; ``-1`` = empty.
      metadata: optional int32 ``[num_slots]`` (or ``[num_slots, 1]``) expiry hours.
      clock: the latest hour already written.
      **settings: :func:`create`'s keyword arguments except ``num_slots``.

    Raises:
      ValueError: an ID outside its probe window, an ID in two slots, bad values.
    """
    identity = np.asarray(identity)
    if identity.ndim == 2 and identity.shape[1] == 1:
        identity = identity[:, 0]
    if identity.ndim != 1 or not np.issubdtype(identity.dtype, np.integer):
        raise ValueError(f"identity must be an int64 vector, got {identity.dtype} {identity.shape}")
    identity = identity.astype(np.int64)
    if (identity < -1).any():
        raise ValueError(f"identity holds negative IDs other than -1: {identity.min()}")
    state = create(identity.shape[0], **settings)
    live = identity[identity >= 0]
    if np.unique(live).size != live.size:
        raise ValueError("identity holds the same ID in two slots")
    if metadata is None:
        metadata = np.zeros(identity.shape[0], np.int32)
    metadata = np.asarray(metadata).reshape(-1)
    if metadata.shape != identity.shape or not np.issubdtype(metadata.dtype, np.integer):
        raise ValueError(f"metadata must be int32 [{identity.shape[0]}], got {metadata.shape}")
    words = u64.from_numpy(identity.view(np.uint64))
    state = dataclasses.replace(
        state,
        identity_hi=words.hi,
        identity_lo=words.lo,
        metadata=jnp.asarray(metadata.astype(np.int32)),
        clock=jnp.int32(clock),
    )
    if live.size:
        slots = np.flatnonzero(identity >= 0)
        found = np.asarray(lookup(state, live)) - state.row_offset
        if not (found == slots).all():
            bad = live[found != slots][0]
            raise ValueError(
                f"ID {bad} lies outside its probe window for these settings "
                f"(num_buckets={state.num_buckets}, max_probe={state.max_probe})"
            )
    return state


def counters(state: MpzchState) -> dict[str, int]:
    """The cumulative 64-bit counters as Python ints."""
    values = u64.to_numpy(U64(state.counters_hi, state.counters_lo))
    return dict(zip(_COUNTERS, (int(v) for v in values), strict=True))


def reset_counters(state: MpzchState) -> MpzchState:
    """The same table with its counters at zero (e.g. to measure one hour)."""
    zeros = jnp.zeros_like(state.counters_hi)
    return dataclasses.replace(state, counters_hi=zeros, counters_lo=zeros)


def metrics(state: MpzchState) -> dict[str, float]:
    """TorchRec's table metrics since creation (or :func:`reset_counters`).

    ``hit_rate``, ``insert_rate``, ``collision_rate`` (= 1 - hit - insert) and
    ``eviction_rate``: fractions of IDs written; ``table_usage``: occupied
    fraction of slots; ``unused_slots``: count of empty slots;
    ``average_eviction_age``: mean hours an evicted ID had been expired
    (``now - metadata``) when its slot was taken (``nan`` without evictions).
    """
    c = counters(state)
    total = max(c["total"], 1)
    used = int(np.count_nonzero(identities(state) != -1))
    return {
        "hit_rate": c["hit"] / total,
        "insert_rate": c["insert"] / total,
        "collision_rate": (c["total"] - c["hit"] - c["insert"]) / total,
        "eviction_rate": c["eviction"] / total,
        "table_usage": used / state.num_slots,
        "unused_slots": float(state.num_slots - used),
        "average_eviction_age": c["eviction_age_sum"] / c["eviction"]
        if c["eviction"]
        else float("nan"),
    }


def save(path: str | os.PathLike, state: MpzchState) -> pathlib.Path:
    """Write the table to ``path`` (.npz, appended unless there; :func:`load` takes the same
    path): identity, metadata, clock, counters, settings. Returns the path written."""
    path = npz_path(path)
    np.savez(
        path,
        identity=identities(state),
        metadata=np.asarray(state.metadata),
        clock=np.asarray(state.clock),
        counters_hi=np.asarray(state.counters_hi),
        counters_lo=np.asarray(state.counters_lo),
        settings=np.array(json.dumps(state.settings())),
    )
    return path


def load(path: str | os.PathLike) -> MpzchState:
    """Read a table written by :func:`save` (``.npz`` optional in ``path``); the round trip
    is exact."""
    with np.load(npz_path(path), allow_pickle=False) as data:
        settings = json.loads(str(data["settings"]))
        del settings["num_slots"]
        state = from_identities(
            data["identity"], metadata=data["metadata"], clock=int(data["clock"]), **settings
        )
        return dataclasses.replace(
            state,
            counters_hi=jnp.asarray(data["counters_hi"]),
            counters_lo=jnp.asarray(data["counters_lo"]),
        )
