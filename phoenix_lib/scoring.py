"""X's serving-side weighted scorer: one number per candidate from 19 probabilities.

The ranker predicts a probability per action; the home-mixer service combines
them as ``sum_a p_a * w_a`` with negative weights for the negative actions, and
then maps the sum with an offset rule (fact sheet): a negative sum becomes
``(sum + negative_weights_sum) / weights_sum * negative_scores_offset`` (squeezed
into ``[0, offset)``), a non-negative one ``sum + negative_scores_offset``. X never
published its weights; the table below is ours, documented and replaceable.
We read ``negative_weights_sum`` as the sum of the negative weights' magnitudes and
``weights_sum`` as the sum of all magnitudes, which keeps the map increasing.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from phoenix_lib.config import ACTIONS

# Illustrative weights (not X's): replies and reposts count more than likes,
# negative feedback costs a lot.
DEFAULT_WEIGHTS = {
    "favorite": 1.0, "reply": 10.0, "repost": 2.0, "photo_expand": 0.5, "click": 0.5,
    "profile_click": 1.0, "vqv": 0.5, "share": 2.0, "share_via_dm": 2.0,
    "share_via_copy_link": 1.0, "dwell": 0.3, "quote": 4.0, "quoted_click": 0.5,
    "follow_author": 8.0, "not_interested": -20.0, "block_author": -80.0,
    "mute_author": -40.0, "report": -150.0, "dwell_time": 0.2,
}  # fmt: skip
NEGATIVE_SCORES_OFFSET = 0.1


def weight_vector(weights: dict[str, float] | None = None) -> np.ndarray:
    """The weights in ``ACTIONS`` order, ``[19]``; unknown or missing names are an error."""
    weights = DEFAULT_WEIGHTS if weights is None else weights
    unknown = set(weights) - set(ACTIONS)
    missing = set(ACTIONS) - set(weights)
    if unknown or missing:
        raise ValueError(
            f"weights must name every action once: unknown {sorted(unknown)}, "
            f"missing {sorted(missing)}"
        )
    return np.array([weights[a] for a in ACTIONS], np.float32)


def weighted_score(
    probabilities, weights: dict[str, float] | None = None, offset: float = NEGATIVE_SCORES_OFFSET
):
    """Serving score ``[...]`` from action probabilities ``[..., 19]`` (jit-friendly)."""
    w = jnp.asarray(weight_vector(weights))
    total = jnp.sum(jnp.asarray(probabilities) * w, axis=-1)
    negative_sum = float(-w[w < 0].sum())
    weights_sum = float(jnp.abs(w).sum())
    return jnp.where(total < 0, (total + negative_sum) / weights_sum * offset, total + offset)
