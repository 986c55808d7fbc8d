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
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from phoenix_lib import mpzch, sharding
from phoenix_lib.config import ACTIONS, DEFAULT_RELEASE, NEGATIVE_FEEDBACK, ContinuousActionConfig
from phoenix_lib.inputs import RecsysBatch, RecsysEmbeddings, _check_shape, validate_batch
from phoenix_lib.optimizers import TableSparse, TableSparseState, local_tables
from phoenix_lib.ranker import RankerOutput, make_ranker
from phoenix_lib.reduce import normalize_continuous
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


def param_shapes(model, batch: RecsysBatch, *, num_buckets, emb_size: int):
    """The shapes and dtypes of ``model``'s parameters for tables of ``num_buckets`` rows
    (users, posts, authors), computed without computing a parameter (``jax.eval_shape``)."""
    nu, npost, na = num_buckets
    tables = jax.eval_shape(
        lambda: init_tables(jax.random.key(0), num_user_buckets=nu, num_post_buckets=npost,
                            num_author_buckets=na, dim=emb_size)
    )  # fmt: skip
    embeddings = jax.eval_shape(embed, tables, batch)
    return jax.eval_shape(model.init, jax.random.key(0), batch, embeddings)


def forward(model, params, batch: RecsysBatch):
    """``model``'s output on ``batch`` with ``params = {"model", "tables"}``: the tables embed
    the batch's hashes, the model reads the batch and those embeddings. ``params["tables"]``
    may also be the embeddings already gathered (a ``RecsysEmbeddings``), as the sharded
    step (:func:`make_sharded_step`) gathers them. Not jitted; wrap it in ``jax.jit`` (as
    :func:`make_predict` does) to compile it once per batch shape."""
    tables = params["tables"]
    embeddings = tables if isinstance(tables, RecsysEmbeddings) else embed(tables, batch)
    return model.apply(params["model"], batch, embeddings)


def make_predict(ranker) -> Callable:
    """A jitted ``predict(params, batch)``: the ranker's action probabilities
    ``sigmoid(logits)`` ``[B, C, num_actions]``, compiled once per batch shape. For a May
    ranker these are its output's ``logits`` through the sigmoid; its continuous
    predictions are in :func:`forward`'s output."""

    def predict(params, batch):
        out = forward(ranker, params, batch)
        return jax.nn.sigmoid(out.logits if isinstance(out, RankerOutput) else out)

    return jax.jit(predict)


def ranker_loss(logits, labels, mask, weights=None) -> jax.Array:
    """Mean binary cross-entropy over real candidates and all actions.

    Args:
      logits: ``[B, C, A]``. labels: 0/1 ``[B, C, A]``. mask: bool ``[B, C]``.
      weights: optional ``[B, C, A]`` per-label weights (0 leaves a label out): the
        mean is over the weights' sum.
    """
    bce = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), labels)
    w = jnp.broadcast_to(mask.astype(jnp.float32)[..., None], bce.shape)
    if weights is not None:
        w = w * weights
    return jnp.sum(bce * w) / jnp.maximum(jnp.sum(w), 1.0)


def negative_feedback_weights(sampled_negative, num_actions: int) -> jax.Array:
    """Label weights ``[B, C, A]``: 0 for the negative-feedback heads
    (:data:`~phoenix_lib.config.NEGATIVE_FEEDBACK`) of candidate slots that are sampled
    negatives (bool ``[B, C]``), 1 elsewhere. A post the user never saw cannot have been
    reported or muted, so its 0 labels there say nothing (August 2026's rule, declared by
    May's ``mask_neg_feedback_on_negatives``)."""
    heads = np.isin(np.arange(num_actions), [ACTIONS.index(a) for a in NEGATIVE_FEEDBACK])
    return 1.0 - (sampled_negative[..., None] & heads).astype(jnp.float32)


def continuous_loss(preds, targets, mask, config: ContinuousActionConfig) -> jax.Array:
    """Loss of the continuous heads, mean over real candidates and the heads.

    ``targets`` (raw units, e.g. dwell seconds) are normalised to ``y`` in ``[0, 1]``
    (:class:`~phoenix_lib.config.NormConfig`). ``"mae"``: ``|p - y|``. ``"tweedie"``
    (power ``r`` in (1, 2)): the Tweedie negative log-likelihood of mean ``p`` up to
    terms free of ``p``, ``-y p^(1-r) / (1-r) + p^(2-r) / (2-r)``, minimised at
    ``p = y``; ``p`` is floored at 1e-6 (a sigmoid can round to 0).

    Args:
      preds: ``[B, C, K]`` in (0, 1) (the May ranker's ``continuous_preds``).
      targets: float ``[B, C, K]``. mask: bool ``[B, C]``.
    """
    y = normalize_continuous(targets.astype(jnp.float32), config.norm_config)
    p = preds.astype(jnp.float32)
    if config.loss_type == "mae":
        per = jnp.abs(p - y)
    else:
        r, p = config.tweedie_power, jnp.maximum(p, 1e-6)
        per = -y * p ** (1 - r) / (1 - r) + p ** (2 - r) / (2 - r)
    w = mask.astype(jnp.float32)[..., None]
    return jnp.sum(per * w) / jnp.maximum(jnp.sum(w) * per.shape[-1], 1.0)


def ranker_objective(
    config, *, attention: str = "isolated", release: str = DEFAULT_RELEASE
) -> Callable:
    """``loss(params, batch, labels, mask, continuous_targets=None, sampled_negative=None)``
    for the ranker of ``release`` built from ``config``: labels float ``[B, C, A]``
    (A = ``config.num_actions``), mask bool ``[B, C]``.

    January: :func:`ranker_loss`. May adds, as August's code defines them:
    ``loss_weight *`` :func:`continuous_loss` of the continuous heads against
    ``continuous_targets`` float ``[B, C, num_continuous_actions]`` (raw units), and,
    with ``mask_neg_feedback_on_negatives``, no negative-feedback loss on the slots
    flagged by ``sampled_negative`` bool ``[B, C]`` (:func:`negative_feedback_weights`).

    ``loss.check_inputs`` validates concrete inputs on the host (:func:`make_step` runs it
    before every step): the batch (:func:`phoenix_lib.validate_batch`), its buckets
    against the tables, the labels', mask's and May inputs' shapes, and that each May
    input has the release and setting that use it.
    """
    model = make_ranker(config, attention=attention, release=release)
    cont = config.continuous_action_config

    def loss(params, batch, labels, mask, continuous_targets=None, sampled_negative=None):
        out = forward(model, params, batch)
        if release == "2026-01":
            return ranker_loss(out, labels, mask)
        weights = None
        if sampled_negative is not None and config.mask_neg_feedback_on_negatives:
            weights = negative_feedback_weights(sampled_negative, config.num_actions)
        value = ranker_loss(out.logits, labels, mask, weights)
        if continuous_targets is not None:
            value = value + cont.loss_weight * continuous_loss(
                out.continuous_preds, continuous_targets, mask, cont
            )
        return value

    def check_inputs(params, batch, labels, mask, continuous_targets=None, sampled_negative=None):
        _check_batch(config, params, batch)
        b, c = batch.candidate_post_hashes.shape[:2]
        _check_array("labels", labels, (b, c, config.num_actions), "f")
        _check_array("mask", mask, (b, c), "b")
        may_inputs = {
            "continuous_targets": continuous_targets,
            "sampled_negative": sampled_negative,
        }
        for name, value in may_inputs.items():
            if value is not None and release == "2026-01":
                raise ValueError(f"{name} is a May 2026 input: use release='2026-05'")
        if continuous_targets is not None:
            k = config.num_continuous_actions
            _check_array("continuous_targets", continuous_targets, (b, c, k), "f")
            if cont.loss_weight == 0:
                raise ValueError(
                    "continuous_targets given, but continuous_action_config.loss_weight is 0 "
                    "(the continuous heads would not train): set a positive weight"
                )
        if sampled_negative is not None:
            _check_array("sampled_negative", sampled_negative, (b, c), "b")
            if config.mask_neg_feedback_on_negatives and config.num_actions != len(ACTIONS):
                raise ValueError(
                    f"sampled_negative masks the heads {NEGATIVE_FEEDBACK} by their place in "
                    f"the release's {len(ACTIONS)} actions; this config has "
                    f"num_actions={config.num_actions}"
                )

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


def retrieval_objective(
    config,
    *,
    temperature: float = 0.05,
    release: str = DEFAULT_RELEASE,
    every_prefix: bool = False,
    history: str = "attention",
    readout: str = "mean",
) -> Callable:
    """``loss(params, batch, log_q, item, valid)``: each user's one candidate is its positive;
    log_q float ``[B]``, item int ``[B]``, valid bool ``[B]``. ``loss.check_inputs`` as for
    :func:`ranker_objective`; ``release`` as for :func:`phoenix_lib.make_retriever`.

    ``every_prefix=True`` trains every prefix of each history at once: the batch has
    ``C = 1 + S`` candidates, candidate ``i`` the positive of the user with the first ``i``
    history items (``make_retriever(..., every_prefix=True)``); log_q, item and valid are
    ``[B, 1 + S]``, and all ``B (1 + S)`` positives share one in-batch softmax. ``history``
    and ``readout`` as for :func:`phoenix_lib.make_retriever`."""
    model = make_retriever(
        config, release, every_prefix=every_prefix, history=history, readout=readout
    )

    def loss(params, batch, log_q, item, valid):
        out = forward(model, params, batch)
        user, positives = out.user_representation, out.candidate_representation
        if not every_prefix:
            positives = positives[:, 0]
        d = user.shape[-1]
        return retrieval_loss(
            user.reshape(-1, d),
            positives.reshape(-1, d),
            log_q.reshape(-1),
            item.reshape(-1),
            valid.reshape(-1),
            temperature,
        )

    def check_inputs(params, batch, log_q, item, valid):
        _check_batch(config, params, batch)
        shape = batch.candidate_post_hashes.shape[:1]
        if every_prefix:
            shape = (*shape, 1 + batch.history_post_hashes.shape[1])
            if batch.candidate_post_hashes.shape[1] != shape[1]:
                raise ValueError(
                    f"every_prefix needs C = 1 + S = {shape[1]} candidates (one positive per "
                    f"prefix), got {batch.candidate_post_hashes.shape[1]}"
                )
        _check_array("log_q", log_q, shape, "f")
        _check_array("item", item, shape, "i")
        _check_array("valid", valid, shape, "b")

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


# The hash fields each table serves, in RecsysEmbeddings' order of fields.
_TABLE_FIELDS = HashTables(
    user=("user_hashes",),
    post=("history_post_hashes", "candidate_post_hashes"),
    author=("history_author_hashes", "candidate_author_hashes"),
)


def shard_state(state: TrainState, mesh, axis: str) -> TrainState:
    """``state`` on ``mesh``: every hash table and its row optimizer state split row-wise over
    ``axis`` (:func:`phoenix_lib.sharding.shard_rows`), the model, its optimizer state and
    the step replicated. A table's rows must be a multiple of the axis size."""
    params, opt = state.params, state.opt_state
    if not isinstance(opt, TableSparseState):
        raise TypeError("shard_state takes the state of a TableSparse optimizer (row-sparse)")
    tables = HashTables(*(sharding.shard_rows(t, mesh, axis) for t in params["tables"]))
    table_opt = jax.tree.map(lambda leaf: sharding.shard_rows(leaf, mesh, axis), opt.tables)
    model, dense, step = sharding.replicate((params["model"], opt.dense, state.step), mesh)
    return TrainState({"model": model, "tables": tables}, TableSparseState(dense, table_opt), step)


def make_sharded_step(loss: Callable, optimizer: TableSparse, mesh, axis: str,
                      *, capacity: int | None = None) -> Callable:  # fmt: skip
    """:func:`make_step` with row-sharded tables: ``step(state, batch, *rest) -> (state, loss)``.

    ``state`` from :func:`shard_state`; the batch and ``rest`` (labels, mask, ...) are split
    over ``axis`` along their first (batch) axis. Each device routes its batch's bucket
    indices to the devices that own those rows (:func:`phoenix_lib.sharding.request_rows`),
    which serve them; the rows come back by a second all-to-all; the model and ``loss``
    run on the whole batch under GSPMD, which splits them by batch and sums the model's
    gradients over the devices (data parallel, weights replicated). The gradients of the
    rows travel back the way the rows came (the transpose of an all-to-all), and each
    owner applies the row-sparse optimizer to its own rows. Equal to :func:`make_step`'s
    row-sparse step on one device up to float rounding of the sums.

    ``capacity``: distinct rows of one table a device may ask of another per step;
    default each table's per-device number of bucket indices, which never overflows.
    A step that would overflow raises (the state passed in is unchanged) with the
    capacity that would do; the check reads each table's need on the host, one wait for
    the device per step. Row 0 of every table is the padding row, as in
    :func:`phoenix_lib.tables.gather`. ``step.lower(state, batch, *rest)`` gives the
    lowered program.
    """
    if not isinstance(optimizer, TableSparse):
        raise TypeError("make_sharded_step takes a TableSparse optimizer (row-sparse tables)")
    n = sharding.axis_size(mesh, axis)
    rows, whole = P(axis), P()

    @functools.partial(jax.jit, static_argnames=("capacity",))
    def jitted(state: TrainState, batch: RecsysBatch, *rest, capacity):
        tables, opt = state.params["tables"], state.opt_state
        hashes = HashTables(*(tuple(getattr(batch, f) for f in fs) for fs in _TABLE_FIELDS))

        def ask(tables, hashes):  # per device: route every table's requests, serve them
            served = []
            for table, fields, cap in zip(tables, hashes, capacity, strict=True):
                flat = jnp.concatenate([h.reshape(-1) for h in fields])
                requests = sharding.request_rows(flat, table.shape[0], axis, cap)
                served.append((requests, sharding.serve(table, requests)))
            return HashTables(*served)

        served = jax.shard_map(ask, mesh=mesh, in_specs=rows, out_specs=rows)(tables, hashes)

        def embeddings_of(got):  # per device: the served rows delivered to the fields
            def deliver(got, served, fields):
                flat = sharding.deliver(got, served[0], axis)
                sizes = np.cumsum([h.size for h in fields])[:-1]
                parts = jnp.split(flat, sizes)
                return tuple(p.reshape(*h.shape, -1) for p, h in zip(parts, fields, strict=True))

            out = jax.shard_map(
                lambda got, served, hashes: HashTables(*map(deliver, got, served, hashes)),
                mesh=mesh, in_specs=rows, out_specs=rows,
            )(got, served, hashes)  # fmt: skip
            return RecsysEmbeddings(out.user[0], out.post[0], out.post[1], out.author[0],
                                    out.author[1])  # fmt: skip

        def total(model, got):
            return loss({"model": model, "tables": embeddings_of(got)}, batch, *rest)

        got = HashTables(*(g for _, g in served))
        value, (g_model, g_got) = jax.value_and_grad(total, argnums=(0, 1))(
            state.params["model"], got
        )
        updates, dense_state = optimizer.dense.update(g_model, opt.dense, state.params["model"])

        def update(tables, table_opt, served, grads, step):  # per device: owners update rows
            out = []
            for table, table_state, (requests, _), g in zip(
                tables, table_opt, served, grads, strict=True
            ):
                routed = requests.routed
                owned = jnp.where(routed.valid, routed.received, table.shape[0]).reshape(-1)
                distinct, inverse = jnp.unique(
                    owned, size=owned.shape[0], fill_value=table.shape[0], return_inverse=True
                )
                summed = (
                    jnp.zeros_like(g.reshape(-1, g.shape[-1]))
                    .at[inverse.reshape(-1)]
                    .add(g.reshape(-1, g.shape[-1]))
                )
                out.append(optimizer.tables.update(table, table_state, distinct, summed, step))
            return HashTables(*(t for t, _ in out)), HashTables(*(s for _, s in out))

        new_tables, new_table_opt = jax.shard_map(
            update, mesh=mesh, in_specs=(rows, rows, rows, rows, whole), out_specs=rows
        )(tables, opt.tables, served, g_got, state.step)
        params = {"model": optax.apply_updates(state.params["model"], updates),
                  "tables": new_tables}  # fmt: skip
        opt_state = TableSparseState(dense_state, new_table_opt)
        needed = HashTables(*(r.routed.needed for r, _ in served))
        return (TrainState(params, opt_state, state.step + 1), value), needed

    check = getattr(loss, "check_inputs", None)

    def prepare(state: TrainState, batch: RecsysBatch, rest):
        """The inputs checked and placed on the mesh, and each table's capacity."""
        sharding.check_divides("the batch size", batch.candidate_post_hashes.shape[0], mesh, axis)
        if check is not None:
            check(state.params, batch, *rest)
        batch, rest = jax.tree.map(
            lambda a: sharding.put(a, NamedSharding(mesh, rows)), (batch, rest)
        )
        if capacity is not None:
            return batch, rest, HashTables(capacity, capacity, capacity)
        sizes = (sum(int(np.prod(getattr(batch, f).shape)) for f in fs) for fs in _TABLE_FIELDS)
        return batch, rest, HashTables(*(size // n for size in sizes))

    def step(state: TrainState, batch: RecsysBatch, *rest):
        batch, rest, caps = prepare(state, batch, rest)
        out, needed = jitted(state, batch, *rest, capacity=caps)
        for name, cap, need in zip(HashTables._fields, caps, needed, strict=True):
            try:
                sharding.check_capacity(need, cap)
            except ValueError as error:
                raise ValueError(f"table {name!r}: {error}") from None
        return out

    def lower(state: TrainState, batch: RecsysBatch, *rest):
        """The step's program for these inputs, lowered (``.compile().as_text()`` is its HLO)."""
        batch, rest, caps = prepare(state, batch, rest)
        return jitted.lower(state, batch, *rest, capacity=caps)

    step.lower = lower
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
