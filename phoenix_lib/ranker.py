"""The Phoenix ranker: multi-action logits for every candidate, candidates isolated."""

from __future__ import annotations

from typing import NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp

from phoenix_lib.config import DEFAULT_RELEASE, PhoenixModelConfig, check_release
from phoenix_lib.inputs import RecsysBatch, RecsysEmbeddings, with_validation
from phoenix_lib.reduce import build_sequence
from phoenix_lib.transformer import RMSNorm, Transformer, check_options, right_anchored_positions

UNEMBEDDING_INIT = hk.initializers.VarianceScaling(1.0, "fan_in", "truncated_normal")


class RankerOutput(NamedTuple):
    """The May 2026 ranker's output (January's is the logits alone)."""

    logits: jax.Array  # [B, C, num_actions]; probabilities are their sigmoid
    continuous_preds: jax.Array  # [B, C, num_continuous_actions], in [0, 1] (normalised units)


class PhoenixModel(hk.Module):
    """Reduce blocks -> transformer (ranking mask) -> final RMSNorm -> ``unembeddings``."""

    def __init__(
        self,
        config: PhoenixModelConfig,
        transformer: Transformer | None,
        *,
        init: str,
        history: str = "attention",
        release: str = DEFAULT_RELEASE,
    ):
        super().__init__(name="phoenix_model")
        self.config, self.transformer, self.init, self.history = config, transformer, init, history
        self.release = release

    def build_inputs(self, batch: RecsysBatch, embeddings: RecsysEmbeddings):
        """``(sequence [B, 1+S+C, D], padding_mask [B, 1+S+C], candidate_start_offset)``."""
        return build_sequence(batch, embeddings, self.config, self.release)

    def __call__(self, batch: RecsysBatch, embeddings: RecsysEmbeddings):
        """January: logits ``[B, C, num_actions]`` in ``fprop_dtype``, probabilities their
        sigmoid. May: a :class:`RankerOutput`, with the continuous heads' predictions."""
        cfg = self.config
        sequence, padding_mask, start = self.build_inputs(batch, embeddings)
        if self.history == "mean":
            sequence, padding_mask = mean_pool_history(sequence, padding_mask, start)
        positions = None
        if self.release == "2026-05" and cfg.right_anchored_rope:
            positions = right_anchored_positions(padding_mask, history_seq_len=start - 1)
        h = self.transformer(sequence, padding_mask, start, positions)
        h = RMSNorm(init=self.init, name="rms_norm")(h)[:, start:]  # [B, C, D]
        unembeddings = hk.get_parameter(
            "unembeddings", [cfg.emb_size, cfg.num_actions], jnp.float32, UNEMBEDDING_INIT
        )
        logits = jnp.dot(h.astype(jnp.float32), unembeddings).astype(cfg.fprop_dtype)
        if self.release == "2026-01":
            return logits
        continuous = hk.get_parameter(
            "continuous_unembeddings",
            [cfg.emb_size, cfg.num_continuous_actions],
            jnp.float32,
            UNEMBEDDING_INIT,
        )
        preds = jax.nn.sigmoid(jnp.dot(h.astype(jnp.float32), continuous))
        return RankerOutput(logits, preds.astype(cfg.fprop_dtype))


def make_ranker(
    config: PhoenixModelConfig,
    *,
    attention: str = "isolated",
    init: str = "book",
    candidate_chunk: int | None = None,
    history: str = "attention",
    release: str = DEFAULT_RELEASE,
    context_attention: str = "causal",
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
      history: ``"attention"`` (the release) or ``"mean"``, an ablation: the history
        enters as one position, the masked mean of its items, so the model cannot
        attend to items one by one (:func:`mean_pool_history`). Same parameters.
      release: ``"2026-05"`` (default) or ``"2026-01"`` (the January sample, which
        returns the logits alone). May adds each candidate's post-age row in
        ``proj_mat_2``, the history's dwell feature in ``proj_mat_3``, optional IP rows
        for the user and the continuous heads, and returns a :class:`RankerOutput`; with
        ``config.right_anchored_rope``, the rotary positions of
        :func:`~phoenix_lib.transformer.right_anchored_positions`.
      context_attention: ``"causal"`` (both releases) or ``"bidirectional"``: user and
        history attend to each other both ways, as in X's August 2026 production ranker
        (only this option of it; the rest of that model differs). Same parameters.

    Both functions run :func:`phoenix_lib.validate_batch` first: shape checks always,
    value checks when the inputs are concrete (not under ``jax.jit`` tracing). Bad
    options raise here, not at the first call.
    """
    check_options(attention, init, candidate_chunk, context_attention)
    if history not in ("attention", "mean"):
        raise ValueError(f"history must be 'attention' or 'mean', got {history!r}")
    check_release(release)

    def forward(batch, embeddings):
        transformer = Transformer(
            config.model,
            attention=attention,
            init=init,
            candidate_chunk=candidate_chunk,
            context_attention=context_attention,
        )
        model = PhoenixModel(config, transformer, init=init, history=history, release=release)
        return model(batch, embeddings)

    return with_validation(config, hk.without_apply_rng(hk.transform(forward)))


def mean_pool_history(sequence, padding_mask, start: int):
    """Replace the history's positions ``1 .. start - 1`` of ``sequence`` [B, N, D] by their
    masked mean at position 1, the rest of them padding. Returns ``(sequence, mask [B, N])``
    of the same shapes (positions of the candidates unchanged)."""
    items, mask = sequence[:, 1:start], padding_mask[:, 1:start]  # [B, S, D], [B, S]
    count = mask.sum(1, keepdims=True)
    mean = (items * mask[..., None]).sum(1) / jnp.maximum(count, 1).astype(items.dtype)
    pooled = jnp.zeros_like(items).at[:, 0].set(mean)
    pooled_mask = jnp.zeros_like(mask).at[:, 0].set(count[:, 0] > 0)
    return (
        jnp.concatenate([sequence[:, :1], pooled, sequence[:, start:]], 1),
        jnp.concatenate([padding_mask[:, :1], pooled_mask, padding_mask[:, start:]], 1),
    )


def make_input_builder(
    config: PhoenixModelConfig, release: str = DEFAULT_RELEASE
) -> hk.Transformed:
    """The ranker's input stage alone: ``apply(params, batch, embeddings)`` ->
    ``(sequence, padding_mask, candidate_start_offset)``, reading the same
    ``phoenix_model/...`` parameters as :func:`make_ranker` (pass the ranker's params)."""
    check_release(release)

    def forward(batch, embeddings):
        model = PhoenixModel(config, transformer=None, init="book", release=release)
        return model.build_inputs(batch, embeddings)

    return with_validation(config, hk.without_apply_rng(hk.transform(forward)))
