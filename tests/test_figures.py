"""Figures: every one a chapter saves is committed, every committed one is saved by a
chapter, and every figure the README, the HTML book's landing page or a chapter shows
exists and comes from a chapter."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.md"))


def produced() -> set[str]:
    """``<chapter>/<name>`` for every ``save_figure(fig, CHAPTER, "<name>")`` in the chapters."""
    names = set()
    for chapter in CHAPTERS:
        text = chapter.read_text()
        assert f'CHAPTER = "{chapter.stem}"' in text, f"{chapter.name} must set CHAPTER to its stem"
        calls = re.findall(r"save_figure\(\w+, CHAPTER, \"(\w+)\"\)", text)
        assert text.count("save_figure(") == len(calls), (
            f"{chapter.name}: every save_figure call must name its figure with a literal"
        )
        names |= {f"{chapter.stem}/{name}" for name in calls}
    return names


def test_every_saved_figure_is_committed_and_nothing_else_is():
    made = produced()
    assert made, "no chapter saves a figure"
    committed = {
        str(p.relative_to(ROOT / "figures").with_suffix(""))
        for p in (ROOT / "figures").rglob("*")
        if p.is_file()
    }
    assert committed == made, f"stale: {committed - made}, missing: {made - committed}"
    for name in made:
        for suffix in (".svg", ".png"):
            assert (ROOT / "figures" / f"{name}{suffix}").is_file(), f"{name}{suffix}"


def test_figures_shown_in_the_readme_and_chapters_exist_and_come_from_chapters():
    made = produced()
    shown = 0
    for doc in [ROOT / "README.md", ROOT / "index.md", *CHAPTERS]:
        for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", doc.read_text()):
            path = (doc.parent / target).resolve()
            assert path.is_file(), f"{doc.name} shows a missing figure {target}"
            relative = path.relative_to(ROOT / "figures").with_suffix("")
            assert str(relative) in made, f"{target} is not produced by any chapter"
            shown += doc.name == "README.md"
    assert 2 <= shown <= 3, f"the README shows {shown} headline figures"
