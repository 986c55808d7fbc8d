"""The book as a test suite: wall time of ``make test`` and of each chapter under nbval.

Runs the README's test command (pytest with the project's settings: 2 workers)
once, reads each test's duration from its JUnit report, and sums the cells of
every chapter. Chapter times are therefore measured as the suite runs them,
sharing the 2 cores with the other worker.

    python -m benchmarks.book [--quick]   (--quick: Chapter 2's first cell, in one process)
"""

from __future__ import annotations

import collections
import pathlib
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

from benchmarks import common
from phoenix_lib.plotting import book_style

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHAPTER_LIMIT_S, SUITE_LIMIT_S = 90, 300


def run_suite(options: list[str]) -> tuple[float, dict[str, float], int]:
    """Wall seconds of pytest with extra ``options``, seconds per file, and the number of tests."""
    with tempfile.TemporaryDirectory() as tmp:
        report = pathlib.Path(tmp) / "junit.xml"
        start = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                f"--junitxml={report}",
                "-p",
                "no:cacheprovider",
                *options,
            ],
            cwd=ROOT,
            check=False,
        )
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"the suite failed (exit {done.returncode}); no timings recorded")
        per_file: dict[str, float] = collections.defaultdict(float)
        cases = ET.parse(report).getroot().iter("testcase")
        count = 0
        for case in cases:
            count += 1
            name = case.get("file") or case.get("classname", "").replace(".", "/")
            per_file[name] += float(case.get("time", 0))
    return wall, dict(per_file), count


def main(argv=None) -> dict:
    args = common.parse_args(__doc__.splitlines()[0], argv)
    # The smoke run checks the plumbing (pytest, nbval, the report, the table and the
    # figure) on one cell of one chapter, in one process (-n 0): no workers to start.
    options = ["-n", "0", "chapters/02_reduce_blocks.md::Cell 0"] if args.quick else []
    wall, per_file, count = run_suite(options)
    chapters = sorted(p for p in ROOT.glob("chapters/[0-9][0-9]_*.md"))
    rows = []
    for chapter in chapters:
        # nbval names a chapter's cells after the file; match on the stem.
        seconds = sum(t for name, t in per_file.items() if chapter.stem in name)
        if seconds:
            rows.append(
                {
                    "chapter": chapter.stem,
                    "seconds": seconds,
                    "within_limit": seconds <= CHAPTER_LIMIT_S,
                }
            )
    rows.append(
        {
            "chapter": f"whole run ({count} tests)",
            "seconds": wall,
            "within_limit": wall <= SUITE_LIMIT_S,
        }
    )
    common.print_table(rows, [("chapter", "s"), ("seconds", ".1f"), ("within_limit", "")])
    summary = {
        "suite_wall_s": wall,
        "quick": args.quick,
        "slowest_chapter_s": max((r["seconds"] for r in rows[:-1]), default=None),
        "suite_goal_met": wall <= SUITE_LIMIT_S,
        "chapter_goal_met": all(r["within_limit"] for r in rows[:-1]),
    }
    print(
        f"suite {wall:.0f} s (goal {SUITE_LIMIT_S} s); slowest chapter "
        f"{summary['slowest_chapter_s']:.0f} s (goal {CHAPTER_LIMIT_S} s)"
    )
    common.save(args.out, "book", rows, summary, figure(rows))
    return summary


def figure(rows):
    import matplotlib.pyplot as plt

    book_style()
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    chapters = rows[:-1]
    ax.barh([r["chapter"] for r in chapters], [r["seconds"] for r in chapters])
    ax.axvline(CHAPTER_LIMIT_S, color="C1", ls="--", label=f"goal {CHAPTER_LIMIT_S} s")
    ax.invert_yaxis()
    ax.set(
        xlabel="seconds under nbval (2 workers)",
        title=f"Chapters; whole run {rows[-1]['seconds']:.0f} s",
    )
    ax.legend()
    return fig


if __name__ == "__main__":
    main()
