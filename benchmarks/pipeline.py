"""Chapter 5's stage-2 ranker trained on three kinds of candidates, over several seeds.

Chapter 5's world, timeline and towers (trained once), then Chapter 5's ranker (800
steps of 64 sessions, row-wise Adagrad for the tables, clipped AdamW for the model),
trained on sessions 0-46 with:

* ``logged``: each session's logged impressions (what Chapter 4 trains on);
* ``retrieved``: in every session, 16 posts drawn from the towers' top 1,000 for that
  user at that hour, labelled by the truth (``World.shown``);
* ``mix``: half the sessions of each batch retrieved, half logged (the chapter's).

Each is tested as the chapter tests it: 200 users at their last session, the towers'
1,000 ranked in requests of 16, the feed's mean true weighted score as a share of the
gap from the retrieved mean to the oracle feed, NDCG@10 against the oracle feed, and the
distinct authors in the ten. A seed sets the ranker's initialisation and its batches.

    python -m benchmarks.pipeline [--quick] [--steps N] [--seeds N]
"""

from __future__ import annotations

import time

import jax
import numpy as np

from benchmarks import common
from phoenix_lib import metrics, optimizers, pipeline, scoring, tables, train
from phoenix_lib.config import book_ranker_config, book_retrieval_config
from phoenix_lib.ranker import make_ranker
from phoenix_lib.retrieval import make_candidate_encoder, make_retriever, retrieve_top_k
from phoenix_lib.world import UserState, World, WorldConfig, positive_log_q

SEED = 20260505  # Chapter 5's
VARIANTS = {"logged": 0.0, "retrieved": 1.0, "mix": 0.5}  # share of sessions retrieved
NUM_BUCKETS = (2**13, 2**18, 2**13)
TEST_SESSION, RETRIEVED = 47, 1_000


def setup(quick: bool):
    """Chapter 5's world and timeline, the towers trained on it, the corpus encoded, the
    test users' retrieved thousand and its references (smaller with ``quick``)."""
    users, authors, posts = (300, 50, 5_000) if quick else (2_000, 500, 100_000)
    world = World(WorldConfig(num_users=users, num_authors=authors, num_posts=posts, num_topics=8,
                              noise=0.2, author_topic_share=0.9, seed=SEED))  # fmt: skip
    timeline = world.timeline(SEED, num_sessions=48, session_size=16, start_hour=24,
                              recency_hours=24)  # fmt: skip
    config = common.one_layer_if_quick(book_retrieval_config(history_seq_len=16), quick)
    pairs = np.meshgrid(np.arange(users), range(TEST_SESSION), indexing="ij")
    log_q = positive_log_q(
        world, [world.timeline_session(timeline, pairs[0].ravel(), pairs[1].ravel(), 1)]
    )
    data = world.timeline_retrieval_data(config, timeline, NUM_BUCKETS, log_q, batch_size=128,
                                         sessions=range(TEST_SESSION))  # fmt: skip
    steps = 20 if quick else 600
    optimizer = optimizers.book_optimizer(steps)
    retriever = make_retriever(config, release=common.RELEASE)
    state = train.init_state(jax.random.key(SEED), retriever, data(0)[0], optimizer,
                             num_buckets=NUM_BUCKETS, emb_size=config.emb_size)  # fmt: skip
    step = train.make_step(
        train.retrieval_objective(config, temperature=0.2, release=common.RELEASE), optimizer
    )
    state, _ = train.fit(step, state, data, steps, desc="two towers")
    buckets = world.buckets(config, NUM_BUCKETS)
    encoder = make_candidate_encoder(config, release=common.RELEASE)
    params = state.params
    corpus = jax.jit(encoder.apply)(
        params["model"],
        tables.gather(params["tables"].post, buckets.post),
        tables.gather(params["tables"].author, buckets.author[world.post_author]),
    )
    represent = jax.jit(lambda params, batch: train.forward(retriever, params, batch))

    def users_of(session):  # [B, D] the user tower's output for each session's history
        one = session._replace(candidate_posts=session.candidate_posts[:, :1],
                               candidate_surface=session.candidate_surface[:, :1])  # fmt: skip
        batch = world.to_batch(config, one, NUM_BUCKETS, buckets=buckets)
        return represent(state.params, batch).user_representation

    test_users = np.random.default_rng(SEED).choice(users, 200 if not quick else 50, replace=False)
    test = world.timeline_session(
        timeline, test_users, np.full(test_users.size, TEST_SESSION), config.history_seq_len
    )
    retrieved = np.asarray(retrieve_top_k(users_of(test), corpus, RETRIEVED).indices)
    now = UserState(*(x[test_users, TEST_SESSION][:, None] for x in timeline.state))
    hour = timeline.hours[TEST_SESSION]

    def true_score(posts):
        p = world.probabilities(test_users[:, None], posts, 0, state=now, hour=hour)
        return np.asarray(scoring.weighted_score(p))

    truth = true_score(retrieved)
    best = np.take_along_axis(retrieved, np.argsort(-truth, 1)[:, :10], 1)
    return dict(world=world, timeline=timeline, corpus=corpus, users_of=users_of, test=test,
                retrieved=retrieved, true_score=true_score, best=best, low=truth.mean(),
                high=true_score(best).mean(), buckets=buckets, quick=quick)  # fmt: skip


def run(variant: str, seed: int, steps: int, c: dict) -> dict:
    """Train the ranker on one kind of candidates with one seed; its feed's quality."""
    world, timeline = c["world"], c["timeline"]
    config = common.one_layer_if_quick(book_ranker_config(history_seq_len=16), c["quick"])
    share = VARIANTS[variant]

    def candidates(session, sessions, rng):
        k = round(share * session.users.size)
        first = jax.tree.map(lambda x: x[:k], session)
        found = np.asarray(pipeline.top_existing(
            c["users_of"](first), c["corpus"], world.post_hour, timeline.hours[sessions[:k]],
            k=RETRIEVED))  # fmt: skip
        pick = np.argsort(rng.random(found.shape), axis=1)[:, : session.candidate_posts.shape[1]]
        return np.concatenate(
            [np.take_along_axis(found, pick, 1), session.candidate_posts[k:]], axis=0
        )

    data = world.timeline_data(config, timeline, NUM_BUCKETS, batch_size=64,
                               sessions=range(TEST_SESSION), seed_offset=10**6 * (seed + 1),
                               candidates=candidates if share else None)  # fmt: skip
    optimizer = optimizers.book_optimizer(steps)
    ranker = make_ranker(config, release=common.RELEASE)
    state = train.init_state(jax.random.key(SEED + 1 + seed), ranker, data(0)[0], optimizer,
                             num_buckets=NUM_BUCKETS, emb_size=config.emb_size)  # fmt: skip
    step = train.make_step(train.ranker_objective(config, release=common.RELEASE), optimizer)
    start = time.perf_counter()
    state, _ = train.fit(step, state, data, steps, desc=f"{variant}, seed {seed}")
    seconds = time.perf_counter() - start
    retrieved = c["retrieved"]
    requests = pipeline.in_slots(c["test"], retrieved, config.candidate_seq_len)
    batch = world.to_batch(config, requests, NUM_BUCKETS, buckets=c["buckets"])
    probs = pipeline.from_slots(train.make_predict(ranker)(state.params, batch), RETRIEVED)
    order = np.argsort(-np.asarray(scoring.weighted_score(probs)), axis=1)[:, :10]
    feed = np.take_along_axis(retrieved, order, 1)
    score = c["true_score"](feed)
    return {
        "variant": variant,
        "seed": seed,
        "steps": steps,
        "train_s": seconds,
        "feed_score": float(score.mean()),
        "gap_closed": metrics.gap_closed(score.mean(), c["low"], c["high"]),
        "ndcg_at_10": metrics.ndcg(score, c["true_score"](c["best"])),
        "authors": float(np.mean([np.unique(world.post_author[row]).size for row in feed])),
    }


def main(argv=None) -> dict:
    args = common.parse_args(
        __doc__.splitlines()[0],
        argv,
        steps={"type": int, "default": None, "help": "ranker steps per run (800; quick 10)"},
        seeds={"type": int, "default": None, "help": "seeds per variant (3; quick 1)"},
    )
    steps = args.steps or (10 if args.quick else 800)
    seeds = args.seeds or (1 if args.quick else 3)
    if steps < 4 or seeds < 1:
        raise SystemExit("--steps must be at least 4 and --seeds at least 1")
    context = setup(args.quick)
    rows = [run(v, s, steps, context) for s in range(seeds) for v in VARIANTS]
    print(f"Chapter 5's ranker by training candidates on {common.machine()['device']}, "
          f"{steps} steps")  # fmt: skip
    common.print_table(rows, [("variant", "s"), ("seed", "d"), ("train_s", ".0f"),
                              ("feed_score", ".3f"), ("gap_closed", ".3f"),
                              ("ndcg_at_10", ".3f"), ("authors", ".2f")])  # fmt: skip
    summary = {}
    for v in VARIANTS:
        own = [r for r in rows if r["variant"] == v]
        gaps = [r["gap_closed"] for r in own]
        logged = [r for r in rows if r["variant"] == "logged"]
        diff = [a["gap_closed"] - b["gap_closed"] for a, b in zip(own, logged, strict=True)]
        summary[v] = {
            "gap_closed": float(np.mean(gaps)),
            "ndcg_at_10": float(np.mean([r["ndcg_at_10"] for r in own])),
            "gap_closed_vs_logged": float(np.mean(diff)),
            "vs_logged_min": float(np.min(diff)),
            "vs_logged_max": float(np.max(diff)),
        }
        print(f"{v:10s} feed gap closed {np.mean(gaps):.3f} (seeds {np.min(gaps):.3f} to "
              f"{np.max(gaps):.3f}); against logged {np.mean(diff):+.3f} (seeds "
              f"{np.min(diff):+.3f} to {np.max(diff):+.3f})")  # fmt: skip
    figure = common.seeds_figure(rows, VARIANTS, "gap_closed", ylabel="% of the feed gap closed",
                                 xlabel="the ranker's training candidates",
                                 title="What the ranker trains on (dots: seeds)")  # fmt: skip
    common.save(args.out, "pipeline", rows, summary, figure)
    return summary


if __name__ == "__main__":
    main()
