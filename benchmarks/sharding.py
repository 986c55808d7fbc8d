"""Sharded embedding lookups: bytes moved per batch and, on GPUs, lookups per second.

The post table of Chapter 4 (2**15 rows, 32 wide) split row-wise over meshes of 2, 4 and
8 devices; each device looks up the post rows of 32 users of the Chapter 4 world (2,048
bucket indices). Bytes one device sends, read from the compiled programs
(``phoenix_lib.sharding.lookup_traffic``): explicit routing at the default capacity and
at the tightest capacity the batch fits, GSPMD's own partitioning, and the minimum.
Every sharded result is checked equal to the one-device gather.

On the CPU the devices are simulated (``--devices``, set before JAX starts) and share the
machine's cores, so no speed is reported there. On a GPU machine the real devices are
used and the lookups are timed against one device.

    python -m benchmarks.sharding [--quick] [--devices 8]
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from benchmarks import common

PER_DEVICE = 32  # users per device
POST_ROWS, DIM = 2**15, 32


def start_devices(count: int) -> None:
    """Ask the CPU backend for ``count`` devices; an error if JAX has already started."""
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError as error:
        raise SystemExit(f"run in a fresh process (JAX has started): {error}") from None


def main(argv=None) -> dict:
    args = common.parse_args(
        __doc__, argv, devices={"type": int, "default": 8, "help": "simulated CPU devices"}
    )
    if args.devices < 2:
        raise SystemExit("--devices must be at least 2")
    start_devices(args.devices)
    import matplotlib.pyplot as plt

    from phoenix_lib import sharding, tables
    from phoenix_lib.config import book_ranker_config
    from phoenix_lib.plotting import book_style
    from phoenix_lib.world import World, WorldConfig

    book_style()
    world = World(WorldConfig(num_users=2_000, num_authors=500, num_posts=5_000, num_topics=8,
                              noise=0.2, seed=4))  # fmt: skip
    config = book_ranker_config(history_seq_len=16)
    sizes = [n for n in ((2, 4) if args.quick else (2, 4, 8)) if n <= jax.device_count()]
    batch = world.ranking_data(config, (2**13, POST_ROWS, 2**11), batch_size=PER_DEVICE * 8)(0)[0]
    rows = np.concatenate(
        [np.asarray(batch.history_post_hashes).reshape(PER_DEVICE * 8, -1),
         np.asarray(batch.candidate_post_hashes).reshape(PER_DEVICE * 8, -1)], axis=1,
    )  # fmt: skip
    table = jax.random.normal(jax.random.key(0), (POST_ROWS, DIM))
    timed = jax.default_backend() != "cpu"
    out = []
    for n in sizes:
        mesh = sharding.mesh(n)
        part = rows[: PER_DEVICE * n]
        traffic = sharding.lookup_traffic(table, part, mesh, "shard")
        placed = sharding.shard_rows(table, mesh, "shard")
        got = sharding.lookup(placed, part, capacity=traffic["tight_capacity"])
        assert np.array_equal(np.asarray(got), np.asarray(tables.gather(table, part)))
        row = {"devices": n, "indices_per_device": part.size // n,
               "tight_capacity": traffic["tight_capacity"]}  # fmt: skip
        for key in ("minimum", "explicit_tight", "explicit", "gspmd"):
            row[f"kb_{key}"] = traffic[key] / 1e3
        if timed:
            spread = sharding.put(part, placed.sharding)
            routed = jax.jit(functools.partial(sharding._lookup, mesh_=mesh, axis="shard",
                                               capacity=traffic["tight_capacity"]))  # fmt: skip
            seconds = common.timed_jax(routed, placed, spread, repeats=args.repeats)
            one = common.timed_jax(tables.gather, table, part, repeats=args.repeats)
            row["lookups_per_s"] = part.size / seconds
            row["lookups_per_s_one_device"] = part.size / one
        out.append(row)
    common.print_table(out, [(k, ",.0f" if isinstance(v, float) else "d")
                             for k, v in out[0].items()])  # fmt: skip
    fig, ax = plt.subplots()
    for key in ("gspmd", "explicit", "explicit_tight", "minimum"):
        ax.plot(sizes, [r[f"kb_{key}"] for r in out], marker="o", label=key)
    ax.set(xlabel="devices", ylabel="KB sent per device per batch", yscale="log")
    ax.legend()
    last = out[-1]
    summary = {"devices": last["devices"],
               "explicit_tight_over_minimum": last["kb_explicit_tight"] / last["kb_minimum"],
               "gspmd_over_minimum": last["kb_gspmd"] / last["kb_minimum"]}  # fmt: skip
    common.save(args.out, "sharding", out, summary, fig)
    return summary


if __name__ == "__main__":
    main()
