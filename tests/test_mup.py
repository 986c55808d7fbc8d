"""muP learning-rate multipliers: the rule by parameter group, width scaling, the optax step."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import phoenix_lib as pl
from phoenix_lib import mup, train
from phoenix_lib.config import demo_ranker_config
from phoenix_lib.inputs import random_batch


def _params(d, release="2026-05"):
    """Parameter shapes of a one-layer ranker of width ``d``."""
    config = demo_ranker_config(emb_size=d, history_seq_len=4, fprop_dtype=jnp.float32)
    config.model = dataclasses.replace(config.model, key_size=16, num_layers=1)
    batch = random_batch(config, batch_size=1, num_candidates=2, num_buckets=8, seed=0)
    model = pl.make_ranker(config, release=release)
    return train.param_shapes(model, batch, num_buckets=(8, 8, 8), emb_size=d)


@pytest.mark.parametrize("release", ["2026-01", "2026-05"])
def test_multipliers_by_group_at_the_base_width_and_four_times_wider(release):
    base = _params(512, release)
    m = mup.lr_multipliers(base)
    layer = "transformer/decoder_layer_0"
    assert m[f"{layer}/multi_head_attention/query"]["w"] == 1.0
    # The down projection: X's (2/3) ffn_size(512, 3) / fan_in, fan_in = ffn_size(512, 2).
    np.testing.assert_allclose(m[f"{layer}/linear_1"]["w"], 1024 * 2 / 3 / 688)
    assert m["phoenix_model"]["unembeddings"] == 0.5
    assert m[f"{layer}/rms_norm"]["scale"] == 1.0
    assert m["phoenix_model"]["proj_mat_1"] == 0.5  # 512 / (2 hashes * 512)
    wide = _params(2048, release)
    w = mup.lr_multipliers(wide)
    assert w[f"{layer}/multi_head_attention/query"]["w"] == 0.25
    np.testing.assert_allclose(w[f"{layer}/linear_1"]["w"], 1024 * 2 / 3 / 2736)
    assert w["phoenix_model"]["unembeddings"] == 0.25  # 0.5 * sqrt(512 / 2048)
    assert w[f"{layer}/rms_norm_3"]["scale"] == 1.0


def test_unknown_parameters_are_refused_by_name():
    params = _params(64)
    params = {**params, "extra": {"w": jnp.zeros((2, 2))}}
    with pytest.raises(ValueError, match="extra/w"):
        mup.lr_multipliers(params)


def test_scale_by_multipliers_scales_each_update():
    params = {"a": {"w": jnp.ones((2,))}, "b": {"w": jnp.ones((3,))}}
    grads = {"a": {"w": jnp.array([1.0, -2.0])}, "b": {"w": jnp.array([3.0, 0.5, -1.0])}}
    multipliers = {"a": {"w": 0.5}, "b": {"w": 2.0}}
    plain = optax.adam(0.1)
    scaled = optax.chain(optax.adam(0.1), mup.scale_by_multipliers(multipliers))
    u_plain, _ = plain.update(grads, plain.init(params), params)
    u_scaled, _ = scaled.update(grads, scaled.init(params), params)
    np.testing.assert_allclose(u_scaled["a"]["w"], 0.5 * u_plain["a"]["w"])
    np.testing.assert_allclose(u_scaled["b"]["w"], 2.0 * u_plain["b"]["w"])
