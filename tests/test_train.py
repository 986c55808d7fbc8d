"""Training steps, losses, checkpoint resume, the weighted scorer."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from phoenix_lib import scoring, train
from phoenix_lib.checkpoint import load_state, save_params, save_state
from phoenix_lib.config import ACTIONS, book_ranker_config, book_retrieval_config
from phoenix_lib.optimizers import book_optimizer
from phoenix_lib.ranker import make_ranker
from phoenix_lib.retrieval import make_retriever
from phoenix_lib.tables import embed, init_tables
from phoenix_lib.world import World, WorldConfig

WORLD = World(WorldConfig(num_users=300, num_authors=30, num_posts=1_000, num_topics=4, seed=1))
BUCKETS = (512, 2048, 128)
CONFIG = book_ranker_config(history_seq_len=8, candidate_seq_len=4)


@functools.cache  # one compilation for the tests below; the state is immutable
def ranker_setup():
    optimizer = optax.adamw(3e-3)
    data = WORLD.ranking_data(CONFIG, BUCKETS, batch_size=8)
    state = train.init_state(
        jax.random.key(0),
        make_ranker(CONFIG),
        data(0)[0],
        optimizer,
        num_buckets=BUCKETS,
        emb_size=CONFIG.emb_size,
    )
    return state, train.make_step(train.ranker_objective(CONFIG), optimizer), data


def test_ranker_loss_falls_on_a_fixed_batch():
    state, step, data = ranker_setup()
    fixed = data(0)
    state, losses = train.fit(step, state, lambda i: fixed, 60, progress=False)
    assert losses[-5:].mean() < 0.5 * losses[:5].mean()
    assert int(state.step) == 60


def test_predict_gives_the_sigmoid_of_the_rankers_logits():
    state, _, data = ranker_setup()
    batch = data(0)[0]
    probs = np.asarray(train.make_predict(make_ranker(CONFIG))(state.params, batch))
    # Jitted like predict (one compilation, not one per operation), but without the sigmoid.
    out = jax.jit(functools.partial(train.forward, make_ranker(CONFIG)))(state.params, batch)
    logits = np.asarray(out.logits, np.float64)  # May (the default): a RankerOutput
    assert probs.shape == (8, CONFIG.candidate_seq_len, len(ACTIONS))
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits)), rtol=1e-6)


def test_checkpoint_resume_is_bit_exact(tmp_path):
    state, step, data = ranker_setup()
    straight, _ = train.fit(step, state, data, 6, progress=False)
    half, _ = train.fit(step, state, data, 3, progress=False)
    save_state(tmp_path / "state.npz", half)
    resumed = load_state(tmp_path / "state.npz", like=state)
    assert int(resumed.step) == 3
    resumed, _ = train.fit(step, resumed, data, 3, progress=False)
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="template"):
        load_state(tmp_path / "state.npz", like={"other": jnp.zeros(3)})
    # An abstract template (no computation) and the path without its suffix work too.
    abstract = jax.eval_shape(lambda: state)
    from_abstract = load_state(tmp_path / "state", like=abstract)
    for a, b in zip(jax.tree.leaves(half), jax.tree.leaves(from_abstract), strict=True):
        np.testing.assert_array_equal(a, b)


def test_save_params_on_a_training_state_says_to_use_save_state(tmp_path):
    state, _, _ = ranker_setup()
    with pytest.raises(TypeError, match="use save_state"):
        save_params(tmp_path / "p", state.params)
    assert save_params(tmp_path / "p", state.params["model"]) == tmp_path / "p.npz"


def test_ranker_loss_ignores_masked_candidates():
    logits = jnp.array([[[0.0], [50.0]]])
    labels = jnp.array([[[1.0], [0.0]]])
    loss = train.ranker_loss(logits, labels, jnp.array([[True, False]]))
    assert float(loss) == pytest.approx(np.log(2.0), rel=1e-6)


def test_retrieval_loss_matches_a_numpy_softmax_with_log_q():
    rng = np.random.default_rng(0)
    user, cand = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    log_q = np.log(rng.dirichlet(np.ones(5)))
    item = np.array([0, 1, 2, 1, 4])  # rows 1 and 3 share an item
    valid = np.array([True, True, True, True, False])
    got = train.retrieval_loss(
        jnp.asarray(user),
        jnp.asarray(cand),
        jnp.asarray(log_q),
        jnp.asarray(item),
        jnp.asarray(valid),
        0.5,
    )
    losses = []
    for i in range(5):
        if not valid[i]:
            continue
        cols = [j for j in range(5) if valid[j] and (j == i or item[j] != item[i])]
        logits = np.array([user[i] @ cand[j] / 0.5 - log_q[j] for j in cols])
        losses.append(-(logits[cols.index(i)] - np.log(np.exp(logits).sum())))
    assert float(got) == pytest.approx(np.mean(losses), rel=1e-5)


def test_retrieval_loss_falls_on_a_fixed_batch():
    config = book_retrieval_config(history_seq_len=8)
    optimizer = optax.adam(3e-3)
    s = WORLD.session(0, batch_size=16, history_len=8, num_candidates=1)
    batch = WORLD.to_batch(config, s, BUCKETS)
    args = (batch, jnp.zeros(16), jnp.asarray(s.candidate_posts[:, 0]), jnp.ones(16, bool))
    state = train.init_state(
        jax.random.key(0),
        make_retriever(config),
        batch,
        optimizer,
        num_buckets=BUCKETS,
        emb_size=config.emb_size,
    )
    step = train.make_step(train.retrieval_objective(config), optimizer)
    state, losses = train.fit(step, state, lambda i: args, 40, progress=False)
    assert losses[-5:].mean() < 0.5 * losses[:5].mean()


def test_every_prefix_objective_is_the_mean_over_all_prefixes_and_checks_its_candidates():
    """The every-prefix loss is the in-batch softmax over all B (1 + S) prefix positives at
    once, computed from the prefix representations; C must be 1 + S."""
    config = book_retrieval_config(history_seq_len=4)
    s = WORLD.session(0, batch_size=3, history_len=4, num_candidates=5)
    batch = WORLD.to_batch(config, s, BUCKETS)
    item = np.asarray(s.candidate_posts, np.int32)
    valid = np.arange(5)[None, :] > np.arange(3)[:, None]  # [3, 5], some prefixes invalid
    log_q = np.linspace(-3, -1, 15, dtype=np.float32).reshape(3, 5)
    model = make_retriever(config, every_prefix=True)
    tables = init_tables(jax.random.key(1), num_user_buckets=BUCKETS[0],
                         num_post_buckets=BUCKETS[1], num_author_buckets=BUCKETS[2],
                         dim=config.emb_size)  # fmt: skip
    params = {"model": model.init(jax.random.key(0), batch, embed(tables, batch)),
              "tables": tables}  # fmt: skip
    loss = train.retrieval_objective(config, temperature=0.5, every_prefix=True)
    out = train.forward(model, params, batch)
    flat = train.retrieval_loss(
        out.user_representation.reshape(15, -1),
        out.candidate_representation.reshape(15, -1),
        log_q.reshape(15),
        item.reshape(15),
        valid.reshape(15),
        0.5,
    )
    assert float(loss(params, batch, log_q, item, valid)) == pytest.approx(float(flat), rel=1e-6)
    loss.check_inputs(params, batch, log_q, item, valid)
    short = WORLD.to_batch(config, s._replace(candidate_posts=s.candidate_posts[:, :4],
                                              candidate_surface=s.candidate_surface[:, :4]),
                           BUCKETS)  # fmt: skip
    with pytest.raises(ValueError, match=r"every_prefix needs C = 1 \+ S = 5"):
        loss.check_inputs(params, short, log_q, item, valid)


def test_weighted_score_offset_rule_by_hand():
    w = scoring.weight_vector()
    p = np.zeros((2, 19), np.float32)
    p[0, ACTIONS.index("favorite")] = 0.5  # sum = 0.5 >= 0
    p[1, ACTIONS.index("report")] = 0.01  # sum = -1.5 < 0
    score = np.asarray(scoring.weighted_score(p))
    negative, total = -w[w < 0].sum(), np.abs(w).sum()
    assert score[0] == pytest.approx(0.5 + scoring.NEGATIVE_SCORES_OFFSET)
    assert score[1] == pytest.approx((-1.5 + negative) / total * scoring.NEGATIVE_SCORES_OFFSET)
    assert 0 <= score[1] < scoring.NEGATIVE_SCORES_OFFSET <= score[0]
    with pytest.raises(ValueError, match="missing"):
        scoring.weight_vector({"favorite": 1.0})


@pytest.mark.parametrize("sparse", [False, True])
def test_a_donating_step_computes_the_same_state_and_consumes_its_input(sparse):
    optimizer = book_optimizer(10) if sparse else optax.adamw(3e-3)
    data = WORLD.ranking_data(CONFIG, BUCKETS, batch_size=8)
    objective = train.ranker_objective(CONFIG)

    def start():
        model = make_ranker(CONFIG)
        return train.init_state(
            jax.random.key(0),
            model,
            data(0)[0],
            optimizer,
            num_buckets=BUCKETS,
            emb_size=CONFIG.emb_size,
        )

    kept, _ = train.fit(train.make_step(objective, optimizer), start(), data, 3, progress=False)
    given = start()
    donated, _ = train.fit(
        train.make_step(objective, optimizer, donate=True), given, data, 3, progress=False
    )
    # Donation changes the compiled program, not the math: XLA adds or drops copies
    # around the aliased buffers, and newer jaxlib releases (0.12 on the CPU) then
    # round one element of an Adam moment differently by one ULP. An aliasing bug (a
    # buffer read after it was overwritten) would be wrong by far more than 4 ULPs.
    for a, b in zip(jax.tree.leaves(kept), jax.tree.leaves(donated), strict=True):
        a, b = np.asarray(a), np.asarray(b)
        if np.issubdtype(a.dtype, np.floating):
            np.testing.assert_array_max_ulp(a, b, maxulp=4)
        else:
            np.testing.assert_array_equal(a, b)
    assert jax.tree.leaves(given.params)[0].is_deleted()


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda b, y: (b._replace(candidate_post_hashes=b.candidate_post_hashes * 0 + 5000), y),
         ValueError, "candidate_post_hashes holds bucket 5000, but the table has 2048 rows"),
        (lambda b, y: (b._replace(user_hashes=b.user_hashes * 0 - 3), y),
         ValueError, "user_hashes must be non-negative"),
        (lambda b, y: (b._replace(candidate_product_surface=b.candidate_product_surface * 0 + 99),
                       y), ValueError, "candidate_product_surface must be in"),
        (lambda b, y: (b._replace(history_actions=b.history_actions * 2), y),
         ValueError, "multi-hot"),
        (lambda b, y: (b, y[..., :1]), ValueError, r"labels has shape \(8, 4, 1\)"),
    ],
)  # fmt: skip
def test_the_training_step_refuses_a_bad_batch_before_any_jitted_work(change, error, match):
    """Each case trained silently inside the jitted step (NaNs, a broadcast) before."""
    state, step, data = ranker_setup()
    batch, labels, mask = data(0)
    batch, labels = change(batch, np.asarray(labels))
    with pytest.raises(error, match=match):
        step(state, batch, labels, mask)
