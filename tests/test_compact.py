"""Compact embeddings: parameter counts, shapes, masks, the QR pairs, RQ-KMeans, errors."""

import jax
import numpy as np
import pytest

from phoenix_lib import compact
from phoenix_lib.world import World, WorldConfig

WORLD = World(WorldConfig(num_users=50, num_authors=20, num_posts=600, num_topics=4, seed=3))
VOCAB = WORLD.post_ids
DIM = 8
CODES, _, ERRORS = compact.rq_kmeans(
    jax.random.key(0), WORLD.post_content(16), levels=3, codebook_size=16
)


def techniques():
    counts = np.arange(VOCAB.size)[::-1]
    return {
        "multi_hash": (compact.multi_hash(64, DIM, 2), 64 * DIM + 2 * DIM * DIM),
        "multi_hash_sum": (compact.multi_hash(64, DIM, 3, combine="sum"), 64 * DIM),
        "double": (compact.double_hashing(64, DIM), 64 * DIM),
        "qr": (compact.quotient_remainder(VOCAB, DIM, 25), (24 + 25) * DIM),
        "mixed": (
            compact.mixed_dimension(VOCAB, counts, DIM, wide=100, narrow_dim=2),
            100 * DIM + 500 * 2 + 2 * DIM,
        ),
        "tt": (
            compact.tensor_train(VOCAB, DIM, rank=3, row_factors=(10, 8, 8), dim_factors=(2, 2, 2)),
            10 * 2 * 3 + 8 * 3 * 2 * 3 + 8 * 3 * 2,
        ),
        "sid": (compact.semantic_ids(VOCAB, CODES, 16, DIM), 3 * 16 * DIM),
        "sid_hashed": (
            compact.semantic_ids(VOCAB, CODES, 16, DIM, hash_rows=32),
            3 * 16 * DIM + 32 * DIM,
        ),
        "full": (compact.full_table(VOCAB, DIM), VOCAB.size * DIM),
    }


@pytest.mark.parametrize("name", list(techniques()))
def test_parameter_count_shape_mask_and_gradient(name):
    technique, expected = techniques()[name]
    assert compact.num_params(technique) == expected
    ids = VOCAB[np.arange(24).reshape(4, 6) * 7]
    mask = np.ones(ids.shape, bool)
    mask[:, -2:] = False
    params = technique.init(jax.random.key(1))
    features = technique.features(ids, mask)
    out = jax.jit(technique.embed)(params, features)
    assert out.shape == (4, 6, DIM) and np.isfinite(np.asarray(out)).all()
    assert (np.asarray(out)[~mask] == 0).all() and (np.abs(np.asarray(out)[mask]).sum(-1) > 0).all()
    norm = np.linalg.norm(np.asarray(out)[mask], axis=-1).mean()
    assert 0.2 < norm < 5, norm  # initialised near unit rows, whatever the technique
    grads = jax.grad(lambda p: technique.embed(p, features).sum())(params)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    again = technique.embed(technique.init(jax.random.key(1)), technique.features(ids, mask))
    assert np.array_equal(np.asarray(out), np.asarray(again))  # deterministic


def test_memory_counts_the_vocabulary_and_codes():
    full, _ = techniques()["full"]
    assert compact.memory_bytes(full) == 4 * VOCAB.size * DIM + 12 * VOCAB.size
    sid, _ = techniques()["sid"]
    assert sid.extra_bytes == (12 + 3) * VOCAB.size
    assert compact.multi_hash(64, DIM, 2).extra_bytes == 0


def test_quotient_remainder_gives_every_id_its_own_pair():
    f = compact.quotient_remainder(VOCAB, DIM, 25).features(VOCAB)
    assert np.unique(f, axis=0).shape[0] == VOCAB.size
    assert f[:, 1].max() == 24 and f[:, 0].max() == 23


def test_rq_kmeans_error_falls_with_levels_and_is_deterministic():
    assert (np.diff(ERRORS) < 0).all() and ERRORS[-1] < 0.5 * ERRORS[0]
    codes, books, errors = compact.rq_kmeans(
        jax.random.key(0), WORLD.post_content(16), levels=3, codebook_size=16
    )
    assert np.array_equal(codes, CODES) and np.array_equal(errors, ERRORS)
    assert books.shape == (3, 16, 16) and codes.shape == (VOCAB.size, 3)


def test_hash_level_separates_posts_with_equal_codes():
    _, group = np.unique(CODES, axis=0, return_inverse=True)
    twins = [np.flatnonzero(group == g)[:2] for g in np.unique(group) if (group == g).sum() > 1]
    assert len(twins) > 20
    pairs = VOCAB[np.array(twins)]  # [T, 2]
    plain = compact.semantic_ids(VOCAB, CODES, 16, DIM)
    hashed = compact.semantic_ids(VOCAB, CODES, 16, DIM, hash_rows=64)
    out = np.asarray(plain.embed(plain.init(jax.random.key(0)), plain.features(pairs)))
    assert (out[:, 0] == out[:, 1]).all()
    f = hashed.features(pairs)
    out = np.asarray(hashed.embed(hashed.init(jax.random.key(0)), f))
    apart = (out[:, 0] != out[:, 1]).any(-1)
    assert np.array_equal(apart, f[:, 0, 3] != f[:, 1, 3])  # only a shared hash row joins them
    assert apart.mean() > 0.9


def test_content_vectors_put_one_authors_posts_close():
    v = WORLD.post_content(16)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    same = WORLD.post_author[:, None] == WORLD.post_author[None, :]
    sim = v @ v.T
    off = ~np.eye(len(v), dtype=bool)
    assert sim[same & off].mean() > sim[~same].mean() + 0.2


def test_bad_input_says_what_is_wrong():
    with pytest.raises(ValueError, match="not in the vocabulary"):
        compact.full_table(VOCAB, DIM).features(np.array([12345]))
    with pytest.raises(ValueError, match="twice"):
        compact.full_table(np.array([1, 1]), DIM)
    with pytest.raises(ValueError, match="multiply to"):
        compact.tensor_train(VOCAB, DIM, rank=2, row_factors=(10, 8, 8), dim_factors=(2, 2, 3))
    with pytest.raises(ValueError, match="fewer than"):
        compact.tensor_train(VOCAB, DIM, rank=2, row_factors=(2, 2, 2), dim_factors=(2, 2, 2))
    with pytest.raises(ValueError, match="combine"):
        compact.multi_hash(64, DIM, 2, combine="max")
    with pytest.raises(ValueError, match="codes must lie"):
        compact.semantic_ids(VOCAB, CODES, 8, DIM)
    with pytest.raises(ValueError, match="past the table"):
        compact.row_table(10, DIM).features(np.array([10]))


def test_the_ranker_trains_on_compact_posts_and_authors():
    from phoenix_lib import train
    from phoenix_lib.config import HashConfig, book_ranker_config

    config = book_ranker_config(
        history_seq_len=8, candidate_seq_len=4,
        hash_config=HashConfig(num_user_hashes=2, num_item_hashes=1, num_author_hashes=1),
    )  # fmt: skip
    post = compact.quotient_remainder(VOCAB, config.emb_size, 32)
    author = compact.multi_hash(16, config.emb_size, 2)
    loss = compact.ranker_objective(config, post, author)
    features = compact.entity_features(WORLD, post, author)

    def data(i):
        s = WORLD.session(i, batch_size=16, history_len=8, num_candidates=4)
        batch = WORLD.to_batch(config, s, (64, 64, 16))
        return (
            batch,
            compact.session_features(WORLD, s, features),
            s.labels,
            np.ones(s.labels.shape[:2], bool),
        )

    optimizer = compact.optimizer(40)
    params = loss.init(jax.random.key(0), data(0)[0], data(0)[1], num_user_rows=64)
    state = train.TrainState(params, optimizer.init(params), jax.numpy.zeros((), "int32"))
    first = float(loss(params, *data(0)))
    state, losses = train.fit(train.make_step(loss, optimizer), state, lambda i: data(0), 40,
                              progress=False)  # fmt: skip
    assert losses[-1] < 0.8 * first
    # The rows themselves learn: embedding gradients are small (order 1e-4), and an
    # optimizer that damps them (optax's Adagrad with its default accumulator of 0.1)
    # leaves the rows within 0.1% of their initial values.
    for name in ("post", "author"):
        moved = jax.tree.map(lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b)),
                             state.params[name], params[name])  # fmt: skip
        assert min(jax.tree.leaves(moved)) > 0.05, (name, moved)
    with pytest.raises(ValueError, match="num_item_hashes=1"):
        compact.ranker_objective(book_ranker_config(), post, author)


def test_rq_encode_gives_the_fitted_codes_and_codes_new_vectors():
    content = WORLD.post_content(16)
    codes, books, _ = compact.rq_kmeans(jax.random.key(0), content, levels=3, codebook_size=16)
    assert np.array_equal(compact.rq_encode(books, content), codes)
    # a new vector equal to a post's content plus a little noise mostly gets its codes
    near = content + 0.01 * np.random.default_rng(0).normal(size=content.shape)
    assert (compact.rq_encode(books, near)[:, 0] == codes[:, 0]).mean() > 0.95


BUDGET_NAMES = ["hash_1_sum", "hash_2_concat", "hash_3_sum", "double_hashing",
                "quotient_remainder", "mixed_dimension", "tensor_train", "semantic_ids",
                "semantic_ids_hashed", "mpzch"]  # fmt: skip


@pytest.mark.parametrize("name", BUDGET_NAMES)
def test_at_budget_stays_within_the_budget(name):
    rows = VOCAB.size // 4  # 150 rows of 8: 1,200 floats
    stream = [VOCAB[i : i + 100] for i in range(0, 600, 100)]
    technique = compact.at_budget(name, rows, vocabulary=VOCAB, dim=DIM,
                                  counts=np.arange(VOCAB.size), content=WORLD.post_content(16),
                                  stream=stream)  # fmt: skip
    used = compact.num_params(technique) + (technique.extra_bytes // 4 if name == "mpzch" else 0)
    assert 0.75 * rows * DIM <= used <= rows * DIM, (used, rows * DIM)
    assert np.asarray(technique.features(VOCAB[:5])).shape[0] == 5


def test_at_budget_says_when_a_technique_does_not_fit():
    with pytest.raises(compact.DoesNotFit, match="needs at least 49 rows"):
        compact.at_budget("quotient_remainder", 40, vocabulary=VOCAB, dim=DIM)
    with pytest.raises(compact.DoesNotFit, match="projection"):
        compact.at_budget("hash_2_concat", 16, vocabulary=VOCAB, dim=DIM)
    with pytest.raises(compact.DoesNotFit, match="one float per ID"):
        compact.at_budget("mixed_dimension", 60, vocabulary=VOCAB, dim=DIM, counts=VOCAB)
    with pytest.raises(ValueError, match="unknown technique"):
        compact.at_budget("bloom", 60, vocabulary=VOCAB, dim=DIM)


def test_zero_collision_gives_distinct_rows_until_the_table_is_full():
    mpzch = compact.zero_collision([VOCAB[:40], VOCAB[30:70]], DIM, num_slots=128)
    rows = mpzch.features(VOCAB[:70])[:, 0]
    assert np.unique(rows).size == 70 and rows.max() < 128
    assert mpzch.extra_bytes == 12 * 128
    full = compact.zero_collision([VOCAB[:200]], DIM, num_slots=64)
    assert np.unique(full.features(VOCAB[:200])[:, 0]).size == 64  # the rest share rows


def test_session_features_read_the_entity_tables_with_history_masked():
    post, author = compact.multi_hash(64, DIM, 2), compact.quotient_remainder(
        WORLD.author_ids, DIM, 5)  # fmt: skip
    tables = compact.entity_features(WORLD, post, author)
    s = WORLD.session(0, batch_size=8, history_len=8, num_candidates=4)
    f = compact.session_features(WORLD, s, tables)
    assert np.array_equal(f.candidate_post, post.features(WORLD.post_ids[s.candidate_posts]))
    expect = author.features(WORLD.author_ids[WORLD.post_author[s.history_posts]],
                             s.history_mask)  # fmt: skip
    assert np.array_equal(f.history_author, expect)
    assert (~s.history_mask).any() and (f.history_post[~s.history_mask] == -1).all()


def test_quality_runs_from_base_rates_to_the_oracle():
    exp = compact.experiment(0)
    ref = compact.references(exp)
    oracle = compact.quality(exp, ref, exp.test.probabilities)
    assert oracle["ne_gap_closed"] == pytest.approx(1.0)
    assert oracle["auc_gap_closed"] == pytest.approx(1.0)
    assert oracle["fresh_ne"] == pytest.approx(ref["oracle_fresh_ne"])
    base_rates = np.broadcast_to(exp.labels.mean(0), exp.labels.shape)
    assert compact.quality(exp, ref, base_rates)["ne_gap_closed"] == pytest.approx(0.0, abs=1e-6)
    assert ref["oracle_ne"] < ref["popularity_ne"] < 1.0
    with pytest.raises(ValueError):
        compact.quality(exp, ref, exp.test.probabilities[:-1])
