"""MurmurHash3 against FBGEMM's golden values and a NumPy reference; multi-hash properties."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from phoenix_lib.hashing import (
    UniversalHash,
    multi_hash,
    murmur_hash3_2x64,
    shared_table_rows,
    shared_table_size,
    universal_hash,
)
from phoenix_lib.mpzch_reference import murmur_hash3_2x64_numpy as _murmur_numpy


def test_golden_values_from_fbgemm():
    got = murmur_hash3_2x64(np.array([0, 10000, 8589934592], dtype=np.int64))
    assert got.dtype == np.uint64
    assert got.tolist() == [18435680919526311008, 1932825161566208140, 11788262192330937953]


@given(arrays(np.uint64, 64, elements=st.integers(0, 2**64 - 1)))
def test_matches_numpy_reference_on_random_64_bit_ids(ids):
    np.testing.assert_array_equal(murmur_hash3_2x64(ids), _murmur_numpy(ids))


def test_ids_above_32_bits_and_near_2_63_are_exact():
    ids = np.array([2**32, 2**32 + 1, 2**40 + 12345, 2**63 - 2, 2**63 - 1], dtype=np.int64)
    np.testing.assert_array_equal(murmur_hash3_2x64(ids), _murmur_numpy(ids.astype(np.uint64)))
    # IDs that agree in their low 32 bits hash differently: no silent truncation.
    assert len(set(murmur_hash3_2x64(np.array([5, 5 + 2**32, 5 + 2**62])).tolist())) == 3


def test_shape_is_kept_and_lists_work():
    ids = np.arange(12, dtype=np.int64).reshape(3, 4)
    assert murmur_hash3_2x64(ids).shape == (3, 4)
    np.testing.assert_array_equal(murmur_hash3_2x64(ids.tolist()), murmur_hash3_2x64(ids))


def test_multi_hash_range_shape_and_determinism():
    ids = np.random.default_rng(0).integers(0, 2**63 - 1, size=(4, 50), dtype=np.int64)
    h = np.asarray(multi_hash(ids, num_buckets=17, num_hashes=3))
    assert h.shape == (4, 50, 3) and h.dtype == np.int32
    assert h.min() >= 1 and h.max() <= 16
    np.testing.assert_array_equal(h, np.asarray(multi_hash(ids, num_buckets=17, num_hashes=3)))
    # Column j is MurmurHash3 with seed j + 1, reduced into [1, num_buckets).
    expected = 1 + _murmur_numpy(ids.astype(np.uint64), seed=2) % np.uint64(16)
    np.testing.assert_array_equal(h[..., 1], expected.astype(np.int32))


@pytest.mark.parametrize("shape", [(3,), (40, 30), (2, 0), (2, 2**15 + 3)])
@pytest.mark.parametrize("num_buckets", [2**13, 2**13 + 1, 2**31])
def test_multi_hash_equals_its_definition_for_any_shape_and_table_size(shape, num_buckets):
    """multi_hash hashes a padded flat copy with the table size traced (one program for
    many shapes and sizes); every column must still be 1 + murmur(seed j + 1) mod (m - 1),
    0 where masked, in the input's shape: here across the 1,024 padding boundary and
    across the boundary of the 2**16-ID chunks that longer inputs are hashed in."""
    rng = np.random.default_rng(len(shape) + num_buckets % 7)
    ids = rng.integers(0, 2**63 - 1, size=shape, dtype=np.int64)
    mask = rng.random(shape) < 0.9
    h = np.asarray(multi_hash(ids, num_buckets=num_buckets, num_hashes=2, mask=mask))
    assert h.shape == (*shape, 2)
    for j in range(2):
        buckets = 1 + _murmur_numpy(ids.astype(np.uint64), seed=j + 1) % np.uint64(num_buckets - 1)
        np.testing.assert_array_equal(h[..., j], np.where(mask, buckets, 0).astype(np.int32))


def test_multi_hash_padding_gives_bucket_zero():
    ids = np.array([[11, 12, 0, 0]], dtype=np.int64)
    mask = np.array([[True, True, False, False]])
    h = np.asarray(multi_hash(ids, num_buckets=1000, num_hashes=2, mask=mask))
    assert (h[0, 2:] == 0).all() and (h[0, :2] >= 1).all()


def test_multi_hash_with_two_buckets_uses_bucket_one():
    h = np.asarray(multi_hash(np.arange(10), num_buckets=2, num_hashes=2))
    assert (h == 1).all()


def test_hash_columns_are_independent():
    """Two distinct IDs collide in one column w.p. 1/m and in both w.p. 1/m^2 (m = buckets - 1)."""
    m = 64
    rng = np.random.default_rng(1)
    pairs = rng.integers(0, 2**62, size=(1_000_000, 2), dtype=np.int64)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    h = np.asarray(multi_hash(pairs, num_buckets=m + 1, num_hashes=2))
    same = h[:, 0, :] == h[:, 1, :]  # [pairs, column]
    n = len(pairs)
    for column in range(2):
        expected = n / m
        assert abs(same[:, column].sum() - expected) < 5 * np.sqrt(expected)
    both = same.all(axis=1).sum()
    expected = n / m**2
    assert abs(both - expected) < 5 * np.sqrt(expected), (both, expected)


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"num_buckets": 1, "num_hashes": 2}, ValueError, "num_buckets"),
        ({"num_buckets": 2**31 + 1, "num_hashes": 2}, ValueError, "num_buckets"),
        ({"num_buckets": 10.0, "num_hashes": 2}, TypeError, "num_buckets"),
        ({"num_buckets": 10, "num_hashes": 0}, ValueError, "num_hashes"),
        ({"num_buckets": 10, "num_hashes": True}, TypeError, "num_hashes"),
        ({"num_buckets": 10, "num_hashes": 2, "mask": np.ones(3)}, TypeError, "mask"),
        ({"num_buckets": 10, "num_hashes": 2, "mask": np.ones(2, bool)}, ValueError, "mask"),
    ],
)
def test_multi_hash_rejects_bad_arguments_by_name(kwargs, error, name):
    with pytest.raises(error, match=name):
        multi_hash(np.arange(3), **kwargs)


_SMALL_UNIVERSAL = UniversalHash((3, 5), (0, 1), 1_000_003, 9)


@pytest.mark.parametrize(
    "fn",
    [
        murmur_hash3_2x64,
        lambda x: multi_hash(x, num_buckets=9, num_hashes=2),
        lambda x: universal_hash(x, _SMALL_UNIVERSAL),
    ],
)
@pytest.mark.parametrize(
    ("bad", "error"),
    [(np.array([-1]), ValueError), (np.array([0.5]), TypeError), ([2**64], ValueError)],
)
def test_hashes_reject_bad_ids(fn, bad, error):
    with pytest.raises(error, match="ids"):
        fn(bad)


def _released_universal_hash(ids, scales, biases, modulus, num_buckets):
    """The formula of X's May 2026 ``run_pipeline._hash_ids``, vectorised: NumPy int64
    arithmetic that wraps on overflow, Python-style (non-negative) remainders."""
    ids = np.asarray(ids, np.uint64).astype(np.int64)[:, None]  # wraps past 2**63, as there
    with np.errstate(over="ignore"):
        raw = (ids * np.array(scales, np.int64) + np.array(biases, np.int64)) % np.int64(modulus)
    return np.where(ids == 0, 0, raw % (num_buckets - 1) + 1)


@pytest.mark.parametrize(
    "modulus",
    [1_000_003, 2**31 - 1, 2**61 - 1, 2**63 - 25],  # primes; 2**63 - 25 the largest
)
@pytest.mark.parametrize("num_buckets", [2, 1_000, 100_000_007])
def test_universal_hash_equals_the_released_formula(modulus, num_buckets):
    rng = np.random.default_rng(modulus % 1000 + num_buckets)
    ids = np.concatenate([
        np.array([0, 1, 2**31, 2**32 + 7, 2**62, 2**63 - 1, 2**63, 2**64 - 1], np.uint64),
        rng.integers(0, 2**63, 500, dtype=np.uint64),
        rng.integers(2**63, 2**64 - 1, 100, dtype=np.uint64),
        (1_900_000_000_000 << 22) + rng.integers(0, 2**22, 100, dtype=np.uint64),  # snowflakes
    ])  # fmt: skip
    assert ids.dtype == np.uint64  # 2**63 and up: negative as the release's int64
    scales = (1, 2**40 + 3, int(rng.integers(1, modulus)), 2**63 - 1, -(2**62) - 5)
    biases = (0, 17, int(rng.integers(0, modulus)), 2**63 - 1, -3)
    params = UniversalHash(scales, biases, modulus, num_buckets)
    got = np.asarray(universal_hash(ids, params))
    want = _released_universal_hash(ids, scales, biases, modulus, num_buckets)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.int32 and got.shape == (ids.size, 5)


def test_universal_hash_masks_draws_and_keeps_shapes():
    params = UniversalHash.draw(0, num_hashes=2, num_buckets=50)
    assert params == UniversalHash.draw(0, num_hashes=2, num_buckets=50)
    assert params.modulus == 2**61 - 1 and all(1 <= a < 2**61 - 1 for a in params.scales)
    ids = np.array([[5, -1, 9], [0, 12, 2**40]])
    mask = np.array([[True, False, True], [True, True, True]])
    got = np.asarray(universal_hash(ids, params, mask=mask))
    assert got.shape == (2, 3, 2)
    assert (got[0, 1] == 0).all() and (got[1, 0] == 0).all()  # masked; ID 0
    real = got[[0, 0, 1, 1], [0, 2, 1, 2]]
    assert ((real >= 1) & (real < 50)).all()
    np.testing.assert_array_equal(got[0, 2], np.asarray(universal_hash([9], params))[0])


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (((1, 2), (0,), 101, 10), ValueError, "one value each"),
        (((), (), 101, 10), ValueError, "one value each"),
        (((1,), (0,), 1, 10), ValueError, "modulus"),
        (((1,), (0,), 2**63, 10), ValueError, "modulus"),
        (((2**63,), (0,), 101, 10), ValueError, "scales"),
        (((1,), (0.5,), 101, 10), TypeError, "biases"),
        (((1,), (0,), 101, 1), ValueError, "num_buckets"),
    ],
)
def test_universal_hash_parameters_are_checked_by_name(args, error, match):
    with pytest.raises(error, match=match):
        UniversalHash(*args)


def test_shared_table_rows_stack_users_items_authors_after_65_reserved_rows():
    vocab = (10, 20, 30)
    assert shared_table_size(vocab) == 125
    h = np.array([[0, 1], [9, 3]])
    np.testing.assert_array_equal(shared_table_rows(h, "user", vocab), [[0, 66], [74, 68]])
    np.testing.assert_array_equal(shared_table_rows(h, "item", vocab), [[0, 76], [84, 78]])
    np.testing.assert_array_equal(shared_table_rows(h, "author", vocab), [[0, 96], [104, 98]])
    with pytest.raises(ValueError, match=r"user hashes must be in \[0, 10\)"):
        shared_table_rows(np.array([10]), "user", vocab)
    with pytest.raises(ValueError, match="entity"):
        shared_table_rows(h, "post", vocab)
