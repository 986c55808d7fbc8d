"""Showing the package's own code in a chapter: highlighted, and a few lines at a time.

A chapter explains the code that ``phoenix_lib`` runs, so it shows that code rather than a
copy. :func:`source` returns an ``IPython.display.Code`` object, which JupyterLab and the
HTML book render with syntax highlighting when it is the last expression of a cell.
"""

from __future__ import annotations

import inspect
import textwrap


def source(*objects, lines: tuple[str, str] | None = None):
    """The source code of ``objects`` (functions, classes, methods), highlighted: an
    ``IPython.display.Code``.

    Args:
      *objects: one or more; their sources are shown one after the other.
      lines: optional ``(first, last)`` to show only part of a single object's source
        (a long function, a few lines at a time): from the first line containing the
        text ``first`` to the next line, from there on, containing ``last``, inclusive.
        Text anchors, not line numbers, so that an edit above a part does not shift it.

    Raises:
      ValueError: no object, ``lines`` with several objects, or an anchor not found.
    """
    from IPython.display import Code  # IPython comes with the book's extra, not the library

    if not objects:
        raise ValueError("source needs at least one object")
    texts = [textwrap.dedent(inspect.getsource(obj)) for obj in objects]
    if lines is not None:
        if len(objects) != 1:
            raise ValueError("lines= selects lines of one object's source, got several objects")
        all_lines = texts[0].splitlines()
        first = _find(all_lines, lines[0], 0, objects[0])
        last = _find(all_lines, lines[1], first, objects[0])
        texts = [textwrap.dedent("\n".join(all_lines[first : last + 1]) + "\n")]
    return Code("\n\n".join(t.rstrip("\n") for t in texts) + "\n", language="python")


def _find(lines: list[str], text: str, start: int, obj) -> int:
    """Index of the first of ``lines`` from ``start`` on that contains ``text``."""
    for i in range(start, len(lines)):
        if text in lines[i]:
            return i
    raise ValueError(f"no line of {obj.__qualname__}'s source contains {text!r}")
