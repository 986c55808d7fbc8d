"""The synthetic world: determinism, realistic rates, well-formed batches."""

import jax
import numpy as np
import pytest

from phoenix_lib import metrics, scoring
from phoenix_lib.config import ACTIONS, book_ranker_config, book_retrieval_config
from phoenix_lib.inputs import validate_batch
from phoenix_lib.world import _POSITIVE_COLUMNS, UserState, World, WorldConfig

SMALL = WorldConfig(num_users=500, num_authors=50, num_posts=2_000, num_topics=6, seed=3)


@pytest.fixture(scope="module")
def world():
    return World(SMALL)


def test_same_seed_same_world_and_sessions(world):
    again = World(SMALL)
    np.testing.assert_array_equal(again.post_ids, world.post_ids)
    np.testing.assert_array_equal(again.user_interest, world.user_interest)
    a = world.session(7, batch_size=8, history_len=16, num_candidates=4)
    b = again.session(7, batch_size=8, history_len=16, num_candidates=4)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    c = world.session(8, batch_size=8, history_len=16, num_candidates=4)
    assert not np.array_equal(a.candidate_posts, c.candidate_posts)
    assert not np.array_equal(
        World(WorldConfig(**{**SMALL.__dict__, "seed": 4})).post_ids, world.post_ids
    )


def test_ids_are_unique_64_bit_snowflakes(world):
    for ids in (world.user_ids, world.author_ids, world.post_ids):
        assert ids.dtype == np.int64 and np.unique(ids).size == ids.size
        assert (ids > 2**40).all()
    # Posts created later have larger IDs (time in the high bits).
    assert (np.diff(world.post_hour[np.argsort(world.post_ids)]) >= 0).all()


def test_truth_is_a_function_with_the_documented_directions(world):
    users = np.repeat(np.arange(50), 40)
    posts = np.tile(np.arange(40), 50)
    p = world.probabilities(users, posts, 0)
    np.testing.assert_array_equal(p, world.probabilities(users, posts, 0))
    assert p.shape == (2000, 19) and ((p >= 0) & (p <= 1)).all()
    affinity = world.affinity(users, posts)
    for a, name in enumerate(ACTIONS):
        corr = np.corrcoef(affinity, p[:, a])[0, 1] if p[:, a].std() > 0 else 0
        if name in ("vqv", "photo_expand"):
            continue  # gated by the video flag
        assert (corr < -0.5) if scoring.DEFAULT_WEIGHTS[name] < 0 else (corr > 0.5), name
    video = world.post_video[posts]
    assert (p[video, ACTIONS.index("photo_expand")] == 0).all()
    assert (p[~video, ACTIONS.index("vqv")] == 0).all()


def test_rates_are_realistic(world):
    s = world.session(0, batch_size=400, history_len=16, num_candidates=16)
    rates = s.labels.reshape(-1, 19).mean(0)
    rare = [
        ACTIONS.index(a) for a in ("block_author", "mute_author", "report", "share_via_copy_link")
    ]
    assert (rates[rare] < 0.01).all()
    assert 0.01 < rates[ACTIONS.index("favorite")] < 0.2
    assert np.median(rates) < 0.05  # most actions are rare
    expected = s.probabilities.reshape(-1, 19).mean(0)
    n = s.labels.shape[0] * s.labels.shape[1]
    assert (np.abs(rates - expected) < 4 * np.sqrt(expected * (1 - expected) / n) + 1e-4).all()


def test_history_holds_acted_on_posts_oldest_first_and_padding_last(world):
    s = world.session(1, batch_size=64, history_len=32, num_candidates=4)
    acted = s.history_actions[..., :-1].any(-1)
    np.testing.assert_array_equal(acted, s.history_mask)
    # Padding only at the end of a row.
    assert (np.diff(s.history_mask.astype(int), axis=1) <= 0).all()
    assert (s.history_actions[~s.history_mask] == 0).all()


def test_to_batch_is_a_valid_model_input(world):
    config = book_ranker_config()
    data = world.ranking_data(config, (1024, 4096, 256), batch_size=8)
    batch, labels, mask = data(0)
    validate_batch(config, batch)
    assert labels.shape == (8, config.candidate_seq_len, 19) and mask.all()
    np.testing.assert_array_equal(
        batch.history_post_hashes[..., 0] != 0,
        world.session(0, batch_size=8, history_len=32, num_candidates=16).history_mask,
    )


def test_ranking_data_shows_each_session_it_makes(world):
    config = book_ranker_config()
    seen = []
    data = world.ranking_data(
        config, (1024, 4096, 256), batch_size=8, seed_offset=5, on_session=lambda *a: seen.append(a)
    )
    _, labels, _ = data(2)
    ((i, s),) = seen
    expected = world.session(7, batch_size=8, history_len=32, num_candidates=16)
    assert i == 2
    for got, want in zip(s, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(labels, s.labels)


def test_recency_and_creation_time_filter_impressions(world):
    rng = np.random.default_rng(0)
    shown = world.impressions(rng, np.arange(100), 20, now_hour=10, recency_hours=2.0)
    assert (world.post_hour[shown] <= 10).all()
    assert np.median(10 - world.post_hour[shown]) < 6
    with pytest.raises(ValueError, match="no post"):
        World(WorldConfig(num_posts=10, num_users=5, num_authors=2, hours=100, seed=1)).impressions(
            rng, np.arange(2), 3, now_hour=-1
        )


def test_large_world_builds():
    world = World(WorldConfig(num_users=100_000, num_authors=10_000, num_posts=1_000_000))
    assert world.post_ids.size == 1_000_000 and world.user_ids.size == 100_000


@pytest.mark.parametrize(
    "field, value", [("num_posts", 0), ("video_share", 1.5), ("interest_concentration", 0.0)]
)
def test_bad_config_is_rejected_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        WorldConfig(**{field: value})


# ------------------------------------------------------------------ timelines: the world's memory

TIMELINE = dict(num_sessions=12, session_size=8, start_hour=24, recency_hours=24)


@pytest.fixture(scope="module")
def timeline(world):
    return world.timeline(0, **TIMELINE)


def test_timeline_is_deterministic_and_shaped(world, timeline):
    again = World(SMALL).timeline(0, **TIMELINE)
    for a, b in zip(jax.tree.leaves(timeline), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(a, b)
    other = world.timeline(1, **TIMELINE)
    assert not np.array_equal(other.posts, timeline.posts)
    u, t, c = SMALL.num_users, 12, 8
    assert timeline.posts.shape == (u, t, c) and timeline.labels.shape == (u, t, c, len(ACTIONS))
    assert timeline.state.interest.shape == (u, t, SMALL.num_topics)
    # Nothing is shown before it exists.
    assert (world.post_hour[timeline.posts] <= timeline.hours[None, :, None]).all()
    np.testing.assert_allclose(timeline.state.interest.sum(-1), 1.0, rtol=1e-9)


def test_timeline_sessions_read_the_users_own_past_in_order(world, timeline):
    users, sessions = np.array([3, 3, 7, 11]), np.array([0, 11, 6, 11])
    s = world.timeline_session(timeline, users, sessions, history_len=16)
    assert not s.history_mask[0].any()  # the first session has no past
    np.testing.assert_array_equal(s.candidate_posts, timeline.posts[users, sessions])
    np.testing.assert_array_equal(s.labels, timeline.labels[users, sessions])
    for b, (user, t) in enumerate(zip(users, sessions, strict=True)):
        # The reference: walk the user's earlier impressions one by one.
        acted = [
            (timeline.posts[user, i, j], timeline.labels[user, i, j])
            for i in range(t)
            for j in range(8)
            if timeline.labels[user, i, j, :-1].any()
        ][-16:]
        n = len(acted)
        assert s.history_mask[b].sum() == n and s.history_mask[b, :n].all()
        np.testing.assert_array_equal(s.history_posts[b, :n], [p for p, _ in acted])
        np.testing.assert_array_equal(
            s.history_actions[b, :n], np.reshape([a for _, a in acted], (n, len(ACTIONS)))
        )
        assert (s.history_posts[b, n:] == 0).all() and (s.history_actions[b, n:] == 0).all()
    with pytest.raises(ValueError, match="sessions must be in"):
        world.timeline_session(timeline, np.array([0]), np.array([12]), history_len=4)


@pytest.mark.parametrize("knob", ["author_affinity", "not_interested_penalty", "freshness"])
def test_each_memory_mechanism_moves_the_truth_and_its_knob_removes_it(knob):
    """A state that differs only in the mechanism's part changes the truth, unless off."""
    for value, moves in ((1.0, True), (0.0, False)):
        world = World(WorldConfig(**{**SMALL.__dict__, knob: value}))
        posts = np.arange(40)
        k = SMALL.num_topics
        plain = UserState(world.user_interest[0], np.full(4, -1), np.full(2, -1), np.zeros(k))
        if knob == "author_affinity":
            changed = plain._replace(authors=np.r_[world.post_author[posts[:3]], -1])
            hour_a = hour_b = None
        elif knob == "not_interested_penalty":
            changed = plain._replace(penalty=np.ones(k))
            hour_a = hour_b = None
        else:
            changed, hour_a, hour_b = plain, world.post_hour[posts], world.post_hour[posts] + 500
        a = world.probabilities(0, posts, 0, state=plain, hour=hour_a)
        b = world.probabilities(0, posts, 0, state=changed, hour=hour_b)
        assert (np.abs(a - b).max() > 1e-3) == moves, (knob, value)


def test_blocked_authors_never_get_positive_engagement_unless_memory_is_off():
    for memory in (True, False):
        world = World(WorldConfig(**{**SMALL.__dict__, "negative_memory": memory}))
        posts = np.arange(40)
        k = SMALL.num_topics
        state = UserState(
            world.user_interest[0], np.full(4, -1), world.post_author[:1], np.zeros(k)
        )
        p = world.probabilities(0, posts, 0, state=state)
        by_blocked = world.post_author[posts] == world.post_author[0]
        assert ((p[by_blocked][:, _POSITIVE_COLUMNS] == 0).all()) == memory
        assert (p[~by_blocked][:, _POSITIVE_COLUMNS].max(1) > 0).all()


def test_timeline_memory_follows_the_actions(world, timeline):
    labels = timeline.labels
    # Blocks and mutes are remembered for good: never a positive action on that author after.
    blocked = timeline.state.blocked  # [U, T, Rb]
    author = world.post_author[timeline.posts]  # [U, T, C]
    hit = (author[..., None] == blocked[:, :, None, :]).any(-1)  # [U, T, C]
    assert (labels[hit][:, _POSITIVE_COLUMNS] == 0).all()
    assert (timeline.probabilities[hit][:, _POSITIVE_COLUMNS] == 0).all()
    # The state before session t+1 remembers the authors engaged with in session t.
    engaged = labels[..., _POSITIVE_COLUMNS].any(-1)
    u, t, c = np.argwhere(engaged[:, :-1])[0]
    assert author[u, t, c] in timeline.state.authors[u, t + 1]


@pytest.mark.parametrize("knob", ["momentum", "drift"])
def test_interest_moves_only_with_momentum_or_drift(knob):
    off = {"momentum": 0.0, "drift": 0.0}
    world = World(WorldConfig(**{**SMALL.__dict__, **off}))
    still = world.timeline(0, **TIMELINE).state.interest
    np.testing.assert_array_equal(still, np.broadcast_to(world.user_interest[:, None], still.shape))
    world = World(WorldConfig(**{**SMALL.__dict__, **off, knob: 0.5}))
    moving = world.timeline(0, **TIMELINE).state.interest
    assert np.abs(moving[:, -1] - moving[:, 0]).sum(-1).mean() > 0.05


def test_timeline_rates_and_oracle_are_realistic():
    """Chapter 4's world: favorites 1-10%, each negative action under 1%, the oracle's
    favorite AUC between 0.70 and 0.90."""
    world = World(WorldConfig(num_users=2_000, num_authors=500, num_posts=5_000,
                              num_topics=8, noise=0.2, seed=20260404))  # fmt: skip
    tl = world.timeline(0, num_sessions=24, session_size=16, start_hour=24, recency_hours=24)
    labels = tl.labels.reshape(-1, len(ACTIONS))
    rates = labels.mean(0)
    fav = ACTIONS.index("favorite")
    assert 0.01 < rates[fav] < 0.10
    for name in ("not_interested", "block_author", "mute_author", "report"):
        assert rates[ACTIONS.index(name)] < 0.01, name
    oracle = metrics.auc(labels[:, fav], tl.probabilities.reshape(-1, len(ACTIONS))[:, fav])
    assert 0.70 < oracle < 0.90


def test_to_batch_from_precomputed_buckets_equals_hashing_the_ids(world, timeline):
    config = book_ranker_config(history_seq_len=16, candidate_seq_len=8)
    num_buckets = (257, 1024, 64)
    session = world.timeline_session(timeline, np.array([1, 2, 3]), np.array([0, 5, 11]), 16)
    hashed = world.to_batch(config, session, num_buckets)
    gathered = world.to_batch(
        config, session, num_buckets, buckets=world.buckets(config, num_buckets)
    )
    for name, a, b in zip(hashed._fields, hashed, gathered, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
        assert np.asarray(a).dtype == np.asarray(b).dtype, name
    with pytest.raises(ValueError, match="hashed for"):
        world.to_batch(config, session, (257, 1024, 65), buckets=world.buckets(config, num_buckets))


def test_history_ablations_keep_what_they_promise(world, timeline):
    from phoenix_lib.world import shuffled_history, without_history

    s = world.timeline_session(timeline, np.arange(20), np.full(20, 11), history_len=16)
    empty = without_history(s)
    assert not empty.history_mask.any() and not empty.history_posts.any()
    np.testing.assert_array_equal(empty.candidate_posts, s.candidate_posts)
    mixed = shuffled_history(s, seed=3)
    np.testing.assert_array_equal(mixed.history_mask, s.history_mask)  # padding stays last

    def items(session, b):  # each history item with its surface and actions, as a multiset
        n = session.history_mask[b].sum()
        return sorted(
            (int(p), int(f), tuple(a))
            for p, f, a in zip(
                session.history_posts[b, :n],
                session.history_surface[b, :n],
                session.history_actions[b, :n].astype(int),
                strict=True,
            )
        )

    for b in range(20):
        assert items(mixed, b) == items(s, b)  # the same items, each with its own actions
    assert not np.array_equal(mixed.history_posts, s.history_posts)  # in another order


def test_shown_posts_get_the_truth_of_that_moment(world, timeline):
    users, sessions = np.array([4, 9, 9]), np.array([3, 3, 11])
    s = world.timeline_session(timeline, users, sessions, history_len=8)
    # Showing the logged impressions again on their logged surfaces gives the logged truth.
    logged = world.shown(timeline, s, sessions, s.candidate_posts, np.random.default_rng(0))
    p = world.probabilities(
        users[:, None], s.candidate_posts, logged.candidate_surface,
        state=UserState(*(x[users, sessions][:, None] for x in timeline.state)),
        hour=timeline.hours[sessions][:, None],
    )  # fmt: skip
    fixed = logged.candidate_surface == s.candidate_surface
    np.testing.assert_allclose(logged.probabilities[fixed], s.probabilities[fixed], rtol=1e-6)
    np.testing.assert_allclose(logged.probabilities, p.astype(np.float32), rtol=1e-6)
    np.testing.assert_array_equal(logged.history_posts, s.history_posts)  # the same history
    # The same post for the same user is worth more to them at a moment the author is fresh
    # in their memory: user 9's truth differs between its sessions 3 and 11.
    assert not np.allclose(logged.probabilities[1], logged.probabilities[2])
    late = np.flatnonzero(world.post_hour > timeline.hours[3])[:1]
    with pytest.raises(ValueError, match="before its creation"):
        world.shown(timeline, s, sessions, np.broadcast_to(late, (3, 1)), np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"\[B, C\]"):
        world.shown(timeline, s, sessions, s.candidate_posts[:2], np.random.default_rng(0))


def test_timeline_data_can_show_other_candidates(world, timeline):
    config = book_ranker_config(history_seq_len=8, candidate_seq_len=4)
    seen = []

    def first_four(session, sessions, rng):
        assert sessions.shape == session.users.shape
        return np.sort(session.candidate_posts, 1)[:, :4]  # any posts that exist by then

    data = world.timeline_data(
        config, timeline, (257, 1024, 64), batch_size=6, sessions=range(2, 12),
        candidates=first_four, on_session=lambda i, s: seen.append(s),
    )  # fmt: skip
    _, labels, mask = data(5)
    assert labels.shape == (6, 4, len(ACTIONS)) and mask.shape == (6, 4)
    np.testing.assert_array_equal(labels, seen[0].labels)
    assert np.isin(seen[0].candidate_posts, timeline.posts).all()
    with pytest.raises(ValueError, match="not within"):
        world.timeline_data(config, timeline, (257, 1024, 64), batch_size=6, sessions=range(5, 13))


def test_timeline_retrieval_data_takes_each_sessions_first_positive(world, timeline):
    from phoenix_lib.world import first_positive, positive_log_q

    config = book_retrieval_config(history_seq_len=8)
    users = np.repeat(np.arange(SMALL.num_users), 12)
    everything = world.timeline_session(timeline, users, np.tile(np.arange(12), SMALL.num_users), 1)
    log_q = positive_log_q(world, [everything])
    data = world.timeline_retrieval_data(
        config, timeline, (257, 1024, 64), log_q, batch_size=16, sessions=range(12)
    )
    batch, q, item, valid = data(3)
    assert batch.candidate_post_hashes.shape[:2] == (16, 1) and valid.any()
    np.testing.assert_array_equal(q, log_q[item])
    # The same draw as the ranking data's, so the same (user, session) pairs.
    ranking = world.timeline_data(
        book_ranker_config(history_seq_len=8), timeline, (257, 1024, 64),
        batch_size=16, sessions=range(12), on_session=lambda i, s: pairs.append(s),
    )  # fmt: skip
    pairs = []
    ranking(3)
    expected, ok = first_positive(pairs[0])
    np.testing.assert_array_equal(item, expected)
    np.testing.assert_array_equal(valid, ok)
