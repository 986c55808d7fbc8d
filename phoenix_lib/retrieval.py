"""The Phoenix two-tower retriever and exact top-k over a corpus."""

from __future__ import annotations

import functools
from typing import NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp

from phoenix_lib.config import DEFAULT_RELEASE, PhoenixRetrievalModelConfig, check_release
from phoenix_lib.inputs import RecsysBatch, RecsysEmbeddings, with_validation
from phoenix_lib.reduce import PROJECTION_INIT, build_context
from phoenix_lib.transformer import Transformer

NORM_EPS = 1e-12  # floor on the squared norm in L2 normalisation
CORPUS_MASK_SCORE = -1e12  # score of a masked-out corpus entry


class RetrievalOutput(NamedTuple):
    user_representation: jax.Array  # [B, D], unit norm
    candidate_representation: jax.Array  # [B, C, D], unit norm


class TopK(NamedTuple):
    scores: jax.Array  # [B, k], descending
    indices: jax.Array  # [B, k] int32 rows of the corpus


def l2_normalize(x: jax.Array) -> jax.Array:
    """``x / sqrt(max(sum(x^2), 1e-12))`` over the last axis."""
    return x / jnp.sqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), NORM_EPS))


class CandidateTower(hk.Module):
    """Post and author hash rows -> MLP (silu) -> unit vector; or, without the projection
    (May 2026's ``enable_linear_proj=False``), their mean -> unit vector."""

    def __init__(self, emb_size: int, enable_linear_proj: bool = True):
        super().__init__(name="candidate_tower")
        self.emb_size, self.enable_linear_proj = emb_size, enable_linear_proj

    def __call__(self, rows: jax.Array) -> jax.Array:
        """``rows`` [B, C, Hi + Ha, D] -> [B, C, D] in ``rows``' dtype."""
        if not self.enable_linear_proj:  # no parameters; computed in the rows' dtype
            return l2_normalize(jnp.mean(rows, axis=-2)).astype(rows.dtype)
        x = rows.reshape(*rows.shape[:-2], -1).astype(jnp.float32)  # [B, C, (Hi+Ha)*D]
        d = self.emb_size
        w1 = hk.get_parameter(
            "candidate_tower_projection_1", [x.shape[-1], 2 * d], jnp.float32, PROJECTION_INIT
        )
        w2 = hk.get_parameter(
            "candidate_tower_projection_2", [2 * d, d], jnp.float32, PROJECTION_INIT
        )
        return l2_normalize(jax.nn.silu(x @ w1) @ w2).astype(rows.dtype)


class PhoenixRetrievalModel(hk.Module):
    """User tower: reduce blocks -> causal transformer -> masked mean -> L2 normalise.
    With ``transformer=None`` the user tower skips the transformer (an ablation): the
    user is the mean of its reduce-block tokens. ``readout="last"`` (not the release's)
    takes the newest valid position's output instead of the mean."""

    def __init__(
        self,
        config: PhoenixRetrievalModelConfig,
        transformer: Transformer | None,
        readout: str = "mean",
    ):
        super().__init__(name="phoenix_retrieval_model")
        self.config, self.transformer, self.readout = config, transformer, readout

    def build_user_representation(
        self, batch: RecsysBatch, embeddings: RecsysEmbeddings, *, every_prefix: bool = False
    ) -> jax.Array:
        """``[B, D]``: mean transformer output over valid positions (no final norm), unit norm;
        with ``readout="last"``, the output at the last valid position.

        ``every_prefix=True`` gives ``[B, 1 + S, D]``: row ``i`` is the representation of
        the user with only the first ``i`` history items (past the history: all of it),
        exactly what the model computes on that prefix alone. The attention is causal, so
        position ``j``'s output depends on positions ``0..j`` only: prefix ``i``'s mean is
        a running mean, its last position is position ``i``. Training on every prefix of a
        history then costs one pass instead of ``S``.
        """
        context, mask = build_context(batch, embeddings, self.config)
        h = context.astype(self.config.fprop_dtype)
        if self.transformer is not None:
            h = self.transformer(h, mask)  # causal
        if self.readout == "last":
            newest = jax.lax.cummax(jnp.where(mask, jnp.arange(mask.shape[1]), 0), axis=1)
            if not every_prefix:
                newest = newest[:, -1:]
            picked = jnp.take_along_axis(h, newest[..., None], axis=1)  # [B, 1 + S or 1, D]
            return l2_normalize(picked if every_prefix else picked[:, 0])
        weights = mask.astype(jnp.float32)[..., None]  # [B, 1 + S, 1]
        if every_prefix:
            running = jnp.cumsum(h * weights, axis=1)
            return l2_normalize(running / jnp.maximum(jnp.cumsum(weights, axis=1), 1.0))
        mean = jnp.sum(h * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)
        return l2_normalize(mean)

    def build_candidate_representation(
        self, batch: RecsysBatch, embeddings: RecsysEmbeddings
    ) -> jax.Array:
        """``[B, C, D]`` unit vectors from the candidates' post and author rows."""
        del batch  # the tower reads embeddings only; padding is the caller's to mask
        rows = jnp.concatenate(
            [embeddings.candidate_post_embeddings, embeddings.candidate_author_embeddings], 2
        )
        return CandidateTower(self.config.emb_size, self.config.enable_linear_proj)(rows)

    def __call__(
        self, batch: RecsysBatch, embeddings: RecsysEmbeddings, *, every_prefix: bool = False
    ) -> RetrievalOutput:
        return RetrievalOutput(
            self.build_user_representation(batch, embeddings, every_prefix=every_prefix),
            self.build_candidate_representation(batch, embeddings),
        )


def check_retriever_release(config: PhoenixRetrievalModelConfig, release: str) -> None:
    """Refuse an unknown release, and May's ``enable_linear_proj=False`` under January."""
    check_release(release)
    if release == "2026-01" and not config.enable_linear_proj:
        raise ValueError(
            "enable_linear_proj=False is May 2026's mean-pooling candidate tower; January's "
            "tower always projects: use release='2026-05' or enable_linear_proj=True"
        )


def make_retriever(
    config: PhoenixRetrievalModelConfig,
    release: str = DEFAULT_RELEASE,
    *,
    every_prefix: bool = False,
    history: str = "attention",
    readout: str = "mean",
) -> hk.Transformed:
    """The two towers: ``apply(params, batch, embeddings) -> RetrievalOutput``.

    ``history="mean"`` is an ablation: no transformer, the user representation is the
    mean of the user's and history's reduce-block tokens (a bag of items); its
    parameters are the others without the transformer's. ``readout="last"`` (a change to
    the release, not part of it): the user is the output at the newest history position,
    as sequential recommenders such as SASRec read it, instead of the mean over positions;
    the same parameters.

    ``every_prefix=True``: the output's user representation is ``[B, 1 + S, D]``, one per
    prefix of the history (:meth:`PhoenixRetrievalModel.build_user_representation`); the
    same parameters.

    ``release``: ``"2026-05"`` (default) or ``"2026-01"``. They differ only in May's
    ``config.enable_linear_proj`` (default ``True``, January's tower), which January
    refuses when ``False``. The transformer's weights start from the book's initialiser (see
    :func:`phoenix_lib.transformer.initializers`). Inputs are checked by
    :func:`phoenix_lib.validate_batch`, as for the ranker.
    """
    check_retriever_release(config, release)
    if history not in ("attention", "mean"):
        raise ValueError(f"history must be 'attention' or 'mean', got {history!r}")
    if readout not in ("mean", "last"):
        raise ValueError(f"readout must be 'mean' or 'last', got {readout!r}")

    def forward(batch, embeddings):
        transformer = Transformer(config.model) if history == "attention" else None
        model = PhoenixRetrievalModel(config, transformer, readout)
        return model(batch, embeddings, every_prefix=every_prefix)

    return with_validation(config, hk.without_apply_rng(hk.transform(forward)))


def make_candidate_encoder(
    config: PhoenixRetrievalModelConfig, release: str = DEFAULT_RELEASE
) -> hk.Transformed:
    """The candidate tower alone, for encoding a corpus with the retriever's params.

    ``apply(params, post_embeddings [N, Hi, D], author_embeddings [N, Ha, D]) -> [N, D]``
    reads ``phoenix_retrieval_model/candidate_tower/...`` (pass the retriever's params).
    ``release`` as for :func:`make_retriever`.
    """
    check_retriever_release(config, release)

    def forward(post_embeddings, author_embeddings):
        model = PhoenixRetrievalModel(config, transformer=None)
        rows = RecsysEmbeddings(None, None, post_embeddings[None], None, author_embeddings[None])
        return model.build_candidate_representation(None, rows)[0]

    return hk.without_apply_rng(hk.transform(forward))


@functools.partial(jax.jit, static_argnames=("k", "recall_target"))
def _top_k(user_repr, corpus, k, corpus_mask, recall_target):
    scores = user_repr @ corpus.T  # [B, N]
    scores = jnp.where(corpus_mask[None, :], scores, CORPUS_MASK_SCORE)
    if recall_target is None:
        values, indices = jax.lax.top_k(scores, k)
    else:
        values, indices = jax.lax.approx_max_k(scores, k, recall_target=recall_target)
    return TopK(values, indices)


def retrieve_top_k(
    user_repr, corpus, k: int, corpus_mask=None, *, recall_target: float | None = None
) -> TopK:
    """Top-``k`` corpus rows by dot product (cosine, for unit vectors).

    Args:
      user_repr: ``[B, D]``. corpus: ``[N, D]``. corpus_mask: optional bool ``[N]``;
        masked rows score ``-1e12`` and come last.
      recall_target: ``None`` for exact ``jax.lax.top_k``; a value in ``(0, 1]`` for
        ``jax.lax.approx_max_k`` (approximate on TPU; XLA falls back to an exact
        top-k on CPU and GPU).
    """
    if recall_target is not None and not 0 < recall_target <= 1:
        raise ValueError(f"recall_target must be in (0, 1], got {recall_target}")
    if user_repr.ndim != 2 or corpus.ndim != 2 or user_repr.shape[1] != corpus.shape[1]:
        raise ValueError(
            f"user_repr [B, D] and corpus [N, D] disagree: {user_repr.shape} vs {corpus.shape}"
        )
    if not 1 <= k <= corpus.shape[0]:
        raise ValueError(f"k must be in [1, {corpus.shape[0]}] (corpus rows), got {k}")
    if corpus_mask is None:
        corpus_mask = jnp.ones(corpus.shape[0], bool)
    elif corpus_mask.shape != corpus.shape[:1]:
        raise ValueError(
            f"corpus_mask shape {corpus_mask.shape} differs from corpus rows {corpus.shape[:1]}"
        )
    return _top_k(user_repr, corpus, k, jnp.asarray(corpus_mask, bool), recall_target)
