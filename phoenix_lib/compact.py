"""Compact embeddings: ways to give many IDs a ``D``-wide embedding in bounded memory.

A full table spends one row per ID. Each technique here maps raw 64-bit IDs to ``[..., D]``
with fewer parameters, and says what it stores:

* :func:`multi_hash`: ``k`` hash functions into one shared table, the ``k`` rows summed or
  concatenated and projected (Phoenix: ``k = 2``, concatenated by its reduce blocks);
* :func:`double_hashing`: two hash functions into two tables, summed;
* :func:`quotient_remainder`: an ID's index ``i`` in a vocabulary reads row ``i // m`` of
  one table and row ``i % m`` of another, combined by product or sum: every ID gets its
  own pair of rows;
* :func:`mixed_dimension`: the most frequent IDs get full rows, the rest narrow rows
  projected to ``D``;
* :func:`tensor_train`: the full table as a tensor-train of three small cores (TT-Rec);
* :func:`semantic_ids`: ``L`` codes per ID from residual k-means (:func:`rq_kmeans`) over
  content vectors, one small table per level, summed; optionally a hashed level that
  separates IDs with equal codes;
* :func:`row_table`: a plain table read at rows the caller provides: the full table (rows
  from a vocabulary) or MPZCH (rows from :func:`phoenix_lib.mpzch.write`).

A :class:`Technique` is a set of pure functions: ``features(ids, mask)`` on the host turns
IDs into int32 features ``[..., F]`` (hash rows, a quotient and a remainder, codes);
``init(key)`` makes the parameters; ``embed(params, features)`` (jittable) gives
``[..., D]``, zeros where masked. :func:`memory_bytes` counts the parameters and what else
the technique must store per ID (a vocabulary dictionary, MPZCH's identity tensor).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from phoenix_lib import hashing, metrics
from phoenix_lib.config import ACTIONS
from phoenix_lib.hashing import ids_and_mask

# A vocabulary (ID -> index) stores each key and its index: 8 + 4 bytes per ID, the least a
# hash map can hold (real ones hold more). MPZCH stores per slot two uint32 identity words
# and one int32 expiry.
DICTIONARY_BYTES_PER_ID = 12
MPZCH_BYTES_PER_SLOT = 12


class Technique(NamedTuple):
    """A compact embedding. ``features(ids, mask=None) -> int32 [..., F]`` (host; masked
    positions hold -1); ``init(key) -> {name: array}``; ``embed(params, features) -> [..., D]``
    (jittable; zeros where masked); ``extra_bytes``: storage beyond the parameters."""

    name: str
    dim: int
    features: Callable
    init: Callable
    embed: Callable
    extra_bytes: int = 0


def num_params(technique: Technique) -> int:
    """Floats in the technique's parameters (counted from their shapes, nothing computed)."""
    shapes = jax.eval_shape(technique.init, jax.random.key(0))
    return int(sum(np.prod(s.shape) for s in jax.tree.leaves(shapes)))


def memory_bytes(technique: Technique) -> int:
    """float32 parameters plus the technique's other storage."""
    return 4 * num_params(technique) + technique.extra_bytes


def _normal(key, shape, scale):
    return jax.random.normal(key, shape, jnp.float32) * scale


def _masked(features, out):
    """``out`` [..., D] with zeros where ``features[..., 0] < 0`` (masked positions)."""
    return jnp.where((features[..., :1] >= 0), out, 0.0)


def _rows(table, index):
    return jnp.take(table, jnp.maximum(index, 0), axis=0)


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


# ------------------------------------------------------------------ hashing


def multi_hash(rows: int, dim: int, num_hashes: int, *, combine: str = "concat") -> Technique:
    """``num_hashes`` MurmurHash3 functions (:func:`phoenix_lib.hashing.multi_hash`) into one
    table ``[rows, dim]``; the rows are summed (``combine="sum"``) or concatenated and
    projected by a ``[num_hashes * dim, dim]`` matrix (``"concat"``, as Phoenix's reduce
    blocks do)."""
    _check_positive("num_hashes", num_hashes)
    if combine not in ("concat", "sum"):
        raise ValueError(f"combine must be 'concat' or 'sum', got {combine!r}")
    if rows < 2:
        raise ValueError(f"rows must be at least 2, got {rows}")

    def features(ids, mask=None):
        h = np.asarray(hashing.multi_hash(ids, num_buckets=rows, num_hashes=num_hashes, mask=mask))
        return np.where(h == 0, -1, h).astype(np.int32)  # 0 only where masked

    def init(key):
        k1, k2 = jax.random.split(key)
        params = {"table": _normal(k1, (rows, dim), dim**-0.5)}
        if combine == "concat":
            scale = (num_hashes * dim) ** -0.5
            params["projection"] = _normal(k2, (num_hashes * dim, dim), scale)
        return params

    def embed(params, f):
        got = _rows(params["table"], f)  # [..., k, D]
        if combine == "sum":
            out = got.sum(-2)
        else:
            out = got.reshape(*got.shape[:-2], -1) @ params["projection"]
        return _masked(f, out)

    return Technique(f"multi_hash_{num_hashes}_{combine}", dim, features, init, embed)


def double_hashing(rows: int, dim: int) -> Technique:
    """Two hash functions into two tables of ``rows // 2`` rows each, summed (the hashing
    baseline of the MPZCH paper: an ID collides fully only if both of its rows collide)."""
    half = rows // 2
    if half < 2:
        raise ValueError(f"rows must be at least 4, got {rows}")

    def features(ids, mask=None):
        h = np.asarray(hashing.multi_hash(ids, num_buckets=half, num_hashes=2, mask=mask))
        return np.where(h == 0, -1, h).astype(np.int32)

    def init(key):
        k1, k2 = jax.random.split(key)
        scale = (2 * dim) ** -0.5
        return {"first": _normal(k1, (half, dim), scale), "second": _normal(k2, (half, dim), scale)}

    def embed(params, f):
        out = _rows(params["first"], f[..., 0]) + _rows(params["second"], f[..., 1])
        return _masked(f, out)

    return Technique("double_hashing", dim, features, init, embed)


# ------------------------------------------------------------------ with a vocabulary


def vocabulary_index(vocabulary: np.ndarray, ids, mask=None) -> np.ndarray:
    """Each ID's index in ``vocabulary`` (int64 [V], distinct): int64 ``[...]``, -1 where
    masked. Raises for an ID the vocabulary lacks (naming how many and one of them)."""
    values, mask = ids_and_mask(ids, mask)
    order = np.argsort(vocabulary, kind="stable")
    place = np.searchsorted(vocabulary[order], values)
    place = np.minimum(place, vocabulary.size - 1)
    index = order[place]
    known = vocabulary[index] == values
    missing = mask & ~known
    if missing.any():
        raise ValueError(
            f"{int(missing.sum())} IDs are not in the vocabulary (e.g. {values[missing][0]}): "
            "these techniques need every ID indexed before it is embedded"
        )
    return np.where(mask, index, -1)


def _check_vocabulary(vocabulary) -> np.ndarray:
    vocabulary = np.asarray(vocabulary)
    if vocabulary.ndim != 1 or vocabulary.dtype.kind not in "iu" or not vocabulary.size:
        raise ValueError("vocabulary must be a non-empty 1-D array of integer IDs")
    if np.unique(vocabulary).size != vocabulary.size:
        raise ValueError("vocabulary holds an ID twice")
    return vocabulary


def row_table(num_rows: int, dim: int, *, extra_bytes: int = 0, name: str = "table"):
    """A plain table ``[num_rows, dim]`` read at row indices the caller gives as features
    ``[..., 1]`` (-1 masked): the full table (rows from :func:`vocabulary_index`) or the rows
    an MPZCH table hands out. ``extra_bytes``: what the caller's mapping stores."""

    def features(rows, mask=None):
        rows = np.asarray(rows)
        if mask is not None:
            rows = np.where(mask, rows, -1)
        if rows.size and rows.max() >= num_rows:
            raise ValueError(f"row {rows.max()} is past the table's {num_rows} rows")
        return rows.astype(np.int32)[..., None]

    def init(key):
        return {"table": _normal(key, (num_rows, dim), dim**-0.5)}

    def embed(params, f):
        return _masked(f, _rows(params["table"], f[..., 0]))

    return Technique(name, dim, features, init, embed, extra_bytes)


def full_table(vocabulary, dim: int) -> Technique:
    """One row per ID of ``vocabulary``: the reference every budget is a share of."""
    vocabulary = _check_vocabulary(vocabulary)
    table = row_table(vocabulary.size, dim, name="full_table",
                      extra_bytes=DICTIONARY_BYTES_PER_ID * vocabulary.size)  # fmt: skip

    def features(ids, mask=None):
        return table.features(vocabulary_index(vocabulary, ids, mask))

    return table._replace(features=features)


def zero_collision(stream, dim: int, num_slots: int) -> Technique:
    """MPZCH rows (:mod:`phoenix_lib.mpzch`, no eviction) in front of a table ``[num_slots,
    dim]``: the IDs of ``stream`` (an iterable of ID arrays in time order, one per hour) are
    written hour by hour, each new ID taking a free slot of its probe window while one is
    left; ``features`` then reads the final table, so an ID that never found a slot (or
    arrives later) shares its home slot with the ID living there. The table stores 12 bytes
    of identity and expiry per slot."""
    from phoenix_lib import mpzch

    state = mpzch.create(num_slots)
    for hour, ids in enumerate(stream):
        state, _, _ = mpzch.write(state, np.asarray(ids), hour)
    table = row_table(num_slots, dim, extra_bytes=MPZCH_BYTES_PER_SLOT * num_slots,
                      name="mpzch")  # fmt: skip

    def features(ids, mask=None):
        return table.features(np.asarray(mpzch.lookup(state, ids, mask=mask)), mask)

    return table._replace(features=features)


def quotient_remainder(
    vocabulary, dim: int, num_remainders: int, *, combine: str = "product"
) -> Technique:
    """The quotient-remainder trick: index ``i`` reads row ``i // m`` of a quotient table
    ``[ceil(V / m), dim]`` and row ``i % m`` of a remainder table ``[m, dim]``, combined
    elementwise by ``"product"`` or ``"sum"``. No two IDs share both rows."""
    vocabulary = _check_vocabulary(vocabulary)
    _check_positive("num_remainders", num_remainders)
    if combine not in ("product", "sum"):
        raise ValueError(f"combine must be 'product' or 'sum', got {combine!r}")
    m = num_remainders
    quotients = -(-vocabulary.size // m)

    def features(ids, mask=None):
        i = vocabulary_index(vocabulary, ids, mask)
        return np.where(i[..., None] >= 0, np.stack([i // m, i % m], -1), -1).astype(np.int32)

    def init(key):
        k1, k2 = jax.random.split(key)
        if combine == "product":  # rows near 1 times rows of the usual scale
            return {"quotient": 1.0 + _normal(k1, (quotients, dim), 0.1),
                    "remainder": _normal(k2, (m, dim), dim**-0.5)}  # fmt: skip
        scale = (2 * dim) ** -0.5
        return {"quotient": _normal(k1, (quotients, dim), scale),
                "remainder": _normal(k2, (m, dim), scale)}  # fmt: skip

    def embed(params, f):
        q, r = _rows(params["quotient"], f[..., 0]), _rows(params["remainder"], f[..., 1])
        return _masked(f, q * r if combine == "product" else q + r)

    extra = DICTIONARY_BYTES_PER_ID * vocabulary.size
    return Technique(f"quotient_remainder_{combine}", dim, features, init, embed, extra)


def mixed_dimension(vocabulary, counts, dim: int, *, wide: int, narrow_dim: int) -> Technique:
    """The ``wide`` most frequent IDs (``counts`` [V], from the training stream) get rows
    ``[wide, dim]``; the others rows ``[V - wide, narrow_dim]`` times a projection
    ``[narrow_dim, dim]``. Ties in frequency go to the earlier vocabulary entry."""
    vocabulary = _check_vocabulary(vocabulary)
    counts = np.asarray(counts)
    if counts.shape != vocabulary.shape:
        raise ValueError(f"counts must be [{vocabulary.size}] like vocabulary, got {counts.shape}")
    if not 0 <= wide <= vocabulary.size:
        raise ValueError(f"wide must be in [0, {vocabulary.size}], got {wide}")
    _check_positive("narrow_dim", narrow_dim)
    rank = np.empty(vocabulary.size, np.int64)
    rank[np.argsort(-counts, kind="stable")] = np.arange(vocabulary.size)

    def features(ids, mask=None):
        i = vocabulary_index(vocabulary, ids, mask)
        return np.where(i >= 0, rank[np.maximum(i, 0)], -1).astype(np.int32)[..., None]

    def init(key):
        k1, k2, k3 = jax.random.split(key, 3)
        return {"wide": _normal(k1, (max(wide, 1), dim), dim**-0.5),
                "narrow": _normal(k2, (max(vocabulary.size - wide, 1), narrow_dim),
                                  narrow_dim**-0.5),
                "projection": _normal(k3, (narrow_dim, dim), narrow_dim**-0.5)}  # fmt: skip

    def embed(params, f):
        r = f[..., 0]
        full = _rows(params["wide"], jnp.minimum(r, wide - 1))
        thin = _rows(params["narrow"], jnp.maximum(r - wide, 0)) @ params["projection"]
        return _masked(f, jnp.where((r < wide)[..., None], full, thin))

    extra = DICTIONARY_BYTES_PER_ID * vocabulary.size
    return Technique("mixed_dimension", dim, features, init, embed, extra)


def tensor_train(vocabulary, dim: int, *, rank: int, row_factors: tuple[int, int, int],
                 dim_factors: tuple[int, int, int]) -> Technique:  # fmt: skip
    """The table ``[V, dim]`` as a tensor train (TT-Rec): index ``i`` written in the mixed
    radix ``row_factors`` ``(n1, n2, n3)`` (``n1 n2 n3 >= V``) picks a slice of each core,
    ``[n1, d1, r]``, ``[n2, r, d2, r]``, ``[n3, r, d3]``, and their contraction is the row,
    ``d1 d2 d3 = dim`` wide."""
    vocabulary = _check_vocabulary(vocabulary)
    n1, n2, n3 = row_factors
    d1, d2, d3 = dim_factors
    if n1 * n2 * n3 < vocabulary.size:
        raise ValueError(f"row_factors {row_factors} index {n1 * n2 * n3} rows, fewer than the "
                         f"vocabulary's {vocabulary.size}")  # fmt: skip
    if d1 * d2 * d3 != dim:
        raise ValueError(f"dim_factors {dim_factors} multiply to {d1 * d2 * d3}, not dim {dim}")
    _check_positive("rank", rank)

    def features(ids, mask=None):
        i = vocabulary_index(vocabulary, ids, mask)
        digits = np.stack([i // (n2 * n3), (i // n3) % n2, i % n3], -1)
        return np.where(i[..., None] >= 0, digits, -1).astype(np.int32)

    def init(key):
        k1, k2, k3 = jax.random.split(key, 3)
        # each row is a sum of r^2 products of three entries: scale so a row has norm ~1
        s = (dim**-0.5 / rank) ** (1 / 3)
        return {"core_1": _normal(k1, (n1, d1, rank), s),
                "core_2": _normal(k2, (n2, rank, d2, rank), s),
                "core_3": _normal(k3, (n3, rank, d3), s)}  # fmt: skip

    def embed(params, f):
        a = _rows(params["core_1"], f[..., 0])  # [..., d1, r]
        b = _rows(params["core_2"], f[..., 1])  # [..., r, d2, r]
        c = _rows(params["core_3"], f[..., 2])  # [..., r, d3]
        out = jnp.einsum("...ar,...rbs,...sc->...abc", a, b, c)
        return _masked(f, out.reshape(*out.shape[:-3], dim))

    extra = DICTIONARY_BYTES_PER_ID * vocabulary.size
    return Technique("tensor_train", dim, features, init, embed, extra)


# ------------------------------------------------------------------ semantic IDs


@jax.jit
def _assign(points, centroids):
    distance = jnp.sum(points**2, 1)[:, None] - 2 * points @ centroids.T + jnp.sum(centroids**2, 1)
    return jnp.argmin(distance, axis=1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnums=2)
def _kmeans(points, centroids, iterations: int):
    """``iterations`` Lloyd steps from ``centroids`` [K, E] over ``points`` [N, E]."""

    def step(_, centroids):
        code = _assign(points, centroids)
        sums = jnp.zeros_like(centroids).at[code].add(points)
        sizes = jnp.zeros(centroids.shape[0]).at[code].add(1.0)[:, None]
        return jnp.where(sizes > 0, sums / jnp.maximum(sizes, 1.0), centroids)

    return jax.lax.fori_loop(0, iterations, step, centroids)


def rq_kmeans(key, vectors, *, levels: int, codebook_size: int, iterations: int = 25):
    """Residual k-means: level 1 clusters ``vectors`` [N, E] into ``codebook_size``
    centroids, each next level clusters what the levels before left unexplained.

    Lloyd iterations from ``codebook_size`` distinct points drawn with ``key``; an empty
    cluster keeps its centroid. Returns ``(codes int32 [N, levels], codebooks [levels, K,
    E], errors [levels + 1])``, ``errors[l]`` the mean squared residual after ``l`` levels
    (``errors[0]``: of the vectors themselves).
    """
    vectors = jnp.asarray(vectors, jnp.float32)
    n = vectors.shape[0]
    if codebook_size > n:
        raise ValueError(f"codebook_size ({codebook_size}) exceeds the {n} vectors")
    _check_positive("levels", levels)

    residual, codes, books = vectors, [], []
    errors = [float(jnp.mean(jnp.sum(residual**2, 1)))]
    for key_l in jax.random.split(key, levels):
        start = residual[jax.random.choice(key_l, n, (codebook_size,), replace=False)]
        centroids = _kmeans(residual, start, iterations)
        code = _assign(residual, centroids)
        residual = residual - centroids[code]
        codes.append(code)
        books.append(centroids)
        errors.append(float(jnp.mean(jnp.sum(residual**2, 1))))
    return np.asarray(jnp.stack(codes, 1)), np.asarray(jnp.stack(books)), np.array(errors)


def rq_encode(codebooks, vectors) -> np.ndarray:
    """Codes ``int32 [N, L]`` of ``vectors`` [N, E] under residual codebooks ``[L, K, E]``
    (from :func:`rq_kmeans`): each level picks the nearest centroid to what the levels
    before left. How a post created after the codebooks were fitted gets its codes."""
    residual = jnp.asarray(vectors, jnp.float32)
    codes = []
    for centroids in jnp.asarray(codebooks, jnp.float32):
        code = _assign(residual, centroids)
        residual = residual - centroids[code]
        codes.append(code)
    return np.asarray(jnp.stack(codes, 1))


def semantic_ids(vocabulary, codes, codebook_size: int, dim: int, *, hash_rows: int = 0):
    """Each ID's ``L`` codes (``codes`` int [V, L], from :func:`rq_kmeans`) read one row of
    each level's table ``[codebook_size, dim]``, summed; with ``hash_rows > 0`` a hashed
    table ``[hash_rows, dim]`` adds a row of the ID's own, which separates IDs with equal
    codes. The codes are stored per ID (``L`` bytes for ``K <= 256``) with the vocabulary."""
    vocabulary = _check_vocabulary(vocabulary)
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] != vocabulary.size:
        raise ValueError(f"codes must be [{vocabulary.size}, L], got {codes.shape}")
    if codes.min() < 0 or codes.max() >= codebook_size:
        raise ValueError(f"codes must lie in [0, {codebook_size})")
    levels = codes.shape[1]

    def features(ids, mask=None):
        i = vocabulary_index(vocabulary, ids, mask)
        f = np.where(i[..., None] >= 0, codes[np.maximum(i, 0)], -1)
        if hash_rows:
            h = np.asarray(
                hashing.multi_hash(ids, num_buckets=hash_rows, num_hashes=1, mask=i >= 0)
            )
            f = np.concatenate([f, np.where(h == 0, -1, h)], -1)
        return f.astype(np.int32)

    def init(key):
        k1, k2 = jax.random.split(key)
        parts = levels + (hash_rows > 0)
        params = {"codebooks": _normal(k1, (levels, codebook_size, dim), (parts * dim) ** -0.5)}
        if hash_rows:
            params["hashed"] = _normal(k2, (hash_rows, dim), (parts * dim) ** -0.5)
        return params

    def embed(params, f):
        level = jnp.arange(levels)
        out = params["codebooks"][level, jnp.maximum(f[..., :levels], 0)].sum(-2)
        if hash_rows:
            out = out + _rows(params["hashed"], f[..., levels])
        return _masked(f, out)

    code_bytes = levels * (1 if codebook_size <= 256 else 2)
    extra = (DICTIONARY_BYTES_PER_ID + code_bytes) * vocabulary.size
    name = "semantic_ids" + ("_hashed" if hash_rows else "")
    return Technique(name, dim, features, init, embed, extra)


# ------------------------------------------------------------------ in the ranker


class EntityFeatures(NamedTuple):
    """Two techniques' features for every post and author of a world: int32 ``[P, Fp]``
    and ``[A, Fa]``. Features are a function of the ID alone, so they are computed once."""

    post: np.ndarray
    author: np.ndarray


def entity_features(world, post: Technique, author: Technique) -> EntityFeatures:
    """``post`` on every post ID of ``world`` and ``author`` on every author ID."""
    return EntityFeatures(post.features(world.post_ids), author.features(world.author_ids))


class SessionFeatures(NamedTuple):
    """A technique's features for a session's posts and authors: int32 ``[B, S|C, F]``."""

    history_post: np.ndarray
    candidate_post: np.ndarray
    history_author: np.ndarray
    candidate_author: np.ndarray


def session_features(world, session, features: EntityFeatures) -> SessionFeatures:
    """The features of a :class:`phoenix_lib.world.Session`'s history and candidates, read
    from ``features`` (:func:`entity_features`); padded history positions are -1."""
    hp, cp, mask = session.history_posts, session.candidate_posts, session.history_mask
    post_author = world.post_author

    def history(table, index):
        return np.where(mask[..., None], table[index], -1).astype(np.int32)

    return SessionFeatures(
        history(features.post, hp),
        features.post[cp],
        history(features.author, post_author[hp]),
        features.author[post_author[cp]],
    )


def ranker_objective(config, post: Technique, author: Technique, *, release: str = "2026-01"):
    """``loss(params, batch, features, labels, mask)``: the ranker of ``config`` with its
    post and author rows given by two techniques, its user rows by a hash table.

    ``params = {"model", "user" [Nu, D], "post", "author"}``, made by ``loss.init(key, batch,
    features, num_user_rows)``;
    ``features``: :class:`SessionFeatures`; the batch's hash fields still give the padding
    masks. Each technique gives one row per entity, so ``config`` must use one item and one
    author hash (the multi-hash technique combines its own rows). ``loss.predict(params,
    batch, features)`` gives the action probabilities ``[B, C, A]``, jitted.
    """
    from phoenix_lib import train
    from phoenix_lib.inputs import RecsysEmbeddings
    from phoenix_lib.ranker import make_ranker
    from phoenix_lib.tables import gather

    h = config.hash_config
    if (h.num_item_hashes, h.num_author_hashes) != (1, 1):
        raise ValueError(
            "a compact technique gives one row per post and author: use a config with "
            f"num_item_hashes=1 and num_author_hashes=1, got {h.num_item_hashes}, "
            f"{h.num_author_hashes}"
        )
    for technique in (post, author):
        if technique.dim != config.emb_size:
            raise ValueError(f"{technique.name} is {technique.dim} wide, the model "
                             f"{config.emb_size}")  # fmt: skip
    model = make_ranker(config, release=release)

    def embeddings(params, batch, f: SessionFeatures):
        return RecsysEmbeddings(
            user_embeddings=gather(params["user"], batch.user_hashes),
            history_post_embeddings=post.embed(params["post"], f.history_post)[..., None, :],
            candidate_post_embeddings=post.embed(params["post"], f.candidate_post)[..., None, :],
            history_author_embeddings=author.embed(params["author"], f.history_author)[
                ..., None, :
            ],
            candidate_author_embeddings=author.embed(params["author"], f.candidate_author)[
                ..., None, :
            ],
        )

    def logits(params, batch, features):
        tables = embeddings(params, batch, features)
        return train.forward(model, {"model": params["model"], "tables": tables}, batch)

    def loss(params, batch, features, labels, mask):
        return train.ranker_loss(logits(params, batch, features), labels, mask)

    @jax.jit
    def predict(params, batch, features):
        """Action probabilities ``[B, C, A]``."""
        return jax.nn.sigmoid(logits(params, batch, features))

    def init(key, batch, features, num_user_rows: int):
        """Fresh parameters for this objective."""
        k_user, k_post, k_author, k_model = jax.random.split(key, 4)
        params = {
            "user": jax.random.normal(k_user, (num_user_rows, config.emb_size))
            * config.emb_size**-0.5,
            "post": post.init(k_post),
            "author": author.init(k_author),
        }
        params["model"] = model.init(k_model, batch, embeddings(params, batch, features))
        return params

    loss.init = init
    loss.predict = predict
    return loss


def optimizer(steps: int):
    """The book's recipe adapted to compact embeddings: the model's weights as in
    :func:`phoenix_lib.optimizers.book_optimizer` (AdamW, warm-up and cosine decay); every
    embedding parameter (the user table, both techniques' tables, cores and projections)
    with Adagrad at learning rate 0.1, elementwise, since not every technique's parameters
    are rows a batch touches. Its accumulators start at zero, as the row-wise Adagrad's do
    (optax's default, 0.1, would scale every update of an embedding, whose gradients are
    of order 1e-4, down a thousandfold: the rows would barely leave their initial values).
    """
    import optax

    from phoenix_lib.optimizers import book_optimizer

    def labels(params):
        return {name: "model" if name == "model" else "embeddings" for name in params}

    transforms = {
        "model": book_optimizer(steps).dense,
        "embeddings": optax.adagrad(0.1, initial_accumulator_value=0.0, eps=1e-8),
    }
    return optax.multi_transform(transforms, labels)


# ------------------------------------------------------------------ at equal memory


class DoesNotFit(ValueError):
    """A technique cannot be built within a memory budget (the message says why)."""


def _three_factors(n: int) -> tuple[int, int, int]:
    """The most balanced ``(a, b, c)``, ``a <= b <= c``, with ``a * b * c == n``."""
    best = (1, 1, n)
    for a in range(1, round(n ** (1 / 3)) + 1):
        for b in range(a, int(np.sqrt(n // a)) + 1):
            if n % (a * b) == 0 and n // (a * b) >= b and n // (a * b) - a < best[2] - best[0]:
                best = (a, b, n // (a * b))
    return best


def at_budget(name: str, rows: int, *, vocabulary, dim: int, counts=None, content=None,
              known=None, stream=None, seed: int = 0) -> Technique:  # fmt: skip
    """Technique ``name`` for ``vocabulary``'s IDs with at most ``rows * dim`` floats.

    What the budget counts: the parameters, and for MPZCH its 12 bytes of identity and
    expiry per slot (3 floats), since that is how its memory stays bounded; not the
    ID -> index dictionary the vocabulary techniques need (see :func:`memory_bytes`),
    which grows with the vocabulary. How each technique spends the budget:

    * ``hash_<k>_sum``, ``hash_<k>_concat``: ``k`` hashes into one table; the concat
      projection ``[k * dim, dim]`` is paid from the rows;
    * ``double_hashing``: two tables of ``rows // 2``;
    * ``quotient_remainder`` (product): the largest remainder table ``m`` with
      ``m + ceil(V / m) <= rows``;
    * ``mixed_dimension``: the widest narrow rows (a power of two up to ``dim / 2``) for
      every ID, then as many full rows for the most frequent (``counts``) as fit;
    * ``tensor_train``: row factors ``~V^(1/3)`` each, ``dim`` split in three, the largest
      rank that fits;
    * ``semantic_ids``: 4 levels of ``K = min(256, rows // 4)`` codes;
      ``semantic_ids_hashed``: 3 levels of ``min(256, rows // 6)`` and a hashed table of
      the rows left (about half). Codebooks are fitted (:func:`rq_kmeans`, ``seed``) on
      ``content[known]`` and every ID is encoded (:func:`rq_encode`);
    * ``mpzch``: ``rows * dim // (dim + 3)`` slots written from ``stream``.

    Raises :class:`DoesNotFit` when the technique's smallest form exceeds the budget.
    """
    vocabulary = _check_vocabulary(vocabulary)
    v, floats = vocabulary.size, rows * dim
    if name.startswith("hash_"):
        _, k, combine = name.split("_")
        k = int(k)
        table = rows - (k * dim if combine == "concat" else 0)
        if table < 2:
            raise DoesNotFit(f"{name}: the projection alone takes {k * dim} of {rows} rows")
        return multi_hash(table, dim, k, combine=combine)._replace(name=name)
    if name == "double_hashing":
        return double_hashing(rows, dim)
    if name == "quotient_remainder":
        fits = [m for m in range(1, v + 1) if m + -(-v // m) <= rows]
        if not fits:
            least = min(m + -(-v // m) for m in range(1, v + 1))
            raise DoesNotFit(f"{name}: needs at least {least} rows for {v:,} IDs, has {rows}")
        return quotient_remainder(vocabulary, dim, max(fits))
    if name == "mixed_dimension":
        for narrow in (2**i for i in range(int(np.log2(dim)) - 1, -1, -1)):
            left = floats - v * narrow - narrow * dim
            if left >= 0:
                wide = min(v, left // (dim - narrow))
                return mixed_dimension(vocabulary, counts, dim, wide=wide, narrow_dim=narrow)
        raise DoesNotFit(f"{name}: even one float per ID ({v:,}) exceeds {floats:,} floats")
    if name == "tensor_train":
        n1 = n2 = int(np.ceil(v ** (1 / 3)))
        n3 = -(-v // (n1 * n2))
        d1, d2, d3 = _three_factors(dim)
        rank = 0
        while n1 * d1 * (rank + 1) + n2 * d2 * (rank + 1) ** 2 + n3 * d3 * (rank + 1) <= floats:
            rank += 1
        if not rank:
            raise DoesNotFit(f"{name}: rank 1 exceeds {floats:,} floats")
        return tensor_train(vocabulary, dim, rank=rank, row_factors=(n1, n2, n3),
                            dim_factors=(d1, d2, d3))  # fmt: skip
    if name in ("semantic_ids", "semantic_ids_hashed"):
        hashed = name.endswith("hashed")
        levels = 3 if hashed else 4
        k = min(256, rows // (2 * levels if hashed else levels))
        if k < 2:
            raise DoesNotFit(f"{name}: {rows} rows leave fewer than 2 codes per level")
        known = np.ones(v, bool) if known is None else np.asarray(known)
        _, books, _ = rq_kmeans(jax.random.key(seed), np.asarray(content)[known],
                                levels=levels, codebook_size=k)  # fmt: skip
        codes = rq_encode(books, content)
        hash_rows = rows - levels * k if hashed else 0
        return semantic_ids(vocabulary, codes, k, dim, hash_rows=hash_rows)
    if name == "mpzch":
        return zero_collision(stream, dim, floats // (dim + 3))
    raise ValueError(f"unknown technique {name!r}")


class Trained(NamedTuple):
    """A ranker trained by :func:`train_ranker`: its parameters before and after training,
    its test probabilities ``[N, C, A]`` and the mean seconds per training step after the
    first (compiling)."""

    initial: dict
    params: dict
    probabilities: np.ndarray
    seconds_per_step: float


def train_ranker(world, timeline, config, post: Technique, author: Technique, test, *,
                 steps: int, seed: int, sessions: range = range(40), batch_size: int = 64,
                 num_user_rows: int = 2**13, progress: bool = True) -> Trained:  # fmt: skip
    """Chapter 4's recipe with compact post and author rows: ``steps`` steps of
    ``batch_size`` (user, session) pairs drawn from ``sessions`` of ``timeline`` (draws
    and initialisation seeded by ``seed``), :func:`optimizer`; then the test sessions
    ``test`` (a :class:`phoenix_lib.world.Session`) scored 500 at a time."""
    import time

    from phoenix_lib import train

    if steps < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    loss = ranker_objective(config, post, author)
    features = entity_features(world, post, author)
    num_buckets = (num_user_rows, 2, 2)  # posts and authors come from the techniques
    made = {}
    sampled = world.timeline_data(config, timeline, num_buckets, batch_size=batch_size,
                                  sessions=sessions, seed_offset=seed * 10**6,
                                  on_session=made.__setitem__)  # fmt: skip

    def data(i):
        batch, labels, mask = sampled(i)
        return batch, session_features(world, made.pop(i), features), labels, mask

    opt = optimizer(steps)
    first = data(0)
    params = loss.init(jax.random.key(seed), first[0], first[1], num_user_rows=num_user_rows)
    state = train.TrainState(params, opt.init(params), jnp.zeros((), jnp.int32))
    step = train.make_step(loss, opt)
    state, _ = step(state, *first)
    timed = time.perf_counter()
    desc = f"{post.name} / {author.name}"
    state, _ = train.fit(step, state, data, steps - 1, desc=desc, progress=progress)
    seconds = (time.perf_counter() - timed) / (steps - 1)
    buckets = world.buckets(config, num_buckets)
    parts = []
    for start in range(0, test.users.size, 500):
        chunk = test._replace(**{k: v[start : start + 500] for k, v in test._asdict().items()})
        batch = world.to_batch(config, chunk, num_buckets, buckets=buckets)
        chunk_features = session_features(world, chunk, features)
        parts.append(np.asarray(loss.predict(state.params, batch, chunk_features)))
    return Trained(params, state.params, np.concatenate(parts), seconds)


class Experiment(NamedTuple):
    """Chapter 8's setting: Chapter 4's world and timeline, a one-layer ranker, and what
    each technique is built from. ``known`` [P] / ``author_known`` [A]: the posts (and
    their authors) created by the last training session; ``counts`` / ``author_counts``:
    impressions in the training sessions; ``stream`` / ``author_stream``: the IDs shown in
    each training session, in time order; ``content`` [P, D]: the posts' content vectors,
    ``author_content`` [A, D] the mean of each author's posts'; ``fresh`` [N]: test
    impressions of posts created after the last training session."""

    world: object
    timeline: object
    config: object
    test: object
    labels: np.ndarray
    fresh: np.ndarray
    content: np.ndarray
    author_content: np.ndarray
    known: np.ndarray
    author_known: np.ndarray
    counts: np.ndarray
    author_counts: np.ndarray
    stream: list
    author_stream: list


def experiment(seed: int, *, num_layers: int = 1, train_sessions: int = 40,
               test_users: int = 500) -> Experiment:  # fmt: skip
    """Chapter 4's world (2,000 users, 500 authors, 5,000 posts) and 48-session timeline;
    training on sessions ``[0, train_sessions)``, test on the rest for every fourth of the
    first ``4 * test_users`` users; the ranker with one item and one author hash, 32 wide."""
    import dataclasses

    from phoenix_lib.config import HashConfig, book_ranker_config
    from phoenix_lib.world import World, WorldConfig

    world = World(WorldConfig(num_users=2_000, num_authors=500, num_posts=5_000, num_topics=8,
                              noise=0.2, seed=seed))  # fmt: skip
    timeline = world.timeline(seed, num_sessions=48, session_size=16, start_hour=24,
                              recency_hours=24)  # fmt: skip
    config = book_ranker_config(history_seq_len=16, hash_config=HashConfig(
        num_user_hashes=2, num_item_hashes=1, num_author_hashes=1))  # fmt: skip
    config.model = dataclasses.replace(config.model, num_layers=num_layers)
    if not 0 < train_sessions < 48 or not 0 < test_users <= 500:
        raise ValueError("train_sessions must be in [1, 47] and test_users in [1, 500]")
    later = np.arange(train_sessions, 48)
    test = world.timeline_session(timeline, np.repeat(np.arange(0, 4 * test_users, 4),
                                                      later.size),
                                  np.tile(later, test_users), config.history_seq_len)  # fmt: skip
    trained_until = timeline.hours[train_sessions - 1]
    known = world.post_hour <= trained_until
    content = world.post_content(config.emb_size, seed=seed)
    num_authors = world.config.num_authors
    posts_of = np.bincount(world.post_author, minlength=num_authors)
    author_content = np.zeros((num_authors, content.shape[1]), np.float32)
    np.add.at(author_content, world.post_author, content)
    author_content /= np.maximum(posts_of, 1)[:, None]
    shown = timeline.posts[:, :train_sessions]
    return Experiment(
        world=world, timeline=timeline, config=config, test=test,
        labels=test.labels.reshape(-1, len(ACTIONS)),
        fresh=(world.post_hour[test.candidate_posts] > trained_until).reshape(-1),
        content=content, author_content=author_content, known=known,
        author_known=np.isin(np.arange(num_authors), world.post_author[known]),
        counts=np.bincount(shown.reshape(-1), minlength=world.config.num_posts),
        author_counts=np.bincount(world.post_author[shown.reshape(-1)], minlength=num_authors),
        stream=[world.post_ids[np.unique(shown[:, t])] for t in range(train_sessions)],
        author_stream=[world.author_ids[np.unique(world.post_author[shown[:, t]])]
                       for t in range(train_sessions)],
    )  # fmt: skip


def techniques_for(exp: Experiment, name: str, fraction: int, *, seed: int = 0):
    """Technique ``name`` for the posts and for the authors of ``exp`` at ``1 / fraction``
    of each full table's rows times D (``name == "full"``: the full tables). Returns
    ``(post, author, note)``; where the author table is too small for the technique, it
    gets one hash at the same budget and ``note`` says so (``""`` otherwise)."""
    world, dim = exp.world, exp.config.emb_size
    if name == "full":
        return full_table(world.post_ids, dim), full_table(world.author_ids, dim), ""
    post = at_budget(name, world.config.num_posts // fraction, vocabulary=world.post_ids,
                     dim=dim, counts=exp.counts, content=exp.content, known=exp.known,
                     stream=exp.stream, seed=seed)  # fmt: skip
    rows = world.config.num_authors // fraction
    try:
        author = at_budget(name, rows, vocabulary=world.author_ids, dim=dim,
                           counts=exp.author_counts, content=exp.author_content,
                           known=exp.author_known, stream=exp.author_stream, seed=seed)  # fmt: skip
        return post, author, ""
    except DoesNotFit as reason:
        return (
            post,
            at_budget("hash_1_sum", rows, vocabulary=world.author_ids, dim=dim),
            (f"authors by one hash ({reason})"),
        )


def references(exp: Experiment) -> dict:
    """What every technique is measured against on ``exp``'s test impressions: the
    oracle's pooled NE (all posts and fresh posts) and favorite AUC, and popularity's (each
    post's action rates over the training sessions) pooled NE and favorite AUC."""
    fav = ACTIONS.index("favorite")
    truth = exp.test.probabilities.reshape(exp.labels.shape)  # [N, A]
    shown = exp.timeline.posts[:, : len(exp.stream)]
    rates = metrics.empirical_rates(shown, exp.timeline.labels[:, : len(exp.stream)],
                                    exp.world.config.num_posts)  # fmt: skip
    popular = rates[exp.test.candidate_posts.reshape(-1)]  # [N, A]
    labels, fresh = exp.labels, exp.fresh
    return {
        "oracle_ne": metrics.pooled_normalized_entropy(labels, truth),
        "oracle_fresh_ne": metrics.pooled_normalized_entropy(labels[fresh], truth[fresh]),
        "oracle_auc": metrics.auc(labels[:, fav], truth[:, fav]),
        "popularity_ne": metrics.pooled_normalized_entropy(labels, popular),
        "popularity_auc": metrics.auc(labels[:, fav], popular[:, fav]),
    }


def quality(exp: Experiment, ref: dict, probabilities) -> dict:
    """A trained ranker's test quality (``probabilities`` [N, C, A] or [N * C, A]) against
    :func:`references`: pooled NE, the share of the base-rate-to-oracle gap in pooled NE
    closed, the share of the popularity-to-oracle gap in favorite AUC closed, and pooled
    NE on fresh posts."""
    fav = ACTIONS.index("favorite")
    p = np.asarray(probabilities).reshape(exp.labels.shape)
    ne = metrics.pooled_normalized_entropy(exp.labels, p)
    auc = metrics.auc(exp.labels[:, fav], p[:, fav])
    return {
        "pooled_ne": ne,
        "ne_gap_closed": metrics.gap_closed(ne, 1.0, ref["oracle_ne"]),
        "auc_gap_closed": metrics.gap_closed(auc, ref["popularity_auc"], ref["oracle_auc"]),
        "fresh_ne": metrics.pooled_normalized_entropy(exp.labels[exp.fresh], p[exp.fresh]),
    }
