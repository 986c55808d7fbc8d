"""muP-style learning-rate multipliers for the ranker's weights (X's August 2026 recipe).

Under the maximal-update parametrisation (muP, Yang et al. 2022) a model's best
learning rate stays the best as the model gets wider, so it can be tuned on a narrow
proxy and reused. For Adam the rule is simple: a hidden matrix's learning rate scales
as ``1 / fan_in``. X's August 2026 training code applies it as a multiplier on each
parameter's Adam update, relative to a base width of 512:

* hidden matrices (attention query/key/value and output, the FFN's up and gate
  projections, the reduce blocks' ``proj_mat_*``): ``512 / fan_in``;
* the FFN's down projection: ``(2/3) * ffn_size(512, 3) / fan_in = 682.7 / fan_in``, X's
  formula for a gated FFN of widening 3 (it applies it to its plain GELU MLP too, which
  gives that one 2/3 at the base width; the book's gated FFN of widening 2 gets 0.99);
* the output heads, the small feature tables and projections (actions, surfaces, post
  age, dwell): ``0.5 * sqrt(512 / D)``;
* norm scales: 1.

The hash tables are not in the tree this module sees: they are trained row-sparse with
row-wise Adagrad (:mod:`phoenix_lib.optimizers`), which has its own learning rate.

This is half of X's muP. The other half changes the model's function: forward
multipliers (input tokens scaled by ``sqrt(table width)``, logits by
``2 sqrt(512 / D)``) and width-dependent initial scales. The book's models are the
released samples, which have neither, so these multipliers alone are not expected to
make the best learning rate transfer across widths.
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


def lr_multipliers(params: dict, *, base_width: int = BASE_WIDTH):
    """One learning-rate multiplier per parameter of a ranker's haiku ``params``
    (``{module: {name: array}}``, arrays or shapes), as a tree of the same structure.

    Args:
      params: the ranker's parameters (either release), or their shapes
        (:func:`phoenix_lib.train.param_shapes`).
      base_width: the width at which hidden matrices get multiplier 1.

    Raises:
      ValueError: a parameter this rule does not know, named (no silent default).
    """
    d = params["phoenix_model"]["unembeddings"].shape[0]
    base_ffn = ffn_size(base_width, 3.0) * 2 / 3  # X's down-projection numerator

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
