"""Sequence packing: several users' ``[user | history | candidates]`` segments in one row.

The book's batches pad every user's history to ``S`` slots, so a user with 3 items
costs as much as one with ``S``. X's August 2026 training code instead lays several
users' segments end to end in one long row and keeps them apart in attention: each
token attends only inside its own segment (the August code passes the segment
boundaries to a variable-length attention kernel). With right-anchored positions
(:func:`phoenix_lib.transformer.right_anchored_positions`) a segment's positions do
not depend on where it sits in the row, so packing changes no user's function.

This module plans and lays out the packing on the host (NumPy) and builds the mask:

* :func:`pack`: which row and offset each segment takes (next-fit, in batch order).
* :func:`packed_layout`: per row, each token's segment, kind and rotary position.
* :func:`packed_ranking_mask`: the attention mask of packed rows, candidates isolated.

Shapes: ``U`` users (segments), ``R`` rows of ``L`` tokens.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

USER, HISTORY, CANDIDATE = 1, 2, 3  # token kinds; 0 is padding


class Packing(NamedTuple):
    """Where each segment goes: ``row`` and ``offset`` int ``[U]``; ``num_rows`` rows of
    ``row_len`` tokens."""

    row: np.ndarray
    offset: np.ndarray
    num_rows: int
    row_len: int

    def padding_share(self, lengths) -> float:
        """Share of the ``num_rows * row_len`` token slots that hold no token."""
        return 1.0 - float(np.sum(lengths)) / (self.num_rows * self.row_len)


def pack(lengths, row_len: int) -> Packing:
    """Plan rows of ``row_len`` tokens for segments of ``lengths`` [U] tokens, next-fit:
    segments go in batch order, and a segment that does not fit in the current row
    starts the next one. (Sorting by length first would pack tighter; keeping the order
    keeps a batch's users in the rows they were drawn for, as X's code does.)

    Raises:
      ValueError: a segment longer than a row (named), or lengths that are not positive.
    """
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or not np.issubdtype(lengths.dtype, np.integer):
        raise TypeError(f"lengths must be a 1-D integer array, got {lengths.dtype} {lengths.shape}")
    if (lengths < 1).any():
        raise ValueError(f"every segment needs at least one token; segment {np.argmin(lengths)} "
                         f"has {lengths.min()}")  # fmt: skip
    if (lengths > row_len).any():
        user = int(np.argmax(lengths > row_len))
        raise ValueError(
            f"segment {user} has {lengths[user]} tokens, more than a row of {row_len}: "
            f"use longer rows or cut the history (no segment is split across rows)"
        )
    row, offset = np.zeros(lengths.size, np.int64), np.zeros(lengths.size, np.int64)
    current, used = 0, 0
    for u, n in enumerate(lengths):
        if used + n > row_len:
            current, used = current + 1, 0
        row[u], offset[u] = current, used
        used += n
    return Packing(row, offset, current + 1 if lengths.size else 0, row_len)


def segment_lengths(history_lengths, num_candidates: int) -> np.ndarray:
    """Tokens per user segment: one user token, the real history items, the candidates."""
    return 1 + np.asarray(history_lengths) + num_candidates


def packed_layout(packing: Packing, history_lengths, num_candidates: int, history_seq_len: int):
    """Token by token, what each packed row holds.

    Args:
      packing: from :func:`pack` on :func:`segment_lengths`.
      history_lengths: int ``[U]``, real history items per user (at most ``S``).
      num_candidates: ``C``, the same for every user.
      history_seq_len: ``S``, the padded history length the positions are anchored to.

    Returns:
      ``(segment [R, L], kind [R, L], positions [R, L], source [R, L, 2])``, int32:
      ``segment`` is 1 + the user's index in the batch (0 for padding); ``kind`` is
      ``USER``, ``HISTORY``, ``CANDIDATE`` or 0; ``positions`` are the right-anchored
      rotary positions the unpacked user would have (user 0, history ``S - L + 1 .. S``,
      candidates ``S + 1``); ``source`` is ``(user, position in the unpacked
      [1 + S + C] sequence)`` of each token, ``(-1, -1)`` for padding.
    """
    h = np.asarray(history_lengths)
    if (h > history_seq_len).any() or (h < 0).any():
        raise ValueError(f"history_lengths must be in [0, {history_seq_len}]")
    r, n = packing.num_rows, packing.row_len
    segment = np.zeros((r, n), np.int32)
    kind = np.zeros((r, n), np.int32)
    positions = np.zeros((r, n), np.int32)
    source = np.full((r, n, 2), -1, np.int32)
    s = history_seq_len
    for u, (row, start, length) in enumerate(zip(packing.row, packing.offset, h, strict=True)):
        own_kind = np.array([USER] + [HISTORY] * length + [CANDIDATE] * num_candidates)
        own_pos = np.concatenate([[0], np.arange(s - length + 1, s + 1), [s + 1] * num_candidates])
        own_src = np.concatenate([[0], np.arange(1, 1 + length),
                                  np.arange(1 + s, 1 + s + num_candidates)])  # fmt: skip
        span = slice(start, start + own_kind.size)
        segment[row, span], kind[row, span], positions[row, span] = u + 1, own_kind, own_pos
        source[row, span, 0], source[row, span, 1] = u, own_src
    return segment, kind, positions, source


def packed_ranking_mask(segment, kind, context_attention: str = "bidirectional"):
    """Attention mask ``[R, 1, L, L]`` (query, key) of packed rows: a token sees only its own
    segment; there, user and history see each other (both ways, or causally with
    ``context_attention="causal"``) and never a candidate, and a candidate sees the
    user, the history and itself. Padding sees nothing and is seen by nothing."""
    segment, kind = jnp.asarray(segment), jnp.asarray(kind)
    same = (segment[:, :, None] == segment[:, None, :]) & (segment[:, None, :] > 0)
    key_context = (kind[:, None, :] == USER) | (kind[:, None, :] == HISTORY)
    idx = jnp.arange(segment.shape[1])
    if context_attention == "causal":
        query_context = (kind[:, :, None] == USER) | (kind[:, :, None] == HISTORY)
        key_context &= ~query_context | (idx[None, :, None] >= idx[None, None, :])
    elif context_attention != "bidirectional":
        raise ValueError(f"context_attention must be 'causal' or 'bidirectional', got "
                         f"{context_attention!r}")  # fmt: skip
    itself = (idx[:, None] == idx[None, :])[None] & (kind[:, :, None] == CANDIDATE)
    return (same & (key_context | itself))[:, None]
