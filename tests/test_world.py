"""The synthetic world: determinism, realistic rates, well-formed batches."""

import numpy as np
import pytest

from phoenix_lib import scoring
from phoenix_lib.config import ACTIONS, book_ranker_config
from phoenix_lib.inputs import validate_batch
from phoenix_lib.world import World, WorldConfig

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
