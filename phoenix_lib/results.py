"""The one place a chapter's headline numbers are written, so that tables are generated.

A chapter calls :func:`record` for each number its summary states (a share of a gap
closed, an AUC, an interval's bound). When the environment variable
``PHOENIX_METRICS_DIR`` names a folder (``make book`` and ``make test`` set it to
``_build/metrics``), the number is merged into ``<folder>/<chapter>.json``, one flat
JSON object of name to number; otherwise nothing is written. The tables of
``benchmarks/RESULTS.md`` and the README are made from these files
(``python -m benchmarks.report``), never copied by hand.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path


def record(chapter: str, name: str, value) -> Path | None:
    """Store ``<NN>.<name>: value`` for ``chapter`` (``"04_multi_action_ranking"``).

    Returns the file written, or ``None`` when recording is off. A value that is not a
    finite real number is refused (a NaN headline is a bug to see, not a number to
    store).
    """
    match = re.fullmatch(r"(\d\d)_\w+", chapter)
    if match is None:
        raise ValueError(f"chapter must look like '04_multi_action_ranking', got {chapter!r}")
    if not re.fullmatch(r"[a-z0-9_]+(\.[a-z0-9_]+)*", name):
        raise ValueError(f"name must be lower-case words joined by '_' and '.', got {name!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} = {value} is not a finite number")
    root = os.environ.get("PHOENIX_METRICS_DIR")
    if not root:
        return None
    path = Path(root) / f"{chapter}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    values = json.loads(path.read_text()) if path.exists() else {}
    values[f"{match.group(1)}.{name}"] = number
    path.write_text(json.dumps(values, indent=1, sort_keys=True) + "\n")
    return path


def load(folder: str | os.PathLike) -> dict[str, float]:
    """Every recorded number in ``folder`` (all chapters' files merged), by name."""
    values = {}
    for path in sorted(Path(folder).glob("[0-9][0-9]_*.json")):
        values |= json.loads(path.read_text())
    return values
