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


def test_report_rewrites_the_blocks_it_has_measurements_for(monkeypatch, tmp_path):
    """Recorded chapter numbers and a benchmark record become tables and goal rows; a
    block with nothing measured keeps its text; a broken block is refused."""
    from benchmarks import report

    monkeypatch.setenv("PHOENIX_METRICS_DIR", str(tmp_path / "m"))
    results.record(CHAPTER, "pooled_ne_gap_closed", 0.4816)
    results.record("07_freshness", "fresh_gain_ci_low", 0.0012)
    runs = tmp_path / "runs"
    runs.mkdir()
    machine = {"date": "2026-12-04", "backend": "cpu", "device": "cpu", "cpu_count": 2,
               "python": "3.11.7", "jax": "0.10.2", "host": "x86_64"}  # fmt: skip
    summary = {"lookup_vs_fbgemm": 1.25, "fbgemm_same_slots": True, "write_ttl_ids_per_s": 2.5e6}
    row = {"operation": "lookup", "implementation": "phoenix_lib (JAX)", "ids_per_s": 1.2e7,
           "ms_per_batch": 5.4, "note": ""}  # fmt: skip
    record = {"machine": machine, "rows": [row], "summary": summary}
    (runs / "mpzch-cpu.json").write_text(json.dumps(record))
    blocks = ("headlines", "goals", "mpzch", "serving")
    target = tmp_path / "RESULTS.md"
    target.write_text("".join(f"<!-- {b}:begin -->\nold\n<!-- {b}:end -->\n" for b in blocks))
    report.main(["--metrics", str(tmp_path / "m"), "--results", str(runs), "--target", str(target)])
    text = target.read_text()
    ne, gain = (report.MEANINGS[n] for n in ("04.pooled_ne_gap_closed", "07.fresh_gain_ci_low"))
    assert (
        "<!-- headlines:begin -->\n| recorded number | meaning | value |\n"
        f"| --- | --- | ---: |\n| `04.pooled_ne_gap_closed` | {ne} | 48.2% |\n"
        f"| `07.fresh_gain_ci_low` | {gain} | 0.0012 |\n<!-- headlines:end -->"
    ) in text
    assert (
        "half of the base-rate-to-oracle gap | 48.2% (target 50.0%): **not met**, by 1.8 points"
        in text
    )
    assert "1.25x FBGEMM's rate, same slots: True: met" in text
    assert "2.50 M (target 3.00 M): **not met**, by 0.50 M" in text
    assert "| CPU | lookup | phoenix_lib (JAX) | 12 | 5.40 |  |" in text
    assert "<!-- serving:begin -->\nold\n<!-- serving:end -->" in text  # nothing measured
    assert "Chapter 5" not in text  # a goal without its numbers is left out
    target.write_text("<!-- goals:begin -->\nno end\n")
    with pytest.raises(ValueError, match="needs one"):
        report.main(
            ["--metrics", str(tmp_path / "m"), "--results", str(runs), "--target", str(target)]
        )
