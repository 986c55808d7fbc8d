"""The environment files agree with each other."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_lists_the_pyproject_requirements():
    project = _pyproject()["project"]
    wanted = set(project["dependencies"])
    for extra in ("book", "test"):
        wanted |= set(project["optional-dependencies"][extra])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(pip_section) - {"-e ."} == wanted
    assert "-e ." in pip_section
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert python == "python" + project["requires-python"]


def test_constraints_pin_every_requirement_exactly():
    project = _pyproject()["project"]
    names = [re.split(r"[<>=!~ \[]", r)[0].lower() for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        names += [re.split(r"[<>=!~ \[]", r)[0].lower() for r in extra]
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    missing = [n for n in names if n not in pins]
    assert not missing, f"constraints.txt lacks pins for {missing}"
    # The versions the book is tested with (the foundation issue names them).
    expected = {"jax": "0.10.2", "dm-haiku": "0.0.17", "optax": "0.2.8", "jupytext": "1.19.6"}
    assert {k: pins[k] for k in expected} == expected
    assert pins["nbval"] == "0.11.0"  # conftest.py relies on nbval internals


def test_jupytext_pairs_chapters_with_ignored_notebooks():
    config = _pyproject()["tool"]["jupytext"]
    assert config["formats"] == "chapters///md:myst,notebooks///ipynb"
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "notebooks/" in ignored and ".ipynb_checkpoints/" in ignored


def test_chapters_are_what_jupytext_writes_back():
    """Saving a chapter from JupyterLab rewrites it with this config: it must not change."""
    import jupytext
    from jupytext.config import load_jupytext_configuration_file

    config = load_jupytext_configuration_file(str(ROOT / "pyproject.toml"))
    for chapter in sorted((ROOT / "chapters").glob("[0-9][0-9]_*.md")):
        text = chapter.read_text()
        written = jupytext.writes(jupytext.reads(text, fmt="md:myst"), fmt="md:myst", config=config)
        assert written == text, f"{chapter.name} would change when saved from JupyterLab"
