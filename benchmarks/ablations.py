"""Chapter 4's ablations trained the same way, over several seeds: what the history, its
order and attention over its items buy the ranker.

Four variants of Chapter 4's ranker, each trained with Chapter 4's recipe (history 16,
64 sessions a step, row-wise Adagrad for the tables, clipped AdamW for the model) on the
same world's sessions 0-39 and tested on sessions 40-47:

* ``full``: the release's model;
* ``no history``: every history emptied, in training and test;
* ``shuffled history``: each history's items in a random order, in training and test;
* ``mean-pooled history``: ``make_ranker(history="mean")``, the history as one average.

A seed sets the model's initialisation and the draw of the training batches. Reported:
the share of the base-rate-to-oracle gap in pooled NE and of the popularity-to-oracle
gap in favorite AUC, per seed, and each variant's mean difference from ``full`` with the
range over seeds.

    python -m benchmarks.ablations [--quick] [--steps N] [--seeds N]
"""

from __future__ import annotations

import time

import jax
import numpy as np

from benchmarks import common
from phoenix_lib import metrics, optimizers, train
from phoenix_lib.config import ACTIONS, book_ranker_config
from phoenix_lib.ranker import make_ranker
from phoenix_lib.world import World, WorldConfig, shuffled_history, without_history

SEED = 20260404  # Chapter 4's
VARIANTS = ("full", "no history", "shuffled history", "mean-pooled history")


def setup(quick: bool):
    """Chapter 4's world, timeline, test sessions and references (smaller with ``quick``)."""
    users, posts = (300, 1_000) if quick else (2_000, 5_000)
    world = World(WorldConfig(num_users=users, num_authors=500 if not quick else 50,
                              num_posts=posts, num_topics=8, noise=0.2, seed=SEED))  # fmt: skip
    timeline = world.timeline(SEED, num_sessions=48, session_size=16, start_hour=24,
                              recency_hours=24)  # fmt: skip
    config = common.one_layer_if_quick(book_ranker_config(history_seq_len=16), quick)
    test_users = np.repeat(np.arange(0, users, 4), 8)
    test = world.timeline_session(
        timeline, test_users, np.tile(np.arange(40, 48), users // 4), config.history_seq_len
    )
    labels = test.labels.reshape(-1, len(ACTIONS))
    popular = metrics.empirical_rates(timeline.posts[:, :40], timeline.labels[:, :40], posts)
    fav = ACTIONS.index("favorite")
    references = {
        "oracle_ne": metrics.pooled_normalized_entropy(
            labels, test.probabilities.reshape(labels.shape)
        ),
        "oracle_auc": metrics.auc(labels[:, fav], test.probabilities.reshape(labels.shape)[:, fav]),
        "popularity_auc": metrics.auc(
            labels[:, fav], popular[test.candidate_posts.reshape(-1)][:, fav]
        ),
    }
    return world, timeline, config, test, labels, references


def run(variant: str, seed: int, steps: int, context) -> dict:
    """Train one variant with one seed; its test quality."""
    world, timeline, config, test, labels, ref = context
    transforms = {
        "no history": without_history,
        "shuffled history": lambda session: shuffled_history(session, seed=SEED + seed),
    }
    transform = transforms.get(variant)
    num_buckets = (2**13, 2**15, 2**11)
    optimizer = optimizers.book_optimizer(steps)
    ranker = make_ranker(
        config,
        history="mean" if variant == "mean-pooled history" else "attention",
        release=common.RELEASE,
    )
    data = world.timeline_data(config, timeline, num_buckets, batch_size=64, sessions=range(40),
                               seed_offset=seed * 10**6, transform=transform)  # fmt: skip
    state = train.init_state(jax.random.key(SEED + seed), ranker, data(0)[0], optimizer,
                             num_buckets=num_buckets, emb_size=config.emb_size)  # fmt: skip
    step = train.make_step(train.ranker_objective(config, release=common.RELEASE), optimizer)
    start = time.perf_counter()
    state, _ = train.fit(step, state, data, steps, desc=f"{variant}, seed {seed}")
    seconds = time.perf_counter() - start
    probe = test if transform is None else transform(test)
    buckets = world.buckets(config, num_buckets)
    predict = train.make_predict(ranker)
    parts = []
    for start in range(0, probe.users.size, 500):
        chunk = probe._replace(**{k: v[start : start + 500] for k, v in probe._asdict().items()})
        batch = world.to_batch(config, chunk, num_buckets, buckets=buckets)
        parts.append(np.asarray(predict(state.params, batch)))
    p = np.concatenate(parts).reshape(labels.shape)
    fav = ACTIONS.index("favorite")
    ne = metrics.pooled_normalized_entropy(labels, p)
    auc = metrics.auc(labels[:, fav], p[:, fav])
    return {
        "variant": variant,
        "seed": seed,
        "steps": steps,
        "train_s": seconds,
        "pooled_ne": ne,
        "ne_gap_closed": metrics.gap_closed(ne, 1.0, ref["oracle_ne"]),
        "favorite_auc": auc,
        "auc_gap_closed": metrics.gap_closed(auc, ref["popularity_auc"], ref["oracle_auc"]),
    }


def main(argv=None) -> dict:
    args = common.parse_args(
        __doc__.splitlines()[0],
        argv,
        steps={"type": int, "default": None, "help": "training steps per run (1,200; quick 20)"},
        seeds={"type": int, "default": None, "help": "seeds per variant (2; quick 1)"},
    )
    steps = args.steps or (20 if args.quick else 1_200)
    seeds = args.seeds or (1 if args.quick else 2)
    if steps < 4 or seeds < 1:
        raise SystemExit("--steps must be at least 4 and --seeds at least 1")
    context = setup(args.quick)
    rows = [run(v, s, steps, context) for s in range(seeds) for v in VARIANTS]
    print(f"ablations of Chapter 4's ranker on {common.machine()['device']}, {steps} steps")
    common.print_table(rows, [("variant", "s"), ("seed", "d"), ("train_s", ".0f"),
                              ("pooled_ne", ".4f"), ("ne_gap_closed", ".3f"),
                              ("favorite_auc", ".3f"), ("auc_gap_closed", ".3f")])  # fmt: skip
    summary = {}
    for v in VARIANTS:
        own = [r for r in rows if r["variant"] == v]
        full = [r for r in rows if r["variant"] == "full"]
        cost = [a["pooled_ne"] - b["pooled_ne"] for a, b in zip(own, full, strict=True)]
        summary[v] = {
            "ne_gap_closed": float(np.mean([r["ne_gap_closed"] for r in own])),
            "auc_gap_closed": float(np.mean([r["auc_gap_closed"] for r in own])),
            "pooled_ne_cost_vs_full": float(np.mean(cost)),
            "cost_min": float(np.min(cost)),
            "cost_max": float(np.max(cost)),
        }
        print(f"{v:20s} pooled NE gap closed {summary[v]['ne_gap_closed']:.3f}; "
              f"cost against full {np.mean(cost):+.4f} (seeds: {np.min(cost):+.4f} to "
              f"{np.max(cost):+.4f})")  # fmt: skip
    figure = common.seeds_figure(rows, VARIANTS, "ne_gap_closed",
                                 ylabel="% of the pooled-NE gap closed",
                                 title="What the history buys (dots: seeds)")  # fmt: skip
    common.save(args.out, "ablations", rows, summary, figure)
    return summary


if __name__ == "__main__":
    main()
