"""64-bit arithmetic on 32-bit words agrees with NumPy's uint64."""

import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from phoenix_lib import u64

# A fixed length keeps JAX from compiling once per shape.
u64_arrays = arrays(np.uint64, 32, elements=st.integers(0, 2**64 - 1))


@given(u64_arrays, u64_arrays)
def test_add_mul_xor_match_numpy(a, b):
    x, y = u64.from_numpy(a), u64.from_numpy(b)
    np.testing.assert_array_equal(u64.to_numpy(u64.add(x, y)), a + b)
    np.testing.assert_array_equal(u64.to_numpy(u64.mul(x, y)), a * b)
    np.testing.assert_array_equal(u64.to_numpy(u64.xor(x, y)), a ^ b)


@given(u64_arrays, st.integers(1, 63))
def test_shifts_and_rotations_match_numpy(a, r):
    x = u64.from_numpy(a)
    rr = np.uint64(r)
    np.testing.assert_array_equal(u64.to_numpy(u64.shr(x, r)), a >> rr)
    np.testing.assert_array_equal(
        u64.to_numpy(u64.rotl(x, r)), (a << rr) | (a >> np.uint64(64 - r))
    )


_traced_mod = jax.jit(u64.mod)


@given(u64_arrays, st.integers(1, 2**31))
def test_mod_matches_numpy(a, m):
    want = (a % np.uint64(m)).astype(np.uint32)
    np.testing.assert_array_equal(np.asarray(u64.mod(u64.from_numpy(a), m)), want)
    # A traced modulus (one program for every m) takes the long division even for powers of 2.
    np.testing.assert_array_equal(_traced_mod(u64.from_numpy(a), np.uint32(m)), want)


@given(u64_arrays, u64_arrays)
def test_sub_and_less_match_numpy(a, b):
    x, y = u64.from_numpy(a), u64.from_numpy(b)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(u64.to_numpy(u64.sub(x, y)), a - b)
    np.testing.assert_array_equal(np.asarray(u64.less(x, y)), a < b)


_mod_wide = jax.jit(u64.mod_wide, static_argnums=1)


@given(u64_arrays, st.integers(1, 2**63))
def test_mod_wide_matches_python(a, m):
    want = np.array([int(v) % m for v in a], np.uint64)
    np.testing.assert_array_equal(u64.to_numpy(_mod_wide(u64.from_numpy(a), m)), want)


def test_round_trip_extremes():
    values = np.array([0, 1, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1], dtype=np.uint64)
    np.testing.assert_array_equal(u64.to_numpy(u64.from_numpy(values)), values)


@pytest.mark.parametrize("m", [0, 2**31 + 1])
def test_mod_rejects_out_of_range_modulus(m):
    with pytest.raises(ValueError, match="modulus"):
        u64.mod(u64.from_numpy(np.array([5], np.uint64)), m)


def test_validate_ids_accepts_int_types_and_keeps_values():
    ids = [0, 7, 2**33, 2**63 - 1]
    expected = np.array(ids, dtype=np.uint64)
    for form in (ids, np.array(ids, np.int64), np.array(ids, np.uint64)):
        np.testing.assert_array_equal(u64.validate_ids(form), expected)
    np.testing.assert_array_equal(u64.validate_ids(5), np.uint64(5))
    np.testing.assert_array_equal(u64.validate_ids(np.array([3], np.int8)), [3])


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        ([1, -2], ValueError, "non-negative"),
        (np.array([1, -2]), ValueError, "non-negative"),
        ([2**63], ValueError, "int64"),
        ([-(2**63) - 1], ValueError, "int64"),
        ([1.0, 2.0], TypeError, "integers"),
        (np.array([1.5]), TypeError, "integers"),
        (np.array([True]), TypeError, "integers"),
        ([True, False], TypeError, "integers"),
        (np.array(["7"]), TypeError, "integers"),
    ],
)
def test_validate_ids_rejects_bad_input_by_name(bad, error, message):
    with pytest.raises(error, match=message) as excinfo:
        u64.validate_ids(bad, name="user_ids")
    assert "user_ids" in str(excinfo.value)
