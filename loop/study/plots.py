"""Figure helpers shared by the comparison report's plots (Matplotlib's object API, no pyplot)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

PANEL_COLUMNS = 4
"""Panels per row of a report's plots (a dozen panels in one strip are unreadable)."""


def panel_grid(n: int, width: float, height: float) -> tuple[Any, np.ndarray]:
    """A figure of ``n`` panels of ``width`` × ``height`` inches, :data:`PANEL_COLUMNS` to a row, and
    its axes in reading order; the unused cells of the last row are hidden."""
    from matplotlib.figure import Figure

    cols = min(PANEL_COLUMNS, max(1, n))
    rows = -(-max(1, n) // cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes


def figure_png(fig: Any) -> bytes:
    """``fig`` as PNG bytes at the report's resolution."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()
