"""The chapters' headline numbers as a table in RESULTS.md and the README, generated.

Each chapter records its headline numbers with :func:`phoenix_lib.results.record`;
``make book`` collects them in ``_build/metrics``. This script writes them as a table
between the markers ``<!-- headlines:begin -->`` and ``<!-- headlines:end -->`` of
``benchmarks/RESULTS.md`` and ``README.md`` (``make book`` runs it after the chapters).

    python -m benchmarks.headlines [--metrics DIR] [--target FILE ...]
"""

from __future__ import annotations

import argparse
import pathlib

from phoenix_lib import results

ROOT = pathlib.Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- headlines:begin -->", "<!-- headlines:end -->"
# What each recorded number means, for the reader of the table ("gap": the share of the
# way from the trivial baseline to the oracle that a model covers).
MEANINGS = {
    "04.pooled_ne_gap_closed": "Ch. 4: pooled NE, gap closed from base rates to oracle",
    "04.favorite_auc_gap_closed": "Ch. 4: favorite AUC, gap closed from popularity to oracle",
    "04.no_history_pooled_ne_gap_closed": "Ch. 4: pooled NE gap closed without the history",
    "04.max_action_ne": "Ch. 4: the worst action's NE (1 = its base rate)",
    "04.oracle_favorite_auc": "Ch. 4: the oracle's favorite AUC (how separable the world is)",
    "05.recall_at_1000_of_oracle": "Ch. 5: the towers' recall@1000 as a share of the oracle's",
    "05.feed_gap_closed": "Ch. 5: the feed, gap closed from retrieved mean to oracle feed",
    "07.ne_gap_closed.hashing": "Ch. 7: last day's NE gap closed, one hash (3 seeds' mean)",
    "07.ne_gap_closed.two_hashes": "Ch. 7: the same, two hashes",
    "07.ne_gap_closed.mpzch": "Ch. 7: the same, MPZCH",
    "07.ne_gap_closed.mpzch_reset": "Ch. 7: the same, MPZCH with reset",
    "07.fresh_gain_ci_low": "Ch. 7: fresh NE gain, MPZCH + reset over hashing, 95% low end",
}


def table(values: dict[str, float]) -> str:
    """A Markdown table of ``name | meaning | value``, sorted by name (so by chapter)."""
    lines = ["| recorded number | meaning | value |", "| --- | --- | ---: |"]
    lines += [
        f"| `{name}` | {MEANINGS.get(name, '')} | {value:.4g} |"
        for name, value in sorted(values.items())
    ]
    return "\n".join(lines)


def rewrite(text: str, values: dict[str, float]) -> str:
    """``text`` with the block between the markers replaced by :func:`table`."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"the target needs one {BEGIN} followed by one {END}")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{table(values)}\n{END}{tail}"


def main(argv=None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", type=pathlib.Path, default=ROOT / "_build" / "metrics")
    parser.add_argument(
        "--target",
        type=pathlib.Path,
        nargs="+",
        default=[ROOT / "benchmarks" / "RESULTS.md", ROOT / "README.md"],
    )
    args = parser.parse_args(argv)
    values = results.load(args.metrics)
    if not values:
        parser.error(f"no recorded numbers in {args.metrics}: run `make book` first")
    for target in args.target:
        target.write_text(rewrite(target.read_text(), values))
        print(f"wrote {len(values)} numbers to {target}")
    return values


if __name__ == "__main__":
    main()
