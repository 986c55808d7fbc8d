"""MPZCH throughput: read-only lookups and writes with TTL or LRU eviction.

A table of 2**20 slots is filled to ~68% with IDs whose time to live runs out
at different hours; batches of 65,536 IDs follow a Zipf-like popularity over
the residents with churn (a share of IDs never seen before). In the same run:
``phoenix_lib.mpzch`` (jitted JAX), the plain Python/NumPy reference
(``mpzch_reference.SequentialTable``, timed on a slice of each batch) and, when
installed (``pip install -e .[bench]``), FBGEMM's CPU read-only
``zero_collision_hash`` op on the exported identity tensor, checked to return
the same slots.

    python -m benchmarks.mpzch [--quick]
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from phoenix_lib import mpzch
from phoenix_lib.mpzch_reference import SequentialTable
from phoenix_lib.plotting import book_style

MAX_PROBE = 128
TTL_SPREAD = 48  # residents expire uniformly over the first two days
NOW = TTL_SPREAD // 2  # the benchmark hour: about half of the residents have expired


def stream(rng, population: np.ndarray, *, batch: int, batches: int, churn: float, zipf: float):
    """``batches`` ID batches: Zipf-ranked residents, with a ``churn`` share of new IDs."""
    ranks = rng.permutation(population.size)  # popularity independent of table position
    out = []
    for _ in range(batches):
        ids = population[ranks[(rng.zipf(zipf, size=batch) - 1) % population.size]]
        new = rng.random(batch) < churn
        ids[new] = rng.integers(2**62, 2**63 - 1, size=int(new.sum()))
        out.append(ids)
    return out


def filled_table(rng, num_slots: int, load: float, batch: int):
    """A TTL table holding ``load * num_slots`` random IDs with expiries spread over hours."""
    population = rng.choice(2**62, size=int(load * num_slots), replace=False)
    state = mpzch.create(num_slots, max_probe=MAX_PROBE, eviction="ttl")
    for start in range(0, population.size, batch):
        part = population[start : start + batch]
        state, _, _ = mpzch.write(state, part, 0, rng.integers(0, TTL_SPREAD, size=part.size))
    return state, population


def fbgemm_lookup():
    """FBGEMM's CPU read-only op as ``f(identity [S] int64, ids [N]) -> slots``, or ``None``."""
    try:
        import fbgemm_gpu  # noqa: F401  (registers torch.ops.fbgemm)
        import torch
    except ImportError:
        return None

    def run(identity: np.ndarray, ids: np.ndarray) -> np.ndarray:
        table = torch.from_numpy(identity).view(-1, 1)
        out, _ = torch.ops.fbgemm.zero_collision_hash(
            torch.from_numpy(ids), table, MAX_PROBE, True, -1, True,
            None, None, None, False, False, False, None, -1, 0, -1, -1, None, None,
        )  # fmt: skip
        return out.numpy()

    return run


def sequential_rate(table: SequentialTable, ids: np.ndarray, op: str) -> float:
    """IDs per second of the plain-Python reference on ``ids`` (a copy of the table for writes)."""
    if op == "lookup":
        start = time.perf_counter()
        table.lookup(ids)
        return ids.size / (time.perf_counter() - start)
    copy = SequentialTable(table.num_slots, max_probe=MAX_PROBE, eviction=op)
    copy.identity[:], copy.metadata[:] = table.identity, table.metadata
    start = time.perf_counter()
    copy.write(ids, NOW)
    return ids.size / (time.perf_counter() - start)


def probe_bytes(state, ids: np.ndarray, slots: np.ndarray) -> float:
    """Bytes a one-ID-at-a-time lookup must touch: 8 in, 4 out, 8 per slot probed
    (to the ID's slot, or the whole window for an absent ID)."""
    home = np.asarray(mpzch.home_slots(state, mpzch.u64.from_ids(ids)))
    present = mpzch.identities(state)[slots] == ids
    size = state.bucket_size
    probes = np.where(present, (slots - home) % size + 1, state.max_probe)
    return float(ids.size * 12 + 8 * probes.sum())


def copy_bandwidth(repeats: int) -> float:
    """Bytes/s of a device-to-device copy (read + write counted) of 256 MiB."""
    x = jnp.zeros(2**26, jnp.float32)
    copy = jax.jit(lambda a: a + 1)
    seconds = common.timed_jax(copy, x, repeats=repeats)
    return 2 * x.nbytes / seconds


def main(argv=None) -> dict:
    args = common.parse_args(__doc__.splitlines()[0], argv)
    rng = np.random.default_rng(0)
    num_slots, batch = (2**14, 512) if args.quick else (2**20, 65_536)
    load, churn, zipf, batches = 0.68, 0.1, 1.1, 4
    reference_slice = 256 if args.quick else 2048
    state, population = filled_table(rng, num_slots, load, batch)
    usage = mpzch.metrics(state)["table_usage"]
    tables = {
        "ttl": state,
        "lru": mpzch.from_identities(
            mpzch.identities(state), metadata=np.asarray(state.metadata), eviction="lru",
            max_probe=MAX_PROBE,
        ),
    }  # fmt: skip
    ids = stream(rng, population, batch=batch, batches=batches, churn=churn, zipf=zipf)
    print(
        f"MPZCH on {common.machine()['device']}: {num_slots:,} slots, usage {usage:.3f}, "
        f"batches of {batch:,} IDs ({churn:.0%} new), max_probe {MAX_PROBE}"
    )

    def per_batch(fn):
        """Median over repeats of the mean seconds per batch, cycling through the batches."""
        seconds = common.median_seconds(lambda: [fn(b) for b in ids], args.repeats)
        return seconds / batches

    rows = []

    def add(op, impl, ids_per_s, note=""):
        rows.append(
            {
                "operation": op,
                "implementation": impl,
                "ids_per_s": ids_per_s,
                "ms_per_batch": 1e3 * batch / ids_per_s,
                "note": note,
            }
        )

    reference = SequentialTable(num_slots, max_probe=MAX_PROBE, eviction="ttl")
    reference.identity[:] = mpzch.identities(state)
    reference.metadata[:] = np.asarray(state.metadata)
    sample = ids[0][:reference_slice]

    # Read-only lookups.
    lookup_s = per_batch(lambda b: jax.block_until_ready(mpzch.lookup(state, b)))
    add("lookup", "phoenix_lib (JAX)", batch / lookup_s)
    fbgemm = fbgemm_lookup()
    same = None
    if fbgemm is not None:
        identity = mpzch.identities(state)
        fb_s = per_batch(lambda b: fbgemm(identity, b))
        add("lookup", "FBGEMM CPU op", batch / fb_s)
        same = all((fbgemm(identity, b) == np.asarray(mpzch.lookup(state, b))).all() for b in ids)
        if not same:
            raise SystemExit("FBGEMM and phoenix_lib returned different slots")
    add(
        "lookup",
        "plain Python",
        sequential_rate(reference, sample, "lookup"),
        f"on {sample.size:,} IDs",
    )
    lookup_bytes = np.mean([probe_bytes(state, b, np.asarray(mpzch.lookup(state, b))) for b in ids])

    # Writes with eviction, each from the same filled table at hour NOW.
    for policy, table in tables.items():
        write_s = per_batch(lambda b, t=table: jax.block_until_ready(mpzch.write(t, b, NOW)))
        add(f"write {policy}", "phoenix_lib (JAX)", batch / write_s)
        reference.eviction = policy
        add(
            f"write {policy}",
            "plain Python",
            sequential_rate(reference, sample, policy),
            f"on {sample.size:,} IDs",
        )
    after = mpzch.metrics(mpzch.write(mpzch.reset_counters(state), ids[0], NOW)[0])

    common.print_table(
        rows,
        [
            ("operation", "s"),
            ("implementation", "s"),
            ("ids_per_s", ",.0f"),
            ("ms_per_batch", ".2f"),
            ("note", "s"),
        ],
    )
    rate = {(r["operation"], r["implementation"]): r["ids_per_s"] for r in rows}
    summary = {
        "num_slots": num_slots,
        "batch": batch,
        "table_usage": usage,
        "first_batch_metrics": after,
        "fbgemm_same_slots": same,
        "lookup_vs_fbgemm": rate[("lookup", "phoenix_lib (JAX)")]
        / rate[("lookup", "FBGEMM CPU op")]
        if fbgemm is not None
        else None,
        "write_ttl_ids_per_s": rate[("write ttl", "phoenix_lib (JAX)")],
        "write_lru_ids_per_s": rate[("write lru", "phoenix_lib (JAX)")],
        "lookup_bytes_per_s": lookup_bytes / lookup_s,
        "copy_bytes_per_s": copy_bandwidth(args.repeats),
    }
    print(
        f"first batch: hit {after['hit_rate']:.3f}, insert {after['insert_rate']:.3f}, "
        f"evict {after['eviction_rate']:.3f}, collide {after['collision_rate']:.4f}"
    )
    if same is not None:
        print(f"lookup vs FBGEMM CPU op: {summary['lookup_vs_fbgemm']:.2f}x, same slots: {same}")
    print(
        f"lookup touches {summary['lookup_bytes_per_s'] / 1e9:.1f} GB/s of IDs and slots; "
        f"a plain copy moves {summary['copy_bytes_per_s'] / 1e9:.1f} GB/s"
    )
    common.save(args.out, "mpzch", rows, summary, figure(rows))
    return summary


def figure(rows):
    import matplotlib.pyplot as plt

    book_style()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ops = list(dict.fromkeys(r["operation"] for r in rows))
    impls = list(dict.fromkeys(r["implementation"] for r in rows))
    width = 0.8 / len(impls)
    for i, impl in enumerate(impls):
        mine = [r for r in rows if r["implementation"] == impl]
        x = [ops.index(r["operation"]) + i * width for r in mine]
        ax.bar(x, [r["ids_per_s"] for r in mine], width, color=f"C{i}", label=impl)
    ax.set_xticks(np.arange(len(ops)) + width * (len(impls) - 1) / 2, ops)
    ax.set(yscale="log", ylabel="IDs per second", title="MPZCH throughput (higher is better)")
    ax.legend()
    return fig


if __name__ == "__main__":
    main()
