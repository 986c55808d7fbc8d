"""MPZCH: the jitted table against the sequential FBGEMM logic, invariants, TorchRec's scenarios."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_lib import mpzch, u64
from phoenix_lib.mpzch_reference import SequentialTable

# A few fixed settings, so that hypothesis explores operation sequences, not compilations.
SETTINGS = [
    dict(num_slots=16, max_probe=4, num_buckets=1, eviction=None),
    dict(num_slots=24, max_probe=3, num_buckets=3, eviction="ttl", ttl_hours=2),
    dict(num_slots=16, max_probe=8, num_buckets=2, eviction="lru", ttl_hours=1),
    dict(
        num_slots=12, max_probe=2, num_buckets=1, eviction="ttl", ttl_hours=0, disable_fallback=True
    ),
]
BIG = 2**40  # some IDs above 32 bits, so both words matter
id_values = st.one_of(st.integers(0, 40), st.integers(BIG, BIG + 40))
operations = st.lists(
    st.one_of(
        st.tuples(st.just("write"), id_values, st.integers(0, 3)),
        st.tuples(st.just("lookup"), id_values, st.just(0)),
        st.tuples(st.just("tick"), st.integers(1, 3), st.just(0)),
    ),
    min_size=1,
    max_size=40,
)


def live_ids(state):
    ident = mpzch.identities(state)
    return ident[ident >= 0], np.flatnonzero(ident >= 0)


def reference_for(state):
    """The sequential reference with ``state``'s settings (it numbers slots, not rows)."""
    settings = state.settings()
    del settings["padding_row"]
    return SequentialTable(**settings)


def assert_invariants(state):
    """Every live ID owns exactly one slot, inside its probe window (NumPy-side check)."""
    ids, slots = live_ids(state)
    assert np.unique(ids).size == ids.size
    reference = reference_for(state)
    for id_, slot in zip(ids.tolist(), slots.tolist(), strict=True):
        assert slot in reference.window(id_)


@pytest.mark.parametrize("config", range(len(SETTINGS)))
@settings(max_examples=25)
@given(ops=operations)
def test_one_id_at_a_time_equals_the_sequential_kernel(config, ops):
    kw = SETTINGS[config]
    table, ref = mpzch.create(**kw), SequentialTable(**kw)
    hour = 0
    for op, value, ttl in ops:
        if op == "tick":
            hour += value
        elif op == "lookup":
            before = jax.tree_util.tree_leaves(table)
            assert int(mpzch.lookup(table, [value])[0]) == ref.lookup_one(value)
            for a, b in zip(before, jax.tree_util.tree_leaves(table), strict=True):
                np.testing.assert_array_equal(a, b)  # read-only never changes state
        else:
            table, slots, evicted = mpzch.write(table, [value], hour, ttl_hours=ttl)
            assert (int(slots[0]), int(evicted[0])) == ref.write_one(value, hour, ttl)
        np.testing.assert_array_equal(mpzch.identities(table), ref.identity)
        if kw["eviction"]:
            np.testing.assert_array_equal(np.asarray(table.metadata), ref.metadata)
    assert_invariants(table)


@pytest.mark.parametrize("config", range(len(SETTINGS)))
@settings(max_examples=25)
@given(
    # One batch length, so that one compilation serves every example.
    batches=st.lists(st.lists(id_values, min_size=12, max_size=12), min_size=1, max_size=6),
    steps=st.lists(st.integers(0, 3), min_size=6, max_size=6),
)
def test_batched_writes_keep_the_invariants(config, batches, steps):
    kw = SETTINGS[config]
    table, hour = mpzch.create(**kw), 0
    for batch, step in zip(batches, steps, strict=False):
        hour += step
        before_ids, before_slots = live_ids(table)
        before_meta = np.asarray(table.metadata)
        ident_before = mpzch.identities(table)
        new, slots, evicted = mpzch.write(table, np.array(batch), hour)
        again = mpzch.write(table, np.array(batch), hour)  # deterministic
        for a, b in zip(
            jax.tree_util.tree_leaves(again),
            jax.tree_util.tree_leaves((new, slots, evicted)),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
        table, slots, evicted = new, np.asarray(slots), np.asarray(evicted)
        assert_invariants(table)
        ident = mpzch.identities(table)
        batch = np.array(batch)
        owned = ident[slots.clip(0)] == batch
        # A resident ID is found where it was, never re-inserted elsewhere.
        for i, s in zip(before_ids, before_slots, strict=True):
            if i in batch:
                assert (slots[batch == i] == s).all()
        # Duplicates share one slot; an ID either owns its slot or collided.
        for i in np.unique(batch):
            assert np.unique(slots[batch == i]).size == 1
        # A collided ID gets its home slot (shared, not written), or -1 without fallback.
        reference = reference_for(table)
        for id_, slot in zip(batch[~owned].tolist(), slots[~owned].tolist(), strict=True):
            assert slot == (-1 if kw.get("disable_fallback") else reference.window(id_)[0])
        # Only expired slots are evicted, and only with eviction on.
        changed = np.flatnonzero((ident != ident_before) & (ident_before != -1))
        np.testing.assert_array_equal(np.sort(np.unique(evicted[evicted >= 0])), changed)
        if changed.size:
            assert kw["eviction"] is not None
            assert (hour > before_meta[changed]).all()
        # IDs not in the batch and not evicted keep their slots.
        for i, s in zip(before_ids, before_slots, strict=True):
            if s not in changed:
                assert ident[s] == i


def _crowded_run(settings, seed=0):
    """Hours of large batches (repeats, per-ID TTLs, more IDs than slots) on one table."""
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 2**40, size=12_000)
    state, outputs = mpzch.create(**settings), []
    for hour in range(6):
        batch = rng.choice(pool, size=2048)
        ttl = rng.integers(0, 4, size=batch.size)
        state, slots, evicted = mpzch.write(state, batch, hour, ttl)
        outputs += [slots, evicted, mpzch.lookup(state, pool)]
    return state, pool, [np.asarray(o) for o in outputs]


def _forget_kernels():
    """Drop the compiled writes and lookups: they read the module's pass settings when traced."""
    mpzch._write.clear_cache()
    mpzch._lookup.clear_cache()


@pytest.mark.parametrize("eviction", [None, "ttl", "lru"])
def test_compacted_passes_equal_whole_window_reads_on_large_batches(monkeypatch, eviction):
    """Large batches in a roomy table read a few slots first, then compact the rest (slices,
    wrapping windows slot by slot); reading every whole window at once must give exactly
    the same slots, evictions, lookups, table and counters."""
    settings = dict(num_slots=8192, max_probe=16, num_buckets=2, eviction=eviction, ttl_hours=3)
    assert mpzch._compacts(mpzch.create(**settings), 2048)
    fast, pool, fast_out = _crowded_run(settings)
    # The edge case of pass 1: windows that wrap around the bucket end within its slice.
    bucket = settings["num_slots"] // settings["num_buckets"]
    homes = np.asarray(mpzch.home_slots(fast, u64.from_ids(pool))) % bucket
    assert (homes > bucket - mpzch._FIRST_PROBES).sum() >= 2
    monkeypatch.setattr(mpzch, "_FIRST_PROBES", settings["max_probe"])
    monkeypatch.setattr(mpzch, "_COMPACT_FROM", 10**9)
    _forget_kernels()
    plain, _, plain_out = _crowded_run(settings)
    _forget_kernels()
    for a, b in zip(fast_out, plain_out, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(mpzch.identities(fast), mpzch.identities(plain))
    np.testing.assert_array_equal(np.asarray(fast.metadata), np.asarray(plain.metadata))
    assert mpzch.counters(fast) == mpzch.counters(plain)
    assert mpzch.metrics(fast)["collision_rate"] > 0  # the table was really crowded
    # Lookups of the final table also equal the sequential reference, wrapping windows included.
    reference = SequentialTable(**settings)
    reference.identity[:] = mpzch.identities(fast)
    np.testing.assert_array_equal(fast_out[-1], reference.lookup(pool))


@pytest.mark.parametrize("num_buckets", [1, 4])
def test_home_slots_are_the_first_slots_of_the_probe_windows(num_buckets):
    table = mpzch.create(64, max_probe=8, num_buckets=num_buckets)
    ids = u64.from_ids(np.random.default_rng(num_buckets).choice(2**63 - 1, 500))
    windows = np.asarray(mpzch.probe_windows(table, ids))
    np.testing.assert_array_equal(np.asarray(mpzch.home_slots(table, ids)), windows[:, 0])


@given(ids=st.lists(st.integers(0, 2**63 - 2), min_size=60, max_size=60))
@settings(max_examples=20)
def test_no_collisions_while_the_window_has_room(ids):
    # max_probe = bucket_size: the window is the whole bucket, so any ID finds a free
    # slot while its bucket is not full (60 IDs, two buckets of 64).
    table = mpzch.create(128, max_probe=64, num_buckets=2)
    table, slots, _ = mpzch.write(table, np.array(ids, np.int64), 0)
    assert mpzch.metrics(table)["collision_rate"] == 0
    unique = np.unique(np.array(ids))
    assert np.unique(np.asarray(slots)).size == unique.size


def test_torchrec_fill_100_ids_into_100_slots():
    table = mpzch.create(100, max_probe=100)
    table, slots, evicted = mpzch.write(table, np.arange(100), 0)
    assert sorted(np.asarray(slots).tolist()) == list(range(100))
    assert (np.asarray(evicted) == -1).all()
    m = mpzch.metrics(table)
    assert m["insert_rate"] == 1 and m["table_usage"] == 1 and m["unused_slots"] == 0


def test_torchrec_two_buckets_stay_in_their_ranges():
    table = mpzch.create(100, max_probe=50, num_buckets=2)
    ids = np.arange(100)
    table, slots, _ = mpzch.write(table, ids, 0)
    slots = np.asarray(slots)
    assert ((slots < 50) == (ids % 2 == 0)).all()
    assert np.unique(slots).size == 100


def test_torchrec_ttl_fill_age_and_evict_100():
    table = mpzch.create(100, max_probe=100, eviction="ttl", ttl_hours=2)
    table, _, _ = mpzch.write(table, np.arange(100), 0)
    table, slots, evicted = mpzch.write(table, np.arange(1000, 1100), 3)  # now 3 > 0 + 2
    assert sorted(np.asarray(evicted).tolist()) == list(range(100))
    np.testing.assert_array_equal(slots, evicted)
    m = mpzch.metrics(table)
    assert m["eviction_rate"] == 0.5 and m["collision_rate"] == 0
    assert m["average_eviction_age"] == 1  # expired at hour 2, taken at hour 3


def test_unexpired_slots_are_never_evicted():
    table = mpzch.create(100, max_probe=100, eviction="ttl", ttl_hours=2)
    table, _, _ = mpzch.write(table, np.arange(100), 0)
    full = mpzch.identities(table)
    table, _, evicted = mpzch.write(table, np.arange(1000, 1100), 2)  # 2 > 2 is false
    assert (np.asarray(evicted) == -1).all()
    assert mpzch.metrics(table)["collision_rate"] == 0.5
    np.testing.assert_array_equal(mpzch.identities(table), full)


def test_lru_evicts_the_oldest_expired_slot_and_fills_free_slots_first():
    table = mpzch.create(4, max_probe=4, eviction="lru", ttl_hours=0)
    for hour, id_ in enumerate([10, 11, 12, 13]):
        table, _, _ = mpzch.write(table, [id_], hour)
    slot_of = dict(
        zip([10, 11, 12, 13], np.asarray(mpzch.lookup(table, [10, 11, 12, 13])), strict=True)
    )
    table, _, _ = mpzch.write(table, [10], 4)  # refresh 10: 11 is now the oldest
    table, slots, evicted = mpzch.write(table, [99], 5)
    assert int(evicted[0]) == slot_of[11] == int(slots[0])


def same_home(table, count=2):
    """``count`` IDs whose probe windows start at the same slot."""
    ids = np.arange(10_000)
    homes = np.asarray(mpzch.home_slots(table, u64.from_ids(ids)))
    return ids[homes == homes[0]][:count].tolist()


@pytest.mark.parametrize("policy, evicts", [("ttl", True), ("lru", False)])
def test_ttl_recycles_an_expired_slot_early_while_lru_fills_free_slots_first(policy, evicts):
    table = mpzch.create(8, max_probe=8, eviction=policy, ttl_hours=0)
    a, b = same_home(table)
    table, _, _ = mpzch.write(table, [a], 0)
    table, slots, evicted = mpzch.write(table, [b], 5)  # a expired; 7 free slots further on
    assert (int(evicted[0]) >= 0) == evicts
    assert (int(slots[0]) == int(mpzch.home_slots(table, u64.from_ids([b]))[0])) == evicts


def test_fallback_and_disable_fallback_on_a_full_table():
    for disable in (False, True):
        table = mpzch.create(8, max_probe=8, disable_fallback=disable)
        table, _, _ = mpzch.write(table, np.arange(8), 0)
        full = mpzch.identities(table)
        table, slots, _ = mpzch.write(table, [100, 101], 1)
        np.testing.assert_array_equal(mpzch.identities(table), full)  # nothing written
        home = np.asarray(mpzch.home_slots(table, u64.from_ids([100, 101])))
        np.testing.assert_array_equal(slots, [-1, -1] if disable else home)
        np.testing.assert_array_equal(mpzch.lookup(table, [100, 101]), slots)
        assert mpzch.metrics(table)["collision_rate"] == pytest.approx(2 / 10)


def test_duplicates_in_a_batch_get_one_slot_and_count_as_hits():
    table, slots, _ = mpzch.write(mpzch.create(32, max_probe=8), [7, 7, 8, 7], 0)
    slots = np.asarray(slots)
    assert slots[0] == slots[1] == slots[3] != slots[2]
    c = mpzch.counters(table)
    assert (c["total"], c["insert"], c["hit"]) == (4, 2, 2)


@pytest.mark.parametrize("distinct, density", [(3000, 1.0), (60, 0.5), (60, 0.05)])
def test_first_occurrence_by_hashing_and_one_id_at_a_time_find_the_first_copy(distinct, density):
    """A write groups the copies of each missing ID by hashing, in rounds, and settles what is
    left one ID at a time; that alone (rounds=0) and the plain definition must agree with it.
    3,000 distinct IDs in 16,384 cells collide (a second round); 60 IDs give many copies, some
    IDs sharing their low word, under a dense and a sparse mask."""
    rng = np.random.default_rng(distinct + int(100 * density))
    pool = rng.choice(2**40, distinct, replace=False)
    pool[1::2] = pool[::2][: pool[1::2].size] + 2**32  # same low word, different high word
    ids = pool if distinct == 3000 else rng.choice(pool, 3000)
    mask = rng.random(3000) < density
    first_seen, expected = {}, np.arange(3000)
    for row in np.flatnonzero(mask):
        expected[row] = first_seen.setdefault(int(ids[row]), row)
    x = u64.from_ids(ids)
    for rounds in (mpzch._GROUPING_ROUNDS, 0):
        got = jax.jit(mpzch._first_occurrence, static_argnums=2)(x, jnp.asarray(mask), rounds)
        np.testing.assert_array_equal(got, expected)


def test_conflict_rule_lowest_position_wins():
    # Two new IDs with the same home slot and a window of one slot: one wins, one collides.
    table = mpzch.create(16, max_probe=1)
    a, b = same_home(table)
    table, slots, _ = mpzch.write(table, [b, a], 0)
    assert mpzch.identities(table)[int(slots[0])] == b  # position 0 won
    assert int(slots[1]) == int(slots[0])  # the loser falls back to the shared home slot
    assert mpzch.metrics(table)["collision_rate"] == 0.5


def test_sweep_empties_expired_slots_and_residents_stay_findable():
    table = mpzch.create(8, max_probe=8, eviction="ttl", ttl_hours=1)
    table, _, _ = mpzch.write(table, np.arange(8), 0)
    table, _, _ = mpzch.write(table, np.arange(0, 8, 2), 5)  # refresh the even IDs
    table, freed = mpzch.sweep(table, 6)  # odd IDs expired at 1 < 6
    freed = np.asarray(freed)
    ident = mpzch.identities(table)
    assert sorted(ident[ident >= 0].tolist()) == [0, 2, 4, 6]
    assert (ident[freed[freed >= 0]] == -1).all() and (freed >= 0).sum() == 4
    assert_invariants(table)  # full-window search finds residents behind the holes
    with pytest.raises(ValueError, match="eviction"):
        mpzch.sweep(mpzch.create(8, max_probe=8), 0)


def test_save_load_and_export_round_trip(tmp_path):
    table = mpzch.create(64, max_probe=8, num_buckets=4, eviction="lru", ttl_hours=3)
    table, _, _ = mpzch.write(table, np.array([1, 2**40, 2**62 + 5, 77]), 5)
    mpzch.save(tmp_path / "t.npz", table)
    loaded = mpzch.load(tmp_path / "t.npz")
    assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(table)
    for a, b in zip(
        jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(table), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    ident = mpzch.identities(table)
    assert ident.dtype == np.int64 and sorted(ident[ident >= 0]) == [1, 77, 2**40, 2**62 + 5]
    again = mpzch.from_identities(
        ident[:, None],
        metadata=table.metadata,
        clock=5,
        **{k: v for k, v in table.settings().items() if k != "num_slots"},
    )
    np.testing.assert_array_equal(mpzch.identities(again), ident)


def test_save_and_load_agree_on_the_npz_suffix(tmp_path):
    table, _, _ = mpzch.write(mpzch.create(32, eviction="ttl", ttl_hours=2), np.array([3, 9]), 1)
    written = mpzch.save(tmp_path / "zch3", table)  # numpy would append .npz
    assert written == tmp_path / "zch3.npz" and written.exists()
    for name in ("zch3", "zch3.npz"):
        np.testing.assert_array_equal(
            mpzch.identities(mpzch.load(tmp_path / name)), mpzch.identities(table)
        )


def test_the_default_probe_window_fits_a_small_table():
    assert mpzch.create(64, eviction="ttl", ttl_hours=2).max_probe == 64  # not 128
    assert mpzch.create(1024, num_buckets=4).max_probe == 128  # FBGEMM's default
    with pytest.raises(ValueError, match="max_probe"):
        mpzch.create(64, max_probe=65)  # an explicit window must still fit


def test_from_identities_rejects_tables_these_settings_cannot_produce():
    ident = np.full(16, -1, np.int64)
    home = int(mpzch.home_slots(mpzch.create(16, max_probe=2), u64.from_ids([5]))[0])
    ident[(home + 5) % 16] = 5  # beyond a window of 2
    with pytest.raises(ValueError, match="outside its probe window"):
        mpzch.from_identities(ident, max_probe=2)
    ident[:] = -1
    ident[[0, 1]] = 9
    with pytest.raises(ValueError, match="two slots"):
        mpzch.from_identities(ident, max_probe=16)
    with pytest.raises(ValueError, match="negative"):
        mpzch.from_identities(np.full(16, -3), max_probe=4)


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        (dict(num_slots=10, num_buckets=3), ValueError, "multiple of num_buckets"),
        (dict(num_slots=10, max_probe=0), ValueError, "max_probe"),
        (dict(num_slots=10, num_buckets=2, max_probe=6), ValueError, "max_probe"),
        (dict(num_slots=10, eviction="fifo"), ValueError, "eviction"),
        (dict(num_slots=10, ttl_hours=-1), ValueError, "ttl_hours"),
        (dict(num_slots=10.0), TypeError, "num_slots"),
        (dict(num_slots=10, disable_fallback=1), TypeError, "disable_fallback"),
    ],
)
def test_create_rejects_bad_settings_by_name(kwargs, error, name):
    kwargs.setdefault("max_probe", 2)
    with pytest.raises(error, match=name):
        mpzch.create(**kwargs)


@pytest.mark.parametrize(
    "ids, now, error, match",
    [
        (np.array([3, -1]), 0, ValueError, "-1"),
        (np.array([3, -7]), 0, ValueError, "non-negative"),
        (np.array([1.0, 2.0]), 0, TypeError, "integers"),
        (np.array([2**63], np.uint64), 0, ValueError, "int64"),
        (np.array([1]), -1, ValueError, "now_hour"),
        (np.array([1]), 1.5, TypeError, "now_hour"),
        (np.array([1]), 2, ValueError, "backwards"),
        (
            u64.U64(jnp.array([2**31], jnp.uint32), jnp.array([0], jnp.uint32)),
            5,
            ValueError,
            "top bit",
        ),
    ],
)
def test_write_rejects_bad_input_by_name(ids, now, error, match):
    table, _, _ = mpzch.write(mpzch.create(16, max_probe=4, eviction="ttl"), [1], 3)
    with pytest.raises(error, match=match):
        mpzch.write(table, ids, now)


def test_word_form_ids_and_per_id_ttl_inside_jit():
    ids = np.array([5, 2**35 + 1, 5])

    @jax.jit
    def step(table, words, now):
        return mpzch.write(table, words, now, ttl_hours=jnp.array([1, 10, 1]))

    table, slots, _ = step(mpzch.create(32, max_probe=8, eviction="ttl"), u64.from_ids(ids), 4)
    np.testing.assert_array_equal(slots, mpzch.lookup(table, ids))
    meta = np.asarray(table.metadata)[np.asarray(slots)]
    assert meta.tolist() == [5, 14, 5]


def test_reset_rows_reinitialises_rows_and_zeroes_adam_moments_inside_a_train_step():
    dim, n = 4, 16
    table = jnp.ones((n, dim))
    opt = optax.adam(0.1)
    opt_state = opt.init(table)

    @jax.jit
    def train_step(table, opt_state, key, slots, evicted):
        grads = jax.grad(lambda t: (t[slots] ** 2).sum())(table)
        updates, opt_state = opt.update(grads, opt_state)
        table = optax.apply_updates(table, updates)
        return mpzch.reset_rows(key, table, evicted, opt_state)

    slots = jnp.array([1, 2, 3])
    table2, opt_state2 = train_step(
        table, opt_state, jax.random.key(0), slots, jnp.array([-1, 2, -1])
    )
    mu, nu = opt_state2[0].mu, opt_state2[0].nu
    assert (mu[2] == 0).all() and (nu[2] == 0).all()
    assert (mu[1] != 0).all() and (nu[3] != 0).all() and (mu[5] == 0).all()
    assert not np.allclose(table2[2], table[2] - 0.1)  # re-drawn, not the Adam update
    assert np.allclose(table2[1], 0.9) and np.allclose(table2[0], 1)  # untouched rows
    assert (
        abs(
            float(
                jnp.std(
                    mpzch.reset_rows(jax.random.key(1), jnp.zeros((4096, 64)), jnp.arange(4096))[0]
                )
            )
            - 1 / 8
        )
        < 0.01
    )
    # With no optimizer state the table alone is returned alongside None.
    assert mpzch.reset_rows(jax.random.key(0), table, slots)[1] is None


def test_state_is_a_pytree_with_static_settings():
    table = mpzch.create(32, max_probe=4, eviction="ttl")
    leaves, treedef = jax.tree_util.tree_flatten(table)
    assert len(leaves) == 6
    rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
    assert dataclasses.asdict(rebuilt).keys() == dataclasses.asdict(table).keys()
    assert rebuilt.settings() == table.settings()


@pytest.mark.parametrize("eviction", [None, "ttl", "lru"])
def test_a_masked_write_equals_a_write_of_the_real_ids_alone(eviction):
    """Padding (with any integer, -1 included) is neither written nor counted: the table,
    its counters and the real IDs' slots equal those of a write of the real IDs only."""
    rng = np.random.default_rng(3)
    table = mpzch.create(256, max_probe=16, eviction=eviction, ttl_hours=2)
    table, _, _ = mpzch.write(table, rng.integers(0, 400, 150), 0)  # some residents, some expired
    ids = rng.integers(0, 400, (6, 30))
    mask = rng.random(ids.shape) < 0.6
    padded = np.where(mask, ids, -1)
    masked, slots, evicted = mpzch.write(table, padded, 5, mask=mask)
    alone, real_slots, real_evicted = mpzch.write(table, ids[mask], 5)
    for a, b in zip(
        jax.tree_util.tree_leaves(masked), jax.tree_util.tree_leaves(alone), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.asarray(slots)[mask], real_slots)
    np.testing.assert_array_equal(np.asarray(evicted)[mask], real_evicted)
    assert (np.asarray(slots)[~mask] == -1).all() and (np.asarray(evicted)[~mask] == -1).all()
    assert mpzch.counters(masked)["total"] == mpzch.counters(table)["total"] + mask.sum()
    looked = np.asarray(mpzch.lookup(masked, padded, mask=mask))
    np.testing.assert_array_equal(looked[mask], mpzch.lookup(masked, ids[mask]))
    assert (looked[~mask] == -1).all()


def test_padding_row_numbers_table_rows_and_masked_positions_read_the_padding_row(tmp_path):
    """With padding_row every entry point returns slot + 1, masked positions give row 0
    (which gather reads as zeros), and the setting survives save and load."""
    ids = np.array([[11, 12, 13], [14, 11, 0]])
    mask = np.array([[True, True, True], [True, True, False]])
    slots_table, rows_table = (
        mpzch.create(8, max_probe=2, eviction="ttl", ttl_hours=1, padding_row=p)
        for p in (False, True)
    )
    for hour, batch in ((0, ids), (3, ids + 100)):  # hour 3: everything written at 0 expired
        slots_table, slots, evicted_slots = mpzch.write(slots_table, batch, hour, mask=mask)
        rows_table, rows, evicted_rows = mpzch.write(rows_table, batch, hour, mask=mask)
        np.testing.assert_array_equal(np.asarray(rows)[mask], np.asarray(slots)[mask] + 1)
        assert (np.asarray(rows)[~mask] == 0).all()
        np.testing.assert_array_equal(
            evicted_rows,
            np.where(np.asarray(evicted_slots) >= 0, np.asarray(evicted_slots) + 1, -1),
        )
    assert (np.asarray(evicted_rows) > 0).any()
    np.testing.assert_array_equal(mpzch.lookup(rows_table, batch, mask=mask), rows)
    _, swept_slots = mpzch.sweep(slots_table, 9)
    _, swept_rows = mpzch.sweep(rows_table, 9)
    np.testing.assert_array_equal(swept_rows, np.where(swept_slots >= 0, swept_slots + 1, -1))
    loaded = mpzch.load(mpzch.save(tmp_path / "rows", rows_table))
    assert loaded.padding_row and loaded.settings() == rows_table.settings()
    np.testing.assert_array_equal(mpzch.lookup(loaded, batch, mask=mask), rows)


def test_a_stream_of_varying_batch_lengths_compiles_a_few_programs():
    """50 batches of 1 to 1,000 IDs: host batches are padded to powers of two from 64, so
    writes and lookups compile one program per length 64, 128, ..., 1024 at most."""
    jitted = (mpzch._home, mpzch._write, mpzch._lookup)
    table = mpzch.create(4096, eviction="ttl", ttl_hours=3)
    before = [f._cache_size() for f in jitted]
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 1001, 50)
    for hour, n in enumerate(lengths):
        ids = rng.integers(0, 10**12, n)
        table, rows, _ = mpzch.write(table, ids, hour)
        np.testing.assert_array_equal(mpzch.lookup(table, ids), rows)
    added = [f._cache_size() - b for f, b in zip(jitted, before, strict=True)]
    assert max(added) <= 5, added
    assert mpzch.counters(table)["total"] == lengths.sum()  # padding is not counted


def test_mask_is_checked_by_name():
    table = mpzch.create(16)
    with pytest.raises(ValueError, match="mask's shape"):
        mpzch.write(table, np.array([1, 2]), 0, mask=np.array([True]))
    with pytest.raises(TypeError, match="bool"):
        mpzch.lookup(table, np.array([1, 2]), mask=np.array([1, 0]))
    with pytest.raises(ValueError, match="non-negative"):  # a real position is still checked
        mpzch.write(table, np.array([-3, -1]), 0, mask=np.array([True, False]))


def test_copies_of_a_new_id_take_the_latest_expiry_as_a_residents_do():
    table = mpzch.create(8, eviction="ttl", ttl_hours=1)
    new, rows, _ = mpzch.write(table, np.array([7, 7]), 0, ttl_hours=np.array([1, 10]))
    assert int(np.asarray(new.metadata)[int(rows[0])]) == 10  # not the first copy's 1
    again, _, _ = mpzch.write(new, np.array([7, 7]), 0, ttl_hours=np.array([1, 20]))
    assert int(np.asarray(again.metadata)[int(rows[0])]) == 20


def test_masked_positions_may_hold_minus_one_in_every_input_form():
    table = mpzch.create(16, padding_row=True)
    mask = np.array([True, False])
    words = u64.from_numpy(np.array([5, -1]).view(np.uint64))
    for ids, m in (([5, -1], mask), (np.array([5, -1]), mask), (words, jnp.asarray(mask))):
        _, rows, _ = mpzch.write(table, ids, 0, mask=m)
        assert int(rows[1]) == 0 and int(rows[0]) > 0


def test_reset_rows_refuses_a_row_past_the_table():
    # An 8-slot table made with padding_row numbers rows 1 to 8: 8 rows are one too few.
    with pytest.raises(ValueError, match="num_slots \\+ 1 rows"):
        mpzch.reset_rows(jax.random.key(0), jnp.zeros((8, 4)), jnp.array([-1, 8]))


def test_a_saved_table_loads_only_into_a_template_with_its_settings(tmp_path):
    from phoenix_lib import checkpoint

    settings = {"eviction": "ttl", "ttl_hours": 12, "padding_row": True, "max_probe": 4}
    table, rows, _ = mpzch.write(mpzch.create(64, **settings), np.arange(1000, 1020), 3)
    checkpoint.save_state(tmp_path / "z", {"post": table})

    def template(**changed):
        return jax.eval_shape(lambda: {"post": mpzch.create(64, **{**settings, **changed})})

    loaded = checkpoint.load_state(tmp_path / "z", like=template())["post"]
    np.testing.assert_array_equal(mpzch.lookup(loaded, np.arange(1000, 1020)), rows)
    for changed in ({"padding_row": False}, {"eviction": None}, {"ttl_hours": 6}):
        with pytest.raises(ValueError, match="settings"):
            checkpoint.load_state(tmp_path / "z", like=template(**changed))
