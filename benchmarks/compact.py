"""Compact embeddings at equal memory: Chapter 8's comparison over budgets and seeds.

Chapter 4's world and timeline, a one-layer ranker trained on sessions 0-39 with each
technique for its post and author tables (``phoenix_lib.compact.techniques_for``) at 1/4,
1/16 and 1/64 of the full tables' rows times D, and the full tables as the reference;
tested on sessions 40-47 of 500 users. Reported per run: the share of the
base-rate-to-oracle gap in pooled NE closed, the share of the popularity-to-oracle gap in
favorite AUC, pooled NE on fresh posts (created after the last training session), and
seconds per training step; per technique and budget, the mean and range over seeds.

``--recipe chapter4`` trains as Chapter 4 does (two layers, 1,200 steps) instead, at
1/16 only, and writes ``compact_chapter4-<backend>``: does the order of the techniques
survive longer training?

    python -m benchmarks.compact [--quick] [--recipe short|chapter4] [--steps N] [--seeds N]
"""

from __future__ import annotations

import numpy as np

from benchmarks import common
from phoenix_lib import compact

SEED = 20260404  # Chapter 4's world
BUDGETS = (4, 16, 64)
TECHNIQUES = ("hash_1_sum", "hash_2_concat", "hash_2_sum", "double_hashing",
              "quotient_remainder", "mixed_dimension", "tensor_train", "semantic_ids",
              "semantic_ids_hashed", "mpzch")  # fmt: skip
# More hash functions are measured at the middle budget only.
MORE_HASHES = ("hash_3_sum", "hash_4_sum")


def main(argv=None) -> dict:
    args = common.parse_args(
        __doc__.splitlines()[0],
        argv,
        steps={"type": int, "default": None, "help": "training steps per run (500; quick 20)"},
        seeds={"type": int, "default": None, "help": "seeds per technique (3; quick 1)"},
        recipe={
            "choices": ("short", "chapter4"),
            "default": "short",
            "help": "short: one layer, 500 steps, three budgets; chapter4: two layers, "
            "1,200 steps, 1/16 only",
        },
    )
    chapter4 = args.recipe == "chapter4"
    steps = args.steps or (20 if args.quick else 1_200 if chapter4 else 500)
    seeds = args.seeds or (1 if args.quick else 3)
    if steps < 2 or seeds < 1:
        raise SystemExit("--steps must be at least 2 and --seeds at least 1")
    exp = compact.experiment(SEED, num_layers=2 if chapter4 else 1)
    ref = compact.references(exp)
    cases = [("full", 1)] + [(t, b) for b in ((16,) if chapter4 else BUDGETS) for t in TECHNIQUES]
    cases += [(t, 16) for t in MORE_HASHES]
    if args.quick:
        cases = [("full", 1), ("semantic_ids_hashed", 64), ("mpzch", 64)]
    rows = []
    for seed in range(seeds):
        for name, fraction in cases:
            try:
                post, author, note = compact.techniques_for(exp, name, fraction, seed=seed)
            except compact.DoesNotFit as reason:
                print(f"skipped: {reason}")
                continue
            run = compact.train_ranker(exp.world, exp.timeline, exp.config, post, author,
                                       exp.test, steps=steps, seed=seed)  # fmt: skip
            rows.append({"variant": f"{name} 1/{fraction}", "technique": name,
                         "budget": f"1/{fraction}", "seed": seed,
                         "post_floats": compact.num_params(post),
                         "author_floats": compact.num_params(author),
                         **compact.quality(exp, ref, run.probabilities),
                         "ms_per_step": 1e3 * run.seconds_per_step, "note": note})  # fmt: skip
    print(
        f"compact embeddings on {common.machine()['device']}, "
        f"{exp.config.model.num_layers} layers, {steps} steps, {seeds} seeds"
    )
    common.print_table(rows, [("technique", "s"), ("budget", "s"), ("seed", "d"),
                              ("post_floats", ",d"), ("ne_gap_closed", ".3f"),
                              ("auc_gap_closed", ".3f"), ("fresh_ne", ".4f"),
                              ("ms_per_step", ".1f")])  # fmt: skip
    summary = {
        "references": ref,
        "steps": steps,
        "seeds": seeds,
        "layers": exp.config.model.num_layers,
    }
    for name, fraction in cases:
        own = [r for r in rows if r["technique"] == name and r["budget"] == f"1/{fraction}"]
        if not own:
            summary[f"{name} 1/{fraction}"] = "does not fit"
            continue
        summary[f"{name} 1/{fraction}"] = {
            key: [float(np.mean(v)), float(np.min(v)), float(np.max(v))]
            for key in ("ne_gap_closed", "auc_gap_closed", "fresh_ne", "ms_per_step")
            for v in [[r[key] for r in own]]
        }
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    at_16 = [v for v in variants if v.endswith((" 1/1", " 1/16"))]
    figure = common.seeds_figure(rows, at_16 if len(at_16) > 1 else variants, "ne_gap_closed",
                                 ylabel="% of the pooled-NE gap closed",
                                 title="At 1/16 of the memory (dots: seeds)")  # fmt: skip
    figure.axes[0].tick_params(axis="x", rotation=70, labelsize=7)
    figure.tight_layout()
    common.save(args.out, "compact_chapter4" if chapter4 else "compact", rows, summary, figure)
    return summary


if __name__ == "__main__":
    main()
