"""Headline numbers: written only when asked, merged per chapter, never NaN."""

import json

import numpy as np
import pytest

from phoenix_lib import results

CHAPTER = "04_multi_action_ranking"


def test_nothing_is_written_without_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("PHOENIX_METRICS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert results.record(CHAPTER, "x", 1.0) is None
    assert list(tmp_path.iterdir()) == []


def test_records_merge_into_one_flat_file_per_chapter(monkeypatch, tmp_path):
    monkeypatch.setenv("PHOENIX_METRICS_DIR", str(tmp_path / "m"))
    results.record(CHAPTER, "pooled_ne_gap_closed", np.float32(0.5))
    results.record(CHAPTER, "max_action_ne", 0.97)
    path = results.record(CHAPTER, "pooled_ne_gap_closed", 0.625)  # a re-run overwrites
    assert path == tmp_path / "m" / f"{CHAPTER}.json"
    assert json.loads(path.read_text()) == {
        "04.pooled_ne_gap_closed": 0.625,
        "04.max_action_ne": 0.97,
    }
    results.record("07_freshness", "ne_gap_closed.hashing", 0.3)
    assert results.load(tmp_path / "m") == {
        "04.pooled_ne_gap_closed": 0.625,
        "04.max_action_ne": 0.97,
        "07.ne_gap_closed.hashing": 0.3,
    }


@pytest.mark.parametrize(
    ("chapter", "name", "value", "message"),
    [
        (CHAPTER, "x", float("nan"), "finite"),
        (CHAPTER, "x", np.inf, "finite"),
        ("multi_action", "x", 1.0, "chapter"),
        (CHAPTER, "Bad Name", 1.0, "name"),
        (CHAPTER, "x", "abc", "could not convert"),
    ],
)
def test_bad_records_are_refused(monkeypatch, tmp_path, chapter, name, value, message):
    monkeypatch.setenv("PHOENIX_METRICS_DIR", str(tmp_path))
    with pytest.raises(ValueError, match=message):
        results.record(chapter, name, value)
    assert list(tmp_path.iterdir()) == []


def test_headlines_table_replaces_only_its_block(monkeypatch, tmp_path):
    from benchmarks import headlines

    monkeypatch.setenv("PHOENIX_METRICS_DIR", str(tmp_path / "m"))
    results.record(CHAPTER, "pooled_ne_gap_closed", 0.4816)
    results.record("07_freshness", "fresh_gain_ci_low", 0.0012)
    target = tmp_path / "RESULTS.md"
    readme = tmp_path / "README.md"
    for path in (target, readme):
        path.write_text(f"before\n{headlines.BEGIN}\nold\n{headlines.END}\nafter\n")
    headlines.main(["--metrics", str(tmp_path / "m"), "--target", str(target), str(readme)])
    ne, gain = (headlines.MEANINGS[n] for n in ("04.pooled_ne_gap_closed", "07.fresh_gain_ci_low"))
    for path in (target, readme):
        assert path.read_text() == (
            f"before\n{headlines.BEGIN}\n| recorded number | meaning | value |\n"
            f"| --- | --- | ---: |\n| `04.pooled_ne_gap_closed` | {ne} | 0.4816 |\n"
            f"| `07.fresh_gain_ci_low` | {gain} | 0.0012 |\n{headlines.END}\nafter\n"
        )
    target.write_text("no markers\n")
    with pytest.raises(ValueError, match="needs one"):
        headlines.main(["--metrics", str(tmp_path / "m"), "--target", str(target)])
    with pytest.raises(SystemExit):
        headlines.main(["--metrics", str(tmp_path / "empty"), "--target", str(target)])
