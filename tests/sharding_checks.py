"""Checks of the sharded code on several devices, run in processes of their own.

The test process keeps JAX's single default CPU device, so tests/test_sharding.py runs
this file in a child process with 8 simulated devices (``--devices 8``), or in two
processes of 4 devices each joined by ``jax.distributed`` over 127.0.0.1 with gloo
(``--process i --processes 2 --port P``). Each check's outcome (``ok`` or its traceback)
goes to ``--out`` as JSON, which the tests read.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import traceback

CHECKS = {}


def check(fn):
    CHECKS[fn.__name__] = fn
    return fn


def raises(fn, match: str) -> None:
    try:
        fn()
    except (ValueError, TypeError) as error:
        assert match in str(error), f"{match!r} not in {error}"
        return
    raise AssertionError(f"no error containing {match!r}")


def start(args) -> None:
    import jax

    if args.processes == 1:
        jax.config.update("jax_num_cpu_devices", args.devices)
        return
    jax.config.update("jax_num_cpu_devices", args.devices // args.processes)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        f"127.0.0.1:{args.port}",
        num_processes=args.processes,
        process_id=args.process,
        initialization_timeout=60,
    )


# ----------------------------------------------------------------------------- checks


def _same_table(a, b) -> None:
    import numpy as np

    from phoenix_lib.sharding import to_host

    for field in ("identity_hi", "identity_lo", "metadata", "clock", "counters_hi", "counters_lo"):
        assert np.array_equal(to_host(getattr(a, field)), to_host(getattr(b, field))), field


def _mpzch_stream(eviction, disable_fallback=False, hours=4, capacity=None):
    """The same stream of batches written to one table on one device and to its copy on
    every device; asserts equal slots, evictions, lookups and tables after each hour."""
    import numpy as np

    from phoenix_lib import mpzch, sharding

    mesh = sharding.mesh()
    one = mpzch.create(
        1024, num_buckets=16, max_probe=8, eviction=eviction, ttl_hours=2,
        disable_fallback=disable_fallback,
    )  # fmt: skip
    many = mpzch.shard(one, mesh, "shard")
    rng = np.random.default_rng(7)
    for hour in range(hours):
        ids = rng.integers(0, 900, size=500)  # repeats within a batch, and more IDs than fit
        ids[:50] = ids[50:100]
        mask = rng.random(500) < 0.9
        ttl = rng.integers(0, 4, size=500)
        one, rows1, ev1 = mpzch.write(one, ids, hour, ttl, mask=mask)
        many, rows8, ev8 = mpzch.write(many, ids, hour, ttl, mask=mask, capacity=capacity)
        assert np.array_equal(sharding.to_host(rows1), sharding.to_host(rows8))
        assert np.array_equal(sharding.to_host(ev1), sharding.to_host(ev8))
        _same_table(one, many)
        queries = rng.integers(0, 1200, size=300)
        assert np.array_equal(
            sharding.to_host(mpzch.lookup(one, queries)),
            sharding.to_host(mpzch.lookup(many, queries)),
        )
    assert sharding.placement(many.identity_hi) == (mesh, "shard")
    return one, many


@check
def sharded_mpzch_equals_one_device():
    from phoenix_lib import mpzch

    for eviction in (None, "ttl", "lru"):
        one, _ = _mpzch_stream(eviction)
        c = mpzch.counters(one)
        assert c["total"] > c["hit"] + c["insert"], "the stream must collide somewhere"
        if eviction:
            assert c["eviction"] > 0
    _mpzch_stream("lru", disable_fallback=True, hours=2)
    # a capacity below the per-device batch that still holds every ID
    _mpzch_stream("ttl", hours=2, capacity=24)


@check
def resharding_and_files_keep_every_slot():
    import tempfile

    import numpy as np

    from phoenix_lib import mpzch, sharding

    one, many = _mpzch_stream("lru", hours=3)
    four = mpzch.shard(many, sharding.mesh(4), "shard")
    back = mpzch.shard(four, sharding.mesh(1), "shard")
    assert sharding.placement(four.identity_hi)[0].shape["shard"] == 4
    assert sharding.placement(back.identity_hi) is None
    ids = mpzch.identities(one)
    live = ids[ids >= 0]
    slots = np.flatnonzero(ids >= 0)
    for table in (many, four, back):
        _same_table(one, table)
        assert np.array_equal(np.asarray(mpzch.lookup(table, live)), slots)
    with tempfile.TemporaryDirectory() as folder:
        loaded = mpzch.load(mpzch.save(os.path.join(folder, "table"), many))
        _same_table(one, loaded)
        assert loaded.settings() == one.settings()


@check
def sharded_lookup_equals_gather_with_its_gradient():
    import jax
    import jax.numpy as jnp
    import numpy as np

    from phoenix_lib import sharding, tables

    mesh = sharding.mesh()
    table = jax.random.normal(jax.random.key(0), (1024, 8))
    rows = np.random.default_rng(0).integers(-1, 1030, size=(64, 3)).astype(np.int32)
    rows[0, 0] = 0
    placed = sharding.shard_rows(table, mesh, "shard")
    got = sharding.lookup(placed, rows)
    assert np.array_equal(np.asarray(got), np.asarray(tables.gather(table, rows)), equal_nan=True)
    assert np.isnan(np.asarray(got)).any() and (np.asarray(got)[0, 0] == 0).all()

    spread = sharding.put(
        rows, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("shard"))
    )

    def loss(t):
        out, _ = sharding._lookup(t, spread, mesh_=mesh, axis="shard", capacity=24)
        return jnp.nansum(jnp.sin(out))

    grad = jax.grad(loss)(placed)
    expected = jax.grad(lambda t: jnp.nansum(jnp.sin(tables.gather(t, rows))))(table)
    assert np.allclose(np.asarray(grad), np.asarray(expected), rtol=1e-6, atol=1e-7)
    assert sharding.placement(grad) == (mesh, "shard")


@check
def routing_reports_collectives_and_refuses_overflow():
    import jax
    import numpy as np

    from phoenix_lib import sharding, tables

    mesh = sharding.mesh()
    placed = sharding.shard_rows(np.ones((512, 4), np.float32), mesh, "shard")
    # device k asks rows 8k+1..8k+8, all but row 64 owned by device 0 (rows 0..63)
    rows = np.arange(1, 65, dtype=np.int32).reshape(16, 4)
    raises(lambda: sharding.lookup(placed, rows, capacity=7), "pass capacity >= 8")
    assert np.array_equal(
        np.asarray(sharding.lookup(placed, rows, capacity=8)), np.ones((16, 4, 4))
    )
    raises(lambda: sharding.lookup(placed, rows[:12]), "must be a multiple of the mesh axis")
    raises(lambda: sharding.lookup(np.ones((512, 4)), rows), "not split row-wise")
    raises(lambda: sharding.shard_rows(np.ones((100, 4)), mesh, "shard"), "use 104")
    spread = sharding.put(rows, placed.sharding)
    explicit = (
        jax.jit(lambda t, r: sharding._lookup(t, r, mesh_=mesh, axis="shard", capacity=8)[0])
        .lower(placed, spread)
        .compile()
        .as_text()
    )
    gspmd = jax.jit(tables.gather).lower(placed, spread).compile().as_text()
    kinds = {c["kind"] for c in sharding.collectives(explicit, 8)}
    assert kinds == {"all-to-all"}, kinds
    moved = {c["kind"]: c["result_bytes"] for c in sharding.collectives(gspmd, 8)}
    assert moved.get("all-reduce") == 16 * 4 * 4 * 4, moved  # the whole [B, H, D] output


@check
def mpzch_bad_input_says_what_to_change():
    import numpy as np

    from phoenix_lib import mpzch, sharding

    mesh = sharding.mesh()
    raises(lambda: mpzch.shard(mpzch.create(96, num_buckets=12), mesh, "shard"), "use 16")
    raises(
        lambda: mpzch.shard(mpzch.create(64, num_buckets=8, padding_row=True), mesh, "shard"),
        "padding_row=False",
    )
    raises(lambda: mpzch.lookup(mpzch.create(64), [1, 2], capacity=4), "sharded table only")
    table = mpzch.shard(mpzch.create(1024, num_buckets=8), mesh, "shard")
    ids = np.arange(0, 8 * 64, 8)  # all in bucket 0: every device sends its 8 to device 0
    raises(lambda: mpzch.write(table, ids, 0, capacity=4), "pass capacity >= 8")
    import dataclasses

    other = dataclasses.replace(
        table, metadata=sharding.shard_rows(np.zeros(1024, np.int32), sharding.mesh(4), "shard")
    )
    raises(lambda: mpzch.lookup(other, ids), "place the whole table with mpzch.shard")


@functools.cache  # two checks read the same run; states are immutable
def _training(num_steps=3, mesh_devices=None):
    import jax

    from phoenix_lib import sharding, train
    from phoenix_lib.config import book_ranker_config
    from phoenix_lib.optimizers import book_optimizer
    from phoenix_lib.ranker import make_ranker
    from phoenix_lib.world import World, WorldConfig

    world = World(WorldConfig(num_users=300, num_authors=30, num_posts=1_000, num_topics=4, seed=1))
    buckets = (512, 2048, 128)
    config = book_ranker_config(history_seq_len=8, candidate_seq_len=4)
    config.model = dataclasses.replace(config.model, num_layers=1)  # compiles in half the time
    optimizer = book_optimizer(20)
    data = world.ranking_data(config, buckets, batch_size=16)
    state = train.init_state(
        jax.random.key(0), make_ranker(config), data(0)[0], optimizer,
        num_buckets=buckets, emb_size=config.emb_size,
    )  # fmt: skip
    objective = train.ranker_objective(config)
    mesh = sharding.mesh(mesh_devices)
    one, many = state, train.shard_state(state, mesh, "shard")
    step1 = train.make_step(objective, optimizer)
    step8 = train.make_sharded_step(objective, optimizer, mesh, "shard")
    for i in range(num_steps):
        one, loss1 = step1(one, *data(i))
        many, loss8 = step8(many, *data(i))
        assert abs(float(loss1) - float(loss8)) <= 1e-6 * abs(float(loss1)), (loss1, loss8)
    return one, many, (objective, optimizer, mesh, data)


def _relative_error(one, many) -> float:
    """The largest ||a - b|| / ||a|| over the arrays of two trees."""
    import jax
    import numpy as np

    from phoenix_lib.sharding import to_host

    def error(a, b):
        a, b = np.asarray(a, np.float64), to_host(b).astype(np.float64)
        return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-30))

    return max(jax.tree.leaves(jax.tree.map(error, one, many)))


@check
def sharded_training_step_equals_one_device():
    import numpy as np

    from phoenix_lib import sharding, train

    one, many, (objective, optimizer, mesh, data) = _training()
    assert _relative_error(one.params, many.params) < 1e-6
    assert _relative_error(one.opt_state.tables, many.opt_state.tables) < 1e-5
    assert sharding.placement(many.params["tables"].post) == (mesh, "shard")
    tight = train.make_sharded_step(objective, optimizer, mesh, "shard", capacity=2)
    raises(lambda: tight(many, *data(5)), "pass capacity >=")
    batch, *rest = data(5)
    cut = [np.asarray(a)[:12] for a in rest]
    short = type(batch)(*(None if a is None else np.asarray(a)[:12] for a in batch))
    step = train.make_sharded_step(objective, optimizer, mesh, "shard")
    raises(lambda: step(many, short, *cut), "the batch size (12) must be a multiple")


@check
def sharded_state_files_round_trip():
    import tempfile

    import jax
    import numpy as np

    from phoenix_lib import checkpoint, train

    _, many, (*_, mesh, _) = _training()
    with tempfile.TemporaryDirectory() as folder:
        path = checkpoint.save_state(os.path.join(folder, "state"), many)
        loaded = checkpoint.load_state(path, many)
        params = checkpoint.load_params(
            checkpoint.save_params(os.path.join(folder, "model"), many.params["model"])
        )
    again = train.shard_state(loaded, mesh, "shard")
    for a, b in zip(jax.tree.leaves(many), jax.tree.leaves(again), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b)) and a.sharding == b.sharding
    flat = jax.tree.leaves(many.params["model"])
    assert all(
        np.array_equal(np.asarray(a), b) for a, b in zip(flat, jax.tree.leaves(params), strict=True)
    )


@check
def evicted_rows_reset_on_their_shard():
    import jax
    import numpy as np

    from phoenix_lib import mpzch, sharding
    from phoenix_lib.optimizers import rowwise_adagrad

    one, _ = _mpzch_stream("ttl", hours=2)
    mesh = sharding.mesh()
    table = jax.random.normal(jax.random.key(1), (1024, 4))
    state = rowwise_adagrad(0.1).init(table)._replace(accumulator=np.ones(1024, np.float32))
    _, _, evicted = mpzch.write(one, np.arange(2000, 2600), 9)
    assert (np.asarray(evicted) >= 0).any()
    ref = mpzch.reset_rows(jax.random.key(2), table, evicted, state)
    placed_table = sharding.shard_rows(table, mesh, "shard")
    placed_state = jax.tree.map(lambda a: sharding.shard_rows(a, mesh, "shard"), state)
    got = mpzch.reset_rows(jax.random.key(2), placed_table, evicted, placed_state)
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
        assert sharding.placement(b) == (mesh, "shard")
    other = jax.tree.map(lambda a: sharding.shard_rows(a, sharding.mesh(4), "shard"), state)
    raises(lambda: mpzch.reset_rows(jax.random.key(2), placed_table, evicted, other), "mesh")


# ------------------------------------------------------------------ two processes


def two_processes(args) -> dict:
    """Run in each of the processes: a co-sharded MPZCH stream and a sharded training step
    over the 8 devices of both processes, each compared with this process's one-device run."""
    import jax

    assert jax.process_count() == args.processes and jax.device_count() == args.devices
    outcome = {}
    for name, fn in (
        ("mpzch", lambda: _mpzch_stream("lru", hours=4)),
        ("training", lambda: _check_training()),
    ):
        try:
            fn()
            outcome[name] = "ok"
        except Exception:  # reported to the test
            outcome[name] = traceback.format_exc()
    return outcome


def _check_training():
    one, many, _ = _training()
    assert _relative_error(one.params, many.params) < 1e-6


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--process", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args(argv)
    start(args)
    if args.processes > 1:
        outcome = two_processes(args)
    else:
        outcome = {}
        for name, fn in CHECKS.items():
            if args.only and name not in args.only:
                continue
            try:
                fn()
                outcome[name] = "ok"
            except Exception:  # reported to the test
                outcome[name] = traceback.format_exc()
    with open(args.out, "w") as file:
        json.dump(outcome, file)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
