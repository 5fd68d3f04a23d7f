"""JSON of the reports a run writes about itself (real-image scores, locate): numpy values as plain ones."""

from __future__ import annotations

import json
from typing import Any


def plain(value: Any) -> Any:
    """``json.dumps``' ``default``: numpy scalars and arrays as Python numbers and lists, anything else as text."""
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    tolist = getattr(value, "tolist", None)
    return tolist() if callable(tolist) else str(value)


def report_bytes(report: Any) -> bytes:
    """A report as indented UTF-8 JSON."""
    return json.dumps(report, indent=2, default=plain).encode()
