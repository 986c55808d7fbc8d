"""Metrics against slow, obviously-correct references."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from phoenix_lib import metrics


def auc_pairs(labels, scores):
    """P(score of positive > score of negative) + half the ties, over every pair."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    neg = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 6)), min_size=2, max_size=60))
def test_auc_matches_pairwise_reference_with_ties(pairs):
    labels, scores = np.array(pairs).T
    if labels.min() == labels.max():
        assert np.isnan(metrics.auc(labels, scores))
    else:
        assert metrics.auc(labels, scores) == pytest.approx(auc_pairs(labels, scores), abs=1e-12)


@given(st.lists(st.tuples(st.integers(0, 1), st.floats(0.001, 0.999)), min_size=2, max_size=50))
def test_normalized_entropy_matches_loop_reference(pairs):
    labels = np.array([p[0] for p in pairs], float)
    probs = np.array([p[1] for p in pairs])
    rate = labels.mean()
    if rate in (0, 1):
        assert np.isnan(metrics.normalized_entropy(labels, probs))
        return
    ce = sum(-np.log(p) if y else -np.log(1 - p) for y, p in zip(labels, probs, strict=True))
    ce /= len(labels)
    h = -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))
    assert metrics.normalized_entropy(labels, probs) == pytest.approx(ce / h, rel=1e-9)
    # Predicting the base rate scores exactly 1.
    assert metrics.normalized_entropy(labels, np.full(len(labels), rate)) == pytest.approx(1.0)


def test_calibration_and_reliability_curve():
    rng = np.random.default_rng(0)
    p = rng.random(200_000) * 0.2
    y = (rng.random(p.size) < p).astype(float)
    assert metrics.calibration(y, p) == pytest.approx(1.0, abs=0.02)
    assert metrics.calibration(y, 2 * p) == pytest.approx(2.0, abs=0.04)
    mean_p, rate = metrics.reliability_curve(y, p, num_bins=5)
    np.testing.assert_allclose(mean_p, rate, atol=0.005)
    with pytest.raises(ValueError, match="num_bins"):
        metrics.reliability_curve(y[:3], p[:3], num_bins=5)


@given(st.integers(0, 2**31 - 1))
def test_recall_at_k_matches_set_reference(seed):
    rng = np.random.default_rng(seed)
    retrieved = rng.integers(-3, 30, (4, 6))  # negative IDs too: any integers work
    relevant = rng.integers(-3, 30, (4, 5))
    mask = rng.random((4, 5)) < 0.8
    reference = []
    for r, rel, m in zip(retrieved, relevant, mask, strict=True):
        wanted = list(rel[m])
        if wanted:
            reference.append(sum(x in set(r) for x in wanted) / len(wanted))
    expected = np.mean(reference) if reference else np.nan
    np.testing.assert_allclose(metrics.recall_at_k(retrieved, relevant, mask), expected)
    nothing = metrics.recall_at_k(retrieved[:, :0], relevant, mask)  # k = 0 finds nothing
    np.testing.assert_allclose(nothing, 0.0 if reference else np.nan)


def test_empirical_rates_shrink_to_the_global_rate():
    items = np.array([0, 0, 1, 2, 2, 2])
    labels = np.array([[1], [1], [0], [0], [1], [0]], float)
    rates = metrics.empirical_rates(items, labels, num_items=4, prior_strength=2.0)
    overall = 3 / 6
    np.testing.assert_allclose(rates[:, 0], [(2 + 1) / 4, (0 + 1) / 3, (1 + 1) / 5, overall])


def test_metrics_reject_mismatched_inputs():
    with pytest.raises(ValueError, match="differ in size"):
        metrics.auc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="disagree"):
        metrics.recall_at_k(np.zeros((2, 3)), np.zeros((3, 3)))


def test_pooled_ne_weighs_actions_by_their_entropy():
    rng = np.random.default_rng(0)
    y = (rng.random((4_000, 3)) < [0.3, 0.05, 0.01]).astype(float)
    p = np.clip(y * 0.6 + 0.2 * rng.random(y.shape), 0.01, 0.99)
    per_action = [metrics.log_loss(y[:, a], p[:, a]) for a in range(3)]
    entropies = [
        metrics.log_loss(y[:, a], np.full(len(y), y[:, a].mean())) for a in range(3)
    ]  # a constant prediction at the base rate scores the entropy
    expected = sum(per_action) / sum(entropies)
    assert metrics.pooled_normalized_entropy(y, p) == pytest.approx(expected, rel=1e-6)
    base = np.broadcast_to(y.mean(0), y.shape)
    assert metrics.pooled_normalized_entropy(y, base) == pytest.approx(1.0, rel=1e-9)
    with pytest.raises(ValueError, match="both labels"):
        metrics.pooled_normalized_entropy(np.zeros((5, 2)), np.full((5, 2), 0.5))


def test_gap_closed_is_zero_at_the_baseline_and_one_at_the_reference():
    assert metrics.gap_closed(0.9, 1.0, 0.8) == pytest.approx(0.5)  # NE: lower is better
    assert metrics.gap_closed(0.7, 0.6, 0.8) == pytest.approx(0.5)  # AUC: higher is better
    assert metrics.gap_closed(1.0, 1.0, 0.8) == 0.0
    seeds = metrics.gap_closed(np.array([0.9, 0.85]), 1.0, np.array([0.8, 0.7]))  # per seed
    np.testing.assert_allclose(seeds, [0.5, 0.5])


def test_bootstrap_interval_covers_the_mean_at_its_level():
    rng = np.random.default_rng(1)
    misses = 0
    for trial in range(200):
        x = rng.normal(0.3, 1.0, 200)
        low, high = metrics.bootstrap_interval(x, seed=trial, resamples=500)
        misses += not low < 0.3 < high
        assert low < x.mean() < high
    assert 2 <= misses <= 20  # about 5% of 200
    with pytest.raises(ValueError, match="two values"):
        metrics.bootstrap_interval([1.0], seed=0)


def test_pooled_ne_terms_average_to_the_pooled_ne():
    rng = np.random.default_rng(2)
    y = (rng.random((600, 4)) < 0.2).astype(float)
    p = rng.uniform(0.05, 0.5, y.shape)
    terms = metrics.pooled_ne_terms(y, p, 50)
    assert terms.shape == (50,)
    assert terms.mean() == pytest.approx(metrics.pooled_normalized_entropy(y, p), rel=1e-12)
    with pytest.raises(ValueError, match="equal units"):
        metrics.pooled_ne_terms(y, p, 7)


def test_ndcg_is_one_for_the_ideal_order_and_matches_a_hand_computation():
    ideal = np.array([[3.0, 2.0, 1.0]])
    assert metrics.ndcg(ideal, ideal) == pytest.approx(1.0)
    reversed_ = ideal[:, ::-1]
    expected = (1 + 2 / np.log2(3) + 3 / 2) / (3 + 2 / np.log2(3) + 1 / 2)
    assert metrics.ndcg(reversed_, ideal) == pytest.approx(expected, rel=1e-12)
    both = metrics.ndcg(np.concatenate([ideal, reversed_]), np.concatenate([ideal, ideal]))
    assert both == pytest.approx((1 + expected) / 2, rel=1e-12)  # a mean over users
    with pytest.raises(ValueError, match="non-negative"):
        metrics.ndcg(-ideal, ideal)
    with pytest.raises(ValueError, match=r"\[B, k\]"):
        metrics.ndcg(ideal[:, :2], ideal)
    with pytest.raises(ValueError, match="positive ideal"):
        metrics.ndcg(np.zeros((1, 3)), np.zeros((1, 3)))


def test_pooled_ne_terms_with_a_mask_average_to_the_pooled_ne_of_the_kept_rows():
    rng = np.random.default_rng(3)
    y = (rng.random((600, 4)) < 0.2).astype(float)
    p = rng.uniform(0.05, 0.5, y.shape)
    keep = rng.random(600) < 0.4
    terms = metrics.pooled_ne_terms(y, p, 50, mask=keep)
    expected = metrics.pooled_normalized_entropy(y[keep], p[keep])
    assert terms.mean() == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="mask must be"):
        metrics.pooled_ne_terms(y, p, 50, mask=keep[:10])


def test_t_interval_matches_the_formula_and_covers_at_its_level():
    # Three values with mean 2 and standard deviation 1: 2 -+ 4.3027 / sqrt(3).
    low, high = metrics.t_interval([1.0, 2.0, 3.0])
    assert (low, high) == pytest.approx((2 - 4.302653 / np.sqrt(3), 2 + 4.302653 / np.sqrt(3)))
    rng = np.random.default_rng(4)
    covered = 0
    for _ in range(2_000):  # exact for normal values, even with three of them
        low, high = metrics.t_interval(rng.normal(0.3, 1.0, 3))
        covered += low < 0.3 < high
    assert 0.935 < covered / 2_000 < 0.965
    with pytest.raises(ValueError, match="two values"):
        metrics.t_interval([1.0])
    with pytest.raises(ValueError, match="level"):
        metrics.t_interval([1.0, 2.0], level=1.5)
