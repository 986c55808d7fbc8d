"""The README's recipe for your own interactions runs as written (so it cannot rot)."""

import pathlib

import jax
import numpy as np

from phoenix_lib import mpzch

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_readme_recipe_trains_with_mpzch_predicts_and_round_trips(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- recipe:begin -->")[1].split("<!-- recipe:end -->")[0]
    code = block.split("```python")[1].split("```")[0]
    assert len(code.strip().splitlines()) <= 40  # a recipe, not a program
    monkeypatch.chdir(tmp_path)  # it saves my_ranker.npz in the working folder
    scope = {}
    cache = jax.config.jax_compilation_cache_dir
    try:
        exec(compile(code, "README.md recipe", "exec"), scope)
    finally:  # the recipe points the cache at a folder of its own; the suite keeps its own
        jax.config.update("jax_compilation_cache_dir", cache)
    assert (tmp_path / "my_ranker.npz").exists()
    probabilities = np.asarray(scope["probabilities"])
    assert probabilities.shape == (32, 4, 19) and np.isfinite(probabilities).all()
    assert np.isfinite(float(scope["loss"])) and int(scope["state"].step) == 60
    # Posts went through MPZCH: the table filled, expired posts' rows were taken over, and
    # the table came back from disk with its settings.
    metrics = mpzch.metrics(scope["zch"])
    assert metrics["eviction_rate"] > 0 and scope["zch"].padding_row
