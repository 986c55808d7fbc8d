"""The book's figure style and the one place figures are written.

Chapters call :func:`book_style` once and :func:`save_figure` for each figure.
Figures are written only when the environment variable ``PHOENIX_FIGURES_DIR``
names a folder (``make book`` and ``make figures`` set it to ``figures/``), so
running a chapter under the tests or in one's own JupyterLab never touches the
repository. SVGs are byte-for-byte reproducible: fixed hash salt, no date.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib as mpl
import matplotlib.pyplot as plt

STYLE = {
    "figure.figsize": (6.4, 3.6),
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": mpl.cycler(
        color=["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]
    ),
    "font.size": 10,
    "legend.frameon": False,
    "svg.hashsalt": "phoenix-textbook",
    "svg.fonttype": "path",
}


def book_style() -> None:
    """Apply the book's Matplotlib style (rcParams) for the rest of the session."""
    plt.rcParams.update(STYLE)


def save_figure(fig: plt.Figure, chapter: str, name: str) -> Path | None:
    """Write ``<PHOENIX_FIGURES_DIR>/<chapter>/<name>.svg`` and ``.png`` if the variable is set.

    Returns the SVG path, or ``None`` when figure saving is off.
    """
    root = os.environ.get("PHOENIX_FIGURES_DIR")
    if not root:
        return None
    folder = Path(root) / chapter
    folder.mkdir(parents=True, exist_ok=True)
    svg = folder / f"{name}.svg"
    fig.savefig(svg, metadata={"Date": None, "Creator": None})
    fig.savefig(folder / f"{name}.png", metadata={"Software": None})
    return svg
