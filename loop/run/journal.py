"""The run journal: ``RUN/journal.jsonl``, append-only events of finished steps.

Each line is one JSON object with at least ``event`` and ``time``. A line is written in one
``write`` and fsynced, so a kill leaves at most one torn final line, which is ignored on read
(and reported), never half-trusted.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Iterator

import fsspec
from fsspec.implementations.local import LocalFileSystem

from loop.errors import InputError

log = logging.getLogger(__name__)


class Journal:
    """Append-only JSON-lines event log of a run."""

    def __init__(self, uri: str):
        self.uri = uri
        self._fs, self._path = fsspec.core.url_to_fs(uri)

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Write one event durably and return it."""
        record = {"event": event, "time": time.time(), **fields}
        line = json.dumps(record, sort_keys=False) + "\n"
        if isinstance(self._fs, LocalFileSystem):
            with open(self._path, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        else:  # object stores have no append: rewrite the whole object (a single atomic put)
            self._fs.pipe_file(self._path, self._raw() + line.encode())
        return record

    def events(self) -> list[dict[str, Any]]:
        """All complete events in order; a torn last line is skipped with a warning."""
        return list(self._read())

    def _raw(self) -> bytes:
        # Read, not an existence check first: an object store's cached listing may be stale.
        try:
            return self._fs.cat_file(self._path)
        except FileNotFoundError:
            return b""

    def _read(self) -> Iterator[dict[str, Any]]:
        lines = self._raw().decode("utf-8").splitlines()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines):
                    log.warning("journal %s: ignoring a torn last line (%d bytes)", self.uri, len(line))
                    continue
                raise InputError(f"journal {self.uri}: line {number} is not valid JSON") from None

    def find(self, event: str, **match: Any) -> dict[str, Any] | None:
        """The last event named ``event`` whose fields equal ``match``, or None."""
        found = None
        for record in self._read():
            if record.get("event") == event and all(record.get(k) == v for k, v in match.items()):
                found = record
        return found
