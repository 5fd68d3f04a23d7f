"""One ``loop`` process per run: an exclusive lock on ``RUN/.lock``."""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from typing import IO


class RunLockedError(RuntimeError):
    """Another process holds the run's lock."""


class RunLock:
    """An advisory ``flock`` on a file in a local run directory, released when the holder dies.

    Object-store runs have no lock file semantics; for them the lock is a no-op and the
    user must not start two drivers on the same URI (said in deploy/README.md).
    """

    def __init__(self, run_dir: str | None):
        self.path = Path(run_dir) / ".lock" if run_dir else None
        self._fh: IO[str] | None = None

    def acquire(self) -> "RunLock":
        """Take the lock or raise :class:`RunLockedError` naming the holder."""
        if self.path is None:
            return self
        fh = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise RunLockedError(f"run {self.path.parent} is in use by {holder}; wait for it or stop it first") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        """Drop the lock (also dropped by the OS when the process dies)."""
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
