"""Where a run lives: an fsspec filesystem and a root path, with the few operations the store needs.

A run is a local path or an fsspec URI (``file://``, ``s3://``, ``memory://``...). Everything
goes through the fsspec filesystem, except where local disk needs something fsspec does
not give: an exclusive create, a link-or-fail commit and ``fsync`` (the local fast path).
On an object store a single put is atomic, so a commit is one put, made conditional
(``pipe_file(mode="create")``): s3fs sends it as a put-if-absent (``If-None-Match: *``), which
S3 and most S3-compatible servers honour; other fsspec filesystems fall back to an existence
check before the put, which is not atomic. Object-store listings are never cached: other
processes (Ray workers, a second reader) add files, and a cached listing would hide them.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from stores.errors import StoreError


class Location:
    """A run's root: ``join`` builds paths inside it, the rest reads and writes there."""

    def __init__(self, uri: str | os.PathLike[str]):
        text = os.fspath(uri)
        if not text:
            raise StoreError("run location: expected a path or URI, got an empty string")
        if "://" in text:
            fs, root = fsspec.core.url_to_fs(text, use_listings_cache=False)
        else:
            fs, root = LocalFileSystem(), os.path.abspath(text)
        self.fs: fsspec.AbstractFileSystem = fs
        self.local: bool = isinstance(fs, LocalFileSystem)
        self.root: str = root.rstrip("/") or "/"
        self.uri: str = self.root if self.local else fs.unstrip_protocol(self.root)

    def __repr__(self) -> str:
        return f"Location({self.uri!r})"

    def join(self, *parts: str) -> str:
        """Full path (in the filesystem's own terms) of ``parts`` below the root."""
        return posixpath.join(self.root, *parts)

    def url(self, *parts: str) -> str:
        """Full URI of ``parts`` below the root (a plain path when local)."""
        path = self.join(*parts)
        return path if self.local else self.fs.unstrip_protocol(path)

    def exists(self, *parts: str) -> bool:
        """Whether a file or directory exists at ``parts``."""
        return self.fs.exists(self.join(*parts))

    def listdir(self, *parts: str) -> list[str]:
        """Base names of the entries of directory ``parts`` (empty when it does not exist)."""
        path = self.join(*parts)
        if self.local:
            try:
                return sorted(os.listdir(path))
            except FileNotFoundError:
                return []
        try:
            entries = self.fs.ls(path, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(posixpath.basename(e.rstrip("/")) for e in entries)

    def makedirs(self, *parts: str) -> None:
        """Create directory ``parts`` and its parents (no-op where directories are implicit)."""
        self.fs.makedirs(self.join(*parts), exist_ok=True)

    def read_bytes(self, *parts: str) -> bytes:
        """The whole content of file ``parts``."""
        path = self.join(*parts)
        if self.local:
            with open(path, "rb") as f:
                return f.read()
        return self.fs.cat_file(path)

    def read_range(self, path: str, start: int, length: int) -> bytes:
        """``length`` bytes of the file at full path ``path`` from ``start`` (negative: from the end)."""
        if self.local:
            with open(path, "rb") as f:
                f.seek(start, os.SEEK_END if start < 0 else os.SEEK_SET)
                return f.read(length)
        end = None if start < 0 and start + length >= 0 else start + length
        return self.fs.cat_file(path, start=start, end=end)

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write file ``rel`` (creating its folder), replacing any file there. Not atomic locally."""
        path = self.join(rel)
        if self.local:
            os.makedirs(posixpath.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
            return
        self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        self.fs.pipe_file(path, data)

    def commit_bytes(self, rel: str, data: bytes) -> None:
        """Make file ``rel`` appear with ``data`` all at once; never replace an existing file.

        Local: write a temporary file beside it, fsync, hard-link it to the final name (the
        link fails if the name exists) and fsync the directory. Elsewhere: one put.
        Raises ``FileExistsError`` when ``rel`` already exists.
        """
        final = self.join(rel)
        if not self.local:
            self._put_if_absent(final, data)
            return
        folder, name = posixpath.split(final)
        tmp = posixpath.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, final)
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        fsync_path(folder)

    def create_exclusive(self, rel: str, data: bytes) -> None:
        """Create file ``rel`` holding ``data``; raise ``FileExistsError`` if it exists.

        The file appears with its whole content or not at all (a reader never sees it empty).
        Exclusive on local disk (a temporary file hard-linked to the name, which fails if the
        name exists; not fsynced: a claim need not survive a crash of the machine) and on S3
        (a conditional put); elsewhere an existence check then a put.
        """
        path = self.join(rel)
        if not self.local:
            self._put_if_absent(path, data)
            return
        folder, name = posixpath.split(path)
        tmp = posixpath.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.link(tmp, path)
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass

    def _put_if_absent(self, path: str, data: bytes) -> None:
        # The check first: a server that ignores If-None-Match still refuses the common case.
        if self.fs.exists(path):
            raise FileExistsError(path)
        self.fs.pipe_file(path, data, mode="create")

    def remove(self, rel: str) -> None:
        """Delete file ``rel`` if it exists."""
        path = self.join(rel)
        try:
            if self.local:
                os.unlink(path)
            else:
                self.fs.rm_file(path)
        except FileNotFoundError:
            pass

    def remove_tree(self, rel: str) -> None:
        """Delete directory ``rel`` and everything under it, if it exists."""
        path = self.join(rel)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def sync_tree(self, rel: str) -> None:
        """Flush every file and directory under ``rel`` to disk (local only; a put is durable)."""
        if not self.local:
            return
        top = self.join(rel)
        paths = []
        for folder, _, files in os.walk(top):
            paths.extend(os.path.join(folder, name) for name in files)
            paths.append(folder)
        # fsync releases the GIL and the disk takes several at once: flush them together.
        with ThreadPoolExecutor(max_workers=min(8, len(paths))) as pool:
            list(pool.map(fsync_path, paths))
        fsync_path(posixpath.dirname(top))

    def zarr_store(self, rel: str, read_only: bool = False) -> Any:
        """A Zarr v3 store rooted at ``rel``: ``LocalStore`` on local disk, ``FsspecStore`` elsewhere."""
        import zarr.storage

        if self.local:
            return zarr.storage.LocalStore(self.join(rel), read_only=read_only)
        return zarr.storage.FsspecStore.from_url(self.url(rel), read_only=read_only,
                                                 storage_options={"use_listings_cache": False})


def fsync_path(path: str) -> None:
    """fsync a file, or a directory so that a new or renamed entry in it survives a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def process_start(pid: int) -> int | None:
    """When process ``pid`` of this host started (clock ticks since boot), or ``None`` when
    that cannot be told (no such process, no ``/proc``). With the pid it names one process:
    a pid reused by a later process has another start time."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            stat = f.read()
        # Field 22 (starttime); the command name (field 2) may hold spaces and parentheses.
        return int(stat[stat.rindex(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def writer_alive(pid: int, started: int | None = None) -> bool:
    """Whether the process ``pid`` of this host that started at ``started`` (see
    :func:`process_start`; ``None``: unknown, the pid alone decides) still runs."""
    if not pid_alive(pid):
        return False
    if started is None:
        return True
    now = process_start(pid)
    return now is None or now == started


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a writer's or a driver's liveness check)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
