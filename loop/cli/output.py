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


def table_console(table: Table, min_width: int = 0) -> Console:
    """A console to print ``table`` on: the terminal's width (at least ``min_width``) on a terminal;
    into a file or a pipe, as wide as the table needs, so a log keeps every column and digit
    (rich would otherwise squeeze it into 80 columns and cut the cells)."""
    console = Console()
    width = max(console.width, min_width)
    if not console.is_terminal:
        width = max(width, console.measure(table, options=console.options.update_width(10_000)).maximum)
    return Console(width=width)


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
    table_console(table).print(table)


def _flatten(result: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in result.items():
        if isinstance(value, dict):
            rows.extend(_flatten(value, f"{prefix}{key}."))
        else:
            rows.append((prefix + key, value))
    return rows
