"""The run journal: ``RUN/journal.jsonl``, append-only events of finished steps.

Each line is one JSON object with at least ``event`` and ``time``, ended by a newline. An
event is committed once its whole line, newline included, is on disk: on local disk a line
is written with ``write`` calls on an ``O_APPEND`` descriptor and fsynced, and the folder is
fsynced when the append created the file; on an object store (no append) the whole object is
rewritten in one put, which is atomic.

**Torn lines.** A kill, a power cut or a full disk (``ENOSPC``) during an append can leave
the file ending in a partial line: bytes after the last newline. Such a tail is never an
event (its append did not return), so

* a reader ignores it (with a warning), even when it happens to parse as JSON; every other
  line must parse, or the read fails naming the line;
* an appender first cuts it off (truncates the file after its last newline) and then writes
  its own line, so a torn line never ends up in the middle of the file. An append that fails
  part-way (``ENOSPC``) truncates its own partial line before raising, when it can.

File I/O goes through :class:`stores.location.Location` (local disk or any fsspec URI); the
local append (``O_APPEND``, ``ftruncate``, ``fsync``) is done here with ``os``, as
``Location`` has no append.

**Guard.** A driver opens its journal with ``guard`` = the run lock's check (see
:meth:`loop.run.lock.RunLock.check`): every :meth:`Journal.append` and :meth:`Journal.check`
calls it first, so a driver whose object-store lease was lost stops before its next write.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Callable, Iterator

from loop.errors import InputError
from stores.location import Location, fsync_path

log = logging.getLogger(__name__)

_TAIL_CHUNK = 64 * 1024


class JournalError(InputError):
    """The journal cannot be read (a line in the middle is not valid JSON)."""


def _split_uri(uri: str) -> tuple[str, str]:
    """``(folder URI, file name)`` of ``uri`` (a path or an fsspec URI)."""
    text = os.fspath(uri)
    if "://" not in text:
        folder, name = os.path.split(os.path.abspath(text))
        return folder, name
    folder, _, name = text.rstrip("/").rpartition("/")
    if not name or folder.endswith(":/"):
        raise InputError(f"journal {uri!r}: expected the URI of a file inside a folder or bucket")
    return folder, name


def _complete_part(raw: bytes) -> tuple[bytes, int]:
    """The committed part of ``raw`` (up to and with its last newline) and the length of the torn tail."""
    end = raw.rfind(b"\n") + 1
    return raw[:end], len(raw) - end


class Journal:
    """Append-only JSON-lines event log of a run at ``uri`` (a path or fsspec URI).

    ``guard``, when given, is called before every append (and by :meth:`check`); it raises to
    stop the writer (the run lock's :meth:`~loop.run.lock.RunLock.check`).
    """

    def __init__(self, uri: str, guard: Callable[[], None] | None = None):
        self.uri = uri
        folder, self.name = _split_uri(uri)
        self.location = Location(folder)
        self.guard = guard

    # --- writing ------------------------------------------------------------------------------

    def check(self) -> None:
        """Raise what the guard raises (e.g. the lease was lost); a no-op without a guard."""
        if self.guard is not None:
            self.guard()

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Write one event durably and return it (see the module docstring)."""
        self.check()
        record = {"event": event, "time": time.time(), **fields}
        line = (json.dumps(record, sort_keys=False) + "\n").encode()
        if self.location.local:
            self._append_local(line, event)
        else:
            self._append_object(line)
        return record

    def _append_local(self, line: bytes, event: str) -> None:
        path = self.location.join(self.name)
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
            created = True
        except FileExistsError:
            fd = os.open(path, os.O_RDWR | os.O_APPEND)
            created = False
        try:
            start = self._cut_torn_tail(fd)
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError as exc:
                # Take back what part of the line reached the file, so no torn line is left.
                try:
                    os.ftruncate(fd, start)
                    os.fsync(fd)
                except OSError:
                    pass  # the next append cuts it off
                raise OSError(exc.errno, f"journal {self.uri}: cannot append the {event!r} event "
                                         f"({exc.strerror or exc})") from exc
        finally:
            os.close(fd)
        if created:
            fsync_path(self.location.root)  # the new file's name survives a crash too

    def _cut_torn_tail(self, fd: int) -> int:
        """Truncate a torn last line of the open journal ``fd``; return the file's (new) size."""
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return size
        end = size
        keep = 0
        while end > 0:  # look backwards for the last newline
            begin = max(0, end - _TAIL_CHUNK)
            at = os.pread(fd, end - begin, begin).rfind(b"\n")
            if at >= 0:
                keep = begin + at + 1
                break
            end = begin
        log.warning("journal %s: cutting off a torn last line (%d bytes) before appending", self.uri, size - keep)
        os.ftruncate(fd, keep)
        return keep

    def _append_object(self, line: bytes) -> None:
        raw = self._raw()
        whole, torn = _complete_part(raw)
        if torn:
            log.warning("journal %s: cutting off a torn last line (%d bytes) before appending", self.uri, torn)
        self.location.write_bytes(self.name, whole + line)  # one put: all or nothing

    # --- reading ------------------------------------------------------------------------------

    def _raw(self) -> bytes:
        # Read, not an existence check first: an object store's cached listing may be stale.
        try:
            return self.location.read_bytes(self.name)
        except FileNotFoundError:
            return b""

    def exists(self) -> bool:
        """Whether the journal holds at least one event."""
        return bool(self.events())

    def events(self) -> list[dict[str, Any]]:
        """All committed events in order; a torn last line is skipped with a warning."""
        return list(self._read())

    def _read(self) -> Iterator[dict[str, Any]]:
        whole, torn = _complete_part(self._raw())
        lines = whole.split(b"\n")[:-1]
        if torn:
            log.warning("journal %s: ignoring a torn last line (%d bytes)", self.uri, torn)
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise JournalError(f"journal {self.uri}: line {number} is not valid JSON") from None
            if not isinstance(record, dict) or "event" not in record:
                raise JournalError(f"journal {self.uri}: line {number} is not an event (a JSON object with 'event')")
            yield record

    def find(self, event: str, **match: Any) -> dict[str, Any] | None:
        """The last event named ``event`` whose fields equal ``match``, or None."""
        found = None
        for record in self._read():
            if record.get("event") == event and all(record.get(k) == v for k, v in match.items()):
                found = record
        return found

    def recorded_digest(self, cycle: int) -> str | None:
        """The sha256 digest of cycle ``cycle``'s checkpoint as its ``trained`` event recorded it
        (``None`` when the cycle is not trained, or was trained before digests were journaled)."""
        trained = self.find("trained", cycle=cycle)
        return trained.get("digest") if trained else None

