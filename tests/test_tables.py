"""Hash-embedding tables: shapes, padding, bad indices, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from phoenix_lib.inputs import RecsysBatch
from phoenix_lib.tables import HashTables, embed, gather, init_tables


def _tables(dim=8):
    return init_tables(
        jax.random.PRNGKey(0),
        num_user_buckets=11,
        num_post_buckets=13,
        num_author_buckets=7,
        dim=dim,
    )


def test_init_tables_shapes_and_scale():
    t = init_tables(
        jax.random.PRNGKey(0),
        num_user_buckets=5,
        num_post_buckets=4000,
        num_author_buckets=3,
        dim=64,
    )
    assert [x.shape for x in t] == [(5, 64), (4000, 64), (3, 64)]
    norms = jnp.linalg.norm(t.post, axis=-1)
    assert abs(float(norms.mean()) - 1.0) < 0.02


def test_init_tables_rejects_tiny_tables():
    with pytest.raises(ValueError, match="num_post_buckets"):
        init_tables(
            jax.random.PRNGKey(0),
            num_user_buckets=5,
            num_post_buckets=1,
            num_author_buckets=3,
            dim=4,
        )


def test_gather_rows_padding_and_bad_indices():
    table = jnp.arange(20.0).reshape(5, 4)
    rows = gather(table, jnp.array([[1, 0], [4, 2]]))
    assert rows.shape == (2, 2, 4)
    np.testing.assert_array_equal(rows[0, 0], table[1])
    np.testing.assert_array_equal(rows[0, 1], np.zeros(4))
    bad = gather(table, jnp.array([5, -1, 3]))
    assert np.isnan(bad[:2]).all() and not np.isnan(bad[2]).any()


def test_gather_is_differentiable_and_padding_gets_no_gradient():
    table = jnp.ones((5, 3))
    grad = jax.grad(lambda t: gather(t, jnp.array([0, 2, 2, 4])).sum())(table)
    np.testing.assert_array_equal(grad[:, 0], [0, 0, 2, 0, 1])


def test_embed_gives_recsys_embeddings_shapes():
    B, S, C, Hu, Hi, Ha, D = 2, 5, 3, 2, 2, 2, 8
    rng = np.random.default_rng(0)
    batch = RecsysBatch(
        user_hashes=rng.integers(0, 11, (B, Hu)).astype(np.int32),
        history_post_hashes=rng.integers(0, 13, (B, S, Hi)).astype(np.int32),
        history_author_hashes=rng.integers(0, 7, (B, S, Ha)).astype(np.int32),
        history_actions=np.zeros((B, S, 19), np.float32),
        history_product_surface=np.zeros((B, S), np.int32),
        candidate_post_hashes=rng.integers(0, 13, (B, C, Hi)).astype(np.int32),
        candidate_author_hashes=rng.integers(0, 7, (B, C, Ha)).astype(np.int32),
        candidate_product_surface=np.zeros((B, C), np.int32),
    )
    tables = _tables(D)
    emb = embed(tables, batch)
    assert emb.user_embeddings.shape == (B, Hu, D)
    assert emb.history_post_embeddings.shape == (B, S, Hi, D)
    assert emb.candidate_post_embeddings.shape == (B, C, Hi, D)
    assert emb.history_author_embeddings.shape == (B, S, Ha, D)
    assert emb.candidate_author_embeddings.shape == (B, C, Ha, D)
    np.testing.assert_array_equal(
        emb.candidate_post_embeddings[1, 2, 0],
        gather(tables.post, batch.candidate_post_hashes)[1, 2, 0],
    )
    assert isinstance(tables, HashTables)
