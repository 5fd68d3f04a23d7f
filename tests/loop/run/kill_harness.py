"""Start ``loop start`` in its own process group and SIGKILL the whole group at a journaled event."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence


def start_and_kill(run: str, start_args: Sequence[str], after_event: str, cycle: int, *,
                   before_kill: Callable[[], None] = lambda: None, timeout_s: float = 300) -> None:
    """Run ``loop start --run RUN *start_args``; once the journal has ``after_event`` of ``cycle``,
    call ``before_kill()`` and kill the process group with SIGKILL (as a crash would)."""
    args = [sys.executable, "-m", "loop.cli", "start", "--run", run, *start_args]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "RAY_ADDRESS": ""})
    journal = Path(run) / "journal.jsonl"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists():
            events = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
            if any(e["event"] == after_event and e.get("cycle") == cycle for e in events):
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the kill point"
    before_kill()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
