"""The Phoenix ranker: multi-action logits for every candidate, candidates isolated."""

from __future__ import annotations

import haiku as hk
import jax
import jax.numpy as jnp

from phoenix_lib.config import PhoenixModelConfig
from phoenix_lib.inputs import RecsysBatch, RecsysEmbeddings, with_validation
from phoenix_lib.reduce import build_sequence
from phoenix_lib.transformer import RMSNorm, Transformer, check_options

UNEMBEDDING_INIT = hk.initializers.VarianceScaling(1.0, "fan_in", "truncated_normal")


class PhoenixModel(hk.Module):
    """Reduce blocks -> transformer (ranking mask) -> final RMSNorm -> ``unembeddings``."""

    def __init__(self, config: PhoenixModelConfig, transformer: Transformer | None, *, init: str):
        super().__init__(name="phoenix_model")
        self.config, self.transformer, self.init = config, transformer, init

    def build_inputs(self, batch: RecsysBatch, embeddings: RecsysEmbeddings):
        """``(sequence [B, 1+S+C, D], padding_mask [B, 1+S+C], candidate_start_offset)``."""
        return build_sequence(batch, embeddings, self.config)

    def __call__(self, batch: RecsysBatch, embeddings: RecsysEmbeddings) -> jax.Array:
        """Logits ``[B, C, num_actions]`` in ``fprop_dtype``; probabilities are their sigmoid."""
        cfg = self.config
        sequence, padding_mask, start = self.build_inputs(batch, embeddings)
        h = self.transformer(sequence, padding_mask, candidate_start_offset=start)
        h = RMSNorm(init=self.init, name="rms_norm")(h)[:, start:]  # [B, C, D]
        unembeddings = hk.get_parameter(
            "unembeddings", [cfg.emb_size, cfg.num_actions], jnp.float32, UNEMBEDDING_INIT
        )
        return jnp.dot(h.astype(jnp.float32), unembeddings).astype(cfg.fprop_dtype)


def make_ranker(
    config: PhoenixModelConfig,
    *,
    attention: str = "isolated",
    init: str = "book",
    candidate_chunk: int | None = None,
) -> hk.Transformed:
    """The ranker: ``init(rng, batch, embeddings)`` and ``apply(params, batch, embeddings)``.

    Args:
      config: the model config (release field names).
      attention: ``"isolated"`` (default; linear in C) or ``"masked"`` (the release's
        algorithm). Both compute the same logits; their parameters are identical.
      init: ``"book"`` (trainable) or ``"release"`` (all transformer weights zero).
      candidate_chunk: with ``"isolated"``, serve the candidates in blocks of this
        many against the context computed once (:class:`~phoenix_lib.transformer.Transformer`);
        the same logits and parameters. ``None``: all candidates at once.

    Both functions run :func:`phoenix_lib.validate_batch` first: shape checks always,
    value checks when the inputs are concrete (not under ``jax.jit`` tracing). Bad
    options raise here, not at the first call.
    """
    check_options(attention, init, candidate_chunk)

    def forward(batch, embeddings):
        transformer = Transformer(
            config.model, attention=attention, init=init, candidate_chunk=candidate_chunk
        )
        return PhoenixModel(config, transformer, init=init)(batch, embeddings)

    return with_validation(config, hk.without_apply_rng(hk.transform(forward)))


def make_input_builder(config: PhoenixModelConfig) -> hk.Transformed:
    """The ranker's input stage alone: ``apply(params, batch, embeddings)`` ->
    ``(sequence, padding_mask, candidate_start_offset)``, reading the same
    ``phoenix_model/...`` parameters as :func:`make_ranker` (pass the ranker's params)."""

    def forward(batch, embeddings):
        return PhoenixModel(config, transformer=None, init="book").build_inputs(batch, embeddings)

    return with_validation(config, hk.without_apply_rng(hk.transform(forward)))
