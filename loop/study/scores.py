"""Reading a score out of one run entry of a comparison (:func:`loop.study.report.collect`).

Its own module so that the report and the checkpoint selection (which the report renders) read
scores the same way without importing each other.
"""

from __future__ import annotations

import math
from typing import Any, Mapping


def score_at(entry: Mapping[str, Any], source: str, cycle: int, metric: str) -> float | None:
    """``metric`` of ``source`` after ``cycle`` in a run entry of :func:`loop.study.report.collect`,
    ``None`` when not scored (or not finite)."""
    cycles = entry["cycles"][source]
    if cycle >= len(cycles) or cycles[cycle] is None or metric not in cycles[cycle]:
        return None
    value = cycles[cycle][metric]
    return float(value) if value is not None and math.isfinite(value) else None
