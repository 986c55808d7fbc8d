"""Reduce blocks: from gathered hash-table rows to the transformer's input sequence.

Each entity's ``H`` rows are concatenated and projected back to ``D`` by a
learned matrix, in float32, and the result is cast back to the input dtype.
The sequence is ``[user (1) | history (S) | candidates (C)]``; its padding mask
comes from hash column 0 (bucket 0 means padding).

These functions create parameters with ``hk.get_parameter``, so they run inside
a model module (``phoenix_model`` or ``phoenix_retrieval_model``), which gives
them the release's parameter paths.
"""

from __future__ import annotations

import haiku as hk
import jax
import jax.numpy as jnp

from phoenix_lib.inputs import RecsysBatch, RecsysEmbeddings

# Projections take fan-in scaled weights; the two embedding tables, unit-norm rows.
PROJECTION_INIT = hk.initializers.VarianceScaling(1.0, "fan_in", "truncated_normal")
TABLE_INIT = hk.initializers.VarianceScaling(1.0, "fan_out", "truncated_normal")


def project(x: jax.Array, name: str, out_size: int) -> jax.Array:
    """``x [..., I] @ name [I, out_size]`` in float32, returned in ``x``'s dtype."""
    w = hk.get_parameter(name, [x.shape[-1], out_size], jnp.float32, PROJECTION_INIT)
    return jnp.dot(x.astype(jnp.float32), w).astype(x.dtype)


def action_embeddings(actions: jax.Array, emb_size: int, dtype) -> jax.Array:
    """Signed multi-hot actions ``[B, S, A]`` -> ``[B, S, D]``.

    ``2a - 1`` turns "did not" into -1 rather than 0, so every action the user
    skipped still moves the embedding. A row with no action at all (a padded
    history slot) is zeroed rather than given the "skipped everything" vector.
    """
    table = hk.get_parameter(
        "action_projection", [actions.shape[-1], emb_size], jnp.float32, TABLE_INIT
    )
    emb = jnp.dot((2 * actions - 1).astype(jnp.float32), table)
    return (emb * jnp.any(actions, axis=-1, keepdims=True)).astype(dtype)


def surface_embeddings(surface: jax.Array, vocab_size: int, emb_size: int, dtype) -> jax.Array:
    """Surface ids ``[...]`` -> ``[..., D]``: one-hot @ table (shared by history and candidates).

    As in the release, an id outside ``[0, vocab_size)`` has an all-zero one-hot
    and silently becomes a zero vector; :func:`phoenix_lib.validate_batch` refuses it.
    """
    table = hk.get_parameter(
        "product_surface_embedding_table", [vocab_size, emb_size], jnp.float32, TABLE_INIT
    )
    return jnp.dot(jax.nn.one_hot(surface, vocab_size), table).astype(dtype)


def _flat_hashes(rows: jax.Array) -> jax.Array:
    """``[..., H, D]`` -> ``[..., H * D]``: an entity's hash rows side by side."""
    return rows.reshape(*rows.shape[:-2], -1)


def user_reduce(user_hashes, user_embeddings, emb_size: int):
    """``[B, Hu, D]`` -> user position ``[B, 1, D]`` via ``proj_mat_1`` and its mask ``[B, 1]``."""
    x = _flat_hashes(user_embeddings)[:, None, :]  # [B, 1, Hu*D]
    return project(x, "proj_mat_1", emb_size), user_hashes[:, :1] != 0


def history_reduce(history_post_hashes, post_rows, author_rows, actions_emb, surface_emb):
    """concat(post [B,S,Hi*D], author [B,S,Ha*D], actions [B,S,D], surface [B,S,D]) @ proj_mat_3.

    Returns ``([B, S, D], mask [B, S])``.
    """
    x = jnp.concatenate(
        [_flat_hashes(post_rows), _flat_hashes(author_rows), actions_emb, surface_emb], -1
    )
    return project(x, "proj_mat_3", post_rows.shape[-1]), history_post_hashes[..., 0] != 0


def candidate_reduce(candidate_post_hashes, post_rows, author_rows, surface_emb):
    """concat(post [B,C,Hi*D], author [B,C,Ha*D], surface [B,C,D]) @ ``proj_mat_2``.

    Returns ``([B, C, D], mask [B, C])``.
    """
    x = jnp.concatenate([_flat_hashes(post_rows), _flat_hashes(author_rows), surface_emb], -1)
    return project(x, "proj_mat_2", post_rows.shape[-1]), candidate_post_hashes[..., 0] != 0


def build_context(batch: RecsysBatch, emb: RecsysEmbeddings, config) -> tuple[jax.Array, jax.Array]:
    """The user and history positions: ``([B, 1 + S, D], mask [B, 1 + S])`` (not yet cast)."""
    d, dtype = config.emb_size, config.fprop_dtype
    user, user_mask = user_reduce(batch.user_hashes, emb.user_embeddings, d)
    history, history_mask = history_reduce(
        batch.history_post_hashes,
        emb.history_post_embeddings,
        emb.history_author_embeddings,
        action_embeddings(batch.history_actions, d, dtype),
        surface_embeddings(
            batch.history_product_surface, config.product_surface_vocab_size, d, dtype
        ),
    )
    return jnp.concatenate([user, history], 1), jnp.concatenate([user_mask, history_mask], 1)


def build_sequence(batch: RecsysBatch, emb: RecsysEmbeddings, config):
    """``[user | history | candidates]`` for the ranker.

    Returns:
      ``(sequence [B, 1 + S + C, D] in fprop_dtype, padding mask [B, 1 + S + C],
      candidate_start_offset = 1 + S)``.
    """
    context, context_mask = build_context(batch, emb, config)
    surface = surface_embeddings(
        batch.candidate_product_surface,
        config.product_surface_vocab_size,
        config.emb_size,
        config.fprop_dtype,
    )
    candidates, candidate_mask = candidate_reduce(
        batch.candidate_post_hashes,
        emb.candidate_post_embeddings,
        emb.candidate_author_embeddings,
        surface,
    )
    sequence = jnp.concatenate([context, candidates], 1).astype(config.fprop_dtype)
    return sequence, jnp.concatenate([context_mask, candidate_mask], 1), context.shape[1]
