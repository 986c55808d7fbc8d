"""The pipeline's glue: retrieval among existing posts, scoring in the ranker's slots."""

import numpy as np
import pytest

from phoenix_lib.pipeline import from_slots, in_slots, top_existing
from phoenix_lib.world import World, WorldConfig

SMALL = WorldConfig(num_users=50, num_authors=10, num_posts=300, num_topics=4, seed=5)


def test_top_existing_is_the_best_among_posts_created_by_the_hour():
    rng = np.random.default_rng(0)
    user, corpus = rng.normal(size=(6, 8)), rng.normal(size=(300, 8))
    created, hours = rng.integers(0, 72, 300), np.array([10, 20, 30, 50, 71, 71])
    got = np.asarray(top_existing(user, corpus, created, hours, k=3))
    for b in range(6):
        scores = np.where(created <= hours[b], user[b] @ corpus.T, -np.inf)
        np.testing.assert_array_equal(got[b], np.argsort(-scores, kind="stable")[:3])
        assert (created[got[b]] <= hours[b]).all()


def test_in_slots_repeats_each_history_and_from_slots_restores_the_order():
    world = World(SMALL)
    timeline = world.timeline(0, num_sessions=6, session_size=4, start_hour=72)
    session = world.timeline_session(timeline, np.array([1, 2, 3]), np.array([5, 5, 2]), 8)
    posts = np.arange(3 * 37).reshape(3, 37) % SMALL.num_posts  # 37 = 2 x 16 + 5
    rows = in_slots(session, posts, num_slots=16)
    assert rows.candidate_posts.shape == (9, 16) and rows.users.shape == (9,)
    np.testing.assert_array_equal(rows.users, np.repeat(session.users, 3))
    np.testing.assert_array_equal(
        rows.history_posts[3:6], np.repeat(session.history_posts[1:2], 3, 0)
    )
    np.testing.assert_array_equal(rows.candidate_posts[2, 5:], posts[0, :11])  # filled up
    np.testing.assert_array_equal(from_slots(rows.candidate_posts, 37), posts)
    scores = rows.candidate_posts[..., None] * np.ones(2)  # [9, 16, 2] per-candidate values
    np.testing.assert_array_equal(from_slots(scores, 37)[..., 1], posts)
    with pytest.raises(ValueError, match=r"\[B, K\]"):
        in_slots(session, posts[:2], num_slots=16)
    with pytest.raises(ValueError, match="whole number"):
        from_slots(rows.candidate_posts[:8], 37)
