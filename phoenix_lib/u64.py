"""Exact unsigned 64-bit integers as pairs of 32-bit words.

JAX keeps integers 32 bits wide unless the global ``jax_enable_x64`` flag is
on, and when it is off it *silently* truncates 64-bit inputs. Raw IDs in a
recommender are 64-bit (snowflake IDs exceed 2^32 within milliseconds of the
epoch), so every function in this package that touches raw IDs works on
``U64`` values: a ``(hi, lo)`` pair of ``uint32`` arrays with
``value = hi * 2**32 + lo``. All arithmetic is modulo 2^64, exactly as C's
``uint64_t``; it needs no 64-bit mode and runs on CPUs, GPUs and TPUs alike.

The host-side entry point is :func:`from_ids`, which validates user input and
never wraps or truncates; :func:`to_numpy` goes back to ``np.uint64``.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

_MASK32 = 0xFFFFFFFF


class U64(NamedTuple):
    """A uint64 array stored as two ``uint32`` planes of equal shape ``[...]``."""

    hi: jnp.ndarray
    lo: jnp.ndarray


def constant(value: int) -> U64:
    """A scalar ``U64`` from a Python int in ``[0, 2**64)``."""
    if not 0 <= value < 2**64:
        raise ValueError(f"constant {value} is outside [0, 2**64)")
    return U64(jnp.uint32(value >> 32), jnp.uint32(value & _MASK32))


def validate_ids(ids, name: str = "ids") -> np.ndarray:
    """Check raw IDs on the host and return them as a NumPy ``uint64`` array.

    Accepts NumPy (or JAX) arrays of any integer dtype, Python ints and nested
    lists of them. Signed inputs must be non-negative; Python ints must fit in
    int64 (raw IDs are int64 in every system this book describes). A NumPy
    ``uint64`` array is taken as is, so the full unsigned range is available to
    callers that need it (e.g. hashing a hash).

    Raises:
      TypeError: floats, booleans, strings or other non-integer input.
      ValueError: negative IDs, or Python ints outside int64.
    """
    if isinstance(ids, list | tuple | int):
        arr = _python_ints_to_array(ids, name)
    else:
        arr = np.asarray(ids)
    if np.issubdtype(arr.dtype, np.floating):
        raise TypeError(
            f"{name} must hold integers, got dtype {arr.dtype}: keep raw IDs as int64 from the "
            "start (a float64 holds integers exactly only up to 2**53, so IDs read as floats "
            "may already be wrong)"
        )
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.signedinteger) and arr.size and arr.min() < 0:
        raise ValueError(f"{name} must be non-negative, got minimum {arr.min()}")
    return arr.astype(np.uint64)


def _python_ints_to_array(ids, name: str) -> np.ndarray:
    """Python int or (nested) list of ints -> int64 array, refusing anything lossy."""
    arr = np.asarray(ids, dtype=object)
    flat = arr.reshape(-1)
    for value in flat:
        if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must hold integers, got {type(value).__name__} {value!r}")
        if not -(2**63) <= int(value) < 2**63:
            raise ValueError(f"{name} value {int(value)} does not fit in int64")
    return np.array([int(v) for v in flat], dtype=np.int64).reshape(arr.shape)


def from_ids(ids, name: str = "ids") -> U64:
    """Validated raw IDs (see :func:`validate_ids`) -> ``U64`` on the default device."""
    return from_numpy(validate_ids(ids, name))


def from_numpy(values: np.ndarray) -> U64:
    """``np.uint64`` array -> ``U64`` (exact; no validation)."""
    values = np.asarray(values, dtype=np.uint64)
    hi = (values >> np.uint64(32)).astype(np.uint32)
    lo = (values & np.uint64(_MASK32)).astype(np.uint32)
    return U64(jnp.asarray(hi), jnp.asarray(lo))


def to_numpy(x: U64) -> np.ndarray:
    """``U64`` -> ``np.uint64`` array (exact)."""
    hi = np.asarray(x.hi, dtype=np.uint64)
    lo = np.asarray(x.lo, dtype=np.uint64)
    return (hi << np.uint64(32)) | lo


# Arithmetic modulo 2**64. Every function is traceable (use it under jax.jit).


def xor(a: U64, b: U64) -> U64:
    return U64(a.hi ^ b.hi, a.lo ^ b.lo)


def add(a: U64, b: U64) -> U64:
    lo = a.lo + b.lo
    carry = (lo < a.lo).astype(jnp.uint32)
    return U64(a.hi + b.hi + carry, lo)


def _mul32_wide(a: jnp.ndarray, b: jnp.ndarray) -> U64:
    """Full 64-bit product of two uint32 arrays, by 16-bit halves."""
    a0, a1 = a & 0xFFFF, a >> 16
    b0, b1 = b & 0xFFFF, b >> 16
    p00, p01, p10, p11 = a0 * b0, a0 * b1, a1 * b0, a1 * b1
    middle = (p00 >> 16) + (p01 & 0xFFFF) + (p10 & 0xFFFF)  # < 3 * 2**16, no overflow
    hi = p11 + (p01 >> 16) + (p10 >> 16) + (middle >> 16)
    return U64(hi, a * b)


def mul(a: U64, b: U64) -> U64:
    """``a * b mod 2**64``: the low word product in full, the cross terms mod 2**32."""
    low = _mul32_wide(a.lo, b.lo)
    return U64(low.hi + a.hi * b.lo + a.lo * b.hi, low.lo)


def shr(a: U64, r: int) -> U64:
    """Logical right shift by a static ``0 < r < 64``."""
    if r >= 32:
        return U64(jnp.zeros_like(a.hi), a.hi >> (r - 32))
    return U64(a.hi >> r, (a.lo >> r) | (a.hi << (32 - r)))


def rotl(a: U64, r: int) -> U64:
    """Left rotation by a static ``0 < r < 64``."""
    hi, lo = (a.lo, a.hi) if r >= 32 else (a.hi, a.lo)
    r %= 32
    if r == 0:
        return U64(hi, lo)
    return U64((hi << r) | (lo >> (32 - r)), (lo << r) | (hi >> (32 - r)))


def sub(a: U64, b: U64) -> U64:
    """``a - b mod 2**64``."""
    borrow = (a.lo < b.lo).astype(jnp.uint32)
    return U64(a.hi - b.hi - borrow, a.lo - b.lo)


def less(a: U64, b: U64) -> jnp.ndarray:
    """``a < b`` as unsigned 64-bit integers (bool ``[...]``)."""
    return (a.hi < b.hi) | ((a.hi == b.hi) & (a.lo < b.lo))


def mod_wide(a: U64, m: int) -> U64:
    """``a mod m`` for a Python int ``1 <= m <= 2**63``, as a ``U64`` (for moduli past the
    32-bit range of :func:`mod`, e.g. the prime of a universal hash).

    The same binary long division as :func:`mod` with a 64-bit remainder: it stays below
    ``m <= 2**63``, so ``2 * r + 1`` fits in 64 bits.
    """
    if not 1 <= m <= 2**63:
        raise ValueError(f"modulus must be in [1, 2**63], got {m}")
    mm = constant(m)

    def step(i, r):
        word = jnp.where(i < 32, a.hi, a.lo)
        bit = (word >> (31 - i % 32).astype(jnp.uint32)) & 1
        r = U64((r.hi << 1) | (r.lo >> 31), (r.lo << 1) | bit)
        keep = less(r, mm)
        r_minus = sub(r, mm)
        return U64(jnp.where(keep, r.hi, r_minus.hi), jnp.where(keep, r.lo, r_minus.lo))

    zero = jnp.zeros_like(a.lo)
    return jax.lax.fori_loop(0, 64, step, U64(zero, zero), unroll=8)


def mod(a: U64, m) -> jnp.ndarray:
    """``a mod m`` as ``uint32`` for ``1 <= m <= 2**31``: a Python int (checked here), or
    an integer scalar array, possibly traced (its range is the caller's to check), so
    that one compiled program serves every modulus.

    Schoolbook binary long division: 64 shift-and-subtract steps, most significant
    bit first. The remainder stays below ``m <= 2**31``, so ``2 * r + 1`` always fits
    in 32 bits. The steps are a loop (``fori_loop``) of eight steps at a time, not 64
    copies of the step: fully unrolled, the chain of dependent selects made XLA:CPU in
    JAX 0.12 compile for minutes or forever for some shapes (one hash function per ID,
    for example); eight at a time compiles at once and runs as fast as the full chain.
    """
    if isinstance(m, int):
        if not 1 <= m <= 2**31:
            raise ValueError(f"modulus must be in [1, 2**31], got {m}")
        if m & (m - 1) == 0:  # power of two: a mask
            return a.lo & jnp.uint32(m - 1)
    mm = jnp.asarray(m).astype(jnp.uint32)

    def step(i, r):
        word = jnp.where(i < 32, a.hi, a.lo)
        r = (r << 1) | ((word >> (31 - i % 32).astype(jnp.uint32)) & 1)
        return jnp.where(r >= mm, r - mm, r)

    return jax.lax.fori_loop(0, 64, step, jnp.zeros_like(a.lo), unroll=8)
