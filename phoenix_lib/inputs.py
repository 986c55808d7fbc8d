"""The inputs of the Phoenix models, with the release's field names.

Both are NamedTuples, so they are pytrees and pass straight through ``jax.jit``
(the release's ``RecsysEmbeddings`` is a plain dataclass and does not).

Shapes: ``B`` batch, ``S`` history length, ``C`` candidates, ``Hu``/``Hi``/``Ha``
hash functions for users, items (posts) and authors, ``A`` actions, ``D`` the
embedding size.
"""

from __future__ import annotations

from typing import NamedTuple

import jax


class RecsysBatch(NamedTuple):
    """Hash bucket indices and features for one batch. Bucket 0 means padding."""

    user_hashes: jax.Array  # [B, Hu] int32
    history_post_hashes: jax.Array  # [B, S, Hi] int32; column 0 == 0 marks a padded slot
    history_author_hashes: jax.Array  # [B, S, Ha] int32
    history_actions: jax.Array  # [B, S, A] float32 multi-hot
    history_product_surface: jax.Array  # [B, S] int32 in [0, V)
    candidate_post_hashes: jax.Array  # [B, C, Hi] int32; column 0 == 0 marks a padded candidate
    candidate_author_hashes: jax.Array  # [B, C, Ha] int32
    candidate_product_surface: jax.Array  # [B, C] int32 in [0, V)


class RecsysEmbeddings(NamedTuple):
    """Rows gathered from the hash tables for the hashes in a :class:`RecsysBatch`."""

    user_embeddings: jax.Array  # [B, Hu, D]
    history_post_embeddings: jax.Array  # [B, S, Hi, D]
    candidate_post_embeddings: jax.Array  # [B, C, Hi, D]
    history_author_embeddings: jax.Array  # [B, S, Ha, D]
    candidate_author_embeddings: jax.Array  # [B, C, Ha, D]
