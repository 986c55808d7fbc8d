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

from phoenix_lib.config import POST_AGE_MAX_MINUTES, NormConfig
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
    return _one_hot_rows("product_surface_embedding_table", surface, vocab_size, emb_size, dtype)


def _one_hot_rows(name: str, ids: jax.Array, vocab_size: int, emb_size: int, dtype) -> jax.Array:
    """Ids ``[...]`` -> rows ``[..., D]`` of the table ``name`` [vocab_size, D]: one-hot @ table."""
    table = hk.get_parameter(name, [vocab_size, emb_size], jnp.float32, TABLE_INIT)
    return jnp.dot(jax.nn.one_hot(ids, vocab_size), table).astype(dtype)


def post_age_bucket(impr_ts: jax.Array, creation_ts: jax.Array, granularity_mins: int = 60):
    """May 2026's post-age bucket of each candidate: int32 ``[B, C]`` from Unix seconds.

    Age in whole minutes ``a = (impr_ts - creation_ts) // 60``; bucket ``a // g + 1``,
    clipped to the overflow bucket ``4800 // g + 1``; bucket 0 (unknown) when the age is
    negative or either timestamp is 0. With ``g = 60``: 59 min -> 1, 60 min -> 2,
    4,799 min -> 80, 4,800 min and older -> 81.
    """
    overflow = POST_AGE_MAX_MINUTES // granularity_mins + 1
    minutes = (impr_ts - creation_ts) // 60
    bucket = jnp.clip(minutes // granularity_mins + 1, 0, overflow)
    unknown = (minutes < 0) | (impr_ts == 0) | (creation_ts == 0)
    return jnp.where(unknown, 0, bucket).astype(jnp.int32)


def normalize_continuous(values: jax.Array, norm: NormConfig) -> jax.Array:
    """Continuous values (dwell seconds) scaled to ``[0, 1]`` as :class:`NormConfig` says."""
    clipped = jnp.clip(values, 0.0, norm.norm_scale)
    if norm.use_log:
        return jnp.log1p(clipped) / jnp.log1p(norm.norm_scale)
    return clipped / norm.norm_scale


def dwell_embeddings(continuous_actions, shape, config) -> jax.Array:
    """May 2026's history dwell feature ``[B, S, D]``: the dwell value (column 1 of
    ``continuous_actions`` [B, S, 8], zeros when absent) normalised, then
    ``gelu(v @ history_dwell_time_proj1) @ history_dwell_time_proj2``. ``gelu(0) = 0``, so a
    missing dwell contributes exactly zero."""
    dwell = (
        jnp.zeros(shape, jnp.float32) if continuous_actions is None else continuous_actions[..., 1]
    )
    v = normalize_continuous(dwell, config.continuous_action_config.norm_config)[..., None]
    hidden, d = config.continuous_action_hidden_dim, config.emb_size
    w1 = hk.get_parameter("history_dwell_time_proj1", [1, hidden], jnp.float32, PROJECTION_INIT)
    w2 = hk.get_parameter("history_dwell_time_proj2", [hidden, d], jnp.float32, PROJECTION_INIT)
    h = jax.nn.gelu(jnp.dot(v.astype(jnp.float32), w1))
    return jnp.dot(h, w2).astype(config.fprop_dtype)


def _flat_hashes(rows: jax.Array) -> jax.Array:
    """``[..., H, D]`` -> ``[..., H * D]``: an entity's hash rows side by side."""
    return rows.reshape(*rows.shape[:-2], -1)


def user_reduce(user_hashes, user_embeddings, emb_size: int, ip_embeddings=None):
    """``[B, Hu, D]`` -> user position ``[B, 1, D]`` via ``proj_mat_1`` and its mask ``[B, 1]``.

    May 2026: the rows of the user's IP address ``ip_embeddings`` [B, Hip, D], when given,
    are summed and added to the projected user position.
    """
    x = _flat_hashes(user_embeddings)[:, None, :]  # [B, 1, Hu*D]
    user = project(x, "proj_mat_1", emb_size)
    if ip_embeddings is not None and ip_embeddings.shape[1] > 0:
        user = user + jnp.sum(ip_embeddings, axis=1, keepdims=True)
    return user, user_hashes[:, :1] != 0


def history_reduce(history_post_hashes, post_rows, author_rows, actions_emb, surface_emb, *extra):
    """concat(post [B,S,Hi*D], author [B,S,Ha*D], actions [B,S,D], surface [B,S,D], *extra)
    @ ``proj_mat_3``; ``extra`` are May 2026's further ``[B, S, D]`` features (dwell).

    Returns ``([B, S, D], mask [B, S])``.
    """
    x = jnp.concatenate(
        [_flat_hashes(post_rows), _flat_hashes(author_rows), actions_emb, surface_emb, *extra], -1
    )
    return project(x, "proj_mat_3", post_rows.shape[-1]), history_post_hashes[..., 0] != 0


def candidate_reduce(candidate_post_hashes, post_rows, author_rows, surface_emb, *extra):
    """concat(post [B,C,Hi*D], author [B,C,Ha*D], surface [B,C,D], *extra) @ ``proj_mat_2``;
    ``extra`` are May 2026's further ``[B, C, D]`` features (post age).

    Returns ``([B, C, D], mask [B, C])``.
    """
    x = jnp.concatenate(
        [_flat_hashes(post_rows), _flat_hashes(author_rows), surface_emb, *extra], -1
    )
    return project(x, "proj_mat_2", post_rows.shape[-1]), candidate_post_hashes[..., 0] != 0


def build_context(
    batch: RecsysBatch, emb: RecsysEmbeddings, config, release: str = "2026-01"
) -> tuple[jax.Array, jax.Array]:
    """The user and history positions: ``([B, 1 + S, D], mask [B, 1 + S])`` (not yet cast).

    ``release="2026-05"`` adds May's IP rows to the user and its dwell feature to the history.
    """
    d, dtype = config.emb_size, config.fprop_dtype
    may = release == "2026-05"
    ip = emb.user_ip_embeddings if may and config.hash_config.num_ip_hashes > 0 else None
    user, user_mask = user_reduce(batch.user_hashes, emb.user_embeddings, d, ip)
    extra = []
    if may:
        shape = batch.history_product_surface.shape  # [B, S]
        extra = [dwell_embeddings(batch.history_continuous_actions, shape, config)]
    history, history_mask = history_reduce(
        batch.history_post_hashes,
        emb.history_post_embeddings,
        emb.history_author_embeddings,
        action_embeddings(batch.history_actions, d, dtype),
        surface_embeddings(
            batch.history_product_surface, config.product_surface_vocab_size, d, dtype
        ),
        *extra,
    )
    return jnp.concatenate([user, history], 1), jnp.concatenate([user_mask, history_mask], 1)


def build_sequence(batch: RecsysBatch, emb: RecsysEmbeddings, config, release: str = "2026-01"):
    """``[user | history | candidates]`` for the ranker of ``release``; May 2026 adds each
    candidate's post-age row (bucket 0, a learned row, when the timestamps are absent).

    Returns:
      ``(sequence [B, 1 + S + C, D] in fprop_dtype, padding mask [B, 1 + S + C],
      candidate_start_offset = 1 + S)``.
    """
    context, context_mask = build_context(batch, emb, config, release)
    d, dtype = config.emb_size, config.fprop_dtype
    surface = surface_embeddings(
        batch.candidate_product_surface, config.product_surface_vocab_size, d, dtype
    )
    extra = []
    if release == "2026-05":
        if batch.candidate_impr_ts is None or batch.candidate_post_creation_ts is None:
            age = jnp.zeros(batch.candidate_product_surface.shape, jnp.int32)
        else:
            age = post_age_bucket(batch.candidate_impr_ts, batch.candidate_post_creation_ts,
                                  config.post_age_granularity_mins)  # fmt: skip
        extra = [_one_hot_rows("post_age_embedding_table", age, config.post_age_vocab_size, d,
                               dtype)]  # fmt: skip
    candidates, candidate_mask = candidate_reduce(
        batch.candidate_post_hashes,
        emb.candidate_post_embeddings,
        emb.candidate_author_embeddings,
        surface,
        *extra,
    )
    sequence = jnp.concatenate([context, candidates], 1).astype(config.fprop_dtype)
    return sequence, jnp.concatenate([context_mask, candidate_mask], 1), context.shape[1]
