"""Ranker serving: the release's masked attention against the linear-in-C isolated path.

For one request (B = 1) with S = 128 history items and C candidates, D = 128 and
2 layers (the release's demo shape), float32: milliseconds per request,
candidates per second, XLA's compile time, the peak temporary memory XLA
assigned to the compiled program, and the largest difference between each
path's logits and the masked path's, relative to the largest logit. Where C
exceeds the block size, a third row serves the isolated path's candidates in
blocks against the context computed once (``make_ranker(candidate_chunk=...)``).

    python -m benchmarks.serving [--quick] [--candidates 128 512 2048 8192] [--block 1024]
"""

from __future__ import annotations

import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from phoenix_lib import make_ranker, tables
from phoenix_lib.config import demo_ranker_config
from phoenix_lib.inputs import random_batch
from phoenix_lib.plotting import book_style

NUM_BUCKETS = 10_000


def request(config, hash_tables, num_candidates: int):
    """One request (B = 1) with ``num_candidates`` candidates and its embeddings."""
    batch = random_batch(
        config, batch_size=1, num_candidates=num_candidates, num_buckets=NUM_BUCKETS, seed=0
    )
    return batch, tables.embed(hash_tables, batch)


def measure(config, hash_tables, params, num_candidates: int, block: int, repeats: int):
    """One row per path for one candidate count, all on the same request: masked,
    isolated, and (when C > block) isolated in blocks of ``block`` candidates."""
    batch, embeddings = request(config, hash_tables, num_candidates)
    variants = {
        "masked": dict(attention="masked"),
        "isolated": dict(attention="isolated"),
        "blocks": dict(attention="isolated", candidate_chunk=block),
    }
    if num_candidates <= block:  # one block: the isolated path itself
        del variants["blocks"]
    rows, logits = [], {}
    for path, kwargs in variants.items():
        apply = jax.jit(make_ranker(config, **kwargs, release=common.RELEASE).apply)
        start = time.perf_counter()
        compiled = apply.lower(params, batch, embeddings).compile()
        compile_s = time.perf_counter() - start
        memory = compiled.memory_analysis()
        temp = getattr(memory, "temp_size_in_bytes", None) if memory is not None else None
        logits[path] = np.asarray(compiled(params, batch, embeddings), np.float64)
        seconds = common.timed_jax(compiled, params, batch, embeddings, repeats=repeats)
        rows.append(
            {
                "candidates": num_candidates,
                "path": path if path != "blocks" else f"blocks of {block}",
                "ms_per_request": 1e3 * seconds,
                "candidates_per_s": num_candidates / seconds,
                "compile_s": compile_s,
                "temp_mib": temp / 2**20 if temp is not None else None,
            }
        )
    scale = np.abs(logits["masked"]).max()
    for row, path in zip(rows, variants, strict=True):
        row["max_rel_diff"] = float(np.abs(logits["masked"] - logits[path]).max() / scale)
        row["speedup"] = rows[0]["ms_per_request"] / row["ms_per_request"]
    return rows


def figure(rows: list[dict]):
    import matplotlib.pyplot as plt

    book_style()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    paths = list(dict.fromkeys(r["path"] for r in rows))  # masked, isolated, blocks of ...
    for path, marker in zip(paths, "os^", strict=True):
        mine = [r for r in rows if r["path"] == path]
        c = [r["candidates"] for r in mine]
        left.loglog(c, [r["ms_per_request"] for r in mine], marker + "-", label=path)
        if path != "masked":
            right.semilogx(c, [r["speedup"] for r in mine], marker + "-", label=path)
    left.set(xlabel="candidates C", ylabel="ms per request", title="one request, S = 128")
    right.set(xlabel="candidates C", ylabel="masked time / this path's", title="speed-up")
    left.legend()
    right.legend()
    return fig


def main(argv=None) -> dict:
    args = common.parse_args(
        __doc__.splitlines()[0],
        argv,
        candidates={"type": int, "nargs": "+", "default": None, "help": "candidate counts"},
        block={"type": int, "default": None, "help": "candidates per block (default 1024)"},
    )
    counts = args.candidates or ([128, 512] if args.quick else [128, 512, 2048, 8192])
    block = args.block if args.block is not None else (256 if args.quick else 1024)
    if min(counts) < 1 or block < 1:
        raise SystemExit("--candidates and --block must be positive")
    config = common.one_layer_if_quick(demo_ranker_config(fprop_dtype=jnp.float32), args.quick)
    hash_tables = tables.init_tables(
        jax.random.key(1),
        num_user_buckets=NUM_BUCKETS,
        num_post_buckets=NUM_BUCKETS,
        num_author_buckets=NUM_BUCKETS,
        dim=config.emb_size,
    )
    # Trained-like weights (the release's own init zeroes the transformer), the same for
    # both paths and every C (no parameter depends on C).
    params = make_ranker(config, release=common.RELEASE).init(
        jax.random.key(0), *request(config, hash_tables, min(counts))
    )
    print(
        f"serving on {common.machine()['device']}: B = 1, S = {config.history_seq_len}, "
        f"D = {config.emb_size}, layers: {config.model.num_layers}, float32"
    )
    # True float32 products on every backend (GPUs default to TF32 for float32 matmuls).
    with jax.default_matmul_precision("highest"):
        rows = [
            row
            for c in counts
            for row in measure(config, hash_tables, params, c, block, args.repeats)
        ]
    common.print_table(
        rows,
        [
            ("candidates", "d"),
            ("path", "s"),
            ("ms_per_request", ".2f"),
            ("candidates_per_s", ",.0f"),
            ("compile_s", ".2f"),
            ("temp_mib", ".1f"),
            ("max_rel_diff", ".1e"),
            ("speedup", ".1f"),
        ],
    )
    speedups = {r["candidates"]: r["speedup"] for r in rows if r["path"] == "isolated"}
    blocked = {r["candidates"]: r["speedup"] for r in rows if r["path"].startswith("blocks")}
    summary = {
        "speedup_by_candidates": speedups,
        "block": block,
        "blocks_speedup_by_candidates": blocked,
        "max_rel_diff": max(r["max_rel_diff"] for r in rows),
        "speedup_at_2048": speedups.get(2048),
        "speedup_widens": all(
            speedups[a] < speedups[b] for a, b in itertools.pairwise(sorted(speedups))
        ),
    }
    print(
        f"speed-up by C: {', '.join(f'{c}: {s:.1f}x' for c, s in speedups.items())}; "
        f"in blocks of {block}: {', '.join(f'{c}: {s:.1f}x' for c, s in blocked.items())}; "
        f"max relative difference {summary['max_rel_diff']:.1e}"
    )
    common.save(args.out, "serving", rows, summary, figure(rows))
    return summary


if __name__ == "__main__":
    main()
