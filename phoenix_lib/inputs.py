"""The inputs of the Phoenix models, with the release's field names.

Both are NamedTuples, so they are pytrees and pass straight through ``jax.jit``
(the release's ``RecsysEmbeddings`` is a plain dataclass and does not).

Shapes: ``B`` batch, ``S`` history length, ``C`` candidates, ``Hu``/``Hi``/``Ha``
hash functions for users, items (posts) and authors, ``A`` actions, ``D`` the
embedding size.
"""

from __future__ import annotations

from typing import NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from phoenix_lib.hashing import multi_hash


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
    # May 2026, optional (None: absent); January's model ignores them.
    history_continuous_actions: jax.Array | None = None  # [B, S, 8] float32; [..., 1] dwell s
    candidate_impr_ts: jax.Array | None = None  # [B, C] int Unix seconds of the impression
    candidate_post_creation_ts: jax.Array | None = None  # [B, C] int Unix seconds, 0 unknown
    user_ip_hashes: jax.Array | None = None  # [B, Hip] int32


class RecsysEmbeddings(NamedTuple):
    """Rows gathered from the hash tables for the hashes in a :class:`RecsysBatch`."""

    user_embeddings: jax.Array  # [B, Hu, D]
    history_post_embeddings: jax.Array  # [B, S, Hi, D]
    candidate_post_embeddings: jax.Array  # [B, C, Hi, D]
    history_author_embeddings: jax.Array  # [B, S, Ha, D]
    candidate_author_embeddings: jax.Array  # [B, C, Ha, D]
    user_ip_embeddings: jax.Array | None = None  # [B, Hip, D], May 2026, optional


def _concrete(x) -> bool:
    """True when ``x`` holds values (not a tracer inside jax.jit)."""
    return not isinstance(x, jax.core.Tracer)


def validate_batch(config, batch: RecsysBatch, embeddings: RecsysEmbeddings | None = None) -> None:
    """Check a batch (and its embeddings) against each other and against ``config``.

    Run on the host by ``make_ranker``/``make_retriever``'s ``init`` and ``apply``.
    Shapes are checked always (also while ``jax.jit`` traces); values (surface
    ids in ``[0, V)``, actions in {0, 1}, non-negative hashes) only when the
    arrays are concrete.

    Raises:
      TypeError: a field of the wrong kind (e.g. float hashes).
      ValueError: a field whose shape or values are wrong, naming the field.
    """
    if not isinstance(batch, RecsysBatch):
        raise TypeError(f"batch must be a RecsysBatch, got {type(batch).__name__}")
    hc = config.hash_config
    b, s = batch.history_post_hashes.shape[:2]
    c = batch.candidate_post_hashes.shape[1] if batch.candidate_post_hashes.ndim == 3 else None
    expected = {
        "user_hashes": (b, hc.num_user_hashes),
        "history_post_hashes": (b, config.history_seq_len, hc.num_item_hashes),
        "history_author_hashes": (b, s, hc.num_author_hashes),
        "history_actions": (b, s, getattr(config, "num_actions", batch.history_actions.shape[-1])),
        "history_product_surface": (b, s),
        "candidate_post_hashes": (b, c, hc.num_item_hashes),
        "candidate_author_hashes": (b, c, hc.num_author_hashes),
        "candidate_product_surface": (b, c),
    }
    optional = {  # May 2026's fields, checked when present
        "history_continuous_actions": (b, s, getattr(config, "num_continuous_actions", None)),
        "candidate_impr_ts": (b, c),
        "candidate_post_creation_ts": (b, c),
        "user_ip_hashes": (b, hc.num_ip_hashes),
    }
    for name, shape in expected.items():
        _check_shape(f"batch.{name}", getattr(batch, name), shape)
    for name, shape in optional.items():
        value = getattr(batch, name)
        if value is not None and not (name == "history_continuous_actions" and shape[-1] is None):
            _check_shape(f"batch.{name}", value, shape)
    if c == 0:
        raise ValueError("batch.candidate_post_hashes has no candidates (C = 0)")
    if (batch.candidate_impr_ts is None) != (batch.candidate_post_creation_ts is None):
        raise ValueError(
            "batch.candidate_impr_ts and batch.candidate_post_creation_ts come together: pass "
            "both (a post's age needs both), or neither (bucket 0, age unknown)"
        )
    for name in [*expected, *optional]:
        if getattr(batch, name) is None:
            continue
        kind = jnp.dtype(getattr(batch, name).dtype).kind
        floats = ("history_actions", "history_continuous_actions")
        wanted = ("f",) if name in floats else ("i", "u")
        if kind not in wanted:
            raise TypeError(
                f"batch.{name} must be {'float' if wanted == ('f',) else 'integer'}, "
                f"got {getattr(batch, name).dtype}"
            )
    if embeddings is not None:
        _validate_embeddings(config, batch, embeddings)
    _validate_values(config, batch)


def _check_shape(name: str, value, shape) -> None:
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(value.shape)}, expected {tuple(shape)}")


def _validate_embeddings(config, batch: RecsysBatch, embeddings: RecsysEmbeddings) -> None:
    if not isinstance(embeddings, RecsysEmbeddings):
        raise TypeError(f"embeddings must be RecsysEmbeddings, got {type(embeddings).__name__}")
    d = config.emb_size
    pairs = {
        "user_embeddings": batch.user_hashes,
        "history_post_embeddings": batch.history_post_hashes,
        "candidate_post_embeddings": batch.candidate_post_hashes,
        "history_author_embeddings": batch.history_author_hashes,
        "candidate_author_embeddings": batch.candidate_author_hashes,
    }
    if embeddings.user_ip_embeddings is not None or batch.user_ip_hashes is not None:
        pairs["user_ip_embeddings"] = batch.user_ip_hashes
        if embeddings.user_ip_embeddings is None or batch.user_ip_hashes is None:
            raise ValueError("user_ip_hashes and user_ip_embeddings come together: pass both")
    for name, hashes in pairs.items():
        _check_shape(f"embeddings.{name}", getattr(embeddings, name), (*hashes.shape, d))


def _validate_values(config, batch: RecsysBatch) -> None:
    for name in ("history_product_surface", "candidate_product_surface"):
        value = getattr(batch, name)
        if _concrete(value):
            v = np.asarray(value)
            if v.size and (v.min() < 0 or v.max() >= config.product_surface_vocab_size):
                raise ValueError(
                    f"batch.{name} must be in [0, {config.product_surface_vocab_size}), "
                    f"got values in [{v.min()}, {v.max()}]"
                )
    if _concrete(batch.history_actions):
        a = np.asarray(batch.history_actions)
        if not np.isin(a, (0.0, 1.0)).all():
            raise ValueError("batch.history_actions must be multi-hot: every value 0 or 1")
    if getattr(config, "right_anchored_rope", False) and _concrete(batch.history_post_hashes):
        valid = np.asarray(batch.history_post_hashes)[:, :, 0] != 0  # [B, S]
        if (valid[:, 1:] & ~valid[:, :-1]).any():
            row = int(np.nonzero((valid[:, 1:] & ~valid[:, :-1]).any(1))[0][0])
            raise ValueError(
                f"batch.history_post_hashes: right_anchored_rope=True needs each history "
                f"left-aligned (items first, oldest to newest, then padding); row {row} has "
                f"an item after padding"
            )
    for name in RecsysBatch._fields:
        value = getattr(batch, name)
        if name.endswith("_hashes") and value is not None and _concrete(value):
            h = np.asarray(getattr(batch, name))
            if h.size and h.min() < 0:
                raise ValueError(f"batch.{name} must be non-negative bucket indices, got {h.min()}")


def with_validation(config, transformed):
    """``transformed`` (an ``hk.Transformed`` on ``(batch, embeddings)``) with both
    ``init`` and ``apply`` running :func:`validate_batch` first. ``init`` is jitted:
    the same parameters as eager initialisation, but one compilation instead of
    one per operation (about 4 s instead of 13 s for the book's ranker on CPU).

    On CPU it is compiled at XLA backend optimisation level 1, not the default 2: a
    program that runs once, elementwise (random bits and their transforms, no
    reductions), for which level 2's extra LLVM work buys nothing. It compiles about
    30% faster and gives the same parameters bit for bit (``tests/test_models.py``
    checks); other backends, where that was not measured, keep their default.
    Called inside another ``jax.jit`` (JAX takes compiler options only on the outermost
    one), it is traced into the caller's program and compiled with it."""
    cpu = jax.default_backend() == "cpu"
    options = {"xla_backend_optimization_level": 1} if cpu else None
    jitted_init = jax.jit(transformed.init, compiler_options=options)

    def init(rng, batch, embeddings):
        validate_batch(config, batch, embeddings)
        if all(_concrete(x) for x in jax.tree_util.tree_leaves((rng, batch, embeddings))):
            return jitted_init(rng, batch, embeddings)
        return transformed.init(rng, batch, embeddings)

    def apply(params, batch, embeddings):
        validate_batch(config, batch, embeddings)
        return transformed.apply(params, batch, embeddings)

    return hk.Transformed(init=init, apply=apply)


def random_batch(
    config,
    *,
    batch_size: int,
    num_candidates: int,
    num_buckets: int,
    seed: int,
    history_fill: float = 1.0,
    action_rate: float = 0.2,
) -> RecsysBatch:
    """A random, well-formed :class:`RecsysBatch` for demos and tests (not a data model).

    Args:
      config: a ranker or retrieval config (sets S, hash columns, A, V).
      batch_size, num_candidates: ``B`` and ``C``.
      num_buckets: hash buckets are drawn from ``[1, num_buckets)``.
      seed: NumPy seed; the same seed gives the same batch.
      history_fill: share of each user's S history slots that are real; the
        rest, at the end, are padding (hash 0, no action).
      action_rate: probability of each action on a real history slot.
    """
    rng = np.random.default_rng(seed)
    hc, b, s, c = config.hash_config, batch_size, config.history_seq_len, num_candidates
    num_actions = getattr(config, "num_actions", 19)

    def hashes(*shape):
        return rng.integers(1, num_buckets, shape).astype(np.int32)

    real = np.arange(s)[None, :] < rng.binomial(s, history_fill, size=(b, 1))  # [B, S]
    actions = (rng.random((b, s, num_actions)) < action_rate) & real[..., None]
    return RecsysBatch(
        user_hashes=hashes(b, hc.num_user_hashes),
        history_post_hashes=hashes(b, s, hc.num_item_hashes) * real[..., None],
        history_author_hashes=hashes(b, s, hc.num_author_hashes) * real[..., None],
        history_actions=actions.astype(np.float32),
        history_product_surface=rng.integers(0, config.product_surface_vocab_size, (b, s)).astype(
            np.int32
        ),
        candidate_post_hashes=hashes(b, c, hc.num_item_hashes),
        candidate_author_hashes=hashes(b, c, hc.num_author_hashes),
        candidate_product_surface=rng.integers(0, config.product_surface_vocab_size, (b, c)).astype(
            np.int32
        ),
    )


class Buckets(NamedTuple):
    """Every user's, post's and author's hash buckets for one set of table sizes, hashed
    once (:func:`hash_entities`): a batch gathers rows of these instead of hashing its raw
    IDs again. A data set maps its own entities onto the three slots (MovieLens: movies
    as posts, genres as authors)."""

    num_buckets: tuple[int, int, int]  # (users, posts, authors)
    user: np.ndarray  # [U, Hu] int32
    post: np.ndarray  # [P, Hi] int32
    author: np.ndarray  # [Na, Ha] int32


def hash_entities(config, num_buckets: tuple[int, int, int], user_ids, post_ids, author_ids):
    """:class:`Buckets` for raw ``user_ids`` ``[U]``, ``post_ids`` ``[P]`` and ``author_ids``
    ``[Na]`` (NumPy int64), with the config's number of hash columns per entity."""
    hc = config.hash_config
    nu, npost, na = num_buckets
    return Buckets(
        tuple(num_buckets),
        np.asarray(multi_hash(user_ids, num_buckets=nu, num_hashes=hc.num_user_hashes)),
        np.asarray(multi_hash(post_ids, num_buckets=npost, num_hashes=hc.num_item_hashes)),
        np.asarray(multi_hash(author_ids, num_buckets=na, num_hashes=hc.num_author_hashes)),
    )


def batch_from_ids(
    config,
    *,
    user_ids,
    history_post_ids,
    history_author_ids,
    history_actions,
    history_mask,
    candidate_post_ids,
    candidate_author_ids,
    candidate_mask,
    num_buckets: tuple[int, int, int],
    history_product_surface=None,
    candidate_product_surface=None,
) -> RecsysBatch:
    """Hash raw 64-bit IDs into a :class:`RecsysBatch` (Chapter 1's ``multi_hash``).

    Args:
      config: sets the number of hash columns per entity.
      user_ids: ``[B]``; history_*_ids: ``[B, S]``; candidate_*_ids: ``[B, C]``: raw
        non-negative IDs (any integer form ``multi_hash`` accepts).
      history_actions: ``[B, S, A]`` 0/1.
      history_mask, candidate_mask: bool, ``True`` for real entries; masked entries
        get bucket 0 (padding) and their actions are zeroed.
      num_buckets: table sizes ``(users, posts, authors)``, as given to ``init_state``.
      history_product_surface, candidate_product_surface: optional int ``[B, S]`` /
        ``[B, C]``, where each item was shown (Phoenix's product surface); default 0.

    IDs are NumPy int64, not ``jnp`` arrays (see :func:`phoenix_lib.hashing.multi_hash`).
    Histories are oldest first, padding at the end. Errors name the argument at fault.
    """
    hc = config.hash_config
    nu, npost, na = num_buckets
    num_actions = getattr(config, "num_actions", np.shape(history_actions)[-1])  # A
    b = np.shape(user_ids)[:1]
    s, c = np.shape(history_post_ids)[1:2], np.shape(candidate_post_ids)[1:2]
    if history_product_surface is None:
        history_product_surface = np.zeros((*b, *s), np.int32)
    if candidate_product_surface is None:
        candidate_product_surface = np.zeros((*b, *c), np.int32)
    shapes = {
        "user_ids": (b, user_ids),
        "history_post_ids": ((*b, *s), history_post_ids),
        "history_author_ids": ((*b, *s), history_author_ids),
        "history_actions": ((*b, *s, num_actions), history_actions),
        "history_product_surface": ((*b, *s), history_product_surface),
        "history_mask": ((*b, *s), history_mask),
        "candidate_post_ids": ((*b, *c), candidate_post_ids),
        "candidate_author_ids": ((*b, *c), candidate_author_ids),
        "candidate_product_surface": ((*b, *c), candidate_product_surface),
        "candidate_mask": ((*b, *c), candidate_mask),
    }
    for name, (shape, value) in shapes.items():
        _check_shape(name, np.asarray(value), shape)
    history_mask = np.asarray(history_mask, bool)
    candidate_mask = np.asarray(candidate_mask, bool)
    actions = np.asarray(history_actions, np.float32) * history_mask[..., None]
    return RecsysBatch(
        user_hashes=multi_hash(
            user_ids, num_buckets=nu, num_hashes=hc.num_user_hashes, name="user_ids"
        ),
        history_post_hashes=multi_hash(
            history_post_ids,
            num_buckets=npost,
            num_hashes=hc.num_item_hashes,
            mask=history_mask,
            name="history_post_ids",
        ),
        history_author_hashes=multi_hash(
            history_author_ids,
            num_buckets=na,
            num_hashes=hc.num_author_hashes,
            mask=history_mask,
            name="history_author_ids",
        ),
        history_actions=actions,
        history_product_surface=np.asarray(history_product_surface, np.int32),
        candidate_post_hashes=multi_hash(
            candidate_post_ids,
            num_buckets=npost,
            num_hashes=hc.num_item_hashes,
            mask=candidate_mask,
            name="candidate_post_ids",
        ),
        candidate_author_hashes=multi_hash(
            candidate_author_ids,
            num_buckets=na,
            num_hashes=hc.num_author_hashes,
            mask=candidate_mask,
            name="candidate_author_ids",
        ),
        candidate_product_surface=np.asarray(candidate_product_surface, np.int32),
    )


def with_post_rows(batch: RecsysBatch, history_rows, candidate_rows) -> RecsysBatch:
    """``batch`` with each post read from one given row of the post table instead of its hashes.

    For posts behind an MPZCH table (:func:`phoenix_lib.mpzch.write` with
    ``padding_row=True``) or any other row assignment of your own.

    Args:
      batch: made by :func:`batch_from_ids` (or a world) with one post hash column, so
        that the model's post input is one row (``HashConfig(num_item_hashes=1)``).
      history_rows: int ``[B, S]``; candidate_rows: int ``[B, C]``: rows of the post table,
        ``0`` exactly at the batch's padded positions (where its post hash is ``0``).

    Returns:
      the batch with ``history_post_hashes`` ``[B, S, 1]`` and ``candidate_post_hashes``
      ``[B, C, 1]`` replaced.

    Raises:
      ValueError: a shape that differs from the batch's, more than one post hash column,
        a negative row (an ID that found no slot under ``disable_fallback``), or rows whose
        padding differs from the batch's.
    """
    fields = {}
    for name, rows, field in (
        ("history_rows", history_rows, "history_post_hashes"),
        ("candidate_rows", candidate_rows, "candidate_post_hashes"),
    ):
        hashes = np.asarray(getattr(batch, field))
        if hashes.shape[-1] != 1:
            raise ValueError(
                f"batch.{field} has {hashes.shape[-1]} hash columns; a post read from one row "
                "needs a config with HashConfig(num_item_hashes=1)"
            )
        rows = np.asarray(rows)
        if not np.issubdtype(rows.dtype, np.integer):
            raise TypeError(f"{name} must hold integer rows, got dtype {rows.dtype}")
        _check_shape(name, rows, hashes.shape[:-1])
        if rows.size and rows.min() < 0:
            raise ValueError(
                f"{name} holds row {rows.min()}, which is no row: an MPZCH table made without "
                "padding_row=True answers -1 at masked positions (make it with "
                "padding_row=True), and one with disable_fallback=True answers -1 for an ID "
                "it found no slot for (drop or mask that ID)"
            )
        padded = hashes[..., 0] == 0
        if ((rows == 0) != padded).any():
            raise ValueError(
                f"{name} must be 0 (the padding row) exactly where the batch is padded: "
                "MPZCH tables made with padding_row=True number slots from row 1 and give "
                "row 0 to the positions write/lookup were told to mask (mask=)"
            )
        fields[field] = rows[..., None].astype(np.int32)
    return batch._replace(**fields)
