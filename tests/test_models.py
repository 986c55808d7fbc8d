"""The Phoenix ranker and retriever: parameter trees, numerics, candidate isolation, bad input."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import phoenix_lib as pl
from phoenix_lib import mpzch, tables, transformer
from phoenix_lib.config import demo_ranker_config, demo_retrieval_config
from phoenix_lib.inputs import random_batch
from phoenix_lib.transformer import apply_rotary, ffn_size

JANUARY = "2026-01"  # this file tests the January model; tests/test_may.py tests May

# The fact sheet's table (shared/reference/phoenix-architecture.md) for D = 128,
# 19 actions, 2 layers, 2 hashes per entity, vocabulary 16.
RANKER_TREE = {
    ("phoenix_model", "product_surface_embedding_table"): (16, 128),
    ("phoenix_model", "action_projection"): (19, 128),
    ("phoenix_model", "proj_mat_1"): (256, 128),
    ("phoenix_model", "proj_mat_3"): (768, 128),
    ("phoenix_model", "proj_mat_2"): (640, 128),
    ("phoenix_model", "unembeddings"): (128, 19),
    ("phoenix_model/rms_norm", "scale"): (128,),
}
LAYER_TREE = {
    ("rms_norm", "scale"): (128,),
    ("multi_head_attention/query", "w"): (128, 128),
    ("multi_head_attention/key", "w"): (128, 128),
    ("multi_head_attention/value", "w"): (128, 128),
    ("multi_head_attention/linear", "w"): (128, 128),
    ("rms_norm_1", "scale"): (128,),
    ("rms_norm_2", "scale"): (128,),
    ("linear_v", "w"): (128, 176),
    ("linear", "w"): (128, 176),
    ("linear_1", "w"): (176, 128),
    ("rms_norm_3", "scale"): (128,),
}
for _i in range(2):
    for (_module, _name), _shape in LAYER_TREE.items():
        RANKER_TREE[(f"transformer/decoder_layer_{_i}/{_module}", _name)] = _shape
RETRIEVAL_TREE = {
    **{k: v for k, v in RANKER_TREE.items() if k[0].startswith("transformer/")},
    ("phoenix_retrieval_model", "product_surface_embedding_table"): (16, 128),
    ("phoenix_retrieval_model", "action_projection"): (19, 128),
    ("phoenix_retrieval_model", "proj_mat_1"): (256, 128),
    ("phoenix_retrieval_model", "proj_mat_3"): (768, 128),
    (
        "phoenix_retrieval_model/~build_candidate_representation/candidate_tower",
        "candidate_tower_projection_1",
    ): (512, 256),
    (
        "phoenix_retrieval_model/~build_candidate_representation/candidate_tower",
        "candidate_tower_projection_2",
    ): (256, 128),
}


def _tree(params):
    return {(m, n): tuple(v.shape) for m, entries in params.items() for n, v in entries.items()}


def _inputs(config, *, batch_size=2, num_candidates=4, seed=0, history_fill=0.7, buckets=64):
    batch = random_batch(
        config,
        batch_size=batch_size,
        num_candidates=num_candidates,
        num_buckets=buckets,
        seed=seed,
        history_fill=history_fill,
    )
    t = tables.init_tables(
        jax.random.PRNGKey(seed),
        num_user_buckets=buckets,
        num_post_buckets=buckets,
        num_author_buckets=buckets,
        dim=config.emb_size,
    )
    return batch, tables.embed(t, batch)


@pytest.fixture(scope="module")
def demo():
    config = demo_ranker_config(fprop_dtype=jnp.float32, history_seq_len=6)
    batch, emb = _inputs(config)
    params = pl.make_ranker(config, release=JANUARY).init(jax.random.PRNGKey(0), batch, emb)
    return config, batch, emb, params


def test_init_at_optimisation_level_1_gives_the_default_levels_parameters(demo):
    """``init`` compiles at XLA's level 1 (faster to compile); inside another ``jax.jit``
    it is traced into that program, compiled at the default level. Same bits."""
    config, batch, emb, params = demo  # params from the level-1 program
    default = jax.jit(pl.make_ranker(config, release=JANUARY).init)(
        jax.random.PRNGKey(0), batch, emb
    )
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(default), strict=True):
        np.testing.assert_array_equal(a, b)


def test_ranker_parameter_tree_is_the_release_tree(demo):
    *_, params = demo
    assert _tree(params) == RANKER_TREE
    assert all(v.dtype == jnp.float32 for e in params.values() for v in e.values())


@pytest.fixture(scope="module")
def retriever_demo():
    config = demo_retrieval_config(fprop_dtype=jnp.float32, history_seq_len=6)
    batch, emb = _inputs(config, num_candidates=5)
    retriever = pl.make_retriever(config)
    return retriever, batch, emb, retriever.init(jax.random.PRNGKey(0), batch, emb)


def test_retriever_parameter_tree_is_the_release_tree(retriever_demo):
    *_, params = retriever_demo
    assert _tree(params) == RETRIEVAL_TREE
    assert all(v.dtype == jnp.float32 for e in params.values() for v in e.values())


def test_may_candidate_tower_without_projection_is_the_normalised_mean_of_the_rows(
    retriever_demo,
):
    """May 2026's enable_linear_proj=False: the same tree without the candidate tower's two
    matrices, and each candidate the unit vector of the mean of its post and author rows
    (checked against the released code outside the repository: identical trees, equal
    outputs)."""
    _, batch, emb, params = retriever_demo
    config = demo_retrieval_config(fprop_dtype=jnp.float32, history_seq_len=6,
                                   enable_linear_proj=False)  # fmt: skip
    mean_pool = pl.make_retriever(config)
    pooled_params = mean_pool.init(jax.random.PRNGKey(0), batch, emb)
    tower = {k: v for k, v in RETRIEVAL_TREE.items() if k[0].endswith("/candidate_tower")}
    assert len(tower) == 2 and _tree(pooled_params) == dict(RETRIEVAL_TREE.items() - tower.items())
    out = mean_pool.apply(pooled_params, batch, emb)
    rows = np.concatenate([emb.candidate_post_embeddings, emb.candidate_author_embeddings], 2)
    mean = rows.mean(axis=2)
    expected = mean / np.linalg.norm(mean, axis=-1, keepdims=True)
    np.testing.assert_allclose(out.candidate_representation, expected, rtol=1e-5, atol=1e-6)
    full = pl.make_retriever(demo_retrieval_config(fprop_dtype=jnp.float32, history_seq_len=6))
    np.testing.assert_array_equal(  # the user tower is unchanged
        mean_pool.apply(params, batch, emb).user_representation,
        full.apply(params, batch, emb).user_representation,
    )


def test_parameter_shapes_follow_the_config():
    model = pl.TransformerConfig(
        emb_size=32, key_size=8, num_q_heads=4, num_kv_heads=2, num_layers=3, widening_factor=3.0
    )
    hashes = pl.HashConfig(num_user_hashes=3, num_item_hashes=1, num_author_hashes=2)
    config = pl.PhoenixModelConfig(
        model=model,
        emb_size=32,
        num_actions=5,
        history_seq_len=4,
        hash_config=hashes,
        product_surface_vocab_size=7,
        fprop_dtype=jnp.float32,
    )
    batch, emb = _inputs(config)
    tree = _tree(
        jax.eval_shape(
            pl.make_ranker(config, release=JANUARY).init, jax.random.PRNGKey(0), batch, emb
        )
    )
    assert tree[("phoenix_model", "proj_mat_1")] == (3 * 32, 32)
    assert tree[("phoenix_model", "proj_mat_3")] == ((1 + 2 + 2) * 32, 32)
    assert tree[("phoenix_model", "proj_mat_2")] == ((1 + 2 + 1) * 32, 32)
    assert tree[("phoenix_model", "product_surface_embedding_table")] == (7, 32)
    assert tree[("phoenix_model", "unembeddings")] == (32, 5)
    layer = "transformer/decoder_layer_2"
    assert tree[(f"{layer}/multi_head_attention/query", "w")] == (32, 4 * 8)
    assert tree[(f"{layer}/multi_head_attention/key", "w")] == (32, 2 * 8)
    assert tree[(f"{layer}/linear_v", "w")] == (32, ffn_size(32, 3.0))
    assert ("transformer/decoder_layer_3/linear", "w") not in tree


@pytest.mark.parametrize(
    ("d", "w", "f"), [(128, 2.0, 176), (128, 4.0, 344), (64, 2.0, 88), (8, 1.0, 8)]
)
def test_ffn_size_rounds_up_to_multiple_of_8(d, w, f):
    assert ffn_size(d, w) == f
    assert f % 8 == 0 and 0 <= f - int(w * d) * 2 // 3 < 8


def test_rotary_inside_jit_follows_its_formula_at_late_positions():
    # The phase is the float32 product position * 10000^(-2i/K); rotating in float64
    # from it is the reference. Traced, XLA evaluated the frequencies another way and
    # late positions came out 5e-4 off; the host-built tables stay at float32 rounding.
    t, k = 8192, 64
    x = jax.random.normal(jax.random.key(0), (2, t, 2, k))
    inv_freq = 1.0 / (10_000 ** (np.arange(0, k, 2, dtype=np.float32) / k))
    x64 = np.asarray(x, np.float64)
    half = np.concatenate([-x64[..., k // 2 :], x64[..., : k // 2]], axis=-1)

    def want(positions):  # [B, T'] -> x[:, :T'] rotated there, float64
        phase = np.tile(positions.astype(np.float32)[..., None] * inv_freq, 2)[:, :, None]
        phase = phase.astype(np.float64)
        n = positions.shape[1]
        return x64[:, :n] * np.cos(phase) + half[:, :n] * np.sin(phase)

    def error(got, positions):
        return np.abs(np.asarray(got, np.float64) - want(positions)).max()

    assert error(jax.jit(apply_rotary)(x), np.tile(np.arange(t), (2, 1))) < 2e-6
    # Positions 5..t-1 of the same tables, traced (as in a block of candidates).
    late = jax.jit(apply_rotary, static_argnums=2)(x[:, : t - 5], jnp.arange(5, t), t)
    assert error(late, np.tile(np.arange(5, t), (2, 1))) < 2e-6
    # Per-row positions [B, T]: row 0 reversed, row 1 all at the last position.
    rows = np.stack([np.arange(t)[::-1], np.full(t, t - 1)])
    assert error(jax.jit(apply_rotary)(x, rows), rows) < 2e-6


def _max_rel(a, b):
    """max |a - b| relative to the largest |b| (a normwise relative error)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)


SMALL = pl.TransformerConfig(
    emb_size=16,
    key_size=8,
    num_q_heads=4,
    num_kv_heads=2,
    num_layers=2,
    widening_factor=2.0,
    attn_output_multiplier=0.25,
)


_SMALL_RANKER = pl.PhoenixModelConfig(
    model=SMALL, emb_size=16, num_actions=3, history_seq_len=5, fprop_dtype=jnp.float32
)


def _padded_inputs(config, num_candidates, seed, fill, pad):
    """Three users' batch and embeddings. Padding patterns: pad=1 pads every other
    candidate, pad=2 pads row 0 entirely (user, history, candidates), pad=3 both."""
    batch, _ = _inputs(
        config, batch_size=3, num_candidates=num_candidates, seed=seed, history_fill=fill
    )
    changed = ("user_hashes", "history_post_hashes", "candidate_post_hashes", "history_actions")
    hashes = {k: np.array(getattr(batch, k)) for k in changed}
    if pad in (1, 3):
        hashes["candidate_post_hashes"][:, ::2] = 0
    if pad in (2, 3):
        for name in ("user_hashes", "history_post_hashes", "candidate_post_hashes"):
            hashes[name][0] = 0
        hashes["history_actions"][0] = 0
    batch = batch._replace(**hashes)
    return batch, tables.embed(_TABLES, batch)


@pytest.mark.parametrize("num_candidates", [1, 3, 9])
@settings(max_examples=25)
@given(seed=st.integers(0, 2**16), fill=st.sampled_from([0.0, 0.3, 1.0]), pad=st.integers(0, 3))
def test_isolated_and_masked_paths_give_the_same_logits(num_candidates, seed, fill, pad):
    config = _SMALL_RANKER
    batch, emb = _padded_inputs(config, num_candidates, seed, fill, pad)
    params = _random_params(config, batch, seed)
    fast = _apply(config, "isolated")(params, batch, emb)
    slow = _apply(config, "masked")(params, batch, emb)
    assert fast.shape == (3, num_candidates, 3)
    assert _max_rel(fast, slow) <= 1e-5


@pytest.mark.parametrize("pad", range(4))
def test_candidates_in_blocks_give_the_masked_paths_logits(pad):
    """C = 9 in blocks of 2 (the fifth block padded). Row 0 under pad 2 and 3 is all
    padding: its candidates see no key, the documented corner where a block's output
    differs; every other row must agree."""
    config = _SMALL_RANKER
    batch, emb = _padded_inputs(config, num_candidates=9, seed=11 + pad, fill=0.3, pad=pad)
    params = _random_params(config, batch, 11 + pad)
    blocks = _apply(config, "isolated", candidate_chunk=2)(params, batch, emb)
    slow = _apply(config, "masked")(params, batch, emb)
    real = slice(1, None) if pad in (2, 3) else slice(None)
    assert blocks.shape == slow.shape and np.isfinite(blocks).all()
    assert _max_rel(blocks[real], slow[real]) <= 1e-5


@pytest.mark.parametrize("pad", range(4))
def test_bidirectional_context_is_the_same_function_on_every_serving_path(pad):
    """August 2026's context (user and history see each other both ways): masked, isolated
    and blocks agree; candidates stay isolated; the function differs from the causal one."""
    config = _SMALL_RANKER
    batch, emb = _padded_inputs(config, num_candidates=5, seed=21 + pad, fill=0.6, pad=pad)
    params = _random_params(config, batch, 21 + pad)

    def run(b=batch, e=emb, **options):
        ranker = pl.make_ranker(config, release=JANUARY, context_attention="bidirectional",
                                **options)  # fmt: skip
        return np.asarray(jax.jit(ranker.apply)(params, b, e))

    slow = run(attention="masked")
    assert _max_rel(run(), slow) <= 1e-5
    real = slice(1, None) if pad in (2, 3) else slice(None)  # see the blocks test above
    assert _max_rel(run(candidate_chunk=2)[real], slow[real]) <= 1e-5
    assert _max_rel(_apply(config, "masked")(params, batch, emb), slow) > 1e-3
    others = np.array(batch.candidate_post_hashes)
    others[:, 1:] = others[:, 1:] % 61 + 1
    changed = batch._replace(candidate_post_hashes=others)
    moved = run(changed, tables.embed(_TABLES, changed), attention="masked")
    np.testing.assert_array_equal(moved[real, 0], slow[real, 0])  # a blind row averages all


def test_bidirectional_ranking_mask_by_hand():
    """T = 1 + 2 + 2: the context block is full, candidates see the context and themselves."""
    mask = np.asarray(transformer.ranking_mask(jnp.ones((1, 5), bool), 3, "bidirectional"))
    want = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 0, 0],
                     [1, 1, 1, 1, 0], [1, 1, 1, 0, 1]], bool)  # fmt: skip
    np.testing.assert_array_equal(mask[0, 0], want)
    causal = np.asarray(transformer.ranking_mask(jnp.ones((1, 5), bool), 3))[0, 0]
    np.testing.assert_array_equal(causal, want & np.tril(np.ones((5, 5), bool)))
    with pytest.raises(ValueError, match="context_attention"):
        pl.make_ranker(config=_SMALL_RANKER, context_attention="full")


_TABLES = tables.init_tables(
    jax.random.PRNGKey(7), num_user_buckets=64, num_post_buckets=64, num_author_buckets=64, dim=16
)
_COMPILED = {}  # one jitted init/apply per config (by value) and attention path


def _jit_init(config):
    key = (repr(config), "init")
    if key not in _COMPILED:
        _COMPILED[key] = pl.make_ranker(config, release=JANUARY).init  # jitted by make_ranker
    return _COMPILED[key]


def _apply(config, attention="isolated", candidate_chunk=None):
    key = (repr(config), attention, candidate_chunk)
    if key not in _COMPILED:
        ranker = pl.make_ranker(
            config, attention=attention, candidate_chunk=candidate_chunk, release=JANUARY
        )
        _COMPILED[key] = jax.jit(ranker.apply)
    return _COMPILED[key]


def _random_params(config, batch, seed):
    """Book init, then every leaf (norm scales included) jittered so no parameter is special.

    No parameter's shape depends on C, so init always sees the batch's first candidate
    only: one compiled init per config instead of one per C.
    """
    first = batch._replace(
        **{
            k: v[:, :1]
            for k, v in batch._asdict().items()
            if k.startswith("candidate_") and v is not None
        }
    )
    params = _jit_init(config)(jax.random.PRNGKey(seed), first, tables.embed(_TABLES, first))
    return _jitter(params, seed + 1)


def _jitter(params, seed):
    """Every leaf plus 0.3 standard normal noise, drawn on the host (nothing to compile)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda x: np.asarray(x) + np.float32(0.3) * rng.standard_normal(x.shape, np.float32), params
    )


@pytest.mark.parametrize("attention", ["isolated", "masked"])
def test_other_candidates_do_not_change_a_candidates_logits_at_all(demo, attention):
    config, batch, emb, params = demo
    apply = _apply(config, attention)
    base = apply(params, batch, emb)
    other = batch._replace(
        candidate_post_hashes=np.array(batch.candidate_post_hashes).copy(),
        candidate_product_surface=np.array(batch.candidate_product_surface).copy(),
    )
    other.candidate_post_hashes[:, 1:] = (other.candidate_post_hashes[:, 1:] * 7) % 63 + 1
    other.candidate_product_surface[:, 1:] = 15 - other.candidate_product_surface[:, 1:]
    changed = apply(params, other, tables.embed(_demo_tables(), other))
    assert not np.allclose(base[:, 1:], changed[:, 1:])  # the others did change ...
    np.testing.assert_array_equal(base[:, 0], changed[:, 0])  # ... candidate 0 did not, bit for bit


def _demo_tables():
    return tables.init_tables(
        jax.random.PRNGKey(0),
        num_user_buckets=64,
        num_post_buckets=64,
        num_author_buckets=64,
        dim=128,
    )


def test_blocks_share_the_parameters_and_bad_options_fail_when_the_ranker_is_made(demo):
    config, batch, emb, params = demo  # C = 4: blocks of 3 pad the second block
    blocked = pl.make_ranker(config, candidate_chunk=3, release=JANUARY)
    for a, b in zip(
        jax.tree.leaves(params),
        jax.tree.leaves(blocked.init(jax.random.PRNGKey(0), batch, emb)),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    for options, error, match in [
        (dict(candidate_chunk=0), ValueError, "positive"),
        (dict(candidate_chunk=2.0), TypeError, "int"),
        (dict(candidate_chunk=2, attention="masked"), ValueError, "isolated"),
        (dict(attention="linear"), ValueError, "attention"),
        (dict(init="zeros"), ValueError, "init"),
    ]:
        with pytest.raises(error, match=match):  # when the ranker is made, not first called
            pl.make_ranker(config, **options, release=JANUARY)


def test_candidate_slot_changes_logits_through_rotary_phase(demo):
    config, batch, emb, params = demo
    apply = _apply(config)
    order = np.array([3, 1, 2, 0])  # swap candidates 0 and 3
    swapped = batch._replace(
        candidate_post_hashes=np.asarray(batch.candidate_post_hashes)[:, order],
        candidate_author_hashes=np.asarray(batch.candidate_author_hashes)[:, order],
        candidate_product_surface=np.asarray(batch.candidate_product_surface)[:, order],
    )
    a = apply(params, batch, emb)
    b = apply(params, swapped, tables.embed(_demo_tables(), swapped))
    diff = np.abs(np.asarray(a[:, 0]) - np.asarray(b[:, 3]))
    assert diff.max() > 1e-4  # same content, different slot: different logits
    np.testing.assert_allclose(a[:, 1:3], b[:, 1:3], rtol=0, atol=0)  # untouched slots unchanged


def test_release_initialisation_gives_one_half_and_no_gradient(demo):
    config, batch, emb, _ = demo
    ranker = pl.make_ranker(config, init="release", release=JANUARY)
    params = ranker.init(jax.random.PRNGKey(0), batch, emb)
    probs = jax.nn.sigmoid(jax.jit(ranker.apply)(params, batch, emb))
    np.testing.assert_array_equal(probs, 0.5)

    def loss(p):
        return jnp.mean(ranker.apply(p, batch, emb) - 1.0) ** 2

    grads = jax.jit(jax.grad(loss))(params)
    transformer_grads = [
        g for m, e in grads.items() if m.startswith("transformer") for g in e.values()
    ]
    assert all(float(jnp.abs(g).max()) == 0.0 for g in transformer_grads)


def test_bfloat16_runs_and_tracks_float32(demo):
    config, batch, emb, params = demo
    bf16 = dataclasses.replace(config, fprop_dtype=jnp.bfloat16)
    low = jax.jit(pl.make_ranker(bf16, release=JANUARY).apply)(params, batch, emb)
    high = _apply(config)(params, batch, emb)
    assert low.dtype == jnp.bfloat16 and high.dtype == jnp.float32
    assert _max_rel(low.astype(jnp.float32), high) < 0.05


def test_retriever_outputs_are_unit_vectors_and_top_k_is_exact(retriever_demo):
    retriever, batch, emb, params = retriever_demo
    out = jax.jit(retriever.apply)(params, batch, emb)
    assert out.user_representation.shape == (2, 128)
    assert out.candidate_representation.shape == (2, 5, 128)
    np.testing.assert_allclose(jnp.linalg.norm(out.user_representation, axis=-1), 1, atol=1e-6)
    np.testing.assert_allclose(jnp.linalg.norm(out.candidate_representation, axis=-1), 1, atol=1e-6)

    corpus = out.candidate_representation.reshape(-1, 128)  # [10, D]
    mask = np.arange(10) % 3 != 0
    top = pl.retrieve_top_k(out.user_representation, corpus, 4, corpus_mask=mask)
    scores = np.array(out.user_representation @ corpus.T)
    scores[:, ~mask] = -np.inf
    np.testing.assert_array_equal(top.indices, np.argsort(-scores, axis=1)[:, :4])
    # The same dot products, summed in another order (JAX 0.12 fuses them differently):
    # equal to float32 rounding of terms up to 1 in size, so an absolute tolerance.
    np.testing.assert_allclose(top.scores, np.sort(scores, axis=1)[:, ::-1][:, :4], atol=1e-6)
    with pytest.raises(ValueError, match="k must be"):
        pl.retrieve_top_k(out.user_representation, corpus, 11)


def test_save_and_load_round_trip_bit_exactly(demo, tmp_path):
    config, batch, emb, params = demo
    path = tmp_path / "ranker.npz"
    pl.save_params(path, params)
    loaded = pl.load_params(path)
    assert _tree(loaded) == _tree(params)
    for module, entries in params.items():
        for name, value in entries.items():
            np.testing.assert_array_equal(loaded[module][name], value)
            assert loaded[module][name].dtype == value.dtype
    apply = _apply(config)
    np.testing.assert_array_equal(apply(loaded, batch, emb), apply(params, batch, emb))


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("user_hashes", np.ones((2, 3), np.int32), ValueError),
        ("history_post_hashes", np.ones((2, 5, 2), np.int32), ValueError),
        ("history_author_hashes", np.ones((2, 6, 1), np.int32), ValueError),
        ("history_actions", np.zeros((2, 6, 18), np.float32), ValueError),
        ("candidate_author_hashes", np.ones((2, 3, 2), np.int32), ValueError),
        ("candidate_product_surface", np.full((2, 4), 16, np.int32), ValueError),
        ("history_product_surface", np.full((2, 6), -1, np.int32), ValueError),
        ("history_actions", np.full((2, 6, 19), 0.5, np.float32), ValueError),
        ("user_hashes", np.ones((2, 2), np.float32), TypeError),
        ("candidate_post_hashes", -np.ones((2, 4, 2), np.int32), ValueError),
    ],
)
def test_bad_batches_are_refused_naming_the_field(demo, field, value, error):
    config, batch, emb, params = demo
    with pytest.raises(error, match=field):
        pl.make_ranker(config, release=JANUARY).apply(params, batch._replace(**{field: value}), emb)


def test_embeddings_that_disagree_with_the_batch_are_refused(demo):
    config, batch, emb, params = demo
    wrong_d = emb._replace(user_embeddings=jnp.zeros((2, 2, 64)))
    with pytest.raises(ValueError, match="user_embeddings"):
        pl.make_ranker(config, release=JANUARY).apply(params, batch, wrong_d)
    with pytest.raises(ValueError, match="history_post_hashes"):
        pl.make_ranker(dataclasses.replace(config, history_seq_len=7), release=JANUARY).apply(
            params, batch, emb
        )


def test_value_checks_are_skipped_under_jit_but_shape_checks_are_not(demo):
    config, batch, emb, params = demo
    apply = _apply(config)
    apply(params, batch, emb)  # traced: no host values needed
    with pytest.raises(ValueError, match="candidate_author_hashes"):
        apply(params, batch._replace(candidate_author_hashes=np.ones((2, 4, 3), np.int32)), emb)


def test_mean_pooled_history_ignores_the_order_of_the_history(demo):
    """The ablation's model sees the history as one averaged position: permuting the
    items leaves its logits unchanged (to rounding), while the release's attention,
    with rotary positions, notices; the parameters are the release's."""
    config, _, _, params = demo
    batch, _ = _inputs(config, history_fill=1.0)  # every slot real: any order is valid
    pooled = pl.make_ranker(config, history="mean", release=JANUARY)
    emb_b = tables.embed(_demo_tables(), batch)
    assert _tree(pooled.init(jax.random.PRNGKey(0), batch, emb_b)) == _tree(params)
    order = np.array([3, 0, 5, 1, 4, 2])
    fields = ("history_post_hashes", "history_author_hashes", "history_actions",
              "history_product_surface")  # fmt: skip
    permuted = batch._replace(**{f: np.asarray(getattr(batch, f))[:, order] for f in fields})
    emb_p = tables.embed(_demo_tables(), permuted)
    a = np.asarray(pooled.apply(params, batch, emb_b))
    b = np.asarray(pooled.apply(params, permuted, emb_p))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    full = pl.make_ranker(config, release=JANUARY)
    assert not np.allclose(full.apply(params, batch, emb_b), full.apply(params, permuted, emb_p))
    with pytest.raises(ValueError, match="history"):
        pl.make_ranker(config, history="max", release=JANUARY)


def test_batch_from_ids_names_the_argument_at_fault():
    config = demo_ranker_config(history_seq_len=4, candidate_seq_len=2)
    b, s, c = 3, 4, 2
    good = dict(
        user_ids=np.arange(1, b + 1), history_post_ids=np.ones((b, s), np.int64),
        history_author_ids=np.ones((b, s), np.int64), history_actions=np.zeros((b, s, 19)),
        history_product_surface=np.zeros((b, s), int), history_mask=np.ones((b, s), bool),
        candidate_post_ids=np.ones((b, c), np.int64),
        candidate_author_ids=np.ones((b, c), np.int64),
        candidate_product_surface=np.zeros((b, c), int), candidate_mask=np.ones((b, c), bool),
        num_buckets=(64, 64, 64),
    )  # fmt: skip
    full = pl.batch_from_ids(config, **good)
    no_surfaces = {k: v for k, v in good.items() if not k.endswith("product_surface")}
    default = pl.batch_from_ids(config, **no_surfaces)  # product surfaces default to 0
    for explicit, omitted in zip(
        jax.tree_util.tree_leaves(full), jax.tree_util.tree_leaves(default), strict=True
    ):
        np.testing.assert_array_equal(explicit, omitted)
    cases = [
        ("history_mask", np.ones((b, s - 1), bool), ValueError, r"history_mask has shape"),
        ("history_actions", np.zeros((b, s)), ValueError, r"history_actions has shape"),
        ("candidate_author_ids", np.ones((b, c), np.float64), TypeError,
         r"candidate_author_ids must hold integers.*2\*\*53"),
        ("user_ids", -np.arange(1, b + 1), ValueError, "user_ids must be non-negative"),
    ]  # fmt: skip
    for field, value, error, match in cases:
        with pytest.raises(error, match=match):
            pl.batch_from_ids(config, **{**good, field: value})


def test_with_post_rows_puts_rows_in_and_refuses_rows_that_would_read_wrongly():
    """MPZCH rows go into a one-hash batch; a -1 (no slot) or a row 0 for a real post (an
    MPZCH table without padding_row) would be read as padding, and is refused."""
    config = demo_ranker_config(
        history_seq_len=3, candidate_seq_len=2, hash_config=pl.HashConfig(num_item_hashes=1)
    )
    history_mask = np.array([[True, True, False], [True, False, False]])
    posts = np.array([[10, 11, 12, 13, 14], [15, 16, 17, 18, 19]], np.int64)
    real = np.hstack([history_mask, np.ones((2, 2), bool)])
    batch = pl.batch_from_ids(
        config, user_ids=np.array([1, 2]), history_post_ids=posts[:, :3],
        history_author_ids=posts[:, :3], history_actions=np.zeros((2, 3, 19)),
        history_product_surface=np.zeros((2, 3), int), history_mask=history_mask,
        candidate_post_ids=posts[:, 3:], candidate_author_ids=posts[:, 3:],
        candidate_product_surface=np.zeros((2, 2), int), candidate_mask=np.ones((2, 2), bool),
        num_buckets=(64, 64, 64),
    )  # fmt: skip
    zch = mpzch.create(31, padding_row=True)
    zch, rows, _ = mpzch.write(zch, posts, 0, mask=real)
    rows = np.asarray(rows)
    out = pl.with_post_rows(batch, rows[:, :3], rows[:, 3:])
    np.testing.assert_array_equal(out.history_post_hashes[..., 0], rows[:, :3])
    np.testing.assert_array_equal(out.candidate_post_hashes[..., 0], rows[:, 3:])
    assert (out.history_post_hashes[..., 0][~history_mask] == 0).all()
    pl.validate_batch(config, out)
    real_at_zero = rows[:, :3].copy()
    real_at_zero[0, 0] = 0  # slot numbering (no padding_row): a real post on the padding row
    cases = [
        (real_at_zero, rows[:, 3:], "padding row"),
        (np.where(history_mask, rows[:, :3], 5), rows[:, 3:], "padding row"),  # padding read
        (rows[:, :3], np.where(rows[:, 3:] == rows[0, 3], -1, rows[:, 3:]), "no slot"),
        (rows[:, :2], rows[:, 3:], "history_rows has shape"),
    ]
    for history, candidates, match in cases:
        with pytest.raises(ValueError, match=match):
            pl.with_post_rows(batch, history, candidates)
    two_hashes = batch._replace(candidate_post_hashes=np.ones((2, 2, 2), np.int32))
    with pytest.raises(ValueError, match="num_item_hashes=1"):
        pl.with_post_rows(two_hashes, rows[:, :3], rows[:, 3:])


@pytest.mark.parametrize("readout", ["mean", "last"])
def test_every_prefix_is_the_user_tower_on_each_truncated_history(retriever_demo, readout):
    """Row i of ``every_prefix=True`` is the ordinary user tower on the first i history
    items alone (the rest padded; past the history, all of it), same parameters."""
    _, batch, emb, params = retriever_demo
    config = demo_retrieval_config(fprop_dtype=jnp.float32, history_seq_len=6)
    every = pl.make_retriever(config, every_prefix=True, readout=readout)
    prefixes = jax.jit(every.apply)(params, batch, emb).user_representation
    assert prefixes.shape == (2, 7, 128)
    apply = jax.jit(pl.make_retriever(config, readout=readout).apply)
    same_tables = tables.init_tables(  # the fixture's (_inputs with seed 0)
        jax.random.PRNGKey(0), num_user_buckets=64, num_post_buckets=64,
        num_author_buckets=64, dim=128,
    )  # fmt: skip
    np.testing.assert_array_equal(tables.embed(same_tables, batch).user_embeddings,
                                  emb.user_embeddings)  # fmt: skip
    lengths = (np.asarray(batch.history_post_hashes)[..., 0] != 0).sum(1)
    assert 0 < lengths.min() < 6  # prefixes past the history are checked too
    for i in range(7):
        keep = (np.arange(6) < i)[None, :, None]
        cut = batch._replace(
            history_post_hashes=np.asarray(batch.history_post_hashes) * keep,
            history_author_hashes=np.asarray(batch.history_author_hashes) * keep,
            history_actions=np.asarray(batch.history_actions) * keep,
        )
        alone = apply(params, cut, tables.embed(same_tables, cut)).user_representation
        np.testing.assert_allclose(prefixes[:, i], alone, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="readout must be"):
        pl.make_retriever(config, readout="first")


def test_retriever_without_transformer_is_a_bag_of_its_history(retriever_demo):
    """history="mean": the tree without the transformer's weights, and a user representation
    that ignores the order of the history (the attention tower does not)."""
    retriever, batch, emb, params = retriever_demo
    config = demo_retrieval_config(fprop_dtype=jnp.float32, history_seq_len=6)
    bag = pl.make_retriever(config, history="mean")
    bag_params = bag.init(jax.random.PRNGKey(0), batch, emb)
    kept = {k: v for k, v in RETRIEVAL_TREE.items() if "transformer" not in k[0]}
    assert len(kept) < len(RETRIEVAL_TREE) and _tree(bag_params) == kept
    length = int((np.asarray(batch.history_post_hashes)[0, :, 0] != 0).sum())
    assert length >= 3
    order = np.arange(6)
    order[:length] = order[:length][::-1]  # reverse user 0's real history
    flipped = emb._replace(
        history_post_embeddings=emb.history_post_embeddings[:, order],
        history_author_embeddings=emb.history_author_embeddings[:, order],
    )
    flipped_batch = batch._replace(
        history_post_hashes=np.asarray(batch.history_post_hashes)[:, order],
        history_author_hashes=np.asarray(batch.history_author_hashes)[:, order],
        history_actions=np.asarray(batch.history_actions)[:, order],
        history_product_surface=np.asarray(batch.history_product_surface)[:, order],
    )
    for model, p, same in ((bag, bag_params, True), (retriever, params, False)):
        a = model.apply(p, batch, emb).user_representation[0]
        b = model.apply(p, flipped_batch, flipped).user_representation[0]
        assert np.allclose(a, b, rtol=1e-5, atol=1e-6) == same
    with pytest.raises(ValueError, match="history must be"):
        pl.make_retriever(config, history="sum")
