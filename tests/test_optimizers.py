"""Row-sparse table optimizers: equal to their dense formulations on the touched rows,
untouched rows bit-identical, per-row state reset by MPZCH's reset_rows."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from phoenix_lib import mpzch, optimizers, train
from phoenix_lib.config import book_ranker_config
from phoenix_lib.ranker import make_ranker
from phoenix_lib.tables import HashTables
from phoenix_lib.world import World, WorldConfig

WORLD = World(WorldConfig(num_users=300, num_authors=30, num_posts=1_000, num_topics=4, seed=2))
BUCKETS = (512, 2048, 128)
CONFIG = book_ranker_config(history_seq_len=8, candidate_seq_len=4)
CONFIG.model = dataclasses.replace(CONFIG.model, num_layers=1)  # compiles in half the time
LR = 0.05


@functools.cache
def setup(row_optimizer: str):
    """A sparse-step state after 3 steps, the batch of step 3, and the full-table gradient."""
    rows = {"adagrad": optimizers.rowwise_adagrad, "lazy_adam": optimizers.lazy_adam}
    optimizer = optimizers.TableSparse(optax.adamw(1e-3), rows[row_optimizer](LR))
    data = WORLD.ranking_data(CONFIG, BUCKETS, batch_size=8)
    state = train.init_state(
        jax.random.key(0), make_ranker(CONFIG), data(0)[0], optimizer,
        num_buckets=BUCKETS, emb_size=CONFIG.emb_size,
    )  # fmt: skip
    loss = train.ranker_objective(CONFIG)
    step = train.make_step(loss, optimizer)
    state, _ = train.fit(step, state, data, 3, progress=False)
    batch = data(3)
    grads = jax.jit(jax.grad(loss))(state.params, *batch)
    after, _ = step(state, *batch)
    return state, after, grads, optimizer, step


def touched(grad):
    return np.flatnonzero(np.abs(np.asarray(grad)).sum(1) > 0)


@pytest.mark.parametrize("row_optimizer", ["adagrad", "lazy_adam"])
def test_sparse_step_equals_the_dense_formulation(row_optimizer):
    before, after, grads, optimizer, _ = setup(row_optimizer)
    for name in HashTables._fields:
        table = np.asarray(getattr(before.params["tables"], name), np.float64)
        g = np.asarray(getattr(grads["tables"], name), np.float64)
        state = getattr(before.opt_state.tables, name)
        # The dense formulation: every row, with the full table's gradient (zero on
        # rows the batch did not read).
        if row_optimizer == "adagrad":
            acc = np.asarray(state.accumulator, np.float64) + (g * g).mean(1)
            expected = table - LR * g / (np.sqrt(acc)[:, None] + 1e-8)
            live = touched(g)
        else:  # lazy Adam is Adam on the rows with a gradient, each with its own count
            live = touched(g)
            mu = 0.9 * np.asarray(state.mu, np.float64)[live] + 0.1 * g[live]
            nu = 0.999 * np.asarray(state.nu, np.float64)[live] + 0.001 * g[live] ** 2
            t = np.asarray(state.count)[live, None] + 1.0
            expected = table.copy()
            expected[live] -= LR * (mu / (1 - 0.9**t)) / (np.sqrt(nu / (1 - 0.999**t)) + 1e-8)
        got = np.asarray(getattr(after.params["tables"], name))
        assert live.size > 1, name
        np.testing.assert_allclose(got[live], expected[live], rtol=1e-5, atol=1e-6)
        others = np.setdiff1d(np.arange(table.shape[0]), live)
        np.testing.assert_array_equal(got[others], table[others].astype(np.float32))
        for leaf_before, leaf_after in zip(
            jax.tree.leaves(state),
            jax.tree.leaves(getattr(after.opt_state.tables, name)),
            strict=True,
        ):
            np.testing.assert_array_equal(
                np.asarray(leaf_after)[others], np.asarray(leaf_before)[others]
            )
    # The model's weights take the dense optax step on the same gradient.
    updates, _ = optimizer.dense.update(
        grads["model"], before.opt_state.dense, before.params["model"]
    )
    expected_model = optax.apply_updates(before.params["model"], updates)
    for a, b in zip(
        jax.tree.leaves(after.params["model"]), jax.tree.leaves(expected_model), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_padding_row_is_never_updated_and_the_masks_survive_localisation():
    before, after, _, _, _ = setup("adagrad")
    for name in HashTables._fields:
        np.testing.assert_array_equal(
            getattr(after.params["tables"], name)[0], getattr(before.params["tables"], name)[0]
        )
    batch = WORLD.ranking_data(CONFIG, BUCKETS, batch_size=8)(5)[0]
    small, local, rows = optimizers.local_tables(before.params["tables"], batch)
    for field in ("user_hashes", "history_post_hashes", "candidate_post_hashes"):
        np.testing.assert_array_equal(getattr(local, field) == 0, getattr(batch, field) == 0)
    # Each local row is the global row it stands for.
    post = np.asarray(before.params["tables"].post)
    idx = np.asarray(batch.history_post_hashes).reshape(-1)
    np.testing.assert_array_equal(
        np.asarray(small.post)[np.asarray(local.history_post_hashes).reshape(-1)],
        np.where((idx == 0)[:, None], 0.0, post[idx]),
    )
    live = np.asarray(rows.post)
    assert np.unique(live[live < post.shape[0]]).size == (live < post.shape[0]).sum()


def test_out_of_range_buckets_poison_the_loss_as_in_the_dense_path():
    before, _, _, _, step = setup("adagrad")
    batch, labels, mask = WORLD.ranking_data(CONFIG, BUCKETS, batch_size=8)(4)
    bad = batch._replace(history_post_hashes=batch.history_post_hashes.at[0, 0, 0].set(BUCKETS[1]))
    with pytest.raises(ValueError, match="holds bucket 2048"):  # refused on the host
        step(before, bad, labels, mask)
    _, loss = jax.jit(step)(before, bad, labels, mask)  # traced: no host check, NaN loss
    assert np.isnan(float(loss))


def test_rowwise_adagrad_first_step_and_accumulator():
    opt = optimizers.rowwise_adagrad(0.1)
    table = jnp.ones((4, 2))
    state = opt.init(table)
    rows = jnp.array([2, 4])  # 4 is out of range: ignored
    table2, state2 = opt.update(table, state, rows, jnp.array([[3.0, 4.0], [1.0, 1.0]]), 0)
    acc = (9 + 16) / 2
    np.testing.assert_allclose(state2.accumulator, [0, 0, acc, 0])
    np.testing.assert_allclose(table2[2], 1 - 0.1 * np.array([3.0, 4.0]) / np.sqrt(acc), rtol=1e-6)
    np.testing.assert_array_equal(np.delete(np.asarray(table2), 2, 0), np.ones((3, 2)))


def test_rowwise_adagrad_with_a_half_life_decays_touched_rows_only():
    opt = optimizers.rowwise_adagrad(0.1, half_life_steps=2.0)
    table = jnp.ones((3, 2))
    state = opt.init(table)._replace(accumulator=jnp.array([8.0, 8.0, 8.0]))
    _, state = opt.update(table, state, jnp.array([1]), jnp.array([[2.0, 2.0]]), 0)
    np.testing.assert_allclose(state.accumulator, [8.0, 8.0 / np.sqrt(2) + 4.0, 8.0], rtol=1e-6)
    with pytest.raises(ValueError, match="half_life_steps"):
        optimizers.rowwise_adagrad(0.1, half_life_steps=0)


def test_reset_rows_gives_lazy_adam_a_first_step_of_size_lr():
    """After a reset, per-row counts make the first step ``lr`` in size; optax's global
    count (late in training) makes it ``(1 - b1) / sqrt(1 - b2)`` = 3.16 times larger."""
    lr, g, late = 0.01, jnp.full((1, 4), 0.5), 5000
    lazy = optimizers.lazy_adam(lr)
    table = jnp.ones((8, 4))
    state = lazy.init(table)
    state = state._replace(  # row 3 has trained for `late` steps
        mu=state.mu.at[3].set(0.3), nu=state.nu.at[3].set(0.2), count=state.count.at[3].set(late)
    )
    table, state = mpzch.reset_rows(jax.random.key(0), table, jnp.array([3]), state, stddev=0.0)
    assert int(state.count[3]) == 0 and float(jnp.abs(state.mu[3]).sum()) == 0
    assert float(jnp.abs(state.nu[3]).sum()) == 0 == float(jnp.abs(table[3]).sum())
    assert int(state.count[2]) == 0 and float(table[2, 0]) == 1.0  # other rows untouched
    table, _ = lazy.update(table, state, jnp.array([3]), g, late)
    np.testing.assert_allclose(jnp.abs(table[3]), lr, rtol=1e-4)
    # The same reset under optax's Adam, whose bias correction reads the global count.
    adam = optax.adam(lr)
    params = jnp.ones((8, 4))
    (adam_state, rest) = adam.init(params)
    opt_state = (adam_state._replace(count=jnp.asarray(late, jnp.int32)), rest)
    params, opt_state = mpzch.reset_rows(
        jax.random.key(0), params, jnp.array([3]), opt_state, stddev=0.0
    )
    updates, _ = adam.update(jnp.zeros((8, 4)).at[3].set(g[0]), opt_state)
    first = float(jnp.abs(updates[3]).max())
    np.testing.assert_allclose(
        first, lr * 0.1 / np.sqrt(0.001 / (1 - 0.999 ** (late + 1))), rtol=1e-3
    )
    assert first > 3 * lr


def test_a_sparse_run_resumed_from_a_checkpoint_is_bit_exact(tmp_path):
    from phoenix_lib.checkpoint import load_state, save_state

    state, _, _, _, step = setup("adagrad")
    data = WORLD.ranking_data(CONFIG, BUCKETS, batch_size=8)
    straight, _ = train.fit(step, state, data, 4, progress=False)
    half, _ = train.fit(step, state, data, 2, progress=False)
    save_state(tmp_path / "state.npz", half)
    resumed, _ = train.fit(step, load_state(tmp_path / "state.npz", like=state), data, 2,
                           progress=False)  # fmt: skip
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)


def test_book_optimizer_refuses_a_run_too_short_for_its_warm_up():
    optimizers.book_optimizer(4)
    with pytest.raises(ValueError, match="at least 4"):
        optimizers.book_optimizer(3)


@pytest.mark.parametrize("dense", [True, False])
def test_reset_table_rows_touches_only_the_named_table_even_beside_one_of_its_size(dense):
    # User and post tables of the same shape: a reset found by shape would hit both.
    buckets = (512, 512, 128)
    optimizer = (
        optax.adam(1e-2)
        if dense
        else optimizers.TableSparse(optax.adam(1e-2), optimizers.rowwise_adagrad(0.1))
    )
    data = WORLD.ranking_data(CONFIG, buckets, batch_size=8)
    state = train.init_state(
        jax.random.key(0), make_ranker(CONFIG), data(0)[0], optimizer,
        num_buckets=buckets, emb_size=CONFIG.emb_size,
    )  # fmt: skip
    state, _ = train.fit(train.make_step(train.ranker_objective(CONFIG), optimizer), state, data,
                         3, progress=False)  # fmt: skip
    per_row = [  # every optimizer leaf with one entry per row of a 512-row table, by path
        (jax.tree_util.keystr(path), leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(state.opt_state)
        if np.shape(leaf)[:1] == (512,) and np.abs(np.asarray(leaf)).max() > 0
    ]
    assert any(".user" in p for p, _ in per_row) and any(".post" in p for p, _ in per_row)
    rows = np.array([-1, 3, 7])
    after = train.reset_table_rows(jax.random.key(5), state, "post", rows)
    before_leaves = dict(jax.tree_util.tree_leaves_with_path(state.opt_state))
    for path, leaf in jax.tree_util.tree_leaves_with_path(after.opt_state):
        old = np.asarray(before_leaves[path])
        if ".post" in jax.tree_util.keystr(path) and np.shape(leaf)[:1] == (512,):
            assert not np.asarray(leaf)[[3, 7]].any()  # zeroed at the reset rows
            np.testing.assert_array_equal(np.delete(np.asarray(leaf), [3, 7], 0),
                                          np.delete(old, [3, 7], 0))  # fmt: skip
        else:
            np.testing.assert_array_equal(np.asarray(leaf), old)  # the user table's too
    post, new = state.params["tables"].post, after.params["tables"].post
    assert not np.array_equal(post[3], new[3])
    np.testing.assert_array_equal(np.delete(post, [3, 7], 0), np.delete(new, [3, 7], 0))
    np.testing.assert_array_equal(state.params["tables"].user, after.params["tables"].user)
    with pytest.raises(TypeError, match="only this table's part"):
        mpzch.reset_rows(jax.random.key(5), post, jnp.asarray(rows), state.opt_state)
    with pytest.raises(ValueError, match="table must be"):
        train.reset_table_rows(jax.random.key(5), state, "posts", rows)
