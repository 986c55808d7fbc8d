"""Sphinx extension of the HTML book: reference labels that are the same in every chapter.

Each chapter ends with its own reference list. pybtex's alpha style tells apart entries
that share a label (the three xAI releases of 2026 are all ``xAI26``) only within one
list, so ``[xAI26a]`` would be the January release in one chapter and the August one in
another, and Sphinx stops on the duplicate label. Here the alpha labels are computed once
over the whole of ``references.bib``: every entry keeps one label throughout the book.
"""

import functools
from pathlib import Path

import pybtex.plugin
from pybtex.database import parse_file
from pybtex.style.formatting.alpha import Style as AlphaStyle
from pybtex.style.labels.alpha import LabelStyle as AlphaLabelStyle

BIBLIOGRAPHY = Path(__file__).resolve().parents[1] / "references.bib"


class BookLabelStyle(AlphaLabelStyle):
    """Alpha labels disambiguated over the whole bibliography file, not one list."""

    @functools.cached_property
    def labels(self) -> dict:
        """Every entry's label, by lower-case key, computed once."""
        every = parse_file(BIBLIOGRAPHY).entries.values()
        ordered = pybtex.plugin.find_plugin("pybtex.style.sorting", "author_year_title")()
        book = ordered.sort(list(every))
        return dict(zip((e.key.lower() for e in book), super().format_labels(book), strict=True))

    def format_labels(self, sorted_entries):
        for entry in sorted_entries:
            yield self.labels[entry.key.lower()]


class BookStyle(AlphaStyle):
    default_label_style = "book"


def setup(app):
    pybtex.plugin.register_plugin("pybtex.style.labels", "book", BookLabelStyle)
    pybtex.plugin.register_plugin("pybtex.style.formatting", "book", BookStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
