"""Hash functions for raw 64-bit IDs.

Two functions, both exact without JAX's 64-bit mode (see :mod:`phoenix_lib.u64`):

* :func:`murmur_hash3_2x64`: bit-exact with FBGEMM's ``murmur_hash3_2x64(id, 0, 0)``,
  the hash TorchRec's MPZCH uses to find an ID's home slot.
* :func:`multi_hash`: ``num_hashes`` independent bucket indices per ID in
  ``[1, num_buckets)``, the ``*_hashes`` inputs of the Phoenix models. Bucket 0 is
  reserved for padding.
"""

from __future__ import annotations

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

    Column ``j`` is MurmurHash3 with seed ``j + 1`` (so no column equals the seed-0
    hash MPZCH uses for home slots), reduced to ``1 + h mod (num_buckets - 1)``.

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
    # Hash a flat copy padded to a power of two (at least _MIN_PADDED), in chunks of at
    # most _MAX_PADDED, so that a few compiled programs serve every batch shape; the
    # padding is invalid and cut off.
    n = values.size
    chunk = min(_MAX_PADDED, max(_MIN_PADDED, 1 << max(n - 1, 0).bit_length()))
    padded = chunk * max(1, -(-n // chunk))
    flat = np.zeros(padded, np.uint64)
    flat[:n] = values.reshape(-1)
    valid = np.zeros(padded, bool)
    valid[:n] = mask.reshape(-1)
    outs = [
        multi_hash_words(
            u64.from_numpy(flat[start : start + chunk]),
            jnp.asarray(valid[start : start + chunk]),
            np.uint32(num_buckets),
            num_hashes=num_hashes,
        )
        for start in range(0, padded, chunk)
    ]
    out = outs[0] if len(outs) == 1 else jnp.concatenate(outs)
    return out[:n].reshape(*values.shape, num_hashes)


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
