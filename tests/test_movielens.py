"""The MovieLens loader on a small fixture written here, in both file formats; the
leave-one-out protocol; full-ranking metrics. The real data are exercised by Chapter 10."""

import dataclasses

import numpy as np
import pytest

from phoenix_lib import movielens as ml
from phoenix_lib.config import book_retrieval_config

# user, movie, rating, timestamp (1-based IDs as in the files). User 1's two ratings at
# time 30 are a tie that keeps the files' order; user 2 is out of order in the file.
RATINGS = [
    (1, 3, 4, 10), (1, 1, 5, 30), (1, 2, 2, 30), (1, 4, 1, 40),
    (2, 2, 3, 50), (2, 1, 4, 20), (2, 3, 5, 60),
    (3, 4, 4, 70), (3, 3, 2, 80), (3, 1, 3, 90), (3, 2, 5, 95),
]  # fmt: skip
MOVIES = [  # ID, title, year, genres
    (1, "Alpha", 1995, ("Comedy",)),
    (2, "Beta", 1996, ("Action", "Thriller")),
    (3, "Gamma", 0, ("unknown",)),
    (4, "Delta", 1977, ("Drama", "Romance")),
]
USERS = [(1, 24, "M", "technician", "85711"), (2, 53, "F", "other", "94043"),
         (3, 23, "M", "writer", "32067")]  # fmt: skip


def write_recbole(folder):
    folder.mkdir(parents=True, exist_ok=True)
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    inter += ["\t".join(map(str, r)) for r in RATINGS]
    items = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    items += [f"{i}\t{t}\t{y or 'unkonwn'}\t{' '.join(g)}" for i, t, y, g in MOVIES]
    users = ["user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"]
    users += ["\t".join(map(str, u)) for u in USERS]
    for name, lines in (("inter", inter), ("item", items), ("user", users)):
        (folder / f"ml-100k.{name}").write_text("\n".join(lines) + "\n")
    return folder


def write_grouplens(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text("".join("\t".join(map(str, r)) + "\n" for r in RATINGS))
    lines = []
    for i, title, year, genres in MOVIES:
        flags = "|".join("1" if g in genres else "0" for g in ml.GENRES)
        date = f"01-Jan-{year}" if year else ""
        lines.append(f"{i}|{title}|{date}||http://example|{flags}\n")
    (folder / "u.item").write_bytes("".join(lines).encode("latin-1"))
    (folder / "u.user").write_text("".join("|".join(map(str, u)) + "\n" for u in USERS))
    return folder


def expected_for(folder):
    """The fixture's own :class:`~phoenix_lib.movielens.Expected`, as ML_100K is the real one's."""
    u, i, r, t = (np.array(c) for c in zip(*RATINGS, strict=True))
    return ml.Expected(
        num_ratings=len(RATINGS),
        num_users=len(USERS),
        num_items=len(MOVIES),
        sha256={n: ml.sha256_of(folder / n) for n in ml.ML_100K.sha256},
        ratings_sha256=ml.ratings_digest(u - 1, i - 1, r, t),
    )


@pytest.fixture
def recbole(tmp_path):
    return write_recbole(tmp_path / "recbole")


def test_both_formats_load_the_same_typed_arrays(recbole, tmp_path):
    expected = expected_for(recbole)
    a = ml.load(recbole, expected=expected)
    b = ml.load(write_grouplens(tmp_path / "grouplens"), expected=expected)
    for field in dataclasses.fields(ml.MovieLens):
        x, y = getattr(a, field.name), getattr(b, field.name)
        assert np.array_equal(np.asarray(x), np.asarray(y)), field.name
    assert a.user.dtype == np.int32 and a.timestamp.dtype == np.int64
    assert a.user.tolist() == [r[0] - 1 for r in RATINGS]  # the files' order, 0-based
    assert a.release_year.tolist() == [1995, 1996, 0, 1977]
    assert a.genres[1, ml.GENRES.index("Thriller")] and a.genres[:, 0].tolist() == [0, 0, 1, 0]
    assert a.primary_genre.tolist() == [ml.GENRES.index(g[0]) for *_, g in MOVIES]
    assert a.item_ids.tolist() == [1, 2, 3, 4] and a.num_users == 3


def test_a_truncated_recbole_file_is_refused_by_its_hash(recbole):
    expected = expected_for(recbole)
    path = recbole / "ml-100k.inter"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(ValueError, match=r"ml-100k.inter does not match its SHA-256"):
        ml.load(recbole, expected=expected)


def test_a_missing_file_is_named(recbole):
    expected = expected_for(recbole)
    (recbole / "ml-100k.user").unlink()
    with pytest.raises(FileNotFoundError, match=r"ml-100k.user is missing"):
        ml.load(recbole, expected=expected)


def test_grouplens_files_truncated_altered_or_malformed_are_refused(recbole, tmp_path):
    expected = expected_for(recbole)
    folder = write_grouplens(tmp_path / "g")
    data = folder / "u.data"
    good = data.read_text()
    data.write_text("".join(good.splitlines(keepends=True)[:-1]))
    with pytest.raises(ValueError, match=r"10 ratings where 11 are expected"):
        ml.load(folder, expected=expected)
    data.write_text(good.replace("3\t2\t5\t95", "3\t2\t4\t95"))  # one rating changed
    with pytest.raises(ValueError, match=r"the ratings differ"):
        ml.load(folder, expected=expected)
    data.write_text(good.replace("3\t2\t5\t95", "3\t2\t5"))
    with pytest.raises(ValueError, match=r"u.data, line 11: 3 fields where 4"):
        ml.load(folder, expected=expected)
    data.write_text(good.replace("3\t2\t5\t95", "3\t2\tfive\t95"))
    with pytest.raises(ValueError, match=r"u.data: a rating that is not an integer"):
        ml.load(folder, expected=expected)
    data.write_text(good)
    assert ml.load(folder, expected=expected).num_items == 4


def test_a_folder_without_either_format_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"neither GroupLens's u\.data nor RecBole's"):
        ml.load(tmp_path)


def test_leave_one_out_orders_by_time_keeping_ties_in_file_order(recbole):
    data = ml.load(recbole, expected=expected_for(recbole))
    split = ml.leave_one_out(data, max_history=2)
    # user 1 (index 0) by time: 3, 1, 2 (the tie at 30 in file order), 4
    assert split.test.target.tolist() == [3, 2, 1]  # 0-based: movies 4, 3, 2
    assert split.valid.target.tolist() == [1, 1, 0]
    assert split.test.history[0].tolist() == [0, 1]  # the last two before the target
    assert split.test.history_rating[0].tolist() == [5, 2]
    assert split.test.position.tolist() == [3, 2, 3]
    # training targets: from the second rating to the third-to-last
    assert list(zip(split.train.user, split.train.target, strict=True)) == [(0, 0), (2, 2)]
    assert split.train.history.tolist() == [[2, -1], [3, -1]]  # padding at the end
    assert split.train.history_mask.tolist() == [[True, False], [True, False]]
    seen = ml.rated_before(data, split.test)
    assert seen[0].tolist() == [True, True, True, False]  # the whole past, not the last 2


def test_leave_one_out_needs_three_ratings_per_user(recbole):
    data = ml.load(recbole, expected=expected_for(recbole))
    few = dataclasses.replace(data, user=np.where(data.user == 1, 0, data.user).astype(np.int32))
    keep = np.ones(few.user.size, bool)
    keep[np.flatnonzero(few.user == 2)[:2]] = False
    short = dataclasses.replace(
        few, **{f: getattr(few, f)[keep] for f in ("user", "item", "rating", "timestamp")}
    )
    with pytest.raises(ValueError, match=r"users \[1, 2\] have fewer than 3"):
        ml.leave_one_out(short)
    with pytest.raises(ValueError, match="max_history"):
        ml.leave_one_out(data, max_history=0)


def test_ranks_break_ties_against_the_target_and_exclusion_moves_it_up():
    scores = np.array([[0.5, 0.9, 0.5, 0.1], [1.0, 1.0, 1.0, 1.0]])
    r = ml.rank_targets(scores, np.array([2, 0]), k=2)
    assert r.rank.tolist() == [3, 1]  # item 0 ties with the target and has the lower index
    assert r.hit.tolist() == [0.0, 1.0] and r.mrr.tolist() == [0.0, 1.0]
    assert r.ndcg.tolist() == [0.0, 1.0]
    exclude = np.array([[False, True, False, False], [False] * 4])
    r = ml.rank_targets(scores, np.array([2, 3]), k=2, exclude=exclude)
    assert r.rank.tolist() == [2, 4]
    assert r.ndcg[0] == pytest.approx(1 / np.log2(3)) and r.mrr[0] == 0.5
    with pytest.raises(ValueError, match="removes a target"):
        ml.rank_targets(scores, np.array([1, 0]), exclude=exclude)
    with pytest.raises(ValueError, match="target must have shape"):
        ml.rank_targets(scores, np.array([1]))


def test_batches_hash_movies_genres_and_rating_actions(recbole):
    data = ml.load(recbole, expected=expected_for(recbole))
    split = ml.leave_one_out(data, max_history=3)
    config = book_retrieval_config(history_seq_len=3)
    hashed = ml.buckets(data, config, (64, 64, 16))
    candidates = np.array([[3, -1], [0, 1], [2, 2]])
    batch = ml.to_batch(data, split.test, hashed, candidates)
    assert batch.history_post_hashes.shape == (3, 3, 2) and batch.history_actions.shape == (3, 3, 3)
    assert (batch.candidate_post_hashes[0, 1] == 0).all()  # padding candidate
    assert (batch.candidate_post_hashes[0, 0] == hashed.post[3]).all()
    genre_of_4 = data.primary_genre[3]
    assert (batch.candidate_author_hashes[0, 0] == hashed.author[genre_of_4]).all()
    # user 1's test history: movies 3, 1, 2 rated 4, 5, 2
    assert batch.history_actions[0].tolist() == [[1, 1, 0], [1, 1, 0], [1, 0, 1]]
    blank = ml.to_batch(data, split.test, hashed, candidates, history=False)
    assert (blank.history_post_hashes == 0).all() and (blank.history_actions == 0).all()
    with pytest.raises(ValueError, match=r"candidates must be \[3, C\]"):
        ml.to_batch(data, split.test, hashed, candidates[:2])
