"""Sequence packing: the plan, the layout, and attention on packed rows equal to unpacked."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from phoenix_lib import packing, transformer


def test_next_fit_keeps_the_order_and_counts_padding():
    plan = packing.pack(np.array([5, 3, 4, 6]), 8)
    assert plan.row.tolist() == [0, 0, 1, 2] and plan.offset.tolist() == [0, 5, 0, 0]
    assert plan.num_rows == 3
    assert plan.padding_share(np.array([5, 3, 4, 6])) == pytest.approx(1 - 18 / 24)


@pytest.mark.parametrize(
    ("lengths", "error", "match"),
    [
        (np.array([3, 9, 2]), ValueError, "segment 1 has 9 tokens"),
        (np.array([3, 0]), ValueError, "segment 1 has 0"),
        (np.array([1.5]), TypeError, "integer"),
    ],
)
def test_bad_lengths_are_refused_by_name(lengths, error, match):
    with pytest.raises(error, match=match):
        packing.pack(lengths, 8)


def _unpacked(history_lengths, s, c, seed=0):
    """Per-user padding mask [U, 1 + S + C] (left-aligned histories) and random q, k, v."""
    u, t = len(history_lengths), 1 + s + c
    mask = np.ones((u, t), bool)
    mask[:, 1 : 1 + s] = np.arange(s)[None] < np.asarray(history_lengths)[:, None]
    keys = jax.random.split(jax.random.key(seed), 3)
    q = jax.random.normal(keys[0], (u, t, 2, 2, 8))  # [U, T, Hkv, G, K]
    k, v = (jax.random.normal(key, (u, t, 2, 8)) for key in keys[1:])
    return mask, q, k, v


@pytest.mark.parametrize("context_attention", ["bidirectional", "causal"])
def test_attention_on_packed_rows_equals_attention_per_user(context_attention):
    s, c, history = 6, 3, np.array([6, 0, 2, 5, 1])
    mask, q, k, v = _unpacked(history, s, c)
    positions = transformer.right_anchored_positions(jnp.asarray(mask), history_seq_len=s)

    def rotate(x, pos):  # [B, T, Hkv, (G,) K] at per-row positions
        flat = x.reshape(*x.shape[:2], -1, x.shape[-1])
        return transformer.apply_rotary(flat, pos, 1 + s + c + 1).reshape(x.shape)

    want = transformer.masked_attention(
        rotate(q, positions), rotate(k, positions), v,
        transformer.ranking_mask(jnp.asarray(mask), 1 + s, context_attention), 1.0,
    )  # fmt: skip
    lengths = packing.segment_lengths(history, c)
    plan = packing.pack(lengths, 16)
    segment, kind, pos, source = packing.packed_layout(plan, history, c, s)
    user, slot = np.maximum(source[..., 0], 0), np.maximum(source[..., 1], 0)
    real = segment > 0
    np.testing.assert_array_equal(pos[real], np.asarray(positions)[user, slot][real])
    got = transformer.masked_attention(
        rotate(q[user, slot], pos), rotate(k[user, slot], pos), v[user, slot],
        packing.packed_ranking_mask(segment, kind, context_attention), 1.0,
    )  # fmt: skip
    np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[user[real], slot[real]],
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    assert plan.padding_share(lengths) < 1 - mask.sum() / mask.size


def test_layout_by_hand():
    plan = packing.pack(packing.segment_lengths([2, 0], 1), 6)
    segment, kind, pos, source = packing.packed_layout(plan, [2, 0], 1, history_seq_len=3)
    assert segment.tolist() == [[1, 1, 1, 1, 2, 2]]
    assert kind.tolist() == [[1, 2, 2, 3, 1, 3]]
    assert pos.tolist() == [[0, 2, 3, 4, 0, 4]]
    assert source[0, :, 1].tolist() == [0, 1, 2, 4, 0, 4]
    with pytest.raises(ValueError, match="context_attention"):
        packing.packed_ranking_mask(segment, kind, "full")
