"""The README's recipe for your own interactions runs as written (so it cannot rot)."""

import pathlib

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_readme_recipe_trains_predicts_and_round_trips(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- recipe:begin -->")[1].split("<!-- recipe:end -->")[0]
    code = block.split("```python")[1].split("```")[0]
    assert len(code.strip().splitlines()) <= 40  # a recipe, not a program
    monkeypatch.chdir(tmp_path)  # it saves my_ranker.npz in the working folder
    scope = {}
    exec(compile(code, "README.md recipe", "exec"), scope)
    assert (tmp_path / "my_ranker.npz").exists()
    probabilities = np.asarray(scope["probabilities"])
    assert probabilities.shape == (32, 4, 19) and np.isfinite(probabilities).all()
    assert np.isfinite(scope["losses"]).all() and int(scope["state"].step) == 60
