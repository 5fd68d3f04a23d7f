"""Model checkpoints: a torch state dict plus plain metadata, with a sha256 digest beside it.

``URI`` holds ``torch.save({"format", "version", "state_dict", "meta"})`` and ``URI.sha256``
holds ``"<hex digest>  <file name>"`` (the ``sha256sum`` format, so ``sha256sum -c`` checks it
too). Only tensors and plain values (str, int, float, bool, None, lists, dicts) are stored,
and loading uses ``torch.load(weights_only=True)``: nothing is unpickled as code. URIs go
through fsspec, so a local path, ``file://``, ``memory://`` or an object store all work.
"""

from __future__ import annotations

import hashlib
import io
import math
import posixpath
import re
import uuid
from collections import OrderedDict
from typing import Any, Mapping

import fsspec
import torch
from loop.errors import InputError

FORMAT = "synthloop-checkpoint"
VERSION = 1
DIGEST_SUFFIX = ".sha256"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class CheckpointError(InputError):
    """A checkpoint cannot be written, read, verified or loaded into a model."""


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


def _write_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    # Written aside then renamed, so a reader never sees half a file under the final name.
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with fs.open(tmp, "wb") as f:
        f.write(data)
    fs.mv(tmp, path)


def save_checkpoint(uri: str, model_state: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> str:
    """Write ``model_state`` and ``meta`` to ``uri`` and the digest beside it; return the sha256 hex digest."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "state_dict": _plain_state(model_state),
        "meta": _plain_meta(dict(meta), "meta"),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    fs, path = fsspec.core.url_to_fs(uri)
    parent = posixpath.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    _write_atomic(fs, path, data)
    _write_atomic(fs, path + DIGEST_SUFFIX, f"{digest}  {posixpath.basename(path)}\n".encode())
    return digest


def read_digest(uri: str) -> str:
    """The digest recorded beside the checkpoint at ``uri``."""
    fs, path = fsspec.core.url_to_fs(digest_uri(uri))
    try:
        text = fs.cat_file(path).decode("ascii", errors="replace")
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {uri}: digest file {digest_uri(uri)} is missing") from None
    token = text.split()[0].lower() if text.split() else ""
    if not _HEX64.match(token):
        raise CheckpointError(f"checkpoint {uri}: digest file {digest_uri(uri)} holds no sha256 hex digest ({text[:80]!r})")
    return token


def load_checkpoint(uri: str) -> tuple["OrderedDict[str, torch.Tensor]", dict[str, Any]]:
    """Read and verify the checkpoint at ``uri``; return ``(state_dict, meta)`` on the CPU.

    Raises :class:`CheckpointError` naming the file when it is missing, its digest file is
    missing or does not match its bytes, or its content is not a synthloop checkpoint.
    """
    fs, path = fsspec.core.url_to_fs(uri)
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {uri}: file not found") from None
    expected = read_digest(uri)
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise CheckpointError(
            f"checkpoint {uri}: sha256 {actual} does not match {expected} in {digest_uri(uri)}; "
            "the file is corrupted or was replaced"
        )
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged or foreign file
        raise CheckpointError(f"checkpoint {uri}: cannot be read as a weights-only torch file ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {uri}: not a {FORMAT} file (no format marker)")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {uri}: format version {payload.get('version')!r}, expected {VERSION}")
    return OrderedDict(payload["state_dict"]), dict(payload["meta"])


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
