"""The May 2026 ranker (``make_ranker(config, release="2026-05")``): its parameter tree, the
post-age buckets, the dwell feature, IP rows, the continuous heads, both serving paths."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import phoenix_lib as pl
from phoenix_lib import reduce, tables, train
from phoenix_lib.config import ACTIONS, NEGATIVE_FEEDBACK, demo_ranker_config, demo_retrieval_config
from phoenix_lib.inputs import random_batch
from phoenix_lib.ranker import RankerOutput
from phoenix_lib.transformer import right_anchored_positions

MAY = "2026-05"


def _inputs(config, *, num_candidates=4, seed=0, fill=0.7):
    batch = random_batch(config, batch_size=3, num_candidates=num_candidates, num_buckets=64,
                         seed=seed, history_fill=fill)  # fmt: skip
    t = tables.init_tables(jax.random.PRNGKey(seed), num_user_buckets=64, num_post_buckets=64,
                           num_author_buckets=64, dim=config.emb_size)  # fmt: skip
    return batch, tables.embed(t, batch)


def _may_fields(batch, seed=0):
    """The May inputs: dwell seconds (column 1 of 8), impression and creation times."""
    r = np.random.default_rng(seed)
    b, s = batch.history_product_surface.shape
    c = batch.candidate_product_surface.shape[1]
    continuous = np.zeros((b, s, 8), np.float32)
    continuous[..., 1] = r.uniform(0, 60, (b, s))
    impression = np.full((b, c), 1_780_000_000)
    return batch._replace(
        history_continuous_actions=continuous,
        candidate_impr_ts=impression,
        candidate_post_creation_ts=impression - r.integers(0, 200 * 3600, (b, c)),
    )


def test_may_parameter_tree_is_the_fact_sheets():
    """January's tree with proj_mat_2 and proj_mat_3 one row-block wider (post age, dwell)
    and four new parameters (shared/reference/phoenix-2026-releases.md, D = 128)."""
    config = demo_ranker_config(fprop_dtype=jnp.float32)
    batch, emb = _inputs(config)
    january = pl.make_ranker(config, release="2026-01").init(jax.random.PRNGKey(0), batch, emb)
    may = pl.make_ranker(config).init(jax.random.PRNGKey(0), batch, emb)  # May: the default
    shapes = lambda p: {(m, n): v.shape for m, e in p.items() for n, v in e.items()}  # noqa: E731
    expected = shapes(january) | {
        ("phoenix_model", "proj_mat_2"): (6 * 128, 128),  # (Hi + Ha + surface + age) * D
        ("phoenix_model", "proj_mat_3"): (7 * 128, 128),  # (Hi + Ha + actions, surface, dwell) * D
        ("phoenix_model", "post_age_embedding_table"): (4800 // 60 + 2, 128),
        ("phoenix_model", "history_dwell_time_proj1"): (1, 64),
        ("phoenix_model", "history_dwell_time_proj2"): (64, 128),
        ("phoenix_model", "continuous_unembeddings"): (128, 8),
    }
    assert shapes(may) == expected
    assert all(v.dtype == jnp.float32 for e in may.values() for v in e.values())


@pytest.mark.parametrize(
    "age_s, bucket",
    [(0, 1), (59 * 60, 1), (59 * 60 + 59, 1), (60 * 60, 2), (4799 * 60, 80), (4800 * 60, 81),
     (10**7, 81), (-1, 0), (-3600, 0)],
)  # fmt: skip
def test_post_age_buckets_at_the_boundaries(age_s, bucket):
    impression = jnp.array([[1_780_000_000]])
    got = reduce.post_age_bucket(impression, impression - age_s, 60)
    assert int(got[0, 0]) == bucket


def test_a_missing_timestamp_is_bucket_zero_and_granularity_sets_the_table():
    t = jnp.array([[0, 1_780_000_000, 1_780_000_000]])
    created = jnp.array([[1_779_990_000, 0, 1_779_996_400]])
    assert reduce.post_age_bucket(t, created, 60).tolist() == [[0, 0, 2]]  # 60 min old: 2
    assert reduce.post_age_bucket(t, created, 30).tolist() == [[0, 0, 3]]
    coarse = dataclasses.replace(demo_ranker_config(), post_age_granularity_mins=30)
    assert coarse.post_age_vocab_size == 4800 // 30 + 2


def test_may_outputs_and_its_features_move_the_logits():
    config = demo_ranker_config(fprop_dtype=jnp.float32, history_seq_len=6, emb_size=32)
    config.model = dataclasses.replace(config.model, key_size=16)
    batch, emb = _inputs(config, seed=3)
    ranker = pl.make_ranker(config, release=MAY)
    params = ranker.init(jax.random.PRNGKey(1), batch, emb)
    plain = ranker.apply(params, batch, emb)
    assert isinstance(plain, RankerOutput)
    assert plain.logits.shape == (3, 4, 19) and plain.continuous_preds.shape == (3, 4, 8)
    assert ((plain.continuous_preds > 0) & (plain.continuous_preds < 1)).all()
    # Zero dwell equals no dwell field (gelu(0) = 0); no timestamps equal bucket 0.
    b, s = batch.history_product_surface.shape
    zeros = batch._replace(history_continuous_actions=np.zeros((b, s, 8), np.float32))
    np.testing.assert_array_equal(ranker.apply(params, zeros, emb).logits, plain.logits)
    both = _may_fields(batch)
    dwell = both._replace(candidate_impr_ts=None, candidate_post_creation_ts=None)
    age = both._replace(history_continuous_actions=None)
    for changed in (dwell, age, both):
        assert not np.allclose(ranker.apply(params, changed, emb).logits, plain.logits)
    # The IP rows are summed into the user position.
    ip_config = dataclasses.replace(config, hash_config=pl.HashConfig(num_ip_hashes=2))
    ip_ranker = pl.make_ranker(ip_config, release=MAY)
    with_ip = batch._replace(user_ip_hashes=np.ones((3, 2), np.int32))
    ip_rows = jax.random.normal(jax.random.PRNGKey(9), (3, 2, 32))
    ip_emb = emb._replace(user_ip_embeddings=ip_rows)
    assert not np.allclose(ip_ranker.apply(params, with_ip, ip_emb).logits, plain.logits)
    with pytest.raises(ValueError, match="come together"):
        ip_ranker.apply(params, with_ip, emb)


@pytest.mark.parametrize("anchored", [False, True])
@pytest.mark.parametrize("chunk", [None, 2])
def test_may_serving_paths_equal_the_masked_one(chunk, anchored):
    config = demo_ranker_config(fprop_dtype=jnp.float32, history_seq_len=6, emb_size=32)
    config.model = dataclasses.replace(config.model, key_size=16)
    config.right_anchored_rope = anchored
    batch, emb = _inputs(config, num_candidates=5, seed=4)
    batch = _may_fields(batch, seed=4)
    masked = pl.make_ranker(config, release=MAY, attention="masked")
    params = masked.init(jax.random.PRNGKey(2), batch, emb)
    params = jax.tree.map(lambda p: p + 0.05 * jnp.sin(jnp.arange(p.size).reshape(p.shape)), params)
    slow = masked.apply(params, batch, emb)
    fast = pl.make_ranker(config, release=MAY, candidate_chunk=chunk).apply(params, batch, emb)
    for a, b in zip(fast, slow, strict=True):
        assert np.abs(np.asarray(a) - np.asarray(b)).max() <= 1e-5 * np.abs(np.asarray(b)).max()


def test_right_anchored_positions_of_left_aligned_histories():
    """The user at 0; a history of L items at S - L + 1 .. S (the newest always at S);
    every candidate at S + 1; padding at 0. S = 5, C = 3 (the last one padding)."""
    s = 5
    lengths = [0, 1, 3, 5]
    history = np.arange(s)[None, :] < np.array(lengths)[:, None]  # [4, S]
    mask = np.concatenate([np.ones((4, 1), bool), history, np.tile([True, True, False], (4, 1))], 1)
    got = np.asarray(right_anchored_positions(jnp.asarray(mask), history_seq_len=s))
    for row, length in zip(got, lengths, strict=True):
        items = list(range(s - length + 1, s + 1))
        assert row.tolist() == [0, *items, *[0] * (s - length), s + 1, s + 1, 0]
    assert got.dtype == np.int32


def test_right_anchored_candidates_have_no_slot_effect():
    """January's positions give each candidate slot its own phase, so moving a candidate
    moves its logits; right-anchored, every candidate sits at S + 1 and a permutation of
    the candidates permutes the outputs bit for bit."""
    config = demo_ranker_config(fprop_dtype=jnp.float32, history_seq_len=6, emb_size=32)
    config.model = dataclasses.replace(config.model, key_size=16)
    batch, emb = _inputs(config, num_candidates=5, seed=5)
    order = np.array([3, 0, 4, 1, 2])
    moved_batch = batch._replace(
        candidate_post_hashes=batch.candidate_post_hashes[:, order],
        candidate_author_hashes=batch.candidate_author_hashes[:, order],
        candidate_product_surface=batch.candidate_product_surface[:, order],
    )
    moved_emb = emb._replace(
        candidate_post_embeddings=emb.candidate_post_embeddings[:, order],
        candidate_author_embeddings=emb.candidate_author_embeddings[:, order],
    )
    for anchored in (False, True):
        ranker = pl.make_ranker(dataclasses.replace(config, right_anchored_rope=anchored),
                                release=MAY)  # fmt: skip
        params = ranker.init(jax.random.PRNGKey(3), batch, emb)
        here = np.asarray(ranker.apply(params, batch, emb).logits)[:, order]
        there = np.asarray(ranker.apply(params, moved_batch, moved_emb).logits)
        if anchored:
            np.testing.assert_array_equal(there, here)
        else:
            assert np.abs(there - here).max() > 1e-3 * np.abs(here).max()


def test_unknown_releases_are_refused():
    with pytest.raises(ValueError, match="release must be one of"):
        pl.make_ranker(demo_ranker_config(), release="2026-08")


def test_bad_may_inputs_name_the_field():
    config = demo_ranker_config(fprop_dtype=jnp.float32, history_seq_len=6, emb_size=32)
    config.model = dataclasses.replace(config.model, key_size=16)
    batch, emb = _inputs(config, seed=6)
    may = _may_fields(batch, seed=6)
    ranker = pl.make_ranker(config, release=MAY)
    params = ranker.init(jax.random.PRNGKey(0), batch, emb)
    bad = {
        "candidate_impr_ts must be integer": may._replace(
            candidate_impr_ts=may.candidate_impr_ts.astype(np.float32)),
        "history_continuous_actions has shape": may._replace(
            history_continuous_actions=may.history_continuous_actions[..., :3]),
        "history_continuous_actions must be float": may._replace(
            history_continuous_actions=may.history_continuous_actions.astype(np.int32)),
        "come together": may._replace(candidate_post_creation_ts=None),
    }  # fmt: skip
    for message, wrong in bad.items():
        with pytest.raises((ValueError, TypeError), match=message):
            ranker.apply(params, wrong, emb)
    # Right-anchored positions assume left-aligned histories: a gap is refused.
    anchored = pl.make_ranker(dataclasses.replace(config, right_anchored_rope=True), release=MAY)
    gap = np.asarray(batch.history_post_hashes).copy()
    gap[1, 0] = 0
    gap[1, 1] = 7
    with pytest.raises(ValueError, match="row 1 has an item after padding"):
        anchored.apply(params, batch._replace(history_post_hashes=gap), emb)


def test_continuous_losses_by_hand():
    """MAE and Tweedie (power 1.5) on targets normalised by norm_scale 30 s, mean over real
    candidates; the Tweedie loss of one target is smallest at the prediction p = y."""
    preds = jnp.array([[[0.2, 0.5], [0.9, 0.1]]])  # [1, 2, 2]
    targets = jnp.array([[[3.0, 60.0], [27.0, 0.0]]])  # seconds -> y = 0.1, 1.0 | 0.9, 0.0
    mask = jnp.array([[True, False]])
    y = np.array([0.1, 1.0])
    p = np.array([0.2, 0.5])
    mae = pl.ContinuousActionConfig(loss_type="mae")
    assert np.isclose(train.continuous_loss(preds, targets, mask, mae), np.abs(p - y).mean())
    tweedie = pl.ContinuousActionConfig(loss_type="tweedie", tweedie_power=1.5)
    want = (-y * p**-0.5 / -0.5 + p**0.5 / 0.5).mean()
    assert np.isclose(train.continuous_loss(preds, targets, mask, tweedie), want, rtol=1e-6)
    grid, one = np.linspace(0.05, 0.95, 91), jnp.ones((1, 1), bool)
    twelve = jnp.full((1, 1, 1), 12.0)  # y = 12 / 30 = 0.4
    per = [float(train.continuous_loss(jnp.full((1, 1, 1), q), twelve, one, tweedie)) for q in grid]
    assert np.isclose(grid[np.argmin(per)], 0.4, atol=0.011)
    with pytest.raises(ValueError, match="loss_type"):
        pl.ContinuousActionConfig(loss_type="huber")


def _may_training_setup(**config_changes):
    config = demo_ranker_config(fprop_dtype=jnp.float32, history_seq_len=6, emb_size=32)
    config.model = dataclasses.replace(config.model, key_size=16, num_layers=1)
    config = dataclasses.replace(config, **config_changes)
    batch = _may_fields(_inputs(config, num_candidates=4, seed=7)[0], seed=7)
    r = np.random.default_rng(7)
    labels = (r.random((3, 4, 19)) < 0.3).astype(np.float32)
    mask = np.array([[True] * 4, [True] * 4, [True, True, True, False]])
    optimizer = optax.adam(1e-2)
    state = train.init_state(jax.random.key(0), pl.make_ranker(config), batch, optimizer,
                             num_buckets=(64, 64, 64), emb_size=config.emb_size)  # fmt: skip
    return config, state, batch, labels, mask, optimizer


def test_no_negative_feedback_loss_on_sampled_negatives():
    config, state, batch, labels, mask, _ = _may_training_setup()
    loss = train.ranker_objective(config)
    negative = np.zeros((3, 4), bool)
    negative[:, 2:] = True  # the last two slots of every row are sampled negatives
    flipped = labels.copy()
    heads = [ACTIONS.index(a) for a in NEGATIVE_FEEDBACK]
    flipped[:, 2:, heads] = 1 - flipped[:, 2:, heads]
    args = (state.params, batch, labels, mask, None, negative)
    assert float(loss(*args)) == float(loss(state.params, batch, flipped, mask, None, negative))
    other = labels.copy()
    other[:, 2:, ACTIONS.index("favorite")] = 1 - other[:, 2:, ACTIONS.index("favorite")]
    assert float(loss(*args)) != float(loss(state.params, batch, other, mask, None, negative))
    assert float(loss(*args)) != float(loss(state.params, batch, flipped, mask))  # no flags
    # With the setting off, the flags change nothing.
    off = train.ranker_objective(dataclasses.replace(config, mask_neg_feedback_on_negatives=False))
    assert float(off(*args)) == float(off(state.params, batch, labels, mask))


def test_a_may_step_trains_the_continuous_heads():
    """loss_weight 1, MAE: on a fixed batch the continuous heads move toward the targets."""
    cont = pl.ContinuousActionConfig(loss_weight=1.0)
    config, state, batch, labels, mask, optimizer = _may_training_setup(
        continuous_action_config=cont
    )
    targets = np.zeros((3, 4, 8), np.float32)
    targets[..., 1] = np.random.default_rng(8).uniform(0, 30, (3, 4))
    objective = train.ranker_objective(config)
    step = train.make_step(objective, optimizer)

    def continuous_error(params):
        out = train.forward(pl.make_ranker(config), params, batch)
        return float(train.continuous_loss(out.continuous_preds, targets, mask, cont))

    before = continuous_error(state.params)
    for _ in range(30):
        state, _ = step(state, batch, labels, mask, targets)
    assert continuous_error(state.params) < 0.5 * before


def test_may_training_inputs_are_checked():
    config, state, batch, labels, mask, optimizer = _may_training_setup()
    targets = np.ones((3, 4, 8), np.float32)
    step = train.make_step(train.ranker_objective(config), optimizer)
    with pytest.raises(ValueError, match="loss_weight is 0"):
        step(state, batch, labels, mask, targets)
    with pytest.raises(ValueError, match="continuous_targets has shape"):
        weighted = dataclasses.replace(
            config, continuous_action_config=pl.ContinuousActionConfig(loss_weight=1.0)
        )
        train.make_step(train.ranker_objective(weighted), optimizer)(
            state, batch, labels, mask, targets[..., :2]
        )
    with pytest.raises(TypeError, match="sampled_negative must be bool"):
        step(state, batch, labels, mask, None, np.zeros((3, 4), np.int32))
    january = train.make_step(train.ranker_objective(config, release="2026-01"), optimizer)
    with pytest.raises(ValueError, match="sampled_negative is a May 2026 input"):
        january(state, batch, labels, mask, None, np.zeros((3, 4), bool))


def test_the_default_release_is_may():
    assert pl.DEFAULT_RELEASE == "2026-05"
    config = demo_ranker_config(fprop_dtype=jnp.float32, history_seq_len=6, emb_size=32)
    config.model = dataclasses.replace(config.model, key_size=16, num_layers=1)
    batch, emb = _inputs(config)
    params = pl.make_ranker(config).init(jax.random.PRNGKey(0), batch, emb)
    assert "post_age_embedding_table" in params["phoenix_model"]
    retrieval = dataclasses.replace(demo_retrieval_config(fprop_dtype=jnp.float32),
                                    enable_linear_proj=False)  # fmt: skip
    pl.make_retriever(retrieval)  # May's mean-pooling tower
    with pytest.raises(ValueError, match="January's tower always projects"):
        pl.make_retriever(retrieval, release="2026-01")
