"""The run journal and the run lock."""

from __future__ import annotations

import subprocess
import sys

import pytest

from loop.run.journal import Journal
from loop.run.lock import RunLock, RunLockedError


def test_journal_appends_and_finds(tmp_path) -> None:
    journal = Journal(str(tmp_path / "journal.jsonl"))
    assert journal.events() == []
    journal.append("planned", cycle=0, plans=[{"batch": 0}])
    journal.append("generated", cycle=0, wall_s=1.5)
    journal.append("generated", cycle=1, wall_s=2.5)
    assert [e["event"] for e in journal.events()] == ["planned", "generated", "generated"]
    assert journal.find("generated", cycle=1)["wall_s"] == 2.5
    assert journal.find("trained", cycle=0) is None
    assert journal.find("planned", cycle=0)["plans"] == [{"batch": 0}]


def test_journal_ignores_torn_last_line_only(tmp_path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(str(path))
    journal.append("started", cycles=2)
    with open(path, "a") as fh:
        fh.write('{"event": "gener')
    assert [e["event"] for e in journal.events()] == ["started"]
    with open(path, "a") as fh:
        fh.write('\n{"event": "x"}\n')
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        journal.events()


def test_second_lock_holder_gets_clear_error(tmp_path) -> None:
    with RunLock(str(tmp_path)):
        code = (
            "import sys; from loop.run.lock import RunLock, RunLockedError\n"
            f"try:\n    RunLock({str(tmp_path)!r}).acquire()\nexcept RunLockedError as e:\n    print(e); sys.exit(3)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 3
        assert "is in use by pid" in out.stdout
    RunLock(str(tmp_path)).acquire().release()  # free again once released


def test_lock_is_released_when_holder_is_killed(tmp_path) -> None:
    code = f"from loop.run.lock import RunLock; import os, signal; RunLock({str(tmp_path)!r}).acquire(); os.kill(os.getpid(), signal.SIGKILL)"
    subprocess.run([sys.executable, "-c", code])
    lock = RunLock(str(tmp_path)).acquire()
    with pytest.raises(RunLockedError):
        RunLock(str(tmp_path)).acquire()
    lock.release()
