"""MovieLens-100K: the files, a strict loader, and the leave-one-out protocol of
sequential-recommendation benchmarks.

The data (GroupLens, Harper and Konstan 2015) are never part of the repository. By
default they come from the ``recbole==1.2.1`` wheel on PyPI, which ships the ML-100K files
converted to RecBole's typed, tab-separated format (``ml-100k.inter``, ``.item``,
``.user``): :func:`download` fetches the wheel with ``pip download --no-deps`` (RecBole
is neither installed nor imported), checks its SHA-256, extracts those three files and
checks theirs. :func:`load` also reads the original GroupLens folder (``u.data``,
``u.item``, ``u.user``) for a reader who has it. Both give the same
:class:`MovieLens`, whose ratings are checked against one digest of their content.

The GroupLens licence: research use, cite the paper, no redistribution.

Indices: users and movies are 0-based rows here; the raw IDs of the files are
``index + 1`` (:attr:`MovieLens.user_ids`, :attr:`MovieLens.item_ids`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from phoenix_lib.inputs import Buckets, RecsysBatch, hash_entities
from phoenix_lib.train import retrieval_loss

WHEEL = "recbole==1.2.1"
WHEEL_FILE = "recbole-1.2.1-py3-none-any.whl"
WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
WHEEL_FOLDER = "recbole/dataset_example/ml-100k/"
# The 19 genres in GroupLens's order (u.genre); RecBole spells them the same way.
GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Expected:
    """What a complete, unaltered copy holds: sizes, the RecBole files' SHA-256 and a
    digest of the ratings' content (:func:`ratings_digest`) that either format must give."""

    num_ratings: int
    num_users: int
    num_items: int
    sha256: dict  # RecBole file name -> hex digest
    ratings_sha256: str


@dataclasses.dataclass(frozen=True)
class MovieLens:
    """The data set as typed arrays. ``N`` ratings, ``U`` users, ``I`` movies.

    Ratings keep the files' order. Genres are multi-hot over :data:`GENRES`; a release
    year of 0 is unknown (two movies in RecBole's files).
    """

    user: np.ndarray  # [N] int32 in [0, U)
    item: np.ndarray  # [N] int32 in [0, I)
    rating: np.ndarray  # [N] int8 in 1..5
    timestamp: np.ndarray  # [N] int64 Unix seconds
    title: tuple  # [I] str
    genres: np.ndarray  # [I, 19] bool
    release_year: np.ndarray  # [I] int16, 0 unknown
    age: np.ndarray  # [U] int16
    gender: np.ndarray  # [U] str "M" / "F"
    occupation: np.ndarray  # [U] str
    zip_code: np.ndarray  # [U] str

    @property
    def num_users(self) -> int:
        return self.age.shape[0]

    @property
    def num_items(self) -> int:
        return self.genres.shape[0]

    @property
    def user_ids(self) -> np.ndarray:
        """``[U]`` int64: the files' user IDs (1-based)."""
        return np.arange(1, self.num_users + 1, dtype=np.int64)

    @property
    def item_ids(self) -> np.ndarray:
        """``[I]`` int64: the files' movie IDs (1-based)."""
        return np.arange(1, self.num_items + 1, dtype=np.int64)

    @property
    def primary_genre(self) -> np.ndarray:
        """``[I]`` int: each movie's first listed genre (its index in :data:`GENRES`)."""
        return np.argmax(self.genres, axis=1)


def ratings_digest(user, item, rating, timestamp) -> str:
    """SHA-256 of the ratings as a set: rows ``(user, item, rating, timestamp)`` in int64,
    sorted, so the file's order does not matter (no user rates a movie twice)."""
    rows = np.stack([np.asarray(a, np.int64) for a in (user, item, rating, timestamp)], 1)
    rows = rows[np.lexsort(rows.T[::-1])]
    return hashlib.sha256(rows.tobytes()).hexdigest()


ML_100K = Expected(
    num_ratings=100_000,
    num_users=943,
    num_items=1_682,
    sha256={
        "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
        "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
        "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
    },
    ratings_sha256="748d8b7a9488c2bb9767b5539546473528793f457f00ec728f84559017c15a00",
)


def default_folder() -> Path:
    """``$PHOENIX_DATA_DIR/ml-100k``, or ``_build/data/ml-100k`` beside the package."""
    root = os.environ.get("PHOENIX_DATA_DIR")
    base = Path(root) if root else Path(__file__).resolve().parents[1] / "_build" / "data"
    return base / "ml-100k"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def download(folder: str | os.PathLike | None = None, *, quiet: bool = False) -> Path:
    """Fetch the ``recbole==1.2.1`` wheel from the package index (``pip download
    --no-deps``), check its SHA-256, and extract the three ML-100K files into ``folder``
    (default :func:`default_folder`), each checked against :data:`ML_100K`. Returns the
    folder. Nothing else of the wheel is kept."""
    folder = Path(folder) if folder is not None else default_folder()
    if not quiet:
        print(f"MovieLens-100K: downloading {WHEEL} from the package index into {folder}")
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL]
        done = subprocess.run([*command, "-d", tmp], capture_output=True, text=True)
        wheel = Path(tmp) / WHEEL_FILE
        if done.returncode != 0 or not wheel.is_file():
            raise RuntimeError(
                f"could not download {WHEEL} with pip (exit {done.returncode}): "
                f"{done.stderr.strip()[-500:]}\nCheck the connection to the package index, "
                "or pass load() the folder of the GroupLens files (u.data, u.item, u.user)."
            )
        if sha256_of(wheel) != WHEEL_SHA256:
            raise RuntimeError(
                f"{WHEEL_FILE} does not have the expected SHA-256 {WHEEL_SHA256}: "
                "the package index served a different file; nothing was extracted"
            )
        folder.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as archive:
            for name in ML_100K.sha256:
                with archive.open(WHEEL_FOLDER + name) as src, open(folder / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    _check_files(folder, ML_100K)
    return folder


def _check_files(folder: Path, expected: Expected) -> None:
    for name, digest in expected.sha256.items():
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: delete {folder} and call movielens.download() "
                "(or load(), which downloads on first use)"
            )
        if sha256_of(path) != digest:
            raise ValueError(
                f"{path} does not match its SHA-256 ({digest}): the file is truncated or "
                f"altered; delete {folder} and call movielens.download() to fetch it afresh"
            )


def load(
    folder: str | os.PathLike | None = None, *, expected: Expected = ML_100K, quiet: bool = False
) -> MovieLens:
    """The data set from ``folder``: RecBole's files (``ml-100k.inter``, ``.item``,
    ``.user``) or GroupLens's (``u.data``, ``u.item``, ``u.user``).

    With no folder, :func:`default_folder`, downloaded there on first use. Every line is
    parsed strictly: a malformed line, a count that differs from ``expected``, or ratings
    whose content digest differs raise an error naming the file and what to do. RecBole's
    files are also checked against their SHA-256 (``expected.sha256``).
    """
    if folder is None:
        folder = default_folder()
        if not all((folder / name).is_file() for name in expected.sha256):
            download(folder, quiet=quiet)
    folder = Path(folder)
    if (folder / "u.data").is_file():
        data = _read_grouplens(folder)
    elif (folder / "ml-100k.inter").is_file():
        _check_files(folder, expected)
        data = _read_recbole(folder)
    else:
        raise FileNotFoundError(
            f"{folder} holds neither GroupLens's u.data nor RecBole's ml-100k.inter; "
            "call load() without a folder to download the data"
        )
    _check_content(data, folder, expected)
    return data


class _Table(NamedTuple):
    path: Path
    rows: list  # list of lists of str


def _read_table(path: Path, sep: str, width: int, *, header: bool, encoding="utf-8") -> _Table:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    lines = path.read_text(encoding=encoding).splitlines()
    if header:
        lines = lines[1:]
    rows = []
    for number, line in enumerate(lines, start=2 if header else 1):
        fields = line.split(sep)
        if len(fields) != width:
            raise ValueError(
                f"{path}, line {number}: {len(fields)} fields where {width} are expected; "
                "the file is truncated or altered"
            )
        rows.append(fields)
    return _Table(path, rows)


def _ints(table: _Table, column: int, dtype, what: str) -> np.ndarray:
    try:
        return np.array([int(row[column]) for row in table.rows], dtype)
    except ValueError as err:
        raise ValueError(f"{table.path}: a {what} that is not an integer ({err})") from None


def _year(text: str) -> int:
    """A release year from RecBole's ``1995`` or GroupLens's ``01-Jan-1995``; 0 if absent."""
    tail = text.strip()[-4:]
    return int(tail) if tail.isdigit() else 0


def _read_recbole(folder: Path) -> MovieLens:
    items = _read_table(folder / "ml-100k.item", "\t", 4, header=True)
    genres = np.array([[g in row[3].split(" ") for g in GENRES] for row in items.rows], bool)
    return _assemble(
        _read_table(folder / "ml-100k.inter", "\t", 4, header=True),
        items,
        _read_table(folder / "ml-100k.user", "\t", 5, header=True),
        genres,
    )


def _read_grouplens(folder: Path) -> MovieLens:
    items = _read_table(folder / "u.item", "|", 5 + len(GENRES), header=False, encoding="latin-1")
    return _assemble(
        _read_table(folder / "u.data", "\t", 4, header=False),
        items,
        _read_table(folder / "u.user", "|", 5, header=False),
        np.array([[f == "1" for f in row[5:]] for row in items.rows], bool),
    )


def _assemble(inter: _Table, items: _Table, users: _Table, genres: np.ndarray) -> MovieLens:
    """Typed arrays from the three tables, which have the same columns in both formats:
    ratings (user, movie, rating, timestamp); movies (ID, title, release, ...); users
    (ID, age, gender, occupation, zip code)."""
    _check_dense(items.path, _ints(items, 0, np.int64, "movie ID"))
    _check_dense(users.path, _ints(users, 0, np.int64, "user ID"))
    return MovieLens(
        user=_ints(inter, 0, np.int32, "user ID") - 1,
        item=_ints(inter, 1, np.int32, "movie ID") - 1,
        rating=_ints(inter, 2, np.int8, "rating"),
        timestamp=_ints(inter, 3, np.int64, "timestamp"),
        title=tuple(row[1] for row in items.rows),
        genres=genres,
        release_year=np.array([_year(row[2]) for row in items.rows], np.int16),
        age=_ints(users, 1, np.int16, "age"),
        gender=np.array([row[2] for row in users.rows]),
        occupation=np.array([row[3] for row in users.rows]),
        zip_code=np.array([row[4] for row in users.rows]),
    )


def _check_dense(path: Path, ids: np.ndarray) -> None:
    if not np.array_equal(ids, np.arange(1, ids.size + 1)):
        raise ValueError(f"{path}: IDs are not 1, 2, ..., {ids.size} in order")


def _check_content(data: MovieLens, folder: Path, expected: Expected) -> None:
    sizes = {
        "ratings": (data.user.size, expected.num_ratings),
        "users": (data.num_users, expected.num_users),
        "movies": (data.num_items, expected.num_items),
    }
    for what, (got, want) in sizes.items():
        if got != want:
            raise ValueError(
                f"{folder}: {got:,} {what} where {want:,} are expected; "
                "a file is truncated or altered"
            )
    if data.user.min() < 0 or data.user.max() >= data.num_users:
        raise ValueError(f"{folder}: a rating names a user outside the users' file")
    if data.item.min() < 0 or data.item.max() >= data.num_items:
        raise ValueError(f"{folder}: a rating names a movie outside the movies' file")
    if not np.isin(data.rating, np.arange(1, 6)).all():
        raise ValueError(f"{folder}: a rating outside 1..5")
    digest = ratings_digest(data.user, data.item, data.rating, data.timestamp)
    if digest != expected.ratings_sha256:
        raise ValueError(
            f"{folder}: the ratings differ from MovieLens-100K's (content SHA-256 {digest}, "
            f"expected {expected.ratings_sha256}); a file is altered"
        )


class Examples(NamedTuple):
    """Next-item examples: a user, the items rated before (oldest first, padding at the
    end, at most ``H``) and the item rated next. ``N`` examples."""

    user: np.ndarray  # [N] int32
    history: np.ndarray  # [N, H] int32 movies, -1 padding
    history_rating: np.ndarray  # [N, H] int8, 0 padding
    target: np.ndarray  # [N] int32
    target_rating: np.ndarray  # [N] int8
    position: np.ndarray  # [N] int32: the target's place in the user's sequence (0 first)

    @property
    def history_mask(self) -> np.ndarray:
        """``[N, H]`` bool, True for real entries."""
        return self.history >= 0


class LeaveOneOut(NamedTuple):
    """The protocol's three sets: every prefix of a user's training sequence predicts its
    next item (``train``); the second-to-last item (``valid``) and the last (``test``)
    are predicted from everything before them."""

    train: Examples
    valid: Examples
    test: Examples


def user_sequences(data: MovieLens) -> list[np.ndarray]:
    """Each user's rating indices into ``data``, ordered by timestamp; ties keep the
    files' order (a stable sort), as the protocol asks. So the split depends on the
    file's order among ratings of the same second, which the content digest of
    :func:`load` does not check (it is order-free): RecBole's file, whose SHA-256 is
    checked, defines the book's split."""
    order = np.lexsort((data.timestamp, data.user))  # by user, then time; stable
    starts = np.searchsorted(data.user[order], np.arange(data.num_users + 1))
    return [order[a:b] for a, b in itertools.pairwise(starts)]


def leave_one_out(data: MovieLens, max_history: int = 50) -> LeaveOneOut:
    """Split ``data`` the way published sequential benchmarks (RecBole's) do: each user's
    ratings by time; the last is the test target, the second-to-last the validation
    target, each earlier one (from the second on) a training target; a history holds the
    ``max_history`` ratings just before its target. Users need at least three ratings."""
    if max_history < 1:
        raise ValueError(f"max_history must be >= 1, got {max_history}")
    sequences = user_sequences(data)
    short = [u for u, s in enumerate(sequences) if s.size < 3]
    if short:
        raise ValueError(f"users {short[:5]} have fewer than 3 ratings: nothing to split")
    picks = {"train": [], "valid": [], "test": []}
    for u, s in enumerate(sequences):
        picks["train"] += [(u, t) for t in range(1, s.size - 2)]
        picks["valid"].append((u, s.size - 2))
        picks["test"].append((u, s.size - 1))
    return LeaveOneOut(
        **{name: _examples(data, sequences, pairs, max_history) for name, pairs in picks.items()}
    )


def _examples(data: MovieLens, sequences, pairs, max_history: int) -> Examples:
    n = len(pairs)
    history = np.full((n, max_history), -1, np.int32)
    history_rating = np.zeros((n, max_history), np.int8)
    target = np.empty(n, np.int32)
    for row, (u, t) in enumerate(pairs):
        s = sequences[u]
        before = s[max(0, t - max_history) : t]
        history[row, : before.size] = data.item[before]
        history_rating[row, : before.size] = data.rating[before]
        target[row] = s[t]
    users, position = (np.array(column, np.int32) for column in zip(*pairs, strict=True))
    return Examples(
        users, history, history_rating, data.item[target], data.rating[target], position
    )


def rated_before(data: MovieLens, examples: Examples) -> np.ndarray:
    """``[N, I]`` bool: every movie each example's user rated before its target, the whole
    past rather than the last ``H`` (the items the masked variant removes from a ranking)."""
    sequences = user_sequences(data)
    seen = np.zeros((examples.user.size, data.num_items), bool)
    for row, (u, t) in enumerate(zip(examples.user, examples.position, strict=True)):
        seen[row, data.item[sequences[u][:t]]] = True
    return seen


class Ranking(NamedTuple):
    """Per-example metrics of a full ranking at cut-off ``k``: ``[N]`` each."""

    rank: np.ndarray  # 1-based rank of the target among all scored items
    hit: np.ndarray  # HR@k: 1.0 if rank <= k
    ndcg: np.ndarray  # NDCG@k: 1 / log2(rank + 1) if rank <= k (one relevant item)
    mrr: np.ndarray  # MRR@k: 1 / rank if rank <= k


def rank_targets(scores, target, *, k: int = 10, exclude=None) -> Ranking:
    """Rank each example's ``target`` among all items by ``scores`` ``[N, I]`` (higher is
    better). Ties go against the target's index order: an item with an equal score and a
    lower index ranks above it (a stable sort by descending score), so constant scores
    give no free hits. ``exclude`` bool ``[N, I]`` (the masked variant: items already
    rated) removes items from the ranking; the target itself may not be excluded."""
    scores = np.asarray(scores, np.float64)
    target = np.asarray(target)
    n, num_items = scores.shape
    if target.shape != (n,):
        raise ValueError(f"target must have shape ({n},), got {target.shape}")
    rows = np.arange(n)
    if exclude is not None:
        exclude = np.asarray(exclude, bool)
        if exclude.shape != scores.shape:
            raise ValueError(f"exclude must have shape {scores.shape}, got {exclude.shape}")
        if exclude[rows, target].any():
            raise ValueError("exclude removes a target from its own ranking")
        scores = np.where(exclude, -np.inf, scores)
    own = scores[rows, target][:, None]
    lower_index = np.arange(num_items)[None, :] < target[:, None]
    rank = 1 + np.sum((scores > own) | ((scores == own) & lower_index), axis=1)
    top = rank <= k
    return Ranking(
        rank=rank,
        hit=top.astype(np.float64),
        ndcg=np.where(top, 1.0 / np.log2(rank + 1.0), 0.0),
        mrr=np.where(top, 1.0 / rank, 0.0),
    )


# The history's multi-action vector, derived from each rating.
ACTIONS = ("rated", "rated_4_plus", "rated_2_or_less")


def rating_actions(rating) -> np.ndarray:
    """``[..., 3]`` float32 multi-hot over :data:`ACTIONS` from ratings ``[...]`` (0: none)."""
    r = np.asarray(rating)
    return np.stack([r > 0, r >= 4, (r > 0) & (r <= 2)], axis=-1).astype(np.float32)


def buckets(data: MovieLens, config, num_buckets: tuple[int, int, int]) -> Buckets:
    """Every raw ID hashed once (Chapter 1's ``multi_hash``), in Phoenix's slots: users by
    their files' IDs, movies as posts, genres (by ``index + 1``) as authors;
    ``num_buckets`` is ``(users, movies, genres)``."""
    genre_ids = np.arange(1, len(GENRES) + 1, dtype=np.int64)
    return hash_entities(config, num_buckets, data.user_ids, data.item_ids, genre_ids)


def to_batch(
    data: MovieLens, examples: Examples, hashed: Buckets, candidates, *, history: bool = True
) -> RecsysBatch:
    """A :class:`~phoenix_lib.inputs.RecsysBatch` for ``examples`` scoring ``candidates``
    int ``[N, C]`` (movies; ``-1`` pads). ``history=False`` blanks every history (the
    no-history ablation). Product surfaces are all 0: MovieLens has none."""
    candidates = np.asarray(candidates)
    if candidates.ndim != 2 or candidates.shape[0] != examples.user.size:
        raise ValueError(f"candidates must be [{examples.user.size}, C], got {candidates.shape}")
    hist = examples.history if history else np.full_like(examples.history, -1)
    h_mask, c_mask = (hist >= 0)[..., None], (candidates >= 0)[..., None]
    genre = data.primary_genre
    h_items, c_items = np.maximum(hist, 0), np.maximum(candidates, 0)
    return RecsysBatch(
        user_hashes=hashed.user[examples.user],
        history_post_hashes=np.where(h_mask, hashed.post[h_items], 0),
        history_author_hashes=np.where(h_mask, hashed.author[genre[h_items]], 0),
        history_actions=rating_actions(np.where(hist >= 0, examples.history_rating, 0)),
        history_product_surface=np.zeros(hist.shape, np.int32),
        candidate_post_hashes=np.where(c_mask, hashed.post[c_items], 0),
        candidate_author_hashes=np.where(c_mask, hashed.author[genre[c_items]], 0),
        candidate_product_surface=np.zeros(candidates.shape, np.int32),
    )


def prefix_targets(examples: Examples) -> np.ndarray:
    """``[N, 1 + H]`` movies: the positive of each prefix of each example's history, for
    training on every prefix at once (``make_retriever(..., every_prefix=True)``). Prefix
    ``i`` (the user and the first ``i`` history items) is followed by history item ``i``,
    and the whole history by the target; the empty prefix has none (``-1``, as the
    protocol's first rating is never a target), nor have prefixes past the history."""
    n, h = examples.history.shape
    targets = np.full((n, 1 + h), -1, np.int32)
    targets[:, 1:h] = np.where(examples.history_mask[:, 1:], examples.history[:, 1:], -1)
    length = examples.history_mask.sum(1)
    targets[np.arange(n), length] = np.where(length > 0, examples.target, -1)
    return targets


def mf_init(key, num_users: int, num_items: int, dim: int) -> dict:
    """Matrix factorisation as an ID-only two-tower model: one exact row per user and per
    movie (no hashing, no history), ``{"user": [U, D], "item": [I, D]}``, N(0, 0.1^2)."""
    ku, ki = jax.random.split(key)
    return {
        "user": 0.1 * jax.random.normal(ku, (num_users, dim), jnp.float32),
        "item": 0.1 * jax.random.normal(ki, (num_items, dim), jnp.float32),
    }


def mf_objective(temperature: float = 1.0):
    """``loss(params, user [B], item [B], log_q [B])``: the two-tower in-batch softmax with
    the log-Q correction (:func:`phoenix_lib.train.retrieval_loss`) on raw dot products."""

    def loss(params, user, item, log_q):
        return retrieval_loss(
            params["user"][user],
            params["item"][item],
            log_q,
            item,
            jnp.ones(item.shape, bool),
            temperature,
        )

    return loss
