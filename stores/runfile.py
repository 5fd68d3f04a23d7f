"""``run.toml``: the frozen configuration of a run, written once when the run is created."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

import tomli_w

from generators.base import TASKS
from generators.space import ParamSpace, ParamSpaceError
from stores.errors import StoreError
from stores.location import Location

RUNFILE = "run.toml"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class RunInfo:
    """What ``run.toml`` holds: the store format, the generator, its space and the caller's config."""

    generator_name: str
    generator_version: str
    task: str
    space: ParamSpace
    config: Mapping[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_toml(self) -> bytes:
        """The TOML text of this run file, encoded as UTF-8."""
        doc = {
            "store": {"format_version": self.format_version,
                      "created_at": datetime.now(timezone.utc).replace(microsecond=0)},
            "generator": {"name": self.generator_name, "version": self.generator_version, "task": self.task},
            "space": self.space.to_dict(),
            "config": dict(self.config),
        }
        try:
            return tomli_w.dumps(doc).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise StoreError(f"run config: cannot be written as TOML ({exc}); expected a dict of "
                             "strings, numbers, booleans, dates, lists and dicts (no None)") from None


def check_info(info: RunInfo) -> None:
    """Raise :class:`StoreError` when a field of ``info`` is not what a run file needs."""
    for name in ("generator_name", "generator_version"):
        value = getattr(info, name)
        if not isinstance(value, str) or not value:
            raise StoreError(f"{name}: expected a non-empty string, got {value!r}")
    if info.task not in TASKS:
        raise StoreError(f"task: expected one of {', '.join(TASKS)}, got {info.task!r}")
    if not isinstance(info.space, ParamSpace):
        raise StoreError(f"space: expected a ParamSpace, got {type(info.space).__name__}")
    if not isinstance(info.config, Mapping):
        raise StoreError(f"config: expected a dict, got {type(info.config).__name__}")


def write_runfile(location: Location, info: RunInfo) -> None:
    """Write ``run.toml`` atomically; :class:`StoreError` if the run already has one."""
    check_info(info)
    data = info.to_toml()
    try:
        location.commit_bytes(RUNFILE, data)
    except FileExistsError:
        raise StoreError(f"{location.url(RUNFILE)}: a run already exists there") from None


def read_runfile(location: Location) -> RunInfo:
    """Read and check ``run.toml``; :class:`StoreError` naming the file on any problem."""
    path = location.url(RUNFILE)
    try:
        raw = location.read_bytes(RUNFILE)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise StoreError(f"{location.uri}: not a run (no {RUNFILE} there)") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise StoreError(f"{path}: not valid TOML ({exc})") from None
    version = doc.get("store", {}).get("format_version")
    if version != FORMAT_VERSION:
        raise StoreError(f"{path}: store format_version {version!r} is not supported; "
                         f"this code reads format_version {FORMAT_VERSION}")
    try:
        gen = doc["generator"]
        info = RunInfo(generator_name=gen["name"], generator_version=gen["version"], task=gen["task"],
                       space=ParamSpace.from_dict(doc["space"]), config=doc.get("config", {}),
                       format_version=version)
    except (KeyError, TypeError, ParamSpaceError) as exc:
        raise StoreError(f"{path}: malformed run file ({type(exc).__name__}: {exc})") from None
    try:
        check_info(info)
    except StoreError as exc:
        raise StoreError(f"{path}: {exc}") from None
    return info
