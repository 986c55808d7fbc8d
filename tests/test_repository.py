"""Repository-level checks: the README's example runs, and the code passes ruff."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_example_runs(tmp_path):
    text = (ROOT / "README.md").read_text()
    text = re.sub(r"<!-- recipe:begin -->.*?<!-- recipe:end -->", "", text, flags=re.S)
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)  # the recipe: tests/test_readme.py
    assert blocks, "README has no python example"
    for block in blocks:
        subprocess.run([sys.executable, "-c", block], check=True, cwd=tmp_path, capture_output=True)


def test_ruff_passes():
    ruff = Path(sys.executable).parent / "ruff"
    for args in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run([ruff, *args], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_chapter_is_listed_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for chapter in sorted((ROOT / "chapters").glob("[0-9][0-9]_*.md")):
        assert f"(chapters/{chapter.name})" in readme, chapter.name
