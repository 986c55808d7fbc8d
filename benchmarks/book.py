"""The book as a test suite: wall time of ``make test`` and of each chapter under nbval.

Runs the README's test command (pytest with the project's settings: 2 workers)
twice on one new, empty folder for JAX's persistent compilation cache: cold (as a
fresh clone and CI run it; the goals are judged on this run), then warm (as a
second ``make test`` runs, every program read back instead of compiled). Reads
each test's duration from its JUnit report and sums the cells of every chapter:
chapter times are measured as the suite runs them, sharing the 2 cores with the
other worker.

    python -m benchmarks.book [--quick]   (--quick: Chapter 2's first two cells, in one process)
"""

from __future__ import annotations

import collections
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

import numpy as np

from benchmarks import common
from phoenix_lib.plotting import book_style

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHAPTER_LIMIT_S, SUITE_LIMIT_S = 150, 15 * 60  # the test budget (issue 26)


def run_suite(options: list[str], cache: pathlib.Path) -> tuple[float, dict[str, float], int]:
    """Wall seconds of pytest with extra ``options`` and JAX's persistent compilation cache in
    ``cache``, seconds per file, and the number of tests."""
    # Every compiled program is cached, as the Makefile has it for `make test` (`make bench`
    # turns the cache off for the benchmarks themselves).
    env = os.environ | {
        "JAX_ENABLE_COMPILATION_CACHE": "true",
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
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
            env=env,
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
    # The smoke run checks the plumbing (pytest, nbval, the cache, the report, the table
    # and the figure) on Chapter 2's first two cells (the second compiles the hashing), in
    # one process (-n 0): no workers to start.
    quick_cells = [f"chapters/02_reduce_blocks.md::Cell {i}" for i in (0, 1)]
    options = ["-n", "0", *quick_cells] if args.quick else []
    with tempfile.TemporaryDirectory() as folder:
        cache = pathlib.Path(folder)
        cold = run_suite(options, cache)
        programs = len(list(cache.glob("*-cache")))
        warm = run_suite(options, cache)
    chapters = sorted(p for p in ROOT.glob("chapters/[0-9][0-9]_*.md"))
    rows = []
    for chapter in chapters:
        # nbval names a chapter's cells after the file; match on the stem.
        seconds, warm_seconds = (
            sum(t for name, t in per_file.items() if chapter.stem in name)
            for _, per_file, _ in (cold, warm)
        )
        if seconds:
            rows.append(
                {
                    "chapter": chapter.stem,
                    "seconds": seconds,
                    "warm_seconds": warm_seconds,
                    "within_limit": seconds <= CHAPTER_LIMIT_S,
                }
            )
    wall, _, count = cold
    rows.append(
        {
            "chapter": f"whole run ({count} tests)",
            "seconds": wall,
            "warm_seconds": warm[0],
            "within_limit": wall <= SUITE_LIMIT_S,
        }
    )
    common.print_table(
        rows,
        [("chapter", "s"), ("seconds", ".1f"), ("warm_seconds", ".1f"), ("within_limit", "")],
    )
    summary = {
        "suite_wall_s": wall,
        "suite_warm_wall_s": warm[0],
        "programs_cached": programs,
        "quick": args.quick,
        "slowest_chapter_s": max((r["seconds"] for r in rows[:-1]), default=None),
        "suite_goal_met": wall <= SUITE_LIMIT_S,
        "chapter_goal_met": all(r["within_limit"] for r in rows[:-1]),
    }
    print(
        f"suite {wall:.0f} s cold, {warm[0]:.0f} s warm with {programs} programs cached "
        f"(goal {SUITE_LIMIT_S} s, cold); "
        f"slowest chapter {summary['slowest_chapter_s']:.0f} s (goal {CHAPTER_LIMIT_S} s)"
    )
    common.save(args.out, "book", rows, summary, figure(rows))
    return summary


def figure(rows):
    import matplotlib.pyplot as plt

    book_style()
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    chapters = rows[:-1]
    y = np.arange(len(chapters))
    ax.barh(y - 0.2, [r["seconds"] for r in chapters], height=0.4, label="cold cache")
    ax.barh(y + 0.2, [r["warm_seconds"] for r in chapters], height=0.4, label="warm cache")
    ax.set_yticks(y, [r["chapter"] for r in chapters])
    ax.axvline(CHAPTER_LIMIT_S, color="C3", ls="--", label=f"goal {CHAPTER_LIMIT_S} s")
    ax.invert_yaxis()
    whole = rows[-1]
    ax.set(
        xlabel="seconds under nbval (2 workers)",
        title=f"Chapters; whole run {whole['seconds']:.0f} s cold, "
        f"{whole['warm_seconds']:.0f} s warm",
    )
    ax.legend()
    return fig


if __name__ == "__main__":
    main()
