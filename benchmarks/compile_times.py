"""First-call times of the book's core jitted programs: a guard against compile blow-ups.

Each program is called once on small inputs with JAX's persistent compilation cache
off, so the time is compiling plus one run. A new JAX or XLA release can make one
program compile for minutes (JAX 0.12 did, for ``multi_hash`` with one hash function:
issue 25); ``--limit`` turns such a case into a failure, and ``tests/test_compile_times.py``
runs this script in its own process under a time limit, on every environment the
suite runs on. Each program's name is printed before it compiles, so a run that
hangs names the program it hangs in.

    python -m benchmarks.compile_times [--limit SECONDS]
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from phoenix_lib import hashing, make_ranker, make_retriever, mpzch, optimizers, train
from phoenix_lib.config import book_ranker_config, book_retrieval_config
from phoenix_lib.world import World, WorldConfig, positive_log_q

BUCKETS = (2**10, 2**12, 2**10)  # users, posts, authors
# Both book configs have D = 32 (emb_size).


def programs() -> dict:
    """Name -> a call of one core program on small inputs (blocking until done)."""
    # 4,096 IDs: a padded size that building the world's batches below does not compile.
    ids = (np.arange(1, 4097, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(1)
    world = World(WorldConfig(num_users=200, num_authors=20, num_posts=500, num_topics=4, seed=0))
    ranker_config = book_ranker_config()
    ranking = world.ranking_data(ranker_config, BUCKETS, batch_size=8)(0)
    retrieval_config = book_retrieval_config(history_seq_len=16)
    sessions = [world.session(i, batch_size=8, history_len=16, num_candidates=4) for i in range(2)]
    log_q = positive_log_q(world, sessions)
    retrieval = world.retrieval_data(retrieval_config, BUCKETS, log_q, batch_size=8)(0)

    def step(model, objective, data):
        optimizer = optimizers.book_optimizer(10)
        state = train.init_state(
            jax.random.key(0), model, data[0], optimizer, num_buckets=BUCKETS, emb_size=32
        )
        return lambda: train.make_step(objective, optimizer)(state, *data)

    def predict(model, batch):
        optimizer = optimizers.book_optimizer(10)
        state = train.init_state(
            jax.random.key(0), model, batch, optimizer, num_buckets=BUCKETS, emb_size=32
        )
        return lambda: train.make_predict(model)(state.params, batch)

    table = mpzch.create(2048, eviction="ttl", ttl_hours=6)
    lru = mpzch.create(2048, eviction="lru")
    return {
        **{
            f"multi_hash, {k} hash{'es' if k > 1 else ''}": (
                lambda k=k: hashing.multi_hash(ids, num_buckets=1001, num_hashes=k)
            )
            for k in (1, 2, 3, 4)
        },
        "murmur_hash3_2x64": lambda: jnp.asarray(hashing.murmur_hash3_2x64(ids)),
        "mpzch.write, TTL": lambda: mpzch.write(table, ids, 3),
        "mpzch.write, LRU": lambda: mpzch.write(lru, ids, 3),
        "mpzch.lookup": lambda: mpzch.lookup(table, ids),
        "ranker, isolated": predict(make_ranker(ranker_config, release=common.RELEASE), ranking[0]),
        "ranker, masked": predict(
            make_ranker(ranker_config, attention="masked", release=common.RELEASE), ranking[0]
        ),
        "ranker training step": step(
            make_ranker(ranker_config, release=common.RELEASE),
            train.ranker_objective(ranker_config, release=common.RELEASE),
            ranking,
        ),
        "retriever training step": step(
            make_retriever(retrieval_config, release=common.RELEASE),
            train.retrieval_objective(retrieval_config, release=common.RELEASE),
            retrieval,
        ),
    }


def main(argv=None) -> dict:
    args = common.parse_args(
        __doc__.splitlines()[0],
        argv,
        limit=dict(type=float, default=None, help="fail if a first call takes longer (s)"),
    )
    cache = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)  # measure compiling, always
    try:
        rows = []
        for name, call in programs().items():
            print(f"compiling {name} ...", flush=True)
            start = time.perf_counter()
            jax.block_until_ready(call())
            rows.append({"program": name, "first_call_s": time.perf_counter() - start})
    finally:
        jax.config.update("jax_enable_compilation_cache", cache)
    common.print_table(rows, [("program", "s"), ("first_call_s", ".2f")])
    slowest = max(rows, key=lambda r: r["first_call_s"])
    summary = {"slowest": slowest["program"], "slowest_s": slowest["first_call_s"]}
    common.save(args.out, "compile_times", rows, summary, figure(rows))
    if args.limit is not None and slowest["first_call_s"] > args.limit:
        raise SystemExit(
            f"{slowest['program']} took {slowest['first_call_s']:.1f} s to compile and run "
            f"once, over the limit of {args.limit:.0f} s"
        )
    return summary


def figure(rows):
    import matplotlib.pyplot as plt

    from phoenix_lib.plotting import book_style

    book_style()
    fig, ax = plt.subplots(figsize=(6.5, 0.3 * len(rows) + 1))
    ax.barh([r["program"] for r in rows][::-1], [r["first_call_s"] for r in rows][::-1])
    ax.set(xlabel="first call (compile + one run), s", title=f"JAX {jax.__version__}")
    return fig


if __name__ == "__main__":
    main()
