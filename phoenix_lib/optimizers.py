"""Row-sparse optimizers for hash-embedding tables, as production recommenders train them.

A batch reads a few thousand rows of a table with hundreds of thousands, but a dense
optimizer (optax's AdamW on the whole tree) reads and writes every row and its
moments at every step. Production embedding tables are trained row-sparse instead:
only the rows a batch touched are gathered, updated and scattered back. FBGEMM's
table-batched embeddings fuse this into the backward pass, and X's August 2026 training
code for Phoenix trains its tables with row-wise Adagrad, one accumulator per row.

* :func:`rowwise_adagrad`: ``acc += mean(g^2)`` over the row, ``row -= lr g / (sqrt(acc)
  + eps)``. One float of state per row, the production choice.
* :func:`lazy_adam`: Adam's moments and a step count *per row*, advanced only when
  the row is touched (TensorFlow's LazyAdam). The per-row count is what makes bias
  correction right for a row that was just reset (:func:`phoenix_lib.mpzch.reset_rows`).

A row optimizer is a pair of pure functions, ``init(table) -> state`` and
``update(table, state, rows, grads, step) -> (table, state)``, where ``rows`` [M] are
distinct row indices (out-of-range entries are ignored) and ``grads`` [M, D] their
summed gradients. :class:`TableSparse` pairs one with an optax transformation for the
model's dense weights; :func:`phoenix_lib.train.make_step` takes either kind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from phoenix_lib.inputs import RecsysBatch
from phoenix_lib.tables import HashTables, gather


class RowOptimizer(NamedTuple):
    """``init(table [N, D]) -> state``; ``update(table, state, rows [M], grads [M, D], step)``."""

    init: Callable
    update: Callable


class RowwiseAdagradState(NamedTuple):
    accumulator: jax.Array  # [N] float32: the running sum of each row's mean squared gradient


class LazyAdamState(NamedTuple):
    mu: jax.Array  # [N, D] first moment
    nu: jax.Array  # [N, D] second moment
    count: jax.Array  # [N] int32: how many updates each row has had (for bias correction)


def _schedule(learning_rate) -> Callable:
    return learning_rate if callable(learning_rate) else (lambda step: learning_rate)


def _rows_of(array: jax.Array, rows: jax.Array) -> jax.Array:
    return array.at[rows].get(mode="fill", fill_value=0)


def rowwise_adagrad(
    learning_rate, *, eps: float = 1e-8, half_life_steps: float | None = None
) -> RowOptimizer:
    """Row-wise Adagrad: one accumulator per row, ``acc += mean(g^2)``, ``row -= lr g /
    (sqrt(acc) + eps)``. ``learning_rate``: a float or an optax schedule of the global step.

    Equal to its dense formulation (every row, with zero gradients on untouched rows)
    because a zero gradient leaves both the row and its accumulator unchanged.

    ``half_life_steps``: X's August 2026 variant (5,000 there, with ``eps = 1e-10``): a
    touched row's accumulator is first multiplied by ``2^(-1 / half_life_steps)``, so old
    gradients fade and a row's step size can grow again. Untouched rows are not decayed,
    so the half-life counts the row's own updates, not global steps (X's ``lazy_decay``
    option, not built here, decays by the steps elapsed). ``None`` (default): plain
    Adagrad, whose step size only shrinks.
    """
    lr = _schedule(learning_rate)
    if half_life_steps is not None and half_life_steps <= 0:
        raise ValueError(f"half_life_steps must be positive, got {half_life_steps}")
    keep = 1.0 if half_life_steps is None else 2.0 ** (-1.0 / half_life_steps)

    def init(table):
        return RowwiseAdagradState(jnp.zeros(table.shape[:1], jnp.float32))

    def update(table, state, rows, grads, step):
        g = grads.astype(jnp.float32)
        acc = keep * _rows_of(state.accumulator, rows) + jnp.mean(g * g, axis=-1)
        new = _rows_of(table, rows) - lr(step) * g / (jnp.sqrt(acc)[:, None] + eps)
        return (
            table.at[rows].set(new.astype(table.dtype), mode="drop"),
            RowwiseAdagradState(state.accumulator.at[rows].set(acc, mode="drop")),
        )

    return RowOptimizer(init, update)


def lazy_adam(
    learning_rate, *, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> RowOptimizer:
    """Adam on the touched rows only, with moments and a step count per row.

    A row untouched for a while keeps its moments frozen (dense Adam would decay them
    and keep moving the row on momentum alone). Bias correction uses the row's own
    count, so a row reset to zero moments and count 0 takes a first step of size
    ``lr`` whatever the global step.
    """
    lr = _schedule(learning_rate)

    def init(table):
        n = table.shape[0]
        return LazyAdamState(
            jnp.zeros(table.shape, jnp.float32),
            jnp.zeros(table.shape, jnp.float32),
            jnp.zeros((n,), jnp.int32),
        )

    def update(table, state, rows, grads, step):
        g = grads.astype(jnp.float32)
        count = _rows_of(state.count, rows) + 1
        mu = b1 * _rows_of(state.mu, rows) + (1 - b1) * g
        nu = b2 * _rows_of(state.nu, rows) + (1 - b2) * g * g
        t = count.astype(jnp.float32)[:, None]
        mu_hat, nu_hat = mu / (1 - b1**t), nu / (1 - b2**t)
        new = _rows_of(table, rows) - lr(step) * mu_hat / (jnp.sqrt(nu_hat) + eps)
        return table.at[rows].set(new.astype(table.dtype), mode="drop"), LazyAdamState(
            state.mu.at[rows].set(mu, mode="drop"),
            state.nu.at[rows].set(nu, mode="drop"),
            state.count.at[rows].set(count, mode="drop"),
        )

    return RowOptimizer(init, update)


class TableSparse(NamedTuple):
    """Two optimizers: ``dense`` (optax) for the model's weights, ``tables`` (row-sparse)
    for every hash table. ``init(params)`` takes the training tree ``{"model", "tables"}``."""

    dense: optax.GradientTransformation
    tables: RowOptimizer

    def init(self, params) -> TableSparseState:
        return TableSparseState(
            self.dense.init(params["model"]),
            HashTables(*(self.tables.init(t) for t in params["tables"])),
        )


class TableSparseState(NamedTuple):
    dense: optax.OptState
    tables: HashTables  # one row optimizer state per table


def book_optimizer(steps: int) -> TableSparse:
    """The recipe every training chapter uses for a run of ``steps`` steps: row-wise
    Adagrad (learning rate 0.1) for the hash tables; for the model's weights AdamW
    (weight decay 1e-4) after global-norm clipping at 1, its learning rate warming up
    linearly to 1e-2 over ``min(50, steps // 4)`` steps and decaying on a cosine to 1e-3.
    """
    if steps < 4:
        raise ValueError(f"steps must be at least 4, got {steps}")
    schedule = optax.warmup_cosine_decay_schedule(0.0, 1e-2, min(50, steps // 4), steps, 1e-3)
    return TableSparse(
        dense=optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=1e-4)),
        tables=rowwise_adagrad(0.1),
    )


def local_tables(tables: HashTables, batch: RecsysBatch) -> tuple[HashTables, RecsysBatch, tuple]:
    """The rows a batch touches, as small tables, and the batch re-indexed into them.

    For each table, the batch's bucket indices (history and candidates share the post
    and author tables) are made distinct (``jnp.unique`` at a fixed size, so one
    program serves every batch). Bucket 0 always becomes local row 0, which gathers as
    zeros, so padding and the masks derived from it are unchanged; a bucket outside
    the table gathers as NaNs, as in :func:`phoenix_lib.tables.gather`.

    Returns:
      ``(small_tables, local_batch, rows)``: ``small_tables`` has ``[M_t, D]`` per table,
      ``rows`` is each table's ``[M_t]`` global row per local row, with entries that
      must not be updated (row 0, fill, out of range) set to the table's size.
    """

    def localize(table, *hashes):
        n = table.shape[0]
        flat = jnp.concatenate([jnp.zeros(1, jnp.int32)] + [h.reshape(-1) for h in hashes])
        flat = jnp.where(flat < 0, n, flat)  # negatives gather as NaN, as in `gather`
        unique, inverse = jnp.unique(
            flat, size=flat.shape[0], fill_value=n + 1, return_inverse=True
        )
        inverse = inverse.reshape(-1)[1:]
        local, start = [], 0
        for h in hashes:
            local.append(inverse[start : start + h.size].reshape(h.shape).astype(h.dtype))
            start += h.size
        rows = jnp.where((unique == 0) | (unique >= n), n, unique)
        return gather(table, unique), local, rows

    user, (uh,), user_rows = localize(tables.user, batch.user_hashes)
    post, (hp, cp), post_rows = localize(
        tables.post, batch.history_post_hashes, batch.candidate_post_hashes
    )
    author, (ha, ca), author_rows = localize(
        tables.author, batch.history_author_hashes, batch.candidate_author_hashes
    )
    local_batch = batch._replace(
        user_hashes=uh,
        history_post_hashes=hp,
        candidate_post_hashes=cp,
        history_author_hashes=ha,
        candidate_author_hashes=ca,
    )
    return (
        HashTables(user, post, author),
        local_batch,
        HashTables(user_rows, post_rows, author_rows),
    )
