"""Offline metrics for ranking and retrieval, vectorised in NumPy.

Each has a slow, obviously-correct reference in ``tests/test_metrics.py``. The
*oracle* value of a metric is the metric of the world's true probabilities
(:mod:`phoenix_lib.world`): what a perfect model would score on the same labels.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

_EPS = 1e-7  # probabilities are clipped to [eps, 1 - eps] before taking logs


def auc(labels, scores) -> float:
    """Area under the ROC curve: P(score of a random positive > a random negative),
    ties counting one half (the Mann-Whitney statistic with average ranks).

    Args:
      labels: 0/1 ``[N]``. scores: ``[N]``.

    Returns:
      float, ``nan`` when only one class is present.
    """
    labels, scores = _flat_pair(labels, scores)
    positives = labels.sum()
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    ranks = np.empty(scores.size, np.float64)
    # Average rank (1-based) within each run of tied scores.
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], scores.size]
    average = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(average, ends - starts)
    return float(
        (ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives)
    )


def log_loss(labels, probabilities) -> float:
    """Mean binary cross-entropy in nats, probabilities clipped to ``[1e-7, 1 - 1e-7]``."""
    y, p = _flat_pair(labels, probabilities)
    p = np.clip(p, _EPS, 1 - _EPS)
    return float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean())


def normalized_entropy(labels, probabilities) -> float:
    """Normalized entropy (NE): cross-entropy divided by the entropy of the base rate.

    1.0 is what always predicting the average rate scores; lower is better. The
    MPZCH paper reports model quality in NE. ``nan`` when the labels are all 0 or all 1.
    """
    y, _ = _flat_pair(labels, probabilities)
    rate = y.mean()
    if rate in (0.0, 1.0):
        return float("nan")
    entropy = -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))
    return log_loss(labels, probabilities) / entropy


def pooled_normalized_entropy(labels, probabilities) -> float:
    """NE over all actions at once: the summed cross-entropy of every action divided by
    the summed entropy of every action's base rate.

    Each action weighs by its entropy, so common actions count more than rare ones
    (a mean of per-action NEs would let the rarest, noisiest action count as much as
    ``dwell``). 1.0 is the base rates', lower is better.

    Args:
      labels: 0/1 ``[N, A]``. probabilities: ``[N, A]``.
    """
    return float(pooled_ne_terms(labels, probabilities, 1)[0])


def pooled_ne_terms(labels, probabilities, num_units: int, mask=None) -> np.ndarray:
    """Each unit's part of the pooled NE: ``[num_units]`` whose mean is
    :func:`pooled_normalized_entropy`, for rows ``[N, A]`` that form ``num_units``
    consecutive groups of equal size (a session's candidates). Differences of two
    models' terms, unit by unit, feed :func:`bootstrap_interval`.

    ``mask`` ``[N]`` (optional) keeps only some rows (fresh posts, say): the terms then
    average to the pooled NE of the kept rows, with base rates from the kept rows, and a
    unit with no kept row contributes 0.
    """
    y = np.asarray(labels, np.float64)
    p = np.clip(np.asarray(probabilities, np.float64), _EPS, 1 - _EPS)
    if y.ndim != 2 or y.shape != p.shape:
        raise ValueError(f"labels and probabilities must be [N, A] alike, got {y.shape}, {p.shape}")
    if num_units < 1 or y.shape[0] % num_units:
        raise ValueError(f"{y.shape[0]} rows do not split into {num_units} equal units")
    keep = np.ones(y.shape[0], bool) if mask is None else np.asarray(mask, bool)
    if keep.shape != y.shape[:1]:
        raise ValueError(f"mask must be [{y.shape[0]}], got {keep.shape}")
    rate = y[keep].mean(0)
    if ((rate == 0) | (rate == 1)).any():
        raise ValueError("every action needs both labels among the examples")
    entropy = -(rate * np.log(rate) + (1 - rate) * np.log1p(-rate)).sum() * keep.sum()
    loss = -(y * np.log(p) + (1 - y) * np.log1p(-p)).sum(1) * keep
    return loss.reshape(num_units, -1).sum(1) * num_units / entropy


def gap_closed(value, low, high):
    """The share of the way from a baseline ``low`` to a reference ``high`` that ``value``
    covers: 0 at the baseline, 1 at the reference (for NE, where lower is better, pass
    the NEs as they are: the sign works out). Scalars give a float; arrays (one value
    per seed, say) broadcast and give an array."""
    share = (np.asarray(value, np.float64) - low) / (np.asarray(high, np.float64) - low)
    return float(share) if share.ndim == 0 else share


def bootstrap_interval(values, *, seed: int, level: float = 0.95, resamples: int = 2_000):
    """A percentile bootstrap interval for the mean of ``values`` ``[N]``: resample the N
    units (users, sessions) with replacement ``resamples`` times. Returns ``(low, high)``.

    For a paired comparison of two models, pass each unit's difference. The interval
    carries the sampling noise of the units of one training run, not the spread between
    training runs: for that, compare the means of several seeds with :func:`t_interval`.
    """
    x = np.asarray(values, np.float64).reshape(-1)
    if x.size < 2:
        raise ValueError(f"need at least two values, got {x.size}")
    _check_level(level)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, (resamples, x.size))].mean(1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def t_interval(values, *, level: float = 0.95):
    """Student's t interval for the mean of a few independent values ``[N]`` (one per
    training seed, say): ``mean -+ t_{N-1} * sd / sqrt(N)``. Returns ``(low, high)``.

    With three seeds the multiplier is 4.30 (it is 1.96 for many values): honest about
    how little three runs say. A percentile bootstrap over so few values cannot reach
    beyond their smallest and largest and would claim far more.
    """
    x = np.asarray(values, np.float64).reshape(-1)
    if x.size < 2:
        raise ValueError(f"need at least two values, got {x.size}")
    _check_level(level)
    half = stats.t.ppf((1 + level) / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return float(x.mean() - half), float(x.mean() + half)


def _check_level(level) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")


def calibration(labels, probabilities) -> float:
    """Mean predicted probability over observed rate: 1.0 is calibrated on average."""
    y, p = _flat_pair(labels, probabilities)
    return float(p.mean() / y.mean()) if y.mean() > 0 else float("nan")


def reliability_curve(labels, probabilities, num_bins: int = 10):
    """Mean prediction and observed rate in ``num_bins`` equal-count bins of the prediction.

    Returns ``(mean_predicted [num_bins], observed_rate [num_bins])``.
    """
    y, p = _flat_pair(labels, probabilities)
    if p.size < num_bins:
        raise ValueError(f"need at least num_bins={num_bins} predictions, got {p.size}")
    bins = np.array_split(np.argsort(p, kind="stable"), num_bins)
    return np.array([p[b].mean() for b in bins]), np.array([y[b].mean() for b in bins])


def recall_at_k(retrieved, relevant, relevant_mask=None) -> float:
    """Mean over users of the share of their relevant items found in the retrieved list.

    Args:
      retrieved: int ``[B, k]`` item indices (the top-k, any order).
      relevant: int ``[B, R]`` item indices.
      relevant_mask: optional bool ``[B, R]``, ``False`` for padding. Users with no
        relevant item are left out of the mean.
    """
    retrieved, relevant = np.asarray(retrieved), np.asarray(relevant)
    if retrieved.ndim != 2 or relevant.ndim != 2 or retrieved.shape[0] != relevant.shape[0]:
        raise ValueError(
            f"retrieved [B, k] and relevant [B, R] disagree: {retrieved.shape} vs {relevant.shape}"
        )
    mask = np.ones(relevant.shape, bool) if relevant_mask is None else np.asarray(relevant_mask)
    # Each user's items moved into a range of their own, so that one sorted array and a
    # binary search serve every user (a [B, R, k] comparison would be 10^9 entries for
    # 100 users, R = 1,000 and k = 10,000).
    low = min(retrieved.min(initial=0), relevant.min(initial=0))
    span = max(retrieved.max(initial=0), relevant.max(initial=0)) - low + 1
    rows = np.arange(relevant.shape[0])[:, None] * span - low
    pool, query = np.sort((retrieved + rows).ravel()), relevant + rows
    if pool.size:
        found = (pool[np.searchsorted(pool, query).clip(max=pool.size - 1)] == query) & mask
    else:
        found = np.zeros(relevant.shape, bool)
    count = mask.sum(1)
    users = count > 0
    if not users.any():
        return float("nan")
    return float((found.sum(1)[users] / count[users]).mean())


def ndcg(gains, ideal_gains) -> float:
    """Mean over users of ``DCG(gains) / DCG(ideal_gains)``, ``DCG = sum_i g_i / log2(i + 2)``.

    Args:
      gains: ``[B, k]`` the true gains of the items a ranking put in positions 1..k.
      ideal_gains: ``[B, k]`` the gains of the best k items in the best order (the
        oracle's list), so each user's NDCG is at most 1. Gains must be non-negative.
    """
    gains, ideal = np.asarray(gains, np.float64), np.asarray(ideal_gains, np.float64)
    if gains.ndim != 2 or gains.shape != ideal.shape:
        raise ValueError(
            f"gains and ideal_gains must be [B, k] alike: {gains.shape}, {ideal.shape}"
        )
    if (gains < 0).any() or (ideal < 0).any():
        raise ValueError("gains must be non-negative")
    discount = 1.0 / np.log2(np.arange(gains.shape[1]) + 2.0)
    best = ideal @ discount
    if (best <= 0).any():
        raise ValueError("every user needs a positive ideal gain")
    return float(np.mean(gains @ discount / best))


def empirical_rates(items, labels, num_items: int, prior_strength: float = 5.0) -> np.ndarray:
    """The popularity baseline: each item's observed action rates, shrunk to the global rate.

    ``(count_a + prior_strength * global_a) / (impressions + prior_strength)``.

    Args:
      items: int ``[...]`` item indices in ``[0, num_items)``. labels: 0/1 ``[..., A]``.

    Returns:
      float ``[num_items, A]``.
    """
    items = np.asarray(items).reshape(-1)
    labels = np.asarray(labels, np.float64).reshape(items.size, -1)
    counts = np.zeros((num_items, labels.shape[1]))
    np.add.at(counts, items, labels)
    shown = np.bincount(items, minlength=num_items)[:, None]
    overall = labels.mean(0)
    return (counts + prior_strength * overall) / (shown + prior_strength)


def _flat_pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"labels and predictions differ in size: {a.size} vs {b.size}")
    return a, b
