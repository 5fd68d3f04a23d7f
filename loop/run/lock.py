"""One ``loop`` process per run: an exclusive lock on ``RUN/.lock``.

Local disk: an advisory ``flock``, dropped by the OS when the holder dies. Object stores
(``s3://``...): a lease, ``RUN/.lock`` created with a conditional put (put-if-absent) and
renewed by a background thread. A lease that was not renewed for ``lease_s`` seconds, or
whose holder was a process of this host that is gone (a ``kill -9``), is taken over. The
lease is a guard against starting a second driver by mistake, not a consensus protocol:
hosts' clocks must agree to well within ``lease_s``, and a takeover racing another takeover
is not excluded.

A holder that loses its lease (another process took it over, or renewals failed for
``lease_s`` seconds, after which another may take it over) must stop writing:
:meth:`RunLock.check` raises :class:`RunLockedError` from then on. The driver's journal calls
it before every append and the driver before each step's writes, so a driver that lost its
lease stops before its next write instead of writing beside the new holder.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import IO, Any

from stores.location import pid_alive
from loop.errors import InputError, LoopError

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
LEASE_S = 60.0
"""Seconds after its last renewal that an object-store lease counts as abandoned."""


class RunLockedError(LoopError, RuntimeError):
    """Another process holds the run's lock."""


class RunLock:
    """The lock of run ``run`` (a local directory, a ``file://`` URI or an fsspec URI); ``None``: no lock.

    ``what`` says what the holder does (e.g. ``loop generate``); it follows ``pid N on HOST``
    in the lock record, so that a refused process can tell who holds the run.
    """

    def __init__(self, run: str | None, lease_s: float = LEASE_S, what: str | None = None):
        self.path: Path | None = None
        self._lease: ObjectLease | None = None
        self.what = what
        if run and "://" in run and not run.startswith("file://"):
            self._lease = ObjectLease(run, lease_s, what=what)
        elif run:
            self.path = Path(run.removeprefix("file://")) / LOCK_FILE
        self._fh: IO[str] | None = None

    def acquire(self) -> "RunLock":
        """Take the lock or raise :class:`RunLockedError` naming the holder."""
        if self._lease is not None:
            self._lease.acquire()
            return self
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
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}" + (f" ({self.what})" if self.what else ""))
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        """Drop the lock (a local lock is also dropped by the OS when the process dies)."""
        if self._lease is not None:
            self._lease.release()
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def check(self) -> None:
        """Raise :class:`RunLockedError` when this lock, once acquired, is no longer held: an
        object-store lease that was taken over or not renewed for its length. A local
        ``flock`` cannot be lost while the process lives: a no-op."""
        if self._lease is not None:
            self._lease.check()

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def holder(self) -> str | None:
        """Who holds this lock now, e.g. ``pid 123 on host``; ``None`` when no live process does.

        Takes nothing: a local lock is probed with a shared ``flock`` taken and dropped at once
        (the OS drops a dead holder's lock, whatever ``.lock`` still says), an object-store
        lease is live unless abandoned (see :class:`ObjectLease`). The probe of a local lock
        lasts microseconds; a driver starting at that very moment is refused and can retry.
        """
        if self._lease is not None:
            try:
                record = self._lease.holder()
            except RunLockedError:  # not a lease loop wrote: who holds it cannot be told
                return "an unknown holder (RUN/.lock is not a loop lease)"
            if record is None or self._lease.abandoned(record):
                return None
            return f"pid {record['pid']} on {record['host']}"
        if self._fh is not None:  # this very lock object holds it
            return f"pid {os.getpid()} on {socket.gethostname()}"
        if self.path is None:
            return None
        try:
            fh = open(self.path, encoding="utf-8")
        except FileNotFoundError:
            return None
        with fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return fh.read().strip() or "another process"
            fcntl.flock(fh, fcntl.LOCK_UN)
        return None


class ObjectLease:
    """A renewed lease on ``RUN/.lock`` of a run on an object store (see the module docstring)."""

    def __init__(self, run: str, lease_s: float = LEASE_S, what: str | None = None):
        from stores.location import Location

        if not lease_s > 0:
            raise InputError(f"lease_s: expected a number of seconds > 0, got {lease_s!r}")
        self.run = run
        self.lease_s = float(lease_s)
        self.what = what
        self._location = Location(run)
        self._token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost: str | None = None
        self._renewed = 0.0  # time.monotonic() before the last successful write of the lease

    def _record(self) -> bytes:
        return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "token": self._token,
                           "renewed": time.time(), "lease_s": self.lease_s,
                           **({"what": self.what} if self.what else {})}).encode()

    def holder(self) -> dict[str, Any] | None:
        """The current lease record, or ``None`` when nobody holds the lease."""
        try:
            raw = self._location.read_bytes(LOCK_FILE)
        except FileNotFoundError:
            return None
        try:
            record = json.loads(raw)
            if not isinstance(record, dict) or not {"pid", "host", "token", "renewed"} <= set(record):
                raise ValueError("missing fields")
            return record
        except ValueError:
            raise RunLockedError(f"{self._location.url(LOCK_FILE)}: not a lease written by loop; "
                                 "delete it if no driver runs on this run") from None

    def acquire(self) -> None:
        """Take the lease (or an abandoned one) and start renewing it; :class:`RunLockedError` if held."""
        self._lost = None
        self._renewed = time.monotonic()
        try:
            self._location.create_exclusive(LOCK_FILE, self._record())
        except FileExistsError:
            holder = self.holder()
            if holder is not None:
                self._check_abandoned(holder)
                log.warning("run %s: taking over the abandoned lease of pid %s on %s", self.run,
                            holder["pid"], holder["host"])
                self._location.remove(LOCK_FILE)
            try:
                self._location.create_exclusive(LOCK_FILE, self._record())
            except FileExistsError:
                raise RunLockedError(f"run {self.run} was locked by another process meanwhile; "
                                     "wait for it or stop it first") from None
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew, name="run-lease", daemon=True)
        self._thread.start()

    def abandoned(self, holder: dict[str, Any]) -> bool:
        """Whether lease record ``holder`` is abandoned: not renewed for its ``lease_s``, or its
        holder was a process of this host that is gone."""
        age = time.time() - float(holder["renewed"])
        lease_s = float(holder.get("lease_s", self.lease_s))  # the holder's own lease length
        if holder["host"] == socket.gethostname() and not pid_alive(int(holder["pid"])):
            return True
        return age > lease_s

    def _check_abandoned(self, holder: dict[str, Any]) -> None:
        if self.abandoned(holder):
            return
        age = time.time() - float(holder["renewed"])
        lease_s = float(holder.get("lease_s", self.lease_s))
        raise RunLockedError(
            f"run {self.run} is in use by pid {holder['pid']} on {holder['host']} (lease renewed "
            f"{max(age, 0):.0f} s ago); wait for it or stop it first. If that driver is gone, its "
            f"lease expires {lease_s - max(age, 0):.0f} s from now")

    def check(self) -> None:
        """Raise :class:`RunLockedError` once the lease is lost: taken over by another process, or
        not renewed for ``lease_s`` seconds (another may have taken it over meanwhile)."""
        if self._thread is None and self._lost is None:
            return  # not held: nothing to lose
        if self._lost is None and time.monotonic() - self._renewed > self.lease_s:
            self._lost = (f"run {self.run}: the run lease was not renewed for {self.lease_s:.0f} s, so another "
                          "process may have taken it over; stopping before the next write")
        if self._lost is not None:
            raise RunLockedError(self._lost)

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_s / 6):
            try:
                started = time.monotonic()
                holder = self.holder()
                if holder is None or holder["token"] != self._token:
                    by = holder and f"pid {holder['pid']} on {holder['host']}"
                    self._lost = (f"run {self.run}: lost the run lease (now held by {by or 'nobody'}); another "
                                  "driver may be running; stopping before the next write")
                    log.error("%s", self._lost)
                    return
                self._location.write_bytes(LOCK_FILE, self._record())
                self._renewed = started
            except Exception as exc:  # noqa: BLE001 - a failed renewal is retried at the next tick
                log.warning("run %s: renewing the run lease failed (%s); retrying", self.run, exc)

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still this process's."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        try:
            holder = self.holder()
        except RunLockedError:
            return
        if holder is not None and holder["token"] == self._token:
            self._location.remove(LOCK_FILE)
