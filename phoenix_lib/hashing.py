"""Hash functions for raw 64-bit IDs.

Three functions, all exact without JAX's 64-bit mode (see :mod:`phoenix_lib.u64`):

* :func:`murmur_hash3_2x64`: bit-exact with FBGEMM's ``murmur_hash3_2x64(id, 0, 0)``,
  the hash TorchRec's MPZCH uses to find an ID's home slot.
* :func:`multi_hash`: ``num_hashes`` independent bucket indices per ID in
  ``[1, num_buckets)``, the ``*_hashes`` inputs of the Phoenix models. Bucket 0 is
  reserved for padding.
* :func:`universal_hash`: the same contract with the hash X's May 2026 pipeline and its
  production code use, ``((id * a + b) mod p) mod (m - 1) + 1``, and
  :func:`shared_table_rows`, their one shared table with a reserved offset.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from phoenix_lib import u64
from phoenix_lib.u64 import U64

# MurmurHash3 x64-128 constants.
_C1, _C2 = 0x87C37B91114253D5, 0x4CF5AD432745937F
_FMIX1, _FMIX2 = 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53
_ADD1, _ADD2 = 0x52DCE729, 0x38495AB5
_LENGTH = 16  # bytes hashed: one 16-byte block (k1 = id, k2 = 0)
# multi_hash pads its IDs to a power of two, at least _MIN_PADDED, and hashes longer
# inputs in chunks of _MAX_PADDED: at most seven compiled programs per number of hashes.
_MIN_PADDED, _MAX_PADDED = 1024, 2**16


def _mul(a: U64, c: int) -> U64:
    return u64.mul(a, u64.constant(c))


def _fmix64(k: U64) -> U64:
    """MurmurHash3's 64-bit finaliser: xor-shift, multiply, twice, xor-shift."""
    k = u64.xor(k, u64.shr(k, 33))
    k = _mul(k, _FMIX1)
    k = u64.xor(k, u64.shr(k, 33))
    k = _mul(k, _FMIX2)
    return u64.xor(k, u64.shr(k, 33))


@jax.jit
def murmur_words(x: U64, seed: U64) -> U64:
    """MurmurHash3 x64-128 of the 16-byte block ``(x, 0)``, folded to 64 bits as ``h1 ^ h2``.

    Args:
      x: the IDs, ``U64`` of shape ``[...]``.
      seed: ``U64`` broadcastable against ``x`` (FBGEMM's MPZCH uses seed 0).

    Returns:
      ``U64`` of the broadcast shape.
    """
    shape = jnp.broadcast_shapes(x.hi.shape, seed.hi.shape)
    h1 = h2 = U64(jnp.broadcast_to(seed.hi, shape), jnp.broadcast_to(seed.lo, shape))
    # Body, first 8 bytes: k1 = x.
    k1 = _mul(u64.rotl(_mul(x, _C1), 31), _C2)
    h1 = u64.xor(h1, k1)
    h1 = u64.add(_mul(u64.add(u64.rotl(h1, 27), h2), 5), u64.constant(_ADD1))
    # Body, second 8 bytes: k2 = 0, whose mixing is the identity, so h2 ^= 0.
    h2 = u64.add(_mul(u64.add(u64.rotl(h2, 31), h1), 5), u64.constant(_ADD2))
    # Finalisation.
    length = u64.constant(_LENGTH)
    h1, h2 = u64.xor(h1, length), u64.xor(h2, length)
    h1 = u64.add(h1, h2)
    h2 = u64.add(h2, h1)
    h1, h2 = _fmix64(h1), _fmix64(h2)
    h1 = u64.add(h1, h2)
    h2 = u64.add(h2, h1)
    return u64.xor(h1, h2)


def murmur_hash3_2x64(ids) -> np.ndarray:
    """FBGEMM's ``murmur_hash3_2x64(uint64(id), 0, 0)`` for every ID.

    Args:
      ids: non-negative integers of shape ``[...]``: a NumPy integer array
        (``uint64`` gives the full unsigned range), a JAX integer array, or
        Python ints that fit in int64. Validated by :func:`phoenix_lib.u64.validate_ids`.

    Returns:
      ``np.uint64`` array of shape ``[...]``.
    """
    return u64.to_numpy(murmur_words(u64.from_ids(ids), u64.constant(0)))


@functools.partial(jax.jit, static_argnames=("num_hashes",))
def multi_hash_words(x: U64, valid: jnp.ndarray, num_buckets, *, num_hashes: int):
    """Traceable core of :func:`multi_hash`.

    Column ``j`` is MurmurHash3 with seed ``j + 1`` (seed 0, a different function, is
    left to MPZCH's home slots), reduced to ``1 + h mod (num_buckets - 1)``.

    Args:
      x: ``U64`` IDs of shape ``[...]``.
      valid: bool ``[...]``; ``False`` positions get bucket 0 in every column.
      num_buckets: an int in ``[2, 2**31]``, traced: every table size shares one program.

    Returns:
      int32 ``[..., num_hashes]`` with values in ``[1, num_buckets)`` where valid.
    """
    seeds = U64(jnp.zeros(num_hashes, jnp.uint32), jnp.arange(1, num_hashes + 1, dtype=jnp.uint32))
    h = murmur_words(U64(x.hi[..., None], x.lo[..., None]), seeds)
    buckets = 1 + u64.mod(h, num_buckets - 1).astype(jnp.int32)
    return jnp.where(valid[..., None], buckets, 0)


def multi_hash(
    ids, *, num_buckets: int, num_hashes: int, mask=None, name: str = "ids"
) -> jax.Array:
    """Map raw IDs to ``num_hashes`` independent bucket indices in ``[1, num_buckets)``.

    Args:
      ids: non-negative integer IDs of shape ``[...]`` (see :func:`murmur_hash3_2x64`).
        Masked positions of an array may hold any integer (``-1``, say).
      num_buckets: rows in the hash table, ``2 <= num_buckets <= 2**31``; row 0 is
        the padding row and is never produced for a valid ID.
      num_hashes: number of hash functions (columns), at least 1.
      mask: optional bool array of shape ``[...]``, ``True`` for real IDs. Masked-out
        positions get bucket 0 in every column, which the Phoenix models read as padding.
      name: what error messages call ``ids`` (the caller's argument name).

    Pass IDs as NumPy int64 (or uint64), not ``jnp`` arrays: without JAX's 64-bit mode
    ``jnp.asarray`` keeps only the low 32 bits (``2**40 + 5`` becomes ``5``), silently.

    Returns:
      int32 ``jax.Array`` of shape ``[..., num_hashes]``.
    """
    _check_int("num_buckets", num_buckets, 2, 2**31)
    _check_int("num_hashes", num_hashes, 1, 2**16)
    values, mask = ids_and_mask(ids, mask, name)

    def hash_chunk(x, valid):
        return multi_hash_words(x, valid, np.uint32(num_buckets), num_hashes=num_hashes)

    return _in_padded_chunks(hash_chunk, values, mask, num_hashes)


def _in_padded_chunks(hash_chunk, values: np.ndarray, mask: np.ndarray, num_hashes: int):
    """``hash_chunk(U64 [n], valid [n]) -> int32 [n, num_hashes]`` over ``values`` [...]:
    a flat copy padded to a power of two (at least ``_MIN_PADDED``), hashed in chunks of
    at most ``_MAX_PADDED``, so that a few compiled programs serve every batch shape; the
    padding is invalid and cut off. Returns int32 ``[..., num_hashes]``."""
    n = values.size
    chunk = min(_MAX_PADDED, max(_MIN_PADDED, 1 << max(n - 1, 0).bit_length()))
    padded = chunk * max(1, -(-n // chunk))
    flat = np.zeros(padded, np.uint64)
    flat[:n] = values.reshape(-1)
    valid = np.zeros(padded, bool)
    valid[:n] = mask.reshape(-1)
    outs = [
        hash_chunk(
            u64.from_numpy(flat[start : start + chunk]), jnp.asarray(valid[start : start + chunk])
        )
        for start in range(0, padded, chunk)
    ]
    out = outs[0] if len(outs) == 1 else jnp.concatenate(outs)
    return out[:n].reshape(*values.shape, num_hashes)


@dataclasses.dataclass(frozen=True)
class UniversalHash:
    """One entity's universal hash (X's May 2026 pipeline, August 2026 production code):
    hash function ``j`` maps an ID to ``((id * scales[j] + biases[j]) mod modulus) mod
    (num_buckets - 1) + 1``, and ID 0 to 0.

    The released code computes ``id * a + b`` in signed 64-bit integers that wrap on
    overflow (NumPy ``int64``; Rust's ``wrapping_mul``), then takes the non-negative
    remainder (``rem_euclid``). For ``id * a + b >= 2**63`` that is not the textbook
    ``(a x + b) mod p`` of the integers: the wrapped value is ``id * a + b - k 2**64``.
    :func:`universal_hash` reproduces the released arithmetic bit for bit.

    Attributes:
      scales, biases: one int64 per hash function (equal lengths, at least one).
      modulus: the prime ``p``, ``2 <= p <= 2**63 - 1``.
      num_buckets: the entity's table size ``m``, ``2 <= m <= 2**31``; buckets are
        ``1 .. m - 1``.
    """

    scales: tuple[int, ...]
    biases: tuple[int, ...]
    modulus: int
    num_buckets: int

    def __post_init__(self):
        if len(self.scales) != len(self.biases) or not self.scales:
            raise ValueError(
                f"scales and biases need one value each per hash function, got "
                f"{len(self.scales)} and {len(self.biases)}"
            )
        for name in ("scales", "biases"):
            for value in getattr(self, name):
                _check_int(name, value, -(2**63), 2**63 - 1)
        _check_int("modulus", self.modulus, 2, 2**63 - 1)
        _check_int("num_buckets", self.num_buckets, 2, 2**31)

    @classmethod
    def draw(cls, seed: int, *, num_hashes: int, num_buckets: int, modulus: int = 2**61 - 1):
        """Random parameters (``a`` in ``[1, p)``, ``b`` in ``[0, p)``) from a NumPy seed; the
        default ``p`` is the Mersenne prime ``2**61 - 1``. X's published parameters are
        in its configs, not in the code: pass them to the constructor instead."""
        rng = np.random.default_rng(seed)
        scales = tuple(int(v) for v in rng.integers(1, modulus, num_hashes, dtype=np.int64))
        biases = tuple(int(v) for v in rng.integers(0, modulus, num_hashes, dtype=np.int64))
        return cls(scales, biases, modulus, num_buckets)


@functools.partial(jax.jit, static_argnames=("params",))
def universal_hash_words(x: U64, valid: jnp.ndarray, params: UniversalHash) -> jax.Array:
    """Traceable core of :func:`universal_hash`: ``x`` U64 ``[...]``, ``valid`` bool ``[...]``
    -> int32 ``[..., num_hashes]``, 0 where invalid or where the ID is 0."""
    p = params.modulus
    wrap = (2**64) % p  # a wrapped negative int64 v = u - 2**64 has v mod p = u - 2**64 mod p
    columns = []
    for a, b in zip(params.scales, params.biases, strict=True):
        u = u64.add(u64.mul(x, u64.constant(a % 2**64)), u64.constant(b % 2**64))
        r = u64.mod_wide(u, p)  # u mod p, u read as unsigned
        negative = (u.hi >> 31) == 1  # the int64 the release sees is u - 2**64
        r_neg = u64.add(r, u64.constant((p - wrap) % p))  # r - wrap, mod p, below 2p
        r_neg = _select(u64.less(r_neg, u64.constant(p)), r_neg, u64.sub(r_neg, u64.constant(p)))
        r = _select(negative, r_neg, r)
        columns.append(1 + u64.mod(r, params.num_buckets - 1).astype(jnp.int32))
    h = jnp.stack(columns, axis=-1)
    real = valid & ((x.hi != 0) | (x.lo != 0))
    return jnp.where(real[..., None], h, 0)


def _select(condition, a: U64, b: U64) -> U64:
    return U64(jnp.where(condition, a.hi, b.hi), jnp.where(condition, a.lo, b.lo))


def universal_hash(ids, params: UniversalHash, *, mask=None, name: str = "ids") -> jax.Array:
    """Bucket indices of raw IDs under X's universal hash: int32 ``[..., num_hashes]`` in
    ``[1, num_buckets)``, and 0 for ID 0 and for masked positions.

    Args:
      ids: non-negative integer IDs ``[...]``, checked as for :func:`multi_hash` (NumPy
        ``uint64`` IDs past ``2**63`` are taken as the release's ``int64`` cast sees them).
      params: the entity's :class:`UniversalHash`.
      mask: optional bool ``[...]``, ``True`` for real IDs.
      name: what error messages call ``ids``.
    """
    if not isinstance(params, UniversalHash):
        raise TypeError(f"params must be a UniversalHash, got {type(params).__name__}")
    values, mask = ids_and_mask(ids, mask, name)

    def hash_chunk(x, valid):
        return universal_hash_words(x, valid, params)

    return _in_padded_chunks(hash_chunk, values, mask, len(params.scales))


SHARED_RESERVED_ROWS = 65  # rows 0-64 of X's shared table: 0 is padding, 1-64 unused
ENTITIES = ("user", "item", "author")


def shared_table_rows(hashes, entity: str, vocab_sizes: tuple[int, int, int]) -> jax.Array:
    """Rows of X's one shared embedding table for one entity's hashes ``[...]``.

    The table stacks ``65`` reserved rows, then the users' ``vocab_sizes[0]`` rows, the
    items', the authors': a hash ``h >= 1`` of entity ``e`` is row ``65 + offset_e + h``,
    and hash 0 (padding) stays row 0. Every block's own row 0 is never addressed
    (hashes start at 1), as in the release. The table has
    ``65 + sum(vocab_sizes)`` rows (:func:`shared_table_size`).
    """
    if entity not in ENTITIES:
        raise ValueError(f"entity must be one of {ENTITIES}, got {entity!r}")
    k = ENTITIES.index(entity)
    hashes = jnp.asarray(hashes)
    if jnp.dtype(hashes.dtype).kind not in "iu":
        raise TypeError(f"hashes must be integers, got {hashes.dtype}")
    if not isinstance(hashes, jax.core.Tracer) and hashes.size:
        low, high = int(hashes.min()), int(hashes.max())
        if low < 0 or high >= vocab_sizes[k]:
            raise ValueError(
                f"{entity} hashes must be in [0, {vocab_sizes[k]}), got values in [{low}, {high}]"
            )
    offset = SHARED_RESERVED_ROWS + sum(vocab_sizes[:k])
    return jnp.where(hashes == 0, 0, hashes + offset).astype(jnp.int32)


def shared_table_size(vocab_sizes: tuple[int, int, int]) -> int:
    """Rows of the shared table of :func:`shared_table_rows`."""
    return SHARED_RESERVED_ROWS + sum(vocab_sizes)


def ids_and_mask(ids, mask, name: str = "ids") -> tuple[np.ndarray, np.ndarray]:
    """Raw IDs ``[...]`` and an optional bool ``mask`` ``[...]`` (``True`` = a real ID),
    checked on the host: ``(uint64 IDs, bool mask)``, masked positions set to 0.

    Masked positions of an array may hold anything integer (``-1`` for padding, say); the
    real ones are checked by :func:`phoenix_lib.u64.validate_ids`.
    """
    if mask is None:
        values = u64.validate_ids(ids, name)
        return values, np.ones(values.shape, bool)
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise TypeError(f"the mask of {name} must be a bool array, got dtype {mask.dtype}")
    if mask.shape != np.shape(ids):
        raise ValueError(f"the mask's shape {mask.shape} differs from {name}'s {np.shape(ids)}")
    array = np.asarray(ids)  # Python ints beyond int64 give an object array, checked as is
    if np.issubdtype(array.dtype, np.integer):
        ids = np.where(mask, array, 0).astype(array.dtype)
    return u64.validate_ids(ids, name), mask


def _check_int(name: str, value, low: int, high: int) -> None:
    """Raise unless ``value`` is an int in ``[low, high]`` (bools are not ints here)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
