"""The two-stage pipeline's glue: retrieval among the posts that exist, ranking in the
ranker's own candidate slots.

* :func:`top_existing`: each user's top-k corpus rows by dot product among the posts
  created by that user's hour (a growing corpus, searched as of the request's time).
* :func:`in_slots` and :func:`from_slots`: a ranker with candidate isolation still gives
  candidate ``c`` the rotary position ``N + c`` (Chapter 3), so a model trained on ``C``
  candidates has never seen slots ``C, C + 1, ...``. To score ``K > C`` posts, cut them
  into requests of ``C`` candidates that repeat the user's history, score those, and put
  the scores back in order.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from phoenix_lib.world import Session


@functools.partial(jax.jit, static_argnames="k")
def top_existing(user: jax.Array, corpus: jax.Array, created: jax.Array, hours: jax.Array, k: int):
    """Indices ``[B, k]``, best first, of the corpus rows with the largest ``user . row`` among
    those with ``created <= hours[b]``.

    Args:
      user: ``[B, D]``. corpus: ``[P, D]``. created: ``[P]`` each row's creation hour.
      hours: ``[B]`` each user's hour. k: at most the number of rows that exist for every
        user (rows that do not exist score ``-inf`` and would come last).
    """
    exists = created[None, :] <= hours[:, None]  # [B, P]
    return jax.lax.top_k(jnp.where(exists, user @ corpus.T, -jnp.inf), k)[1]


def in_slots(session: Session, posts: np.ndarray, num_slots: int) -> Session:
    """``session``'s users, each with ``posts[b]`` ([B, K]) as candidates cut into
    ``n = ceil(K / num_slots)`` requests of ``num_slots``: a session of ``B * n`` rows, row
    ``b * n + j`` holding user ``b``'s history and posts ``j * num_slots ...``. The last
    request is filled up with the user's first posts (:func:`from_slots` drops them).
    Candidate surfaces are 0; probabilities and labels are not carried (zeros)."""
    posts = np.asarray(posts)
    b, k = posts.shape
    if b != session.users.shape[0] or num_slots < 1:
        raise ValueError(
            f"posts must be [B, K] for the session's B = {session.users.shape[0]} and "
            f"num_slots positive, got {posts.shape} and {num_slots}"
        )
    n = -(-k // num_slots)
    filled = np.concatenate([posts, posts[:, : n * num_slots - k]], axis=1)
    filled = filled.reshape(b * n, num_slots)
    rows = jax.tree.map(lambda x: np.repeat(x, n, axis=0), session)
    zeros = np.zeros((b * n, num_slots, *session.labels.shape[2:]), np.float32)
    return rows._replace(
        candidate_posts=filled,
        candidate_surface=np.zeros_like(filled),
        probabilities=zeros,
        labels=zeros,
    )


def from_slots(values, num_posts: int) -> np.ndarray:
    """Undo :func:`in_slots` on per-candidate values ``[B * n, num_slots, ...]``: ``[B, K, ...]``
    for ``K = num_posts``."""
    values = np.asarray(values)
    rows, slots = values.shape[:2]
    n = -(-num_posts // slots)
    if rows % n:
        raise ValueError(f"{rows} rows are not a whole number of users of {n} requests")
    return values.reshape(rows // n, n * slots, *values.shape[2:])[:, :num_posts]
