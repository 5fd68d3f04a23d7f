"""Training progress as the user sees it: a live ``rich`` line on a terminal, plain lines elsewhere.

The driver hands training progress records to a sink while a model trains (see
:mod:`loop.run.driver`); :class:`TrainProgressView` is that sink for the commands. On a
terminal it shows one live line per training (stage, epoch, loss, images/s, ETA and a bar over
the whole schedule) and prints the commands' other lines above it; in ``--json`` use or when
the output is not a terminal it prints plain lines, at most one per ``every_s`` seconds per
training (and the last one of each), to stdout, or to stderr where stdout holds the JSON.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable

import click

Say = Callable[[str], None]


def stamped(line: str) -> str:
    """``line`` with the time, as :func:`loop.cli.output.say` prints it."""
    return f"[{time.strftime('%H:%M:%S')}] {line}"


def format_duration(seconds: float | None) -> str:
    """``seconds`` as ``1h02m``, ``3m05s`` or ``42s``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    s = max(0, int(round(seconds)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def describe(record: dict[str, Any], percent: bool = True) -> tuple[str, str]:
    """The two halves of a progress line: where training is, and how it goes (with the percentage
    of the schedule done unless ``percent`` is false: a bar shows it, and the share of the time
    spent waiting for data when the record has it)."""
    where = (f"train c{record['cycle']} stage {record['stage'] + 1}/{record['stages']} {record['stage_name']} "
             f"epoch {record['epoch'] + 1}/{record['epochs']}")
    if record.get("kind") == "batch":
        where += f" step {record['step']}/{record['steps']}"
    done = f"{100 * record['fraction']:.0f}% done, " if percent else ""
    # The share of the time spent waiting for batches says whether the data loaders, not the
    # model, set the pace (on a GPU: more loader workers would help).
    wait = record.get("data_wait_fraction")
    waiting = "" if wait is None else f" (data wait {100 * wait:.0f}%)"
    how = (f"loss {record['loss']:.4f}, {record['images_per_s']:.1f} img/s{waiting}, {done}"
           f"ETA {format_duration(record['eta_s'])}")
    return where, how


def _last_of_schedule(record: dict[str, Any]) -> bool:
    return (record.get("kind") == "epoch" and record["stage"] == record["stages"] - 1
            and record["epoch"] == record["epochs"] - 1)


class TrainProgressView:
    """A training progress sink for the commands; use it as a context manager around a run.

    Call the view with each record (it is a :data:`loop.run.driver.TrainProgress`) and route
    the command's other lines through :meth:`say` so that they do not tear the live line.
    ``live=None`` decides by the output: live on a terminal unless ``as_json``. ``label``
    prefixes every line (``compare`` drives several runs at once: use :meth:`labelled`).
    """

    def __init__(self, *, as_json: bool = False, live: bool | None = None, every_s: float = 10.0,
                 say: Say | None = None):
        from rich.console import Console

        self.as_json = as_json
        self.every_s = every_s
        self._console = Console(file=sys.stdout)
        self.live = (self._console.is_terminal and not self._console.is_dumb_terminal and not as_json) \
            if live is None else live
        self._say = say
        self._lock = threading.RLock()
        self._progress: Any = None
        self._tasks: dict[tuple[str, int], Any] = {}
        self._shown: dict[tuple[str, int], float] = {}

    # --- the sink ---------------------------------------------------------------------------

    def __call__(self, record: dict[str, Any], label: str = "") -> None:
        """Show one progress record (of the run ``label``, when several run at once)."""
        key = (label, int(record["cycle"]))
        where, how = describe(record, percent=not self.live)
        prefix = f"[{label}] " if label else ""
        last = _last_of_schedule(record)
        with self._lock:
            if not self.live:
                now = time.monotonic()
                if last or now - self._shown.get(key, -float("inf")) >= self.every_s:
                    self._shown[key] = now
                    self._plain(stamped(f"{prefix}  {where}: {how}"))
                if last:
                    self._shown.pop(key, None)
                return
            progress = self._live_progress()
            if key not in self._tasks:
                self._tasks[key] = progress.add_task(prefix + where, total=1.0, completed=record["fraction"],
                                                     stats=how)
            progress.update(self._tasks[key], description=prefix + where, completed=record["fraction"], stats=how)
            if last:
                progress.update(self._tasks.pop(key), completed=1.0)
                if not self._tasks:
                    self._stop()

    def labelled(self, label: str) -> Callable[[dict[str, Any]], None]:
        """A sink that shows records as those of run ``label``."""
        return lambda record: self(record, label)

    def say(self, line: str) -> None:
        """Print one of the command's timestamped lines, above the live line when there is one."""
        with self._lock:
            if self._progress is not None:
                self._progress.console.print(stamped(line), markup=False, highlight=False, soft_wrap=True)
            elif self._say is not None:
                self._say(line)
            else:
                self._plain(stamped(line))

    # --- plumbing ---------------------------------------------------------------------------

    def _plain(self, line: str) -> None:
        click.echo(line, err=self.as_json)

    def _live_progress(self) -> Any:
        if self._progress is None:
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=24),
                                      TaskProgressColumn(), TextColumn("{task.fields[stats]}"),
                                      console=self._console, redirect_stdout=False, redirect_stderr=False,
                                      refresh_per_second=4)
            self._progress.start()
        return self._progress

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._tasks.clear()

    def close(self) -> None:
        """End the live line (training that stopped half-way leaves its last state shown)."""
        with self._lock:
            self._stop()

    def __enter__(self) -> "TrainProgressView":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
