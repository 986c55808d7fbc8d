"""The chapters' headline numbers as a table in RESULTS.md, generated, never copied.

Each chapter records its headline numbers with :func:`phoenix_lib.results.record`;
``make book`` collects them in ``_build/metrics``. This script writes them as a table
between the markers ``<!-- headlines:begin -->`` and ``<!-- headlines:end -->`` of
``benchmarks/RESULTS.md`` (``make book`` runs it after the chapters).

    python -m benchmarks.headlines [--metrics DIR] [--target FILE]
"""

from __future__ import annotations

import argparse
import pathlib

from phoenix_lib import results

ROOT = pathlib.Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- headlines:begin -->", "<!-- headlines:end -->"


def table(values: dict[str, float]) -> str:
    """A Markdown table of ``name | value``, sorted by name (so by chapter)."""
    lines = ["| recorded number | value |", "| --- | ---: |"]
    lines += [f"| `{name}` | {value:.4g} |" for name, value in sorted(values.items())]
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
    parser.add_argument("--target", type=pathlib.Path, default=ROOT / "benchmarks" / "RESULTS.md")
    args = parser.parse_args(argv)
    values = results.load(args.metrics)
    if not values:
        parser.error(f"no recorded numbers in {args.metrics}: run `make book` first")
    args.target.write_text(rewrite(args.target.read_text(), values))
    print(f"wrote {len(values)} numbers to {args.target}")
    return values


if __name__ == "__main__":
    main()
