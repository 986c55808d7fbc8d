"""Training throughput at the chapters' settings: steps and examples per second, dense
against row-sparse table updates.

The ranker of Chapter 4 (64 users x 16 candidates) and the two towers of Chapter 5
(128 users, in-batch softmax, a 2^18-row post table), each with three optimizers:
dense (optax's AdamW or Adam over the whole tree: every table row and its moments at
every step) and row-sparse (the same optax for the model's weights; the tables'
touched rows by row-wise Adagrad or lazy Adam, :mod:`phoenix_lib.optimizers`). A step
is the jitted ``train.make_step`` on one batch; making the batch from the world is
timed separately, since the chapters do both.

    python -m benchmarks.training [--quick]
"""

from __future__ import annotations

import time

import jax
import numpy as np
import optax

from benchmarks import common
from phoenix_lib import make_ranker, make_retriever, optimizers, train
from phoenix_lib.config import book_ranker_config, book_retrieval_config
from phoenix_lib.plotting import book_style
from phoenix_lib.world import World, WorldConfig, positive_log_q


def table_optimizers(dense: optax.GradientTransformation) -> dict:
    """The three ways the benchmark trains the tables, the model's weights by ``dense``."""
    return {
        "dense": dense,
        "row-wise Adagrad": optimizers.TableSparse(dense, optimizers.rowwise_adagrad(0.05)),
        "lazy Adam": optimizers.TableSparse(dense, optimizers.lazy_adam(1e-3)),
    }


def ranker_case(world, quick: bool, optimizer):
    """Chapter 4's step and its data stream."""
    config = common.one_layer_if_quick(book_ranker_config(), quick)
    buckets = (2**10, 2**12, 2**10) if quick else (2**13, 2**15, 2**11)
    batch_size = 16 if quick else 64
    data = world.ranking_data(config, buckets, batch_size=batch_size)
    state = train.init_state(
        jax.random.key(0),
        make_ranker(config, release=common.RELEASE),
        data(0)[0],
        optimizer,
        num_buckets=buckets,
        emb_size=config.emb_size,
    )
    step = train.make_step(train.ranker_objective(config, release=common.RELEASE), optimizer)
    examples = batch_size * config.candidate_seq_len
    return "ranker (Ch. 4)", step, state, data, batch_size, examples


def retrieval_case(world, quick: bool, optimizer):
    """Chapter 5's step and its data stream."""
    config = common.one_layer_if_quick(book_retrieval_config(history_seq_len=16), quick)
    buckets = (2**10, 2**12, 2**10) if quick else (2**13, 2**18, 2**13)
    batch_size = 32 if quick else 128
    sessions = [
        world.session(10**5 + i, batch_size=batch_size, history_len=16, num_candidates=16)
        for i in range(5)
    ]
    data = world.retrieval_data(
        config, buckets, positive_log_q(world, sessions), batch_size=batch_size
    )
    state = train.init_state(
        jax.random.key(0),
        make_retriever(config, release=common.RELEASE),
        data(0)[0],
        optimizer,
        num_buckets=buckets,
        emb_size=config.emb_size,
    )
    step = train.make_step(
        train.retrieval_objective(config, temperature=0.2, release=common.RELEASE), optimizer
    )
    return "two towers (Ch. 5)", step, state, data, batch_size, batch_size


def measure(case, optimizer_name: str, repeats: int) -> dict:
    name, step, state, data, batch_size, examples = case
    batch = data(0)
    start = time.perf_counter()
    compiled = jax.jit(step).lower(state, *batch).compile()
    compile_s = time.perf_counter() - start
    seconds = common.median_seconds(lambda: jax.block_until_ready(compiled(state, *batch)), repeats)
    data_s = common.median_seconds(lambda: data(1), max(3, repeats // 3))
    return {
        "model": name,
        "tables": optimizer_name,
        "batch_users": batch_size,
        "steps_per_s": 1 / seconds,
        "examples_per_s": examples / seconds,
        "ms_per_step": 1e3 * seconds,
        "ms_per_batch_of_data": 1e3 * data_s,
        "compile_s": compile_s,
    }


def main(argv=None) -> dict:
    args = common.parse_args(__doc__.splitlines()[0], argv)
    ranking_world = World(
        WorldConfig(
            num_users=2_000, num_authors=500, num_posts=5_000, num_topics=8, noise=0.2, seed=0
        )
    )
    retrieval_world = World(
        WorldConfig(
            num_users=2_000,
            num_authors=500,
            num_posts=10_000 if args.quick else 100_000,
            num_topics=8,
            noise=0.2,
            author_topic_share=0.9,
            seed=0,
        )
    )
    rows = []
    for case, world, dense in (
        (ranker_case, ranking_world, optax.adamw(1e-3, weight_decay=1e-4)),
        (retrieval_case, retrieval_world, optax.adam(1e-3)),
    ):
        for label, optimizer in table_optimizers(dense).items():
            if args.quick and label == "lazy Adam":  # a smoke run: one sparse path is enough
                continue
            rows.append(measure(case(world, args.quick, optimizer), label, args.repeats))
    print(f"training on {common.machine()['device']} (examples: ranker candidates, tower users)")
    common.print_table(
        rows,
        [
            ("model", "s"),
            ("tables", "s"),
            ("batch_users", "d"),
            ("steps_per_s", ".1f"),
            ("examples_per_s", ",.0f"),
            ("ms_per_step", ".1f"),
            ("ms_per_batch_of_data", ".1f"),
            ("compile_s", ".1f"),
        ],
    )
    summary = {
        f"{r['model']}, {r['tables']}": {
            "steps_per_s": r["steps_per_s"],
            "examples_per_s": r["examples_per_s"],
            "speedup_over_dense": dense["ms_per_step"] / r["ms_per_step"],
        }
        for r in rows
        for dense in [next(d for d in rows if d["model"] == r["model"] and d["tables"] == "dense")]
    }
    common.save(args.out, "training", rows, summary, figure(rows))
    return summary


def figure(rows):
    import matplotlib.pyplot as plt

    book_style()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    names = [f"{r['model']}\n{r['tables']}" for r in rows]
    step = np.array([r["ms_per_step"] for r in rows])
    data = np.array([r["ms_per_batch_of_data"] for r in rows])
    ax.barh(names, step, label="jitted train step")
    ax.invert_yaxis()
    ax.barh(names, data, left=step, label="making the batch (NumPy world)")
    ax.set(xlabel="ms per step", title="Dense against row-sparse table updates")
    ax.legend()
    return fig


if __name__ == "__main__":
    main()
