"""Hash-embedding tables: the rows that the bucket indices of :mod:`phoenix_lib.hashing` select.

The released Phoenix code takes these rows as an input (``RecsysEmbeddings``) and
ships no tables; the book keeps one table per entity type. Row 0 of every table
is the padding row: gathering bucket 0 gives exact zeros and no gradient.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from phoenix_lib.inputs import RecsysBatch, RecsysEmbeddings


class HashTables(NamedTuple):
    """One embedding table per entity type, each ``[num_buckets, D]``."""

    user: jax.Array  # [Nu, D]
    post: jax.Array  # [Np, D]
    author: jax.Array  # [Na, D]


def init_tables(
    key: jax.Array,
    *,
    num_user_buckets: int,
    num_post_buckets: int,
    num_author_buckets: int,
    dim: int,
    dtype=jnp.float32,
) -> HashTables:
    """Tables with rows drawn from ``N(0, 1/dim)``, so a row has norm close to 1.

    Row 0 (padding) is never read: :func:`gather` returns zeros for bucket 0.
    """
    sizes = (num_user_buckets, num_post_buckets, num_author_buckets)
    for name, n in zip(
        ("num_user_buckets", "num_post_buckets", "num_author_buckets"), sizes, strict=True
    ):
        if n < 2:
            raise ValueError(f"{name} must be at least 2 (row 0 is padding), got {n}")
    if dim < 1:
        raise ValueError(f"dim must be positive, got {dim}")
    keys = jax.random.split(key, 3)
    return HashTables(
        *(
            jax.random.normal(k, (n, dim), dtype) / jnp.sqrt(dim).astype(dtype)
            for k, n in zip(keys, sizes, strict=True)
        )
    )


@jax.jit
def gather(table: jax.Array, hashes: jax.Array) -> jax.Array:
    """Rows of ``table`` [N, D] for bucket indices ``hashes`` [..., H] -> [..., H, D].

    Bucket 0 gives a zero row (padding). An index outside ``[0, N)`` gives a row of
    NaNs rather than a silently clamped row, so a bad index poisons the loss
    instead of training the wrong embedding. Differentiable w.r.t. ``table``.
    """
    # jnp.take wraps negative indices NumPy-style; send them out of range instead.
    safe = jnp.where(hashes < 0, table.shape[0], hashes)
    rows = jnp.take(table, safe, axis=0, mode="fill", fill_value=jnp.nan)
    return jnp.where((hashes == 0)[..., None], jnp.zeros((), table.dtype), rows)


def check_hashes_fit(tables: HashTables, batch: RecsysBatch) -> None:
    """Raise unless every bucket index of a (concrete) batch is a row of its table.

    Inside a jitted step an index past the table reads a row of NaNs (:func:`gather`)
    and the loss turns NaN a step later; this says which field and what to do instead.
    Skipped for traced values.
    """
    for name, table in (
        ("user_hashes", tables.user),
        ("history_post_hashes", tables.post),
        ("candidate_post_hashes", tables.post),
        ("history_author_hashes", tables.author),
        ("candidate_author_hashes", tables.author),
    ):
        hashes = getattr(batch, name)
        if isinstance(hashes, jax.core.Tracer) or not hashes.size:
            continue
        top = int(np.max(hashes))
        if top >= table.shape[0]:
            raise ValueError(
                f"batch.{name} holds bucket {top}, but the table has {table.shape[0]} rows: "
                "hash with the num_buckets the tables were made with (init_state's)"
            )


@jax.jit
def embed(tables: HashTables, batch: RecsysBatch) -> RecsysEmbeddings:
    """The rows a batch needs: user [B, Hu, D], posts [B, S|C, Hi, D], authors [B, S|C, Ha, D]."""
    return RecsysEmbeddings(
        user_embeddings=gather(tables.user, batch.user_hashes),
        history_post_embeddings=gather(tables.post, batch.history_post_hashes),
        candidate_post_embeddings=gather(tables.post, batch.candidate_post_hashes),
        history_author_embeddings=gather(tables.author, batch.history_author_hashes),
        candidate_author_embeddings=gather(tables.author, batch.candidate_author_hashes),
    )
