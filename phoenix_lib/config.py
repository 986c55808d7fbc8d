"""Configuration dataclasses, with the field names and defaults of the released Phoenix code.

A config built for the release works here unchanged, and vice versa. The demo
shape of the release is :func:`demo_ranker_config` / :func:`demo_retrieval_config`.

Two releases are followed: January 2026 (commit ``aaa167b``) and May 2026 (``e414c17``).
May only added fields, with defaults, so one config serves both; which function a config
builds is chosen by ``make_ranker(config, release=...)``. January ignores the May fields.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

# The 19 actions the released ranker predicts, in output order.
ACTIONS = (
    "favorite",
    "reply",
    "repost",
    "photo_expand",
    "click",
    "profile_click",
    "vqv",
    "share",
    "share_via_dm",
    "share_via_copy_link",
    "dwell",
    "quote",
    "quoted_click",
    "follow_author",
    "not_interested",
    "block_author",
    "mute_author",
    "report",
    "dwell_time",
)
# The negative-feedback heads: August 2026 trains no loss on them for sampled negatives.
NEGATIVE_FEEDBACK = ("not_interested", "block_author", "mute_author", "report")


@dataclasses.dataclass
class TransformerConfig:
    """The Grok-style transformer: ``D = emb_size``, ``K = key_size``, grouped-query attention."""

    emb_size: int
    key_size: int
    num_q_heads: int
    num_kv_heads: int
    num_layers: int
    widening_factor: float = 4.0
    attn_output_multiplier: float = 1.0
    name: str | None = None

    def __post_init__(self):
        for field in ("emb_size", "key_size", "num_q_heads", "num_kv_heads", "num_layers"):
            if getattr(self, field) < 1:
                raise ValueError(f"TransformerConfig.{field} must be positive")
        if self.num_q_heads % self.num_kv_heads:
            raise ValueError("TransformerConfig.num_q_heads must be a multiple of num_kv_heads")
        if self.key_size % 2:
            raise ValueError("TransformerConfig.key_size must be even (rotary embedding)")


@dataclasses.dataclass
class HashConfig:
    """How many hash functions (columns) each entity type uses."""

    num_user_hashes: int = 2
    num_item_hashes: int = 2
    num_author_hashes: int = 2
    num_ip_hashes: int = 0  # May 2026: rows of the user's IP address, 0 = none


def _complete_model_config(config) -> None:
    """Shared ``__post_init__`` of the two model configs: default hashes, consistent D."""
    if config.hash_config is None:
        config.hash_config = HashConfig()
    if config.model.emb_size != config.emb_size:
        raise ValueError(
            f"emb_size {config.emb_size} differs from model.emb_size {config.model.emb_size}"
        )


RELEASES = ("2026-01", "2026-05")
DEFAULT_RELEASE = "2026-05"  # the newest release the book teaches


def check_release(release: str) -> None:
    """Refuse an unknown release by name."""
    if release not in RELEASES:
        raise ValueError(f"release must be one of {RELEASES}, got {release!r}")


# May 2026: candidate ages up to this many minutes get their own buckets; older ones share
# an overflow bucket.
POST_AGE_MAX_MINUTES = 4800


@dataclasses.dataclass
class NormConfig:
    """How a continuous value (dwell seconds) is scaled to ``[0, 1]`` (May 2026):
    ``clip(v, 0, s) / s``, or ``log1p(clip(v, 0, s)) / log1p(s)`` with ``use_log``."""

    norm_scale: float = 30.0
    use_log: bool = False


@dataclasses.dataclass
class ContinuousActionConfig:
    """The continuous heads' loss (May 2026 declares it; August's code gives its meaning):
    ``loss_type`` ``"mae"`` or ``"tweedie"`` (with ``tweedie_power``) on the normalised
    targets, weighted by ``loss_weight`` (0: off)."""

    loss_weight: float = 0.0
    loss_type: str = "mae"
    tweedie_power: float = 1.5
    norm_config: NormConfig = None  # type: ignore[assignment]  # None -> NormConfig()

    def __post_init__(self):
        if self.norm_config is None:
            self.norm_config = NormConfig()
        if self.loss_type not in ("mae", "tweedie"):
            raise ValueError(f"loss_type must be 'mae' or 'tweedie', got {self.loss_type!r}")
        if not 1 < self.tweedie_power < 2:
            raise ValueError(f"tweedie_power must be in (1, 2), got {self.tweedie_power}")


@dataclasses.dataclass
class PhoenixModelConfig:
    """The ranker. ``candidate_seq_len`` is the release's nominal C; any C >= 1 is accepted."""

    model: TransformerConfig
    emb_size: int
    num_actions: int
    history_seq_len: int = 128
    candidate_seq_len: int = 32
    name: str | None = None
    fprop_dtype: Any = jnp.bfloat16
    hash_config: HashConfig = None  # type: ignore[assignment]  # None -> HashConfig()
    product_surface_vocab_size: int = 16
    # May 2026 (make_ranker(..., release="2026-05")); January ignores them.
    post_age_granularity_mins: int = 60
    num_continuous_actions: int = 8
    continuous_action_hidden_dim: int = 64
    continuous_action_config: ContinuousActionConfig = None  # type: ignore[assignment]
    use_ip_address: bool = False
    right_anchored_rope: bool = False
    mask_neg_feedback_on_negatives: bool = True

    def __post_init__(self):
        _complete_model_config(self)
        if self.continuous_action_config is None:
            self.continuous_action_config = ContinuousActionConfig()
        if self.post_age_granularity_mins < 1:
            raise ValueError(
                f"post_age_granularity_mins must be >= 1, got {self.post_age_granularity_mins}"
            )

    @property
    def post_age_vocab_size(self) -> int:
        """Rows of May's post-age table: bucket 0 (unknown age), one per
        ``post_age_granularity_mins`` up to 4,800 minutes, and one overflow bucket."""
        return POST_AGE_MAX_MINUTES // self.post_age_granularity_mins + 2


@dataclasses.dataclass
class PhoenixRetrievalModelConfig:
    """The two-tower retriever: a transformer user tower and an MLP candidate tower."""

    model: TransformerConfig
    emb_size: int
    history_seq_len: int = 128
    candidate_seq_len: int = 32
    name: str | None = None
    fprop_dtype: Any = jnp.bfloat16
    hash_config: HashConfig = None  # type: ignore[assignment]  # None -> HashConfig()
    product_surface_vocab_size: int = 16
    # May 2026: False makes the candidate tower the L2-normalised mean of the candidate's
    # post and author rows, with no parameters. True (the default) is January's MLP.
    enable_linear_proj: bool = True

    def __post_init__(self):
        _complete_model_config(self)


def demo_transformer_config(emb_size: int = 128, num_layers: int = 2) -> TransformerConfig:
    """The release's demo transformer: K = 64, 2 + 2 heads, widening 2, multiplier 1/8."""
    return TransformerConfig(
        emb_size=emb_size,
        key_size=64,
        num_q_heads=2,
        num_kv_heads=2,
        num_layers=num_layers,
        widening_factor=2.0,
        attn_output_multiplier=0.125,
    )


def demo_ranker_config(**overrides) -> PhoenixModelConfig:
    """The release's demo ranker (D = 128, 2 layers, 19 actions); ``overrides`` replace fields."""
    emb_size = overrides.pop("emb_size", 128)
    fields = {"model": demo_transformer_config(emb_size), "num_actions": len(ACTIONS)}
    return PhoenixModelConfig(emb_size=emb_size, **{**fields, **overrides})


def demo_retrieval_config(**overrides) -> PhoenixRetrievalModelConfig:
    """The release's demo retriever (D = 128, 2 layers); ``overrides`` replace fields."""
    emb_size = overrides.pop("emb_size", 128)
    fields = {"model": demo_transformer_config(emb_size)}
    return PhoenixRetrievalModelConfig(emb_size=emb_size, **{**fields, **overrides})


def book_ranker_config(**overrides) -> PhoenixModelConfig:
    """The small float32 ranker the book trains on a laptop CPU (Chapters 4, 5 and 7):
    D = 32, K = 16, 2 layers, S = 32 history items, C = 16 candidates."""
    fields = dict(emb_size=32, history_seq_len=32, candidate_seq_len=16, fprop_dtype=jnp.float32)
    config = demo_ranker_config(**{**fields, **overrides})
    config.model = dataclasses.replace(config.model, key_size=16)
    return config


def book_retrieval_config(**overrides) -> PhoenixRetrievalModelConfig:
    """The retriever the book trains (Chapter 5): D = 32, K = 16, 2 layers, S = 32, C = 1."""
    fields = dict(emb_size=32, history_seq_len=32, candidate_seq_len=1, fprop_dtype=jnp.float32)
    config = demo_retrieval_config(**{**fields, **overrides})
    config.model = dataclasses.replace(config.model, key_size=16)
    return config
