"""What the commands print: JSON, timestamped progress lines, tables, number formats."""

from __future__ import annotations

import json
import time
from typing import Any

import click
import numpy as np
from rich.console import Console
from rich.table import Table


def echo_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON (numpy values as plain numbers)."""
    click.echo(json.dumps(obj, indent=2, default=json_default))


def json_default(value: Any) -> Any:
    """JSON form of the numpy values the commands return."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def fmt(value: Any, spec: str = ".4f") -> str:
    """``value`` formatted, or ``-`` when there is none."""
    return "-" if value is None else format(value, spec)


def say(line: str) -> None:
    """One progress line, with the time."""
    click.echo(f"[{time.strftime('%H:%M:%S')}] {line}")


def print_figures(title: str, result: dict[str, Any], as_json: bool) -> None:
    """A benchmark's figures: one JSON object, or a two-column table of the flattened keys."""
    if as_json:
        echo_json(result)
        return
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in _flatten(result):
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    Console().print(table)


def _flatten(result: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in result.items():
        if isinstance(value, dict):
            rows.extend(_flatten(value, f"{prefix}{key}."))
        else:
            rows.append((prefix + key, value))
    return rows
