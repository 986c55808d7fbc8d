"""The Makefile's persistent compilation cache: a program JAX reads back in a new process
instead of compiling it computes the same bits (the book's numbers do not depend on
whether a run found its programs cached)."""

import subprocess
import sys

import numpy as np

# A training step of a small model in one jitted program: a scan over layers (matrix
# products, tanh, layer norm), a log-softmax loss, its gradient and an Adam update.
# The script prints how many programs it read from the cache.
SCRIPT = """
import sys
import jax, jax.numpy as jnp, numpy as np, optax

cache, out = sys.argv[1:]
jax.config.update("jax_enable_compilation_cache", True)  # even under JAX_ENABLE_..._CACHE=false
jax.config.update("jax_compilation_cache_dir", cache)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
hits = []
jax.monitoring.register_event_listener(
    lambda event, **_: hits.append(event) if event.endswith("/cache_hits") else None
)

def loss(params, x, labels):
    def layer(h, w):
        h = jnp.tanh(h @ w)
        h = h - h.mean(-1, keepdims=True)
        return h * jax.lax.rsqrt((h * h).mean(-1, keepdims=True) + 1e-6), None
    h, _ = jax.lax.scan(layer, x, params["layers"])
    logits = h @ params["out"]
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1).mean()

optimizer = optax.adam(1e-2)

@jax.jit
def step(params, opt_state, x, labels):
    value, grads = jax.value_and_grad(loss)(params, x, labels)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value

k1, k2, k3, k4 = jax.random.split(jax.random.key(0), 4)
params = {"layers": jax.random.normal(k1, (3, 32, 32)) / 6, "out": jax.random.normal(k2, (32, 10))}
x, labels = jax.random.normal(k3, (64, 32)), jax.random.randint(k4, (64,), 0, 10)
opt_state = optimizer.init(params)
for _ in range(5):
    params, opt_state, value = step(params, opt_state, x, labels)
leaves = [np.ravel(np.asarray(v)) for v in jax.tree_util.tree_leaves((params, value))]
np.save(out, np.concatenate(leaves))
print(len(hits))
"""


def _run(cache, out):
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(cache), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.split()[-1])


def test_programs_read_back_from_the_cache_compute_the_same_bits(tmp_path):
    cache = tmp_path / "jax-cache"
    assert _run(cache, tmp_path / "cold.npy") == 0
    assert any(cache.iterdir())  # the programs were written
    assert _run(cache, tmp_path / "warm.npy") > 0  # ... and read back, not recompiled
    cold, warm = np.load(tmp_path / "cold.npy"), np.load(tmp_path / "warm.npy")
    assert cold.size > 3 * 32 * 32 and np.isfinite(cold).all()
    np.testing.assert_array_equal(cold.view(np.uint32), warm.view(np.uint32))
