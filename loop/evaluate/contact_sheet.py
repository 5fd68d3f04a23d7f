"""Contact sheets: samples of a run side by side with their labels and parameters."""

from __future__ import annotations

import io
import textwrap
from typing import Any, Sequence

import numpy as np


def _caption(sample_id: int, params: dict[str, Any], label: Any) -> str:
    parts = [f"#{sample_id}"] + ([f"label={label}"] if label is not None else [])
    for name, value in params.items():
        parts.append(f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}")
    return "\n".join(textwrap.wrap("  ".join(parts), width=60))


def overlay(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (255, 40, 40)) -> np.ndarray:
    """RGB picture of a grey image with the mask's pixels painted in ``color``."""
    rgb = np.repeat(image[..., None], 3, axis=2).astype(np.uint8)
    rgb[mask.astype(bool)] = color
    return rgb


def render_contact_sheet(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None],
    captions: Sequence[tuple[int, dict[str, Any], Any]],
    *,
    columns: int = 4,
) -> bytes:
    """A PNG (bytes): each sample as its image beside the mask overlay, with its parameters below."""
    # A Figure of its own (no pyplot): no global state, safe in threads and Ray workers.
    from matplotlib.figure import Figure

    n = len(images)
    columns = max(1, min(columns, n))
    rows = int(np.ceil(n / columns))
    fig = Figure(figsize=(4.4 * columns, 2.9 * rows))
    axes = fig.subplots(rows, 2 * columns, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, (image, mask, (sid, params, label)) in enumerate(zip(images, masks, captions)):
        r, c = divmod(i, columns)
        left, right = axes[r, 2 * c], axes[r, 2 * c + 1]
        left.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        if mask is not None:
            right.imshow(overlay(image, mask), interpolation="nearest")
        else:
            right.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        left.text(0.0, -0.03, _caption(sid, params, label), transform=left.transAxes, fontsize=5.5,
                  va="top", ha="left", family="monospace")
    fig.subplots_adjust(left=0.01, right=0.99, top=0.99, bottom=0.02, wspace=0.03, hspace=0.45)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()
