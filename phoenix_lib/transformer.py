"""The Grok-style transformer that Phoenix runs over ``[user | history | candidates]``.

Per layer, on ``h`` of shape ``[B, T, D]``::

    h = h + rms_norm_1(attention(rms_norm(h)))
    h = h + rms_norm_3(ffn(rms_norm_2(h)))

Module and parameter names reproduce the release's tree exactly
(``transformer/decoder_layer_{i}/multi_head_attention/query`` and so on), so
parameters move between the two with no conversion.

Candidate isolation has two exact implementations, chosen by ``attention``:

* ``"masked"``: the release's algorithm, one attention over all ``T = 1 + S + C``
  positions with a structure mask; cost ``O(T^2)``.
* ``"isolated"`` (default): the context (user + history) attends causally among
  itself, and each candidate attends to the context keys/values, computed once,
  plus its own; cost ``O((1 + S)^2 + C (1 + S))``, linear in ``C``.

Shapes: ``B`` batch, ``T`` positions, ``N = 1 + S`` context positions, ``C``
candidates, ``D`` model width, ``H``/``Hkv`` query/key-value heads, ``G = H / Hkv``
query heads per kv head, ``K`` key size.
"""

from __future__ import annotations

from typing import NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from phoenix_lib.config import TransformerConfig

ATTENTION_PATHS = ("isolated", "masked")
CONTEXT_ATTENTION = ("causal", "bidirectional")  # how user and history see each other
INITS = ("book", "release")
SOFT_CAP = 30.0  # attention logits are squashed into (-30, 30)
MASK_VALUE = -1e30  # logit of a key a query may not see
RMS_EPS = 1e-5
ROTARY_BASE = 10_000


def ffn_size(emb_size: int, widening_factor: float) -> int:
    """Hidden width of the gated FFN: ``int(w * D) * 2 // 3`` rounded up to a multiple of 8."""
    size = int(widening_factor * emb_size) * 2 // 3
    return size + (-size) % 8


def initializers(init: str) -> tuple[hk.initializers.Initializer, hk.initializers.Initializer]:
    """``(linear weights, norm scales)`` initialisers.

    ``"release"`` reproduces the released code: every transformer weight and
    norm scale starts at 0, so every logit starts at 0 and, because each
    sublayer's output is multiplied by a zero scale, no gradient reaches the
    transformer weights (Chapter 3 shows it). ``"book"`` is a trainable start:
    fan-in scaled truncated normals and unit scales.
    """
    if init == "release":
        return hk.initializers.Constant(0.0), hk.initializers.Constant(0.0)
    if init == "book":
        return hk.initializers.VarianceScaling(1.0, "fan_in", "truncated_normal"), jnp.ones
    raise ValueError(f"init must be one of {INITS}, got {init!r}")


class Linear(hk.Module):
    """``y = x @ w`` without bias. ``w`` is stored in float32 and cast to ``x``'s dtype."""

    def __init__(self, output_size: int, *, init: str, name: str):
        super().__init__(name=name)
        self.output_size = output_size
        self.w_init = initializers(init)[0]

    def __call__(self, x: jax.Array) -> jax.Array:  # [..., I] -> [..., O]
        w = hk.get_parameter("w", [x.shape[-1], self.output_size], jnp.float32, self.w_init)
        return jnp.dot(x, w.astype(x.dtype))


class RMSNorm(hk.Module):
    """``scale * x / sqrt(mean(x^2) + eps)``, computed in float32, returned in ``x``'s dtype."""

    def __init__(self, *, init: str, name: str):
        super().__init__(name=name)
        self.scale_init = initializers(init)[1]

    def __call__(self, x: jax.Array) -> jax.Array:  # [..., D] -> [..., D]
        scale = hk.get_parameter("scale", [x.shape[-1]], jnp.float32, self.scale_init)
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + RMS_EPS)
        return (scale * normed).astype(x.dtype)


def rotate_half(x: jax.Array) -> jax.Array:
    """Split the last axis into halves ``(x1, x2)`` and return ``(-x2, x1)``."""
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-x2, x1], axis=-1)


def rotary_tables(t: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(cos, sin)`` of the rotary phases of positions ``0..t-1``: float32 ``[t, k]``.

    Frequencies ``base^(-2i/K)`` for ``i < K/2``, tiled over both halves ("rotate
    half" convention). The phase ``position * frequency`` is the float32 product the
    release computes; its cosine and sine are taken in float64 and rounded. The
    tables are built on the host while tracing and enter the compiled program as
    constants: traced, XLA computes the frequencies in another way (phases of late
    positions drift by up to 6e-5 rad) and on CPU re-evaluates cos and sin inside
    every fusion that reads the rotated q or k (a quarter of a serving request).
    """
    inv_freq = 1.0 / (ROTARY_BASE ** (np.arange(0, k, 2, dtype=np.float32) / k))  # [K/2]
    phase = np.arange(t, dtype=np.float32)[:, None] * inv_freq[None, :]  # [T, K/2] float32
    phase = np.tile(phase, (1, 2)).astype(np.float64)  # [T, K]
    return np.cos(phase).astype(np.float32), np.sin(phase).astype(np.float32)


def apply_rotary(x: jax.Array, positions=None, num_positions: int | None = None) -> jax.Array:
    """Rotary position embedding of ``x`` [B, T, heads, K] at its positions.

    Rotates each pair ``(x_i, x_{i+K/2})`` by its phase (:func:`rotary_tables`);
    computed in float32, returned in ``x``'s dtype. By default the positions are
    ``0..T-1``. Otherwise ``positions`` (int, may be traced) is ``[T]`` (shared by the
    batch: a block of candidates served on its own, ``Transformer``'s
    ``candidate_chunk``) or ``[B, T]`` (per row: May's right-anchored positions,
    :func:`right_anchored_positions`); each picks its row of the tables of
    ``num_positions`` positions (default ``T``), so every position keeps exactly its phase.
    """
    _, t, _, k = x.shape
    cos, sin = rotary_tables(num_positions or t, k)  # [num_positions or T, K]
    if positions is not None:
        cos, sin = (jnp.take(a, positions, axis=0) for a in (cos, sin))  # [(B,) T, K]
    cos, sin = (table.reshape(-1, t, 1, k) for table in (cos, sin))  # [1 or B, T, 1, K]
    return (x * cos + rotate_half(x) * sin).astype(x.dtype)


def right_anchored_positions(padding_mask: jax.Array, history_seq_len: int) -> jax.Array:
    """May 2026's right-anchored rotary positions, int32 ``[B, T]`` for ``[user | history |
    candidates]`` (``right_anchored_rope=True``).

    The user keeps position 0. A history of ``L`` valid items, left-aligned in its ``S``
    slots, takes positions ``S - L + 1 .. S``: the newest item is always at ``S``,
    whatever ``L`` is. Every candidate takes position ``S + 1``, the same for all, so a
    candidate's logits no longer depend on its slot. Padding takes position 0.
    """
    t = padding_mask.shape[1]
    s = history_seq_len
    idx = jnp.arange(t, dtype=jnp.int32)[None, :]  # [1, T]
    length = padding_mask[:, 1 : 1 + s].sum(axis=1, dtype=jnp.int32)[:, None]  # [B, 1]
    history = (idx >= 1) & (idx <= s)
    positions = jnp.where(history, s - length + idx, jnp.minimum(idx, s + 1))
    return jnp.where(padding_mask, positions, 0)


def _soft_cap(logits: jax.Array, multiplier: float) -> jax.Array:
    """Scale raw ``q . k`` (no ``1/sqrt(K)``) and squash: ``30 tanh(m * logits / 30)``, float32."""
    logits = logits.astype(jnp.float32) * multiplier
    return SOFT_CAP * jnp.tanh(logits / SOFT_CAP)


def _attention_weights(logits: jax.Array, mask: jax.Array, dtype) -> jax.Array:
    """Masked softmax over the last axis in float32, cast to the activation dtype.

    A row whose keys are all masked gets uniform weights over every key (all
    logits equal ``MASK_VALUE``); :func:`isolated_attention` reproduces that.
    """
    return jax.nn.softmax(jnp.where(mask, logits, MASK_VALUE)).astype(dtype)


def ranking_mask(padding_mask: jax.Array, candidate_start: int, context_attention: str = "causal"):
    """The release's ranking mask ``[B, 1, T, T]`` (query, key): causal, candidates isolated.

    Lower-triangular over all positions, then the candidate block is cleared and
    its diagonal restored: the context is causal, candidate ``i`` sees the whole
    context and itself. Multiplied by the padding mask of the keys. With
    ``context_attention="bidirectional"`` (August 2026's production ranker) user and history
    also see each other's later positions; candidates are isolated as before.
    """
    t = padding_mask.shape[1]
    idx = jnp.arange(t)
    causal = idx[:, None] >= idx[None, :]
    in_candidates = (idx[:, None] >= candidate_start) & (idx[None, :] >= candidate_start)
    structure = causal & (~in_candidates | (idx[:, None] == idx[None, :]))
    if context_attention == "bidirectional":
        structure |= (idx[:, None] < candidate_start) & (idx[None, :] < candidate_start)
    return (structure[None] & padding_mask[:, None, :])[:, None]


def context_mask(padding_mask: jax.Array, context_attention: str = "causal") -> jax.Array:
    """Mask ``[B, 1, T, T]`` of a sequence without candidates (the retrieval tower, or the
    context of a request served in blocks): causal, or every valid key with
    ``context_attention="bidirectional"``; times the keys' padding mask."""
    t = padding_mask.shape[1]
    structure = jnp.ones((t, t), bool)
    if context_attention == "causal":
        structure = jnp.tril(structure)
    return (structure[None] & padding_mask[:, None, :])[:, None]


def masked_attention(q, k, v, mask, multiplier: float) -> jax.Array:
    """Attention over all positions under ``mask`` [B, 1, T, T].

    Args:
      q: ``[B, T, Hkv, G, K]`` (rotary applied). k, v: ``[B, T, Hkv, K]``.

    Returns:
      ``[B, T, Hkv, G, K]``.
    """
    logits = _soft_cap(jnp.einsum("bthgk,bshk->bhgts", q, k), multiplier)  # [B, Hkv, G, T, T]
    weights = _attention_weights(logits, mask[:, :, None], q.dtype)
    return jnp.einsum("bhgts,bshk->bthgk", weights, v)


def _candidate_mask(ctx_valid: jax.Array, cand_valid: jax.Array) -> jax.Array:
    """What each candidate may see, bool ``[B, C, N+1]``: the valid context keys, then itself."""
    b, c = cand_valid.shape
    n = ctx_valid.shape[1]
    return jnp.concatenate(
        [jnp.broadcast_to(ctx_valid[:, None, :], (b, c, n)), cand_valid[:, :, None]], axis=-1
    )


def _candidate_head(qc, kc, vc, k_ctx, v_ctx, mask, multiplier: float) -> jax.Array:
    """One head's candidate outputs ``[B, C, K]``: candidate queries ``qc`` [B, C, K] against
    the context keys ``k_ctx`` [B, N, K] and each candidate's own key, under ``mask``
    [B, C, N+1]; values ``v_ctx`` [B, N, K] and ``vc`` [B, C, K]."""
    n = k_ctx.shape[1]
    to_context = jnp.einsum("bck,bsk->bcs", qc, k_ctx)  # [B, C, N]
    to_self = jnp.sum(qc * kc, axis=-1, keepdims=True)  # [B, C, 1]
    logits = _soft_cap(jnp.concatenate([to_context, to_self], axis=-1), multiplier)
    weights = _attention_weights(logits, mask, qc.dtype)
    return jnp.einsum("bcs,bsk->bck", weights[..., :n], v_ctx) + weights[..., n:] * vc


def isolated_attention(
    q, k, v, padding_mask, candidate_start: int, multiplier: float, context_attention="causal"
):
    """The same function as ``masked_attention`` under :func:`ranking_mask`, linear in C.

    The context keys/values ``[B, N, ...]`` are shared by every candidate, so each
    candidate needs only its logits against them plus one logit against itself.
    Every candidate keeps its own rotary position ``N + c`` because q and k were
    rotated over the full sequence before this function. One query head at a time,
    every product is a plain batched matrix product ``[B, rows, K] x [B, N, K]``:
    no head axis to move between operands (on CPU each move is a copy).

    Args:
      q: ``[B, T, Hkv, G, K]``. k, v: ``[B, T, Hkv, K]``. padding_mask: bool ``[B, T]``.
      context_attention: ``"causal"`` (the releases) or ``"bidirectional"`` (August 2026)
        among user and history.

    Returns:
      ``[B, T, Hkv, G, K]``, equal to the masked path up to float rounding.
    """
    n, dtype = candidate_start, q.dtype
    _, _, hkv, g, _ = q.shape
    ctx_valid = padding_mask[:, :n]  # [B, N]
    ctx_mask = context_mask(ctx_valid, context_attention)[:, 0]  # [B, N, N]
    cand_mask = _candidate_mask(ctx_valid, padding_mask[:, n:])  # [B, C, N+1]

    def head(qh, kh, vh):  # [B, T, K] each -> [B, T, K]
        # Context: self-attention among user + history (causal by default), [B, N, N].
        logits = _soft_cap(jnp.einsum("btk,bsk->bts", qh[:, :n], kh[:, :n]), multiplier)
        ctx_out = jnp.einsum("bts,bsk->btk", _attention_weights(logits, ctx_mask, dtype), vh[:, :n])
        cand_out = _candidate_head(
            qh[:, n:], kh[:, n:], vh[:, n:], kh[:, :n], vh[:, :n], cand_mask, multiplier
        )
        return jnp.concatenate([ctx_out, cand_out], axis=1)

    heads = [head(q[:, :, h, j], k[:, :, h], v[:, :, h]) for h in range(hkv) for j in range(g)]
    out = jnp.stack(heads, axis=2).reshape(q.shape)

    # A query that sees no key at all gets, as in the masked path, the mean value over all T.
    blind = ~jnp.concatenate([ctx_mask.any(-1), cand_mask.any(-1)], axis=1)  # [B, T]
    mean_v = jnp.mean(v.astype(jnp.float32), axis=1).astype(dtype)  # [B, Hkv, K]
    return jnp.where(blind[:, :, None, None, None], mean_v[:, None, :, None, :], out)


class Context(NamedTuple):
    """One layer's view of the context (user + history) for a block of candidates served on
    its own (``Transformer``'s ``candidate_chunk``)."""

    keys: jax.Array  # [B, N, Hkv, K], rotated at positions 0..N-1
    values: jax.Array  # [B, N, Hkv, K]
    valid: jax.Array  # bool [B, N]
    num_positions: int  # N + C (C padded to whole blocks): the rotary tables' length


def block_attention(q, k, v, padding_mask, context: Context, multiplier: float):
    """A block of candidates against the context's keys and values, computed once.

    The candidate half of :func:`isolated_attention`, for candidates alone: each
    sees the valid context keys and itself.

    Args:
      q: ``[B, c, Hkv, G, K]``. k, v: ``[B, c, Hkv, K]`` (rotated at the block's
        positions). padding_mask: bool ``[B, c]``.

    Returns:
      ``[B, c, Hkv, G, K]``.
    """
    _, _, hkv, g, _ = q.shape
    mask = _candidate_mask(context.valid, padding_mask)  # [B, c, N+1]
    heads = [
        _candidate_head(
            q[:, :, h, j],
            k[:, :, h],
            v[:, :, h],
            context.keys[:, :, h],
            context.values[:, :, h],
            mask,
            multiplier,
        )
        for h in range(hkv)
        for j in range(g)
    ]
    return jnp.stack(heads, axis=2).reshape(q.shape)


class MultiHeadAttention(hk.Module):
    """Grouped-query attention with rotary embeddings, soft-capped logits and no bias."""

    def __init__(
        self, config: TransformerConfig, *, attention: str, init: str, context_attention: str
    ):
        super().__init__(name="multi_head_attention")
        self.config, self.attention, self.init = config, attention, init
        self.context_attention = context_attention

    def __call__(self, x, padding_mask, candidate_start: int | None, context=None, positions=None):
        """``x`` [B, T, D], ``padding_mask`` bool [B, T] -> (``[B, T, D]``, ``(k, v)``).

        ``k``, ``v`` ``[B, T, Hkv, K]`` are the keys rotated at ``positions`` (``[T]`` or
        ``[B, T]``, default ``0..T-1``; :func:`apply_rotary`) and the values. With a
        :class:`Context`, ``x`` is a block of candidates (:func:`block_attention`) and
        ``positions`` are theirs in the whole sequence.
        """
        cfg = self.config
        b, t, d = x.shape
        hkv, g, ksz = cfg.num_kv_heads, cfg.num_q_heads // cfg.num_kv_heads, cfg.key_size

        def project(name, heads):
            return Linear(heads * ksz, init=self.init, name=name)(x).reshape(b, t, heads, ksz)

        at = (positions, None if context is None else context.num_positions)
        q = apply_rotary(project("query", cfg.num_q_heads), *at).reshape(b, t, hkv, g, ksz)
        k = apply_rotary(project("key", hkv), *at)
        v = project("value", hkv)
        m = cfg.attn_output_multiplier
        if context is not None:
            out = block_attention(q, k, v, padding_mask, context, m)
        elif candidate_start is None:
            out = masked_attention(q, k, v, context_mask(padding_mask, self.context_attention), m)
        elif self.attention == "masked":
            mask = ranking_mask(padding_mask, candidate_start, self.context_attention)
            out = masked_attention(q, k, v, mask, m)
        else:
            out = isolated_attention(
                q, k, v, padding_mask, candidate_start, m, self.context_attention
            )
        return Linear(d, init=self.init, name="linear")(out.reshape(b, t, -1)), (k, v)


class DecoderLayer(hk.Module):
    """One pre- and post-normed attention sublayer and one gated-GELU FFN sublayer."""

    def __init__(
        self, config: TransformerConfig, index: int, *, attention: str, init: str,
        context_attention: str,
    ):  # fmt: skip
        super().__init__(name=f"decoder_layer_{index}")
        self.config, self.attention, self.init = config, attention, init
        self.context_attention = context_attention

    def __call__(self, h, padding_mask, candidate_start: int | None, context=None, positions=None):
        """``h`` [B, T, D] -> (``[B, T, D]``, the attention's ``(k, v)``); ``context`` and
        ``positions``: see :class:`MultiHeadAttention`."""
        init, d = self.init, h.shape[-1]
        attn = MultiHeadAttention(
            self.config, attention=self.attention, init=init,
            context_attention=self.context_attention,
        )  # fmt: skip
        x = RMSNorm(init=init, name="rms_norm")(h)
        a, kv = attn(x, padding_mask, candidate_start, context, positions)
        h = h + RMSNorm(init=init, name="rms_norm_1")(a)

        x = RMSNorm(init=init, name="rms_norm_2")(h)
        f = ffn_size(d, self.config.widening_factor)
        gate = jax.nn.gelu(Linear(f, init=init, name="linear")(x))  # tanh approximation
        ffn = Linear(d, init=init, name="linear_1")(gate * Linear(f, init=init, name="linear_v")(x))
        return h + RMSNorm(init=init, name="rms_norm_3")(ffn), kv


def check_options(
    attention: str, init: str, candidate_chunk: int | None, context_attention: str = "causal"
) -> None:
    """Raise ``ValueError``/``TypeError`` naming the first bad :class:`Transformer` option."""
    if attention not in ATTENTION_PATHS:
        raise ValueError(f"attention must be one of {ATTENTION_PATHS}, got {attention!r}")
    if context_attention not in CONTEXT_ATTENTION:
        raise ValueError(
            f"context_attention must be one of {CONTEXT_ATTENTION}, got {context_attention!r}"
        )
    initializers(init)  # validates the name
    if candidate_chunk is not None:
        if isinstance(candidate_chunk, bool) or not isinstance(candidate_chunk, int):
            raise TypeError(f"candidate_chunk must be an int, got {candidate_chunk!r}")
        if candidate_chunk < 1:
            raise ValueError(f"candidate_chunk must be positive, got {candidate_chunk}")
        if attention != "isolated":
            raise ValueError("candidate_chunk needs attention='isolated'")


class Transformer(hk.Module):
    """A stack of ``num_layers`` decoder layers (no final norm; the models add their own).

    ``candidate_chunk`` (isolated attention only) serves the candidates in blocks of
    that many: the context (user + history) runs through every layer once, its keys
    and values are kept, and one compiled loop body (``hk.scan``) takes each block
    of candidates through every layer against them. The logits are those of the
    whole sequence at once (up to float rounding); the attention and FFN
    intermediates are one block's, whose working set can stay in cache. One corner
    differs: a padding candidate of a row whose whole context is padding sees no
    key at all; the whole-sequence paths give it the mean value over all ``T``
    positions, a block the mean over the context and itself. Such a candidate is
    padding either way.

    ``context_attention``: ``"causal"`` (both releases: a history item sees the user
    and older items) or ``"bidirectional"`` (August 2026's production ranker: user and
    history see each other both ways). Candidates are isolated either way, and every
    serving path computes the same function.
    """

    def __init__(
        self,
        config: TransformerConfig,
        *,
        attention: str = "isolated",
        init: str = "book",
        candidate_chunk: int | None = None,
        context_attention: str = "causal",
    ):
        super().__init__(name="transformer")
        check_options(attention, init, candidate_chunk, context_attention)
        self.config, self.attention, self.init = config, attention, init
        self.candidate_chunk, self.context_attention = candidate_chunk, context_attention

    def __call__(
        self, embeddings, padding_mask, candidate_start_offset: int | None = None, positions=None
    ):
        """``embeddings`` [B, T, D], ``padding_mask`` bool [B, T] -> [B, T, D].

        With ``candidate_start_offset`` the ranking mask (candidates isolated);
        without it a plain causal mask. ``positions``: int ``[B, T]`` rotary positions
        (:func:`right_anchored_positions`), default ``0..T-1``.
        """
        layers = [
            DecoderLayer(
                self.config,
                i,
                attention=self.attention,
                init=self.init,
                context_attention=self.context_attention,
            )
            for i in range(self.config.num_layers)
        ]
        n, chunk = candidate_start_offset, self.candidate_chunk
        if n is not None and chunk is not None and embeddings.shape[1] - n > chunk:
            return self._in_blocks(layers, embeddings, padding_mask, n, positions)
        h = embeddings
        for layer in layers:
            h, _ = layer(h, padding_mask, n, positions=positions)
        return h

    def _in_blocks(self, layers, embeddings, padding_mask, n: int, positions) -> jax.Array:
        """The candidates in blocks of ``candidate_chunk`` against the context's cached keys."""
        b, t, d = embeddings.shape
        size = self.candidate_chunk
        blocks = -(-(t - n) // size)
        pad = blocks * size - (t - n)
        ctx_valid = padding_mask[:, :n]

        def split(x):  # [B, C, ...] -> [blocks, B, size, ...], padding candidates at the end
            x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
            return jnp.swapaxes(x.reshape(b, blocks, size, *x.shape[2:]), 0, 1)

        if positions is None:  # each block's own slice of 0..T-1, shared by the batch
            ctx_positions = None
            cand_positions = jnp.arange(n, n + blocks * size).reshape(blocks, size)
        else:
            ctx_positions, cand_positions = positions[:, :n], split(positions[:, n:])
        h, cache = embeddings[:, :n], []
        for layer in layers:  # the context never sees a candidate: its own mask over N positions
            h, kv = layer(h, ctx_valid, None, positions=ctx_positions)
            cache.append(kv)

        def block(_, xs):
            x, valid, at = xs  # [B, size, D], [B, size], int [size] or [B, size]
            for layer, (k, v) in zip(layers, cache, strict=True):
                x, _ = layer(x, valid, None, Context(k, v, ctx_valid, n + blocks * size), at)
            return None, x

        xs = (split(embeddings[:, n:]), split(padding_mask[:, n:]), cand_positions)
        _, out = hk.scan(block, None, xs)
        out = jnp.swapaxes(out, 0, 1).reshape(b, blocks * size, d)[:, : t - n]
        return jnp.concatenate([h, out], axis=1)
