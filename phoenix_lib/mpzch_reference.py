"""MPZCH one ID at a time, in plain NumPy and Python: the semantic reference.

This is FBGEMM's per-ID kernel logic (``process_item_zch`` in
``fbgemm_gpu/src/faster_hash_ops/faster_hash.cu``), written for reading, not
speed. The tests check :mod:`phoenix_lib.mpzch` against it; the benchmarks use
it as the plain-Python baseline. Unlike :mod:`phoenix_lib.mpzch` it keeps
FBGEMM's early stop: the search for a resident ID ends at the first empty slot.
"""

from __future__ import annotations

import numpy as np

_U = np.uint64


def murmur_hash3_2x64_numpy(ids: np.ndarray, seed: int = 0) -> np.ndarray:
    """MurmurHash3 x64-128 of the block ``(id, 0)``, folded as ``h1 ^ h2``; ``np.uint64``."""
    ids = np.asarray(ids).astype(np.uint64)

    def rotl(x, r):
        return (x << _U(r)) | (x >> _U(64 - r))

    def fmix(k):
        k = k ^ (k >> _U(33))
        k = k * _U(0xFF51AFD7ED558CCD)
        k = k ^ (k >> _U(33))
        k = k * _U(0xC4CEB9FE1A85EC53)
        return k ^ (k >> _U(33))

    c1, c2 = _U(0x87C37B91114253D5), _U(0x4CF5AD432745937F)
    with np.errstate(over="ignore"):
        h1 = np.full(ids.shape, seed, np.uint64)
        h2 = h1.copy()
        h1 ^= rotl(ids * c1, 31) * c2
        h1 = (rotl(h1, 27) + h2) * _U(5) + _U(0x52DCE729)
        # The second 8-byte word is 0: its mixing gives 0 and h2 ^= 0 changes nothing.
        h2 = (rotl(h2, 31) + h1) * _U(5) + _U(0x38495AB5)
        h1 ^= _U(16)
        h2 ^= _U(16)
        h1 = h1 + h2
        h2 = h2 + h1
        h1, h2 = fmix(h1), fmix(h2)
        h1 = h1 + h2
        h2 = h2 + h1
    return h1 ^ h2


class SequentialTable:
    """An MPZCH table processed strictly one ID after another.

    ``identity`` (int64, -1 empty) and ``metadata`` (int64 expiry hours) are public
    NumPy arrays; the settings mean what they mean in :func:`phoenix_lib.mpzch.create`.
    """

    def __init__(
        self,
        num_slots,
        *,
        max_probe=128,
        num_buckets=1,
        eviction=None,
        ttl_hours=24,
        disable_fallback=False,
    ):
        self.num_slots, self.max_probe, self.num_buckets = num_slots, max_probe, num_buckets
        self.bucket_size = num_slots // num_buckets
        self.eviction, self.ttl_hours, self.disable_fallback = eviction, ttl_hours, disable_fallback
        self.identity = np.full(num_slots, -1, np.int64)
        self.metadata = np.zeros(num_slots, np.int64)

    def window(self, id_: int) -> list[int]:
        """The probe window of one ID, home slot first."""
        home = int(murmur_hash3_2x64_numpy(np.array([id_]))[0] % _U(self.bucket_size))
        offset = (id_ % self.num_buckets) * self.bucket_size
        return [offset + (home + p) % self.bucket_size for p in range(self.max_probe)]

    def _fallback(self, window) -> int:
        return -1 if self.disable_fallback else window[0]

    def lookup_one(self, id_: int) -> int:
        window = self.window(id_)
        for slot in window:
            if self.identity[slot] == id_:
                return slot
        return self._fallback(window)

    def write_one(self, id_: int, now: int, ttl: int | None = None) -> tuple[int, int]:
        """Returns ``(slot, evicted_slot or -1)``; updates the table in place."""
        expiry = now + (self.ttl_hours if ttl is None else ttl)
        window = self.window(id_)
        taken = None
        if self.eviction == "lru":
            oldest = None
            for slot in window:
                if self.identity[slot] in (-1, id_):
                    taken = slot
                    break
                if now > self.metadata[slot] and (
                    oldest is None or self.metadata[slot] < self.metadata[oldest]
                ):
                    oldest = slot
            evicted = taken is None and oldest is not None
            taken = oldest if evicted else taken
        else:
            resident = False
            for slot in window:  # FBGEMM's pre-scan, ending at the first empty slot
                if self.identity[slot] == -1:
                    break
                if self.identity[slot] == id_:
                    resident = True
                    break
            evicted = False
            for slot in window:
                if self.identity[slot] in (-1, id_):
                    taken = slot
                    break
                if self.eviction == "ttl" and not resident and now > self.metadata[slot]:
                    taken, evicted = slot, True
                    break
        if taken is None:
            return self._fallback(window), -1
        self.identity[taken] = id_
        if self.eviction is not None:
            self.metadata[taken] = max(self.metadata[taken], expiry)
        return taken, taken if evicted else -1

    def write(self, ids, now: int, ttl=None) -> tuple[np.ndarray, np.ndarray]:
        """``write_one`` over a flat sequence of IDs, in order."""
        ids = np.asarray(ids).reshape(-1)
        ttls = np.broadcast_to(self.ttl_hours if ttl is None else ttl, ids.shape)
        out = [self.write_one(int(i), now, int(t)) for i, t in zip(ids, ttls, strict=True)]
        return np.array([o[0] for o in out], np.int64), np.array([o[1] for o in out], np.int64)

    def lookup(self, ids) -> np.ndarray:
        return np.array([self.lookup_one(int(i)) for i in np.asarray(ids).reshape(-1)], np.int64)
