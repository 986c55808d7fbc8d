"""Let nbval collect the book's chapters, which are MyST Markdown files read with jupytext.

nbval 0.11.0 (pinned) only collects ``.ipynb`` files and reads them with
``nbformat.read`` inside ``IPyNbFile.collect``; ``ChapterFile`` hands it the
notebook jupytext builds from the chapter's text instead. Nothing is written to disk.
"""

from unittest import mock

import jupytext
from nbval.plugin import IPyNbFile


class ChapterFile(IPyNbFile):
    def collect(self):
        notebook = jupytext.read(self.path)
        with mock.patch("nbval.plugin.nbformat.read", return_value=notebook):
            return list(super().collect())


def pytest_collect_file(file_path, parent):
    option = parent.config.option
    nbval_on = option.nbval or option.nbval_lax
    if nbval_on and file_path.suffix == ".md" and file_path.parent.name == "chapters":
        return ChapterFile.from_parent(parent, path=file_path)
    return None
