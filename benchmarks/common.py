"""What every benchmark shares: arguments, timing, the machine, the printed table, the files."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import json
import os
import pathlib
import platform
import statistics
import time

import jax
import numpy as np

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
# The release the benchmarks measure: January, the model Chapters 4-7 train, so that the
# recorded numbers stay comparable across the book and RESULTS.md.
RELEASE = "2026-01"


def parse_args(description: str, argv=None, **extra) -> argparse.Namespace:
    """``--quick`` (a smoke run, under a minute), ``--out`` (folder), ``--repeats``; ``extra``
    maps more flag names to ``add_argument`` keyword dicts."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS, help="output folder")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per case")
    for name, kwargs in extra.items():
        parser.add_argument(f"--{name.replace('_', '-')}", **kwargs)
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 15
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def one_layer_if_quick(config, quick: bool):
    """``config``, or a copy with a one-layer transformer for ``--quick`` runs: smoke runs,
    the same code path with less to compile (compiling is most of their time)."""
    if not quick:
        return config
    return dataclasses.replace(config, model=dataclasses.replace(config.model, num_layers=1))


def median_seconds(fn, repeats: int, *, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` (which must block until its result is ready)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed_jax(fn, *args, repeats: int) -> float:
    """Median seconds of ``fn(*args)`` with its outputs ready (first call not timed)."""
    return median_seconds(lambda: jax.block_until_ready(fn(*args)), repeats)


def machine() -> dict:
    """The backend, device and host a result was measured on."""
    device = jax.devices()[0]
    return {
        "date": datetime.date.today().isoformat(),
        "backend": jax.default_backend(),
        "device": getattr(device, "device_kind", str(device)),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "host": platform.machine(),
    }


def print_table(rows: list[dict], columns: list[tuple[str, str]]) -> None:
    """``columns`` = (key, format spec); a plain aligned table on stdout."""
    cells = [
        [format(row[key], spec) if row[key] is not None else "-" for key, spec in columns]
        for row in rows
    ]
    widths = [max(len(key), *(len(c[i]) for c in cells)) for i, (key, _) in enumerate(columns)]
    print("  ".join(key.rjust(w) for (key, _), w in zip(columns, widths, strict=True)))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths, strict=True)))


def save(out: pathlib.Path, subject: str, rows: list[dict], summary: dict, figure=None) -> str:
    """Write ``<subject>-<backend>.json`` (machine, rows, summary), ``.csv`` and ``.svg``."""
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{subject}-{jax.default_backend()}"
    record = {"machine": machine(), "rows": rows, "summary": summary}
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    with stem.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if figure is not None:
        import matplotlib.pyplot as plt

        figure.savefig(stem.with_suffix(".svg"), metadata={"Date": None, "Creator": None})
        plt.close(figure)
    print(f"wrote {stem}.json/.csv" + ("/.svg" if figure is not None else ""))
    return str(stem)


def seeds_figure(rows: list[dict], variants, key: str, **labels):
    """One bar per variant (the mean over seeds of ``100 * row[key]``) with each seed a dot;
    ``labels`` go to ``ax.set`` (ylabel, title, ...)."""
    import matplotlib.pyplot as plt

    from phoenix_lib.plotting import book_style

    book_style()
    fig, ax = plt.subplots(figsize=(6.5, 3))
    for i, v in enumerate(variants):
        shares = [100 * r[key] for r in rows if r["variant"] == v]
        ax.scatter(np.full(len(shares), i), shares, color="C0", zorder=3)
        ax.bar(i, np.mean(shares), color="C0", alpha=0.3)
    ax.set_xticks(range(len(variants)), list(variants))
    ax.set(**labels)
    return fig
