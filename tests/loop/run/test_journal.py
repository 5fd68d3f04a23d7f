"""The run journal and the run lock."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from loop.run.journal import Journal, JournalError
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


# --- torn lines, full disks, durability (issue 15, items 2 and 8) --------------------------------


def test_an_append_after_a_torn_line_cuts_the_torn_line_off(tmp_path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(str(path))
    journal.append("started", cycles=2)
    with open(path, "a") as fh:
        fh.write('{"event": "gener')  # a killed append
    journal.append("resumed", cycles=2)
    assert [e["event"] for e in journal.events()] == ["started", "resumed"]
    text = path.read_text()
    assert "gener" not in text and text.endswith("\n") and text.count("\n") == 2
    # A tail without its newline is torn even when it parses: readers skip it, appenders cut it.
    with open(path, "a") as fh:
        fh.write('{"event": "x"}')
    assert [e["event"] for e in journal.events()] == ["started", "resumed"]
    journal.append("finished", cycles=2)
    assert [e["event"] for e in journal.events()] == ["started", "resumed", "finished"]
    # A file that is one torn line only.
    path.write_text('{"event": "sta')
    journal.append("started", cycles=1)
    assert [e["event"] for e in journal.events()] == ["started"] and path.read_text().count("\n") == 1


def test_an_object_store_journal_cuts_a_torn_line_off_too() -> None:
    from stores.location import Location

    folder = f"memory://journal-{uuid.uuid4().hex}"
    journal = Journal(f"{folder}/journal.jsonl")
    journal.append("started", cycles=1)
    location = Location(folder)
    location.write_bytes("journal.jsonl", location.read_bytes("journal.jsonl") + b'{"event": "gen')
    assert [e["event"] for e in journal.events()] == ["started"]
    journal.append("resumed", cycles=1)
    assert [e["event"] for e in journal.events()] == ["started", "resumed"]
    assert b"gen" not in location.read_bytes("journal.jsonl")


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs mounted for the test (root only; skipped where it cannot be mounted)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs (to fill a disk) needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a 4 MiB tmpfs: {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def _fill(path) -> None:
    """Write ``path`` until the disk is full (to the last page)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        for chunk in (1 << 20, 1 << 12, 1):
            while True:
                try:
                    os.write(fd, b"\0" * chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)


def test_a_full_disk_fails_the_append_without_a_torn_line_and_the_journal_goes_on_once_freed(small_disk) -> None:
    path = small_disk / "journal.jsonl"
    journal = Journal(str(path))
    journal.append("started", cycles=1)
    before = path.read_bytes()
    _fill(small_disk / "filler")
    # More than the rest of the journal's last page: part of the line fits, then ENOSPC.
    with pytest.raises(OSError) as info:
        journal.append("planned", cycle=0, plans=["x" * 20_000])
    assert info.value.errno == errno.ENOSPC and "journal" in str(info.value)
    assert path.read_bytes() == before  # the partial line was taken back
    assert [e["event"] for e in journal.events()] == ["started"]
    (small_disk / "filler").unlink()  # space freed: resume again
    journal.append("resumed", cycles=1)
    journal.append("planned", cycle=0, plans=["x" * 20_000])
    assert [e["event"] for e in journal.events()] == ["started", "resumed", "planned"]


def test_a_torn_line_left_by_a_full_disk_is_cut_off_by_the_next_append(small_disk, monkeypatch) -> None:
    # The append could not take its partial line back (as after a crash): the next one does.
    path = small_disk / "journal.jsonl"
    journal = Journal(str(path))
    journal.append("started", cycles=1)
    _fill(small_disk / "filler")
    monkeypatch.setattr(os, "ftruncate", lambda fd, size: (_ for _ in ()).throw(OSError(errno.EIO, "no")))
    with pytest.raises(OSError):
        journal.append("planned", cycle=0, plans=["x" * 20_000])
    monkeypatch.undo()
    assert not path.read_bytes().endswith(b"\n")  # torn
    assert [e["event"] for e in journal.events()] == ["started"]
    (small_disk / "filler").unlink()
    journal.append("resumed", cycles=1)
    assert [e["event"] for e in journal.events()] == ["started", "resumed"]


def test_the_append_that_creates_the_journal_fsyncs_the_file_and_its_folder(tmp_path, monkeypatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    path = tmp_path / "journal.jsonl"
    journal = Journal(str(path))
    journal.append("started", cycles=1)
    assert synced == [str(path), str(tmp_path)]
    synced.clear()
    journal.append("resumed", cycles=1)
    assert synced == [str(path)]  # the name is on disk already


def test_a_bad_line_in_the_middle_names_its_number_and_an_empty_journal_has_no_events(tmp_path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(str(path))
    assert journal.events() == [] and not journal.exists()
    path.write_bytes(b"")
    assert journal.events() == [] and not journal.exists()
    path.write_text('{"event": "started"}\n[1, 2]\n{"event": "resumed"}\n')
    with pytest.raises(JournalError, match="line 2 is not an event"):
        journal.events()


# --- a lost lease stops the writer (issue 15, item 8) ---------------------------------------------


def test_a_guarded_journal_appends_nothing_once_its_guard_fails(tmp_path) -> None:
    lost: list[str] = []

    def guard() -> None:
        if lost:
            raise RunLockedError(lost[0])

    path = tmp_path / "journal.jsonl"
    journal = Journal(str(path), guard=guard)
    journal.append("started", cycles=1)
    journal.check()
    lost.append("lease lost")
    with pytest.raises(RunLockedError, match="lease lost"):
        journal.append("generated", cycle=0)
    with pytest.raises(RunLockedError, match="lease lost"):
        journal.check()
    assert [e["event"] for e in Journal(str(path)).events()] == ["started"]


def test_an_object_store_lease_taken_over_fails_the_holders_check(tmp_path) -> None:
    from stores.location import Location

    run = f"memory://lease-{uuid.uuid4().hex}/run"
    lock = RunLock(run, lease_s=0.6).acquire()
    try:
        lock.check()  # held
        record = json.loads(Location(run).read_bytes(".lock"))
        Location(run).write_bytes(".lock", json.dumps({**record, "token": "another", "pid": 1}).encode())
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                lock.check()
            except RunLockedError as exc:
                assert "lost the run lease" in str(exc) and "stopping before the next write" in str(exc)
                break
            time.sleep(0.05)
        else:
            pytest.fail("the holder's check still passes after its lease was taken over")
        journal = Journal(f"{run}/journal.jsonl", guard=lock.check)
        with pytest.raises(RunLockedError):
            journal.append("generated", cycle=0)
        assert journal.events() == []
    finally:
        lock.release()
    assert json.loads(Location(run).read_bytes(".lock"))["token"] == "another"  # not the loser's to delete


def test_an_object_store_lease_not_renewed_for_its_length_fails_the_holders_check(monkeypatch) -> None:
    run = f"memory://lease-{uuid.uuid4().hex}/run"
    lock = RunLock(run, lease_s=0.6).acquire()
    try:
        def fail(*args, **kwargs):
            raise OSError("the object store is unreachable")

        monkeypatch.setattr(lock._lease._location, "write_bytes", fail)
        time.sleep(0.9)
        with pytest.raises(RunLockedError, match="not renewed for 1 s"):
            lock.check()
    finally:
        monkeypatch.undo()
        lock.release()


def test_a_local_lock_check_passes_while_held(tmp_path) -> None:
    with RunLock(str(tmp_path)) as lock:
        lock.check()
