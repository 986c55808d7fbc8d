"""muP-style learning-rate multipliers for the ranker's weights (X's August 2026 recipe).

Under the maximal-update parametrisation (muP, Yang et al. 2022) a model's best
learning rate stays the best as the model gets wider, so it can be tuned on a narrow
proxy and reused. For Adam the rule is simple: a hidden matrix's learning rate scales
as ``1 / fan_in``. X's August 2026 training code applies it as a multiplier on each
parameter's Adam update, relative to a base width of 512:

* hidden matrices (attention query/key/value and output, FFN, the reduce blocks'
  ``proj_mat_*``): ``base_fan_in / fan_in`` (``512 / fan_in`` where the fan-in grows
  with D; the FFN's down projection against its fan-in at the base width);
* the output heads, the small feature tables and projections (actions, surfaces, post
  age, dwell): ``0.5 * sqrt(512 / D)``;
* norm scales: 1.

The hash tables are not in the tree this module sees: they are trained row-sparse with
row-wise Adagrad (:mod:`phoenix_lib.optimizers`), which has its own learning rate.
"""

from __future__ import annotations

import math

import jax
import optax

from phoenix_lib.transformer import ffn_size

BASE_WIDTH = 512
HEADS_AND_FEATURES = (
    "unembeddings",
    "continuous_unembeddings",
    "action_projection",
    "product_surface_embedding_table",
    "post_age_embedding_table",
    "history_dwell_time_proj1",
    "history_dwell_time_proj2",
)


def lr_multipliers(params: dict, widening_factor: float, *, base_width: int = BASE_WIDTH):
    """One learning-rate multiplier per parameter of a ranker's haiku ``params``
    (``{module: {name: array}}``), as a tree of the same structure (floats).

    Args:
      params: the ranker's parameters (either release).
      widening_factor: the transformer's FFN widening (its down projection's fan-in).
      base_width: the width at which hidden matrices get multiplier 1.

    Raises:
      ValueError: a parameter this rule does not know, named (no silent default).
    """
    d = params["phoenix_model"]["unembeddings"].shape[0]
    base_ffn = ffn_size(base_width, widening_factor)

    def rule(module: str, name: str, value) -> float:
        if name == "scale":
            return 1.0
        if name in HEADS_AND_FEATURES:
            return 0.5 * math.sqrt(base_width / d)
        if name.startswith("proj_mat_"):
            return base_width / value.shape[0]
        if module.startswith("transformer/") and name == "w":
            if module.endswith("/linear_1"):  # the FFN's down projection
                return base_ffn / value.shape[0]
            return base_width / value.shape[0]
        raise ValueError(f"no muP rule for parameter {module}/{name}")

    return {m: {n: rule(m, n, v) for n, v in sub.items()} for m, sub in params.items()}


def scale_by_multipliers(multipliers) -> optax.GradientTransformation:
    """Multiply each update by its parameter's multiplier (a tree like the updates'). Chain
    it after the optimizer, as X's code does: ``optax.chain(clip, adamw, this)``."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u, m: u * m, updates, multipliers), state

    return optax.GradientTransformation(init, update)
