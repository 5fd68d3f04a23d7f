"""Model checkpoints: a state dict plus plain metadata in a safetensors file, a sha256 digest beside it.

``URI`` is a safetensors file (:mod:`loop.train.checkpoint_format`: the tensors, and the
metadata as JSON in its header) and ``URI.sha256`` holds ``"<hex digest>  <file name>"`` (the
``sha256sum`` format, so ``sha256sum -c`` checks it too). Only tensors and plain values (str,
int, float, bool, None, lists, dicts) are stored; nothing is pickled. Checkpoints written
before (``torch.save`` files, e.g. ``cycle_NNN.pt``) still load, read with
``torch.load(weights_only=True)``: a file holding any other pickled object is refused. The
format is told by the bytes, not the name. File I/O goes through
:class:`stores.location.Location`, so a local path, ``file://``, ``memory://`` or an object
store all work.

Durability: :func:`save_checkpoint` returns only once both files are on disk under their
final names. Locally each is written to ``NAME.tmp-<hex>`` beside it, fsynced, renamed over
the final name, and the folder is fsynced (so a caller may journal the checkpoint as
committed); on an object store each is one put. A kill mid-save leaves a ``*.tmp-<hex>``
file and nothing else: :func:`remove_temporaries` (called by the driver under the run lock)
removes them.

Verification: :func:`load_checkpoint` returns bytes only after checking their sha256 against
the digest file; :func:`check_recorded_digest` compares the digest file with the digest that
was recorded elsewhere when the checkpoint was saved (the run journal's ``trained`` event), so
a checkpoint replaced together with its digest file is refused too.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import uuid
from collections import OrderedDict
from typing import Any, Mapping

import torch

from loop.train.checkpoint_format import TENSOR_MARK, CheckpointError, pack, unpack
from stores.location import Location, fsync_path

DIGEST_SUFFIX = ".sha256"
TMP_MARK = ".tmp-"
"""A file being written is ``NAME.tmp-<32 hex>`` beside ``NAME`` until it is renamed."""
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TEMPORARY = re.compile(r"^.+\.(pt|safetensors|sha256)\.tmp-[0-9a-f]{32}$")


def digest_uri(uri: str) -> str:
    """Where the digest of the checkpoint at ``uri`` lives."""
    return uri + DIGEST_SUFFIX


def _plain_meta(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            # NaN/inf survive torch.save but not JSON/TOML consumers of the metadata.
            raise CheckpointError(f"checkpoint meta {where}: expected a finite number, got {value!r}")
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, (list, tuple)):
        return [_plain_meta(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise CheckpointError(f"checkpoint meta {where}: expected string keys, got {k!r}")
            if k == TENSOR_MARK:
                raise CheckpointError(f"checkpoint meta {where}: key {k!r} is reserved (it marks a tensor)")
            out[k] = _plain_meta(v, f"{where}.{k}")
        return out
    raise CheckpointError(
        f"checkpoint meta {where}: expected tensors, str, int, float, bool, None, lists or dicts, "
        f"got {type(value).__name__}"
    )


def _plain_state(state: Mapping[str, Any]) -> "OrderedDict[str, torch.Tensor]":
    if not isinstance(state, Mapping):
        raise CheckpointError(f"model_state: expected a mapping of names to tensors, got {type(state).__name__}")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for k, v in state.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise CheckpointError(f"model_state: expected str -> tensor entries, got {k!r} -> {type(v).__name__}")
        out[k] = v.detach().cpu().contiguous()
    return out


def _where(uri: str) -> tuple[Location, str]:
    """The :class:`Location` of the folder holding ``uri`` and the file's name in it."""
    text = os.fspath(uri)
    if "://" not in text:
        folder, name = os.path.split(os.path.abspath(text))
        return Location(folder), name
    folder, _, name = text.rstrip("/").rpartition("/")
    if not name or folder.endswith(":/"):
        raise CheckpointError(f"checkpoint {uri!r}: expected the URI of a file inside a folder or bucket")
    return Location(folder), name


def _replace_durably(location: Location, name: str, data: bytes) -> None:
    """Make file ``name`` hold ``data``, replacing any file there, all at once and durably.

    Local: written aside (``NAME.tmp-<hex>``), fsynced, renamed over ``NAME``, folder fsynced,
    so a reader never sees half a file and a crash after return loses nothing. Elsewhere one
    put. (``Location`` has no replacing commit; :meth:`Location.commit_bytes` refuses to replace.)
    """
    if not location.local:
        location.write_bytes(name, data)
        return
    if not os.path.isdir(location.root):
        os.makedirs(location.root, exist_ok=True)
        fsync_path(os.path.dirname(location.root))  # the new folder's name survives a crash too
    final = location.join(name)
    tmp = f"{final}{TMP_MARK}{uuid.uuid4().hex}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_path(location.root)


def save_checkpoint(uri: str, model_state: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> str:
    """Write ``model_state`` and ``meta`` to ``uri`` (safetensors, whatever the name) and the digest
    beside it; return the sha256 hex digest."""
    data = pack(_plain_state(model_state), _plain_meta(dict(meta), "meta"), f"checkpoint {uri}")
    digest = hashlib.sha256(data).hexdigest()
    location, name = _where(uri)
    _replace_durably(location, name, data)
    _replace_durably(location, name + DIGEST_SUFFIX, f"{digest}  {name}\n".encode())
    return digest


def read_digest(uri: str) -> str:
    """The digest recorded beside the checkpoint at ``uri``."""
    location, name = _where(uri)
    try:
        text = location.read_bytes(name + DIGEST_SUFFIX).decode("ascii", errors="replace")
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {uri}: digest file {digest_uri(uri)} is missing") from None
    token = text.split()[0].lower() if text.split() else ""
    if not _HEX64.match(token):
        raise CheckpointError(f"checkpoint {uri}: digest file {digest_uri(uri)} holds no sha256 hex digest ({text[:80]!r})")
    return token


def check_recorded_digest(uri: str, recorded: str, where: str) -> None:
    """Raise :class:`CheckpointError` unless the digest file of the checkpoint at ``uri`` holds
    ``recorded``, the digest recorded in ``where`` (e.g. a run journal's ``trained`` event) when
    the checkpoint was saved.

    With :func:`load_checkpoint` (bytes against the digest file) this ties the bytes to the
    record: a checkpoint replaced together with its digest file fails here.
    """
    if not isinstance(recorded, str) or not _HEX64.match(recorded):
        raise CheckpointError(f"checkpoint {uri}: {where} records no sha256 hex digest ({recorded!r})")
    found = read_digest(uri)
    if found != recorded:
        raise CheckpointError(
            f"checkpoint {uri}: its digest file holds sha256 {found}, but {where} recorded {recorded} when it "
            "was saved; the checkpoint was replaced (with its digest file) after it was written"
        )


def remove_temporaries(folder: str) -> list[str]:
    """Delete the ``*.safetensors.tmp-<hex>`` / ``*.pt.tmp-<hex>`` / ``*.sha256.tmp-<hex>`` files
    that a save killed mid-way left in ``folder`` (a path or URI); return their names.

    Only for the folder's one writer (the run's driver, under the run lock): a save in
    progress elsewhere would lose its temporary file.
    """
    location = Location(folder)
    removed = [name for name in location.listdir() if _TEMPORARY.match(name)]
    for name in removed:
        location.remove(name)
    return removed


def read_verified(uri: str, digest: str | None = None) -> bytes:
    """The bytes of the checkpoint at ``uri``, checked against its digest file (and against
    ``digest``, the digest recorded when it was saved, when given).

    Raises :class:`CheckpointError` naming the file when it or its digest file is missing,
    or a digest does not match.
    """
    location, name = _where(uri)
    try:
        data = location.read_bytes(name)
    except (FileNotFoundError, IsADirectoryError):
        raise CheckpointError(f"checkpoint {uri}: file not found") from None
    expected = read_digest(uri)
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise CheckpointError(
            f"checkpoint {uri}: sha256 {actual} does not match {expected} in {digest_uri(uri)}; "
            "the file is corrupted or was replaced"
        )
    if digest is not None and actual != digest:
        raise CheckpointError(f"checkpoint {uri}: sha256 {actual} does not match {digest}, the digest recorded "
                              "when it was saved; the checkpoint was replaced (with its digest file)")
    return data


def load_checkpoint(uri: str, digest: str | None = None) -> tuple["OrderedDict[str, torch.Tensor]", dict[str, Any]]:
    """Read and verify the checkpoint at ``uri``; return ``(state_dict, meta)`` on the CPU.

    Raises :class:`CheckpointError` naming the file when it is missing, its digest file is
    missing or does not match its bytes (or ``digest``, the digest recorded when it was saved,
    when given), or its content is not a synthloop checkpoint (safetensors, or a legacy torch
    file read weights-only).
    """
    return unpack(read_verified(uri, digest), f"checkpoint {uri}")


def checkpoint_exists(uri: str) -> bool:
    """Whether there is a file at ``uri`` (not whether it is a valid checkpoint)."""
    location, name = _where(uri)
    return location.exists(name)


def remove_checkpoint(uri: str) -> bool:
    """Delete the checkpoint at ``uri`` and then its digest file; return whether either was there."""
    location, name = _where(uri)
    found = False
    for part in (name, name + DIGEST_SUFFIX):
        if location.exists(part):
            location.remove(part)
            found = True
    return found


def describe_mismatch(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor], limit: int = 5) -> str | None:
    """What keeps ``given`` from loading where ``expected`` is: missing / unexpected keys, shapes; ``None`` if it fits."""

    def some(keys: list[str]) -> str:
        more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
        return ", ".join(keys[:limit]) + more

    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [
        f"{k}: {tuple(given[k].shape)} given, {tuple(expected[k].shape)} expected"
        for k in expected
        if k in given and tuple(given[k].shape) != tuple(expected[k].shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {some(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {some(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es): {some(shapes)}")
    return "; ".join(parts) or None


def load_state_into(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state_dict`` into ``model`` strictly; a mismatch raises :class:`CheckpointError` naming ``source``."""
    problem = describe_mismatch(model.state_dict(), state_dict)
    if problem:
        raise CheckpointError(f"{source} does not fit the model ({type(model).__name__}): {problem}")
    model.load_state_dict(state_dict, strict=True)
