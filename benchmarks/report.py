"""The generated tables of RESULTS.md and the README, from what was measured.

Two sources: the benchmarks' records (``benchmarks/results/<subject>-<backend>.json``,
written by ``benchmarks.common.save``) and the numbers each chapter records
(:func:`phoenix_lib.results.record`, in ``_build/metrics`` after ``make book``). Each
table lives between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in a target file;
this script rewrites every block it has data for and says which it kept. Nothing in
those blocks is edited by hand. ``make book`` and ``make bench`` run it.

    python -m benchmarks.report [--metrics DIR] [--results DIR] [--target FILE ...]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
from collections.abc import Callable

from benchmarks.book import CHAPTER_LIMIT_S, SUITE_LIMIT_S
from phoenix_lib import results

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
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
    "08.ne_gap_closed.full.1_1": "Ch. 8: pooled NE gap closed, full post and author tables",
    "08.ne_gap_closed.hash_1_sum.1_16": "Ch. 8: the same at 1/16 of the memory, one hash",
    "08.ne_gap_closed.mixed_dimension.1_16": "Ch. 8: the same, mixed dimensions",
    "08.ne_gap_closed.semantic_ids.1_16": "Ch. 8: the same, semantic IDs",
    "08.ne_gap_closed.mpzch.1_16": "Ch. 8: the same, MPZCH",
    "08.fresh_ne.full": "Ch. 8: pooled NE on posts created after training, full tables",
    "08.fresh_ne.hash_1_sum": "Ch. 8: the same, one hash at 1/16",
    "08.fresh_ne.mixed_dimension": "Ch. 8: the same, mixed dimensions at 1/16",
    "08.fresh_ne.semantic_ids": "Ch. 8: the same, semantic IDs at 1/16",
    "08.fresh_ne.mpzch": "Ch. 8: the same, MPZCH at 1/16",
    "09.bytes_over_minimum.explicit": (
        "Ch. 9: bytes a device sends per batch of post lookups over the minimum (8 devices), "
        "routed with capacity = per-device batch"
    ),
    "09.bytes_over_minimum.explicit_factor_1_25": "Ch. 9: the same ratio, capacity factor 1.25",
    "09.bytes_over_minimum.gspmd": "Ch. 9: the same ratio, GSPMD's own partitioning",
    "09.sharded_step_relative_error": (
        "Ch. 9: sharded ranker step vs one device, largest relative error of a parameter array"
    ),
    "10.hr_at_10.popularity": "Ch. 10: MovieLens test HR@10, popularity",
    "10.ndcg_at_10.popularity": "Ch. 10: MovieLens test NDCG@10, popularity",
    "10.hr_at_10.mf": "Ch. 10: HR@10, matrix factorisation",
    "10.ndcg_at_10.mf": "Ch. 10: NDCG@10, matrix factorisation",
    "10.hr_at_10.markov": "Ch. 10: HR@10, the movie after the last one (a count table)",
    "10.ndcg_at_10.markov": "Ch. 10: NDCG@10, the movie after the last one",
    "10.hr_at_10.phoenix_retriever": "Ch. 10: HR@10, the Phoenix retriever as released (mean)",
    "10.ndcg_at_10.phoenix_retriever": "Ch. 10: NDCG@10, the Phoenix retriever as released",
    "10.hr_at_10.phoenix_retriever_last": "Ch. 10: HR@10, retriever read at the newest position",
    "10.ndcg_at_10.phoenix_retriever_last": "Ch. 10: NDCG@10, retriever at the newest position",
    "10.ndcg_at_10_ci_low.phoenix_retriever_last": "Ch. 10: its 95% interval's low end",
    "10.ndcg_gain_over_markov_ci_low.phoenix_retriever_last": (
        "Ch. 10: its NDCG@10 gain over the Markov chain, 95% low end"
    ),
    "10.hr_at_10.small_table_hashing": "Ch. 10: HR@10, 1,024 movie rows by hashing",
    "10.ndcg_at_10.small_table_hashing": "Ch. 10: NDCG@10, 1,024 movie rows by hashing",
    "10.hr_at_10.small_table_mpzch": "Ch. 10: HR@10, 1,024 movie rows by MPZCH (LRU)",
    "10.ndcg_at_10.small_table_mpzch": "Ch. 10: NDCG@10, 1,024 movie rows by MPZCH (LRU)",
    "10.targets_on_shared_rows.small_table_hashing": "Ch. 10: targets on a shared row, hashing",
    "10.targets_on_shared_rows.small_table_mpzch": "Ch. 10: targets on a shared row, MPZCH",
    "10.hr_at_10.phoenix_ranker": "Ch. 10: HR@10, that retriever re-ranked with the ranker",
    "10.ndcg_at_10.phoenix_ranker": "Ch. 10: NDCG@10, that retriever re-ranked with the ranker",
    "11.padding_share.padded_s512": "Ch. 11: token slots holding padding, users padded to S = 512",
    "11.padding_share.packed_s512": "Ch. 11: the same, users packed into rows",
}


def markdown(header: list[str], rows: list[list], align: str | None = None) -> str:
    """A Markdown table; ``align`` is one character per column, ``l`` or ``r``."""
    align = align or "l" * len(header)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = [header, rule, *[[str(c) for c in row] for row in rows]]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


# ------------------------------------------------------------------------------ tables


def _headline(name: str, value: float) -> str:
    """A recorded number as the tables show it: shares (a gap closed, a share of the
    oracle, of padding, of targets on shared rows) in percent, anything else with four
    significant digits."""
    shares = ("gap_closed", "of_oracle", "padding_share", "on_shared_rows")
    return pct(value) if any(word in name for word in shares) else f"{value:.4g}"


def headlines(metrics: dict, runs: dict) -> str | None:
    """The chapters' recorded numbers: ``name | meaning | value``."""
    if not metrics:
        return None
    rows = [[f"`{k}`", MEANINGS.get(k, ""), _headline(k, v)] for k, v in sorted(metrics.items())]
    return markdown(["recorded number", "meaning", "value"], rows, "llr")


def machines(metrics: dict, runs: dict) -> str | None:
    """Where and when each benchmark record was measured."""
    rows = []
    for name, run in sorted(runs.items()):
        m = run["machine"]
        device = f"CPU, {m['cpu_count']} cores" if m["backend"] == "cpu" else m["device"]
        rows.append([f"`results/{name}.json`", m["date"], device, m["python"], m["jax"]])
    return markdown(["record", "measured", "device", "Python", "JAX"], rows) if rows else None


def serving(metrics: dict, runs: dict) -> str | None:
    rows = []
    for backend in ("cpu", "gpu"):
        run = runs.get(f"serving-{backend}")
        for r in run["rows"] if run else []:
            speedup = "" if r["path"] == "masked" else f"{r['speedup']:.1f}x"
            rows.append([
                backend.upper(), r["candidates"], r["path"], f"{r['ms_per_request']:,.1f}",
                f"{r['candidates_per_s']:,.0f}", f"{r['temp_mib']:,.1f}", speedup,
                f"{r['max_rel_diff']:.1e}",
            ])  # fmt: skip
    header = ["device", "C", "path", "ms / request", "candidates / s", "temp MiB", "speed-up",
              "max rel. diff"]  # fmt: skip
    return markdown(header, rows, "lrlrrrrr") if rows else None


def mpzch(metrics: dict, runs: dict) -> str | None:
    rows = []
    for backend in ("cpu", "gpu"):
        run = runs.get(f"mpzch-{backend}")
        for r in run["rows"] if run else []:
            rows.append([
                backend.upper(), r["operation"], r["implementation"],
                f"{r['ids_per_s'] / 1e6:,.3g}", f"{r['ms_per_batch']:,.2f}", r["note"],
            ])  # fmt: skip
    header = ["device", "operation", "implementation", "M IDs / s", "ms / batch", "note"]
    return markdown(header, rows, "lllrrl") if rows else None


def sharding(metrics: dict, runs: dict) -> str | None:
    rows = []
    for backend in ("cpu", "gpu"):
        run = runs.get(f"sharding-{backend}")
        for r in run["rows"] if run else []:
            speed = (f"{r['lookups_per_s'] / 1e6:,.1f} ({r['lookups_per_s_one_device'] / 1e6:,.1f})"
                     if "lookups_per_s" in r else "-")  # fmt: skip
            rows.append([
                backend.upper(), r["devices"], r["tight_capacity"], f"{r['kb_minimum']:,.0f}",
                f"{r['kb_explicit_tight']:,.0f}", f"{r['kb_explicit']:,.0f}",
                f"{r['kb_gspmd']:,.0f}", speed,
            ])  # fmt: skip
    header = ["device", "devices", "tight capacity", "minimum KB", "routed, tight KB",
              "routed, default KB", "GSPMD KB", "M lookups / s (one device)"]  # fmt: skip
    return markdown(header, rows, "lrrrrrrr") if rows else None


def compact(metrics: dict, runs: dict) -> str | None:
    """Chapter 8's techniques at equal memory, both recipes (``benchmarks.compact``)."""
    named = []
    for stem in ("compact-cpu", "compact_chapter4-cpu"):
        run = runs.get(stem)
        for r in run["rows"] if run else []:
            layers = run["summary"]["layers"]
            recipe = f"{layers} layer{'s' * (layers > 1)}, {run['summary']['steps']} steps"
            named.append({**r, "variant": f"{r['technique']} {r['budget']}, {recipe}"})
    if not named:
        return None
    rows = _by_variant(
        {"rows": named},
        {
            "ne_gap_closed": pct,
            "auc_gap_closed": pct,
            "fresh_ne": "{:.4f}".format,
            "ms_per_step": "{:.1f}".format,
        },
    )
    notes = {r["variant"]: r["note"] for r in named}
    for row in rows:
        row.append(notes[row[0]])
    header = ["technique, budget, recipe", "seeds", "pooled NE gap closed: mean (by seed)",
              "favorite AUC gap closed", "fresh-post NE", "ms / step", "note"]  # fmt: skip
    return markdown(header, rows, "lrrrrrl")


def training(metrics: dict, runs: dict) -> str | None:
    rows = []
    for backend in ("cpu", "gpu"):
        run = runs.get(f"training-{backend}")
        for r in run["rows"] if run else []:
            rows.append([
                backend.upper(), r["model"], r.get("tables", "dense"), f"{r['ms_per_step']:.1f}",
                f"{r['examples_per_s']:,.0f}", f"{r['ms_per_batch_of_data']:.1f}",
                f"{r['compile_s']:.1f}",
            ])  # fmt: skip
    header = ["device", "model", "tables", "ms / step", "examples / s", "ms to make a batch",
              "compile s"]  # fmt: skip
    return markdown(header, rows, "lllrrrr") if rows else None


def _by_variant(run: dict, keys: dict[str, Callable]) -> list[list]:
    """Per variant: each key's mean over seeds, then its seeds' values, as ``keys[key]``
    shows them."""
    variants: dict[str, list[dict]] = {}
    for r in run["rows"]:
        variants.setdefault(r["variant"], []).append(r)
    out = []
    for variant, rs in variants.items():
        cells = [variant, len(rs)]
        for key, show in keys.items():
            values = [r[key] for r in rs]
            seeds = ", ".join(show(v) for v in values)
            cells.append(f"{show(statistics.mean(values))} ({seeds})")
        out.append(cells)
    return out


def ablations(metrics: dict, runs: dict) -> str | None:
    run = runs.get("ablations-cpu")
    if not run:
        return None
    rows = _by_variant(run, {"ne_gap_closed": pct, "auc_gap_closed": pct})
    for row in rows:
        s = run["summary"][row[0]]
        cost = f"{s['pooled_ne_cost_vs_full']:+.4f} ({s['cost_min']:+.4f} to {s['cost_max']:+.4f})"
        row.append("" if row[0] == "full" else cost)
    header = ["variant", "seeds", "pooled NE gap closed: mean (by seed)",
              "favorite AUC gap closed", "pooled NE cost against full (seeds' range)"]  # fmt: skip
    return markdown(header, rows, "lrrrr")


def pipeline(metrics: dict, runs: dict) -> str | None:
    run = runs.get("pipeline-cpu")
    if not run:
        return None
    rows = _by_variant(run, {"gap_closed": pct, "ndcg_at_10": "{:.3f}".format})
    header = ["ranker trained on", "seeds", "feed gap closed: mean (by seed)", "NDCG@10"]
    return markdown(header, rows, "lrrr")


def book(metrics: dict, runs: dict) -> str | None:
    run = runs.get("book-cpu")
    if not run:
        return None
    rows = [[r["chapter"], f"{r['seconds']:.0f}", f"{r['warm_seconds']:.0f}"] for r in run["rows"]]
    return markdown(["chapter", "s, cache empty", "s, cache warm"], rows, "lrr")


# ------------------------------------------------------------------------------- goals


def _verdict(met: bool) -> str:
    return "met" if met else "**not met**"


def _by(value: float, target: float, show) -> str:
    """How far a result is from its goal, in the goal's unit: a share's in points, a
    ratio's as a factor (``1.94x short``), anything else as a difference."""
    if show is pct:
        return f"by {100 * abs(value - target):.1f} points"
    if show is _times:
        factor = max(value, target) / min(value, target)
        return f"{factor:.2f}x {'above' if value >= target else 'short'}"
    return f"by {show(abs(value - target))}"


def _at_least(value: float, target: float, show=pct) -> str:
    met = _verdict(value >= target)
    return f"{show(value)} (target {show(target)}): {met}, {_by(value, target, show)}"


def _at_most(value: float, target: float, show) -> str:
    met = _verdict(value <= target)
    return f"{show(value)} (limit {show(target)}): {met}, {_by(value, target, show)}"


def _times(x: float) -> str:
    return f"{x:.2f}x"


def _seconds(x: float) -> str:
    return f"{x:.0f} s"


def _widens(run: dict) -> str:
    by = run["summary"]["speedup_by_candidates"]
    listed = ", ".join(f"{s:.1f}x at C = {c}" for c, s in by.items())
    return f"{listed}: {_verdict(run['summary']['speedup_widens'])}"


def _fbgemm(summary: dict) -> str:
    ratio, same = summary["lookup_vs_fbgemm"], summary["fbgemm_same_slots"]
    return f"{_times(ratio)} FBGEMM's rate, same slots: {same}: {_verdict(ratio >= 1 and same)}"


def _share(name: str, target: float) -> tuple[tuple[str], Callable]:
    """A goal's records and result when it asks one recorded share to reach ``target``."""
    return (name,), lambda m, r: _at_least(m[name], target)


# Each goal: (text, the records it needs, how the result is computed from them).
GOALS: list[tuple[str, tuple[str, ...], Callable]] = [
    (
        "serving: the isolated path >= 10x faster than the masked one at C = 2048 (CPU)",
        ("serving-cpu",),
        lambda m, r: _at_least(r["serving-cpu"]["summary"]["speedup_at_2048"], 10, _times),
    ),
    (
        "serving: the gap widens with C",
        ("serving-cpu",),
        lambda m, r: _widens(r["serving-cpu"]),
    ),
    (
        "serving: both paths' outputs equal within 1e-5 (relative)",
        ("serving-cpu",),
        lambda m, r: _at_most(r["serving-cpu"]["summary"]["max_rel_diff"], 1e-5, "{:.1e}".format),
    ),
    (
        "MPZCH: lookups at least as fast as FBGEMM's CPU op, same slots",
        ("mpzch-cpu",),
        lambda m, r: _fbgemm(r["mpzch-cpu"]["summary"]),
    ),
    (
        "MPZCH: writes with TTL eviction >= 3 M IDs / s (CPU)",
        ("mpzch-cpu",),
        lambda m, r: _at_least(
            r["mpzch-cpu"]["summary"]["write_ttl_ids_per_s"] / 1e6, 3, "{:.2f} M".format
        ),
    ),
    (
        "training: the towers' step with row-sparse tables >= 3x faster than dense (CPU)",
        ("training-cpu",),
        lambda m, r: _at_least(
            r["training-cpu"]["summary"]["two towers (Ch. 5), row-wise Adagrad"][
                "speedup_over_dense"
            ],
            3,
            _times,
        ),
    ),
    (
        "Chapter 4: pooled NE closes >= half of the base-rate-to-oracle gap",
        *_share("04.pooled_ne_gap_closed", 0.5),
    ),
    (
        "Chapter 4: favorite AUC closes >= half of the popularity-to-oracle gap",
        *_share("04.favorite_auc_gap_closed", 0.5),
    ),
    (
        "Chapter 4: no action's NE above 1",
        ("04.max_action_ne",),
        lambda m, r: _at_most(m["04.max_action_ne"], 1, "{:.3f}".format),
    ),
    (
        "Chapter 4: the no-history model closes <= 2/3 of what the full model closes",
        ("04.no_history_pooled_ne_gap_closed", "04.pooled_ne_gap_closed"),
        lambda m, r: _at_most(
            m["04.no_history_pooled_ne_gap_closed"] / m["04.pooled_ne_gap_closed"], 2 / 3, pct
        ),
    ),
    (
        "Chapter 5: the towers' recall@1000 >= 40% of the oracle's",
        *_share("05.recall_at_1000_of_oracle", 0.4),
    ),
    (
        "Chapter 5: the feed closes >= 40% of the gap from the retrieved mean to the oracle feed",
        *_share("05.feed_gap_closed", 0.4),
    ),
    (
        "Chapter 7: every method closes >= 30% of the gap (last day, pooled NE; worst shown)",
        ("07.ne_gap_closed.hashing",),
        lambda m, r: _at_least(
            min(v for k, v in m.items() if k.startswith("07.ne_gap_closed.")), 0.3
        ),
    ),
    (
        "Chapter 10: a Phoenix retriever beats the NDCG@10 of RecBole's GRU4Rec run on "
        "MovieLens-100K (0.0513)",
        ("10.ndcg_at_10.phoenix_retriever_last",),
        lambda m, r: _at_least(m["10.ndcg_at_10.phoenix_retriever_last"], 0.0513, "{:.4f}".format),
    ),
    (
        "Chapter 10: ... with its 95% interval's low end",
        ("10.ndcg_at_10_ci_low.phoenix_retriever_last",),
        lambda m, r: _at_least(
            m["10.ndcg_at_10_ci_low.phoenix_retriever_last"], 0.0513, "{:.4f}".format
        ),
    ),
    (
        "Chapter 10: ... and beats the Markov chain (the paired interval above 0)",
        ("10.ndcg_gain_over_markov_ci_low.phoenix_retriever_last",),
        lambda m, r: _at_least(
            m["10.ndcg_gain_over_markov_ci_low.phoenix_retriever_last"], 0, "{:+.4f}".format
        ),
    ),
    (
        "Chapter 7: the 95% interval of the fresh-post NE gain of MPZCH + reset over "
        "hashing lies above 0 (3 seeds)",
        ("07.fresh_gain_ci_low",),
        lambda m, r: _at_least(m["07.fresh_gain_ci_low"], 0, "{:+.4f}".format),
    ),
    (
        "book: `make test` within 15 minutes, cache empty (2 cores)",
        ("book-cpu",),
        lambda m, r: _at_most(r["book-cpu"]["summary"]["suite_wall_s"], SUITE_LIMIT_S, _seconds),
    ),
    (
        "book: no chapter over 150 s, cache empty (slowest shown)",
        ("book-cpu",),
        lambda m, r: _at_most(
            r["book-cpu"]["summary"]["slowest_chapter_s"], CHAPTER_LIMIT_S, _seconds
        ),
    ),
]


def goals(metrics: dict, runs: dict) -> str | None:
    """Every goal whose records are present: its result and whether it is met."""
    rows = []
    for text, needs, result in GOALS:
        if all(n in metrics or n in runs for n in needs):
            rows.append([text, result(metrics, runs)])
    return markdown(["goal", "latest result"], rows) if rows else None


BLOCKS = {
    "machines": machines,
    "goals": goals,
    "headlines": headlines,
    "serving": serving,
    "mpzch": mpzch,
    "sharding": sharding,
    "compact": compact,
    "training": training,
    "ablations": ablations,
    "pipeline": pipeline,
    "book": book,
}


def rewrite(text: str, name: str, table: str) -> str:
    """``text`` with the block ``name`` (between its markers) replaced by ``table``."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ValueError(f"block {name!r} needs one {begin} followed by one {end}")
    head, rest = text.split(begin)
    _, tail = rest.split(end)
    return f"{head}{begin}\n{table}\n{end}{tail}"


def load_runs(folder: pathlib.Path) -> dict[str, dict]:
    """Every benchmark record in ``folder``, by file stem (``serving-cpu``)."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*-*.json"))}


def main(argv=None) -> dict[str, str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", type=pathlib.Path, default=ROOT / "_build" / "metrics")
    parser.add_argument("--results", type=pathlib.Path, default=RESULTS)
    parser.add_argument(
        "--target",
        type=pathlib.Path,
        nargs="+",
        default=[ROOT / "benchmarks" / "RESULTS.md", ROOT / "README.md"],
    )
    args = parser.parse_args(argv)
    metrics, runs = results.load(args.metrics), load_runs(args.results)
    tables = {name: make(metrics, runs) for name, make in BLOCKS.items()}
    for target in args.target:
        text = target.read_text()
        for name, table in tables.items():
            if f"<!-- {name}:begin -->" not in text:
                continue
            if table is None:
                print(f"{target.name}: kept block {name!r}: nothing measured for it here")
                continue
            text = rewrite(text, name, table)
            print(f"{target.name}: wrote block {name!r}")
        target.write_text(text)
    return tables


if __name__ == "__main__":
    main()
