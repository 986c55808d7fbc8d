"""Training the Phoenix models with optax: losses, jitted steps, a progress-bar loop.

Parameters are one pytree ``{"model": haiku params, "tables": HashTables}``, so a
step updates the model and the hash tables together. Steps are pure functions
of ``(TrainState, batch...)``; with deterministic batches (the world's sessions
are seeded by step) a run resumed from a checkpoint is bit-identical to an
uninterrupted one.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from phoenix_lib import mpzch
from phoenix_lib.inputs import RecsysBatch, _check_shape, validate_batch
from phoenix_lib.optimizers import TableSparse, TableSparseState, local_tables
from phoenix_lib.ranker import make_ranker
from phoenix_lib.retrieval import make_retriever
from phoenix_lib.tables import HashTables, check_hashes_fit, embed, init_tables


class TrainState(NamedTuple):
    params: dict  # {"model": haiku params, "tables": HashTables}
    opt_state: optax.OptState
    step: jax.Array  # int32 []


def init_state(key, model, batch: RecsysBatch, optimizer, *, num_buckets, emb_size) -> TrainState:
    """Fresh tables (``num_buckets`` = (users, posts, authors)) and model parameters."""
    table_key, model_key = jax.random.split(key)
    nu, npost, na = num_buckets
    tables = init_tables(
        table_key, num_user_buckets=nu, num_post_buckets=npost, num_author_buckets=na, dim=emb_size
    )
    params = {"model": model.init(model_key, batch, embed(tables, batch)), "tables": tables}
    return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32))


def forward(model, params, batch: RecsysBatch):
    """``model``'s output on ``batch`` with ``params = {"model", "tables"}``: the tables embed
    the batch's hashes, the model reads the batch and those embeddings. Not jitted; wrap
    it in ``jax.jit`` (as :func:`make_predict` does) to compile it once per batch shape."""
    return model.apply(params["model"], batch, embed(params["tables"], batch))


def make_predict(ranker) -> Callable:
    """A jitted ``predict(params, batch)``: the ranker's action probabilities
    ``sigmoid(logits)`` ``[B, C, num_actions]``, compiled once per batch shape."""
    return jax.jit(lambda params, batch: jax.nn.sigmoid(forward(ranker, params, batch)))


def ranker_loss(logits, labels, mask) -> jax.Array:
    """Mean binary cross-entropy over real candidates and all actions.

    Args:
      logits: ``[B, C, A]``. labels: 0/1 ``[B, C, A]``. mask: bool ``[B, C]``.
    """
    bce = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), labels)
    weights = mask.astype(jnp.float32)[..., None]
    return jnp.sum(bce * weights) / jnp.maximum(jnp.sum(weights) * labels.shape[-1], 1.0)


def ranker_objective(config, *, attention: str = "isolated") -> Callable:
    """``loss(params, batch, labels, mask)`` for the ranker built from ``config``: labels
    float ``[B, C, A]`` (A = ``config.num_actions``), mask bool ``[B, C]``.

    ``loss.check_inputs`` validates concrete inputs on the host (:func:`make_step` runs it
    before every step): the batch (:func:`phoenix_lib.validate_batch`), its buckets
    against the tables, the labels' and mask's shapes.
    """
    model = make_ranker(config, attention=attention)

    def loss(params, batch, labels, mask):
        return ranker_loss(forward(model, params, batch), labels, mask)

    def check_inputs(params, batch, labels, mask):
        _check_batch(config, params, batch)
        b, c = batch.candidate_post_hashes.shape[:2]
        _check_array("labels", labels, (b, c, config.num_actions), "f")
        _check_array("mask", mask, (b, c), "b")

    loss.check_inputs = check_inputs
    return loss


def _check_batch(config, params, batch) -> None:
    validate_batch(config, batch)
    check_hashes_fit(params["tables"], batch)


def _check_array(name: str, value, shape, kind: str) -> None:
    """Raise unless ``value`` has ``shape`` and a dtype of ``kind`` ("f", "b" or "i")."""
    _check_shape(name, value, shape)
    if jnp.dtype(value.dtype).kind not in {"f": "f", "b": "b", "i": "iu"}[kind]:
        raise TypeError(
            f"{name} must be {dict(f='float', b='bool', i='integer')[kind]}, got {value.dtype}"
        )


def retrieval_loss(user, candidates, log_q, item, valid, temperature: float) -> jax.Array:
    """In-batch sampled softmax with the log-Q correction.

    Row ``i`` scores its own positive against every other row's positive. Those
    negatives are drawn in proportion to how often items appear as positives, so
    popular items are over-sampled negatives; subtracting ``log q_j`` (the
    item's sampling log-probability) from column ``j`` removes that bias
    (Yi et al., 2019). Columns holding the same item as the row's positive are
    not negatives and are masked.

    Args:
      user: ``[B, D]``. candidates: ``[B, D]`` (row i's positive). log_q: ``[B]``.
      item: int ``[B]`` item identity per row. valid: bool ``[B]``.
    """
    logits = user @ candidates.T / temperature - log_q[None, :]
    own = jnp.eye(item.shape[0], dtype=bool)
    not_negative = (item[:, None] == item[None, :]) | ~valid[None, :]
    logits = jnp.where(not_negative & ~own, -jnp.inf, logits)
    per_row = -jnp.diagonal(jax.nn.log_softmax(logits, axis=1))
    per_row = jnp.where(valid, per_row, 0.0)  # an invalid row's own column is masked
    return jnp.sum(per_row) / jnp.maximum(jnp.sum(valid), 1)


def retrieval_objective(config, *, temperature: float = 0.05) -> Callable:
    """``loss(params, batch, log_q, item, valid)``: each user's one candidate is its positive;
    log_q float ``[B]``, item int ``[B]``, valid bool ``[B]``. ``loss.check_inputs`` as for
    :func:`ranker_objective`."""
    model = make_retriever(config)

    def loss(params, batch, log_q, item, valid):
        out = forward(model, params, batch)
        return retrieval_loss(
            out.user_representation,
            out.candidate_representation[:, 0],
            log_q,
            item,
            valid,
            temperature,
        )

    def check_inputs(params, batch, log_q, item, valid):
        _check_batch(config, params, batch)
        b = batch.candidate_post_hashes.shape[0]
        _check_array("log_q", log_q, (b,), "f")
        _check_array("item", item, (b,), "i")
        _check_array("valid", valid, (b,), "b")

    loss.check_inputs = check_inputs
    return loss


def reset_table_rows(key: jax.Array, state: TrainState, table: str, rows) -> TrainState:
    """Re-draw ``rows`` of one hash table and zero its per-row optimizer state there.

    ``table`` is ``"user"``, ``"post"`` or ``"author"``; ``rows`` int ``[...]`` are rows of
    that table, ``-1`` ignored: behind an MPZCH table made with ``padding_row=True``, the
    ``evicted`` rows that :func:`phoenix_lib.mpzch.write` returns. The optimizer state is found by
    the table's name wherever the state mirrors the tables (optax's moments of the whole
    tree, or :class:`~phoenix_lib.optimizers.TableSparse`'s per-table state), so another
    table of the same size is never touched. See :func:`phoenix_lib.mpzch.reset_rows`.
    """
    if table not in HashTables._fields:
        raise ValueError(f"table must be one of {HashTables._fields}, got {table!r}")
    tables, rows = state.params["tables"], jnp.asarray(rows)
    new, _ = mpzch.reset_rows(key, getattr(tables, table), rows)

    def this_table(node):
        if not isinstance(node, HashTables):
            return node
        part = mpzch.zero_row_state(getattr(node, table), rows, new.shape[0])
        return node._replace(**{table: part})

    opt_state = jax.tree_util.tree_map(
        this_table, state.opt_state, is_leaf=lambda node: isinstance(node, HashTables)
    )
    params = {**state.params, "tables": tables._replace(**{table: new})}
    return state._replace(params=params, opt_state=opt_state)


def make_step(loss: Callable, optimizer, *, donate: bool = False) -> Callable:
    """A jitted ``step(state, batch, *rest) -> (state, loss)``: one optimizer step on ``loss``.

    ``optimizer`` is an optax transformation of the whole tree (dense: every table row
    and its moments are read and written at every step), or a
    :class:`phoenix_lib.optimizers.TableSparse`: optax for the model's weights and a
    row-sparse optimizer that gathers, updates and scatters back only the table rows
    the batch touches (:func:`phoenix_lib.optimizers.local_tables`).

    Before each call the step runs ``loss.check_inputs(params, batch, *rest)`` on the host
    when the loss has one (the book's objectives do) and the batch holds values (not
    tracers): a bad batch raises a clear error instead of training on NaNs or broadcasts.

    ``donate=True`` hands the state's buffers to the step (``donate_argnums``): XLA
    writes the new tables into the old ones instead of allocating a copy of every table
    at every step, and the state passed in is deleted. Use it in a loop that keeps only
    the newest state, such as :func:`fit`; a state kept for later (a snapshot, a
    starting point for a second run) must not be passed to a donating step.
    """
    jit = functools.partial(jax.jit, donate_argnums=0 if donate else ())
    if isinstance(optimizer, TableSparse):
        jitted = _sparse_step(loss, optimizer, jit)
    else:

        @jit
        def jitted(state: TrainState, *batch):
            value, grads = jax.value_and_grad(loss)(state.params, *batch)
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            return TrainState(params, opt_state, state.step + 1), value

    check = getattr(loss, "check_inputs", None)
    if check is None:
        return jitted

    @functools.wraps(jitted)
    def step(state: TrainState, *batch):
        if not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(batch)):
            check(state.params, *batch)
        return jitted(state, *batch)

    return step


def _sparse_step(loss: Callable, optimizer: TableSparse, jit: Callable) -> Callable:
    @jit
    def step(state: TrainState, batch: RecsysBatch, *rest):
        small, local_batch, rows = local_tables(state.params["tables"], batch)

        def local_loss(model, small):
            return loss({"model": model, "tables": small}, local_batch, *rest)

        value, (g_model, g_small) = jax.value_and_grad(local_loss, argnums=(0, 1))(
            state.params["model"], small
        )
        opt = state.opt_state
        updates, dense_state = optimizer.dense.update(g_model, opt.dense, state.params["model"])
        updated = [
            optimizer.tables.update(table, table_state, r, g, state.step)
            for table, table_state, r, g in zip(
                state.params["tables"], opt.tables, rows, g_small, strict=True
            )
        ]
        params = {
            "model": optax.apply_updates(state.params["model"], updates),
            "tables": HashTables(*(t for t, _ in updated)),
        }
        opt_state = TableSparseState(dense_state, HashTables(*(s for _, s in updated)))
        return TrainState(params, opt_state, state.step + 1), value

    return step


def fit(
    step: Callable,
    state: TrainState,
    batches: Callable[[int], Iterable],
    num_steps: int,
    *,
    desc: str = "training",
    progress: bool = True,
):
    """Run ``num_steps`` steps from ``state.step`` on; ``batches(i)`` gives step ``i``'s arguments.

    Returns ``(state, losses [num_steps])``. A tqdm bar on stdout shows progress. The
    loop waits for a step's result only when the bar shows the loss (every 50 steps),
    so making the next batch in NumPy overlaps the running step.
    """
    start = int(state.step)
    losses = []
    bar = tqdm(
        range(num_steps),
        desc=desc,
        file=sys.stdout,
        disable=not progress,
        mininterval=2.0,
        ascii=True,
    )
    for i in bar:
        state, loss = step(state, *batches(start + i))
        losses.append(loss)
        if i % 50 == 0:
            bar.set_postfix(loss=f"{float(loss):.4f}")
    return state, np.array(losses, np.float32).reshape(num_steps)
