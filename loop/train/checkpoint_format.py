"""The bytes of a checkpoint: a safetensors file (tensors and a JSON header), nothing pickled.

Layout (format version 2)::

    tensors        the state dict's tensors under their own names, and the tensors found in
                   the metadata under reserved names "@0", "@1", ...
    __metadata__   format      "synthloop-checkpoint"
                   version     "2"
                   state_keys  JSON: the state dict's names, in order
                   meta        JSON: the metadata (nested plain values), each tensor in it
                               written as {"$tensor": "@N"}

Reading one runs no code: safetensors holds raw tensor bytes, the rest is JSON. Any
safetensors reader sees the model's weights under their state-dict names.

Legacy checkpoints (format version 1, written before safetensors) are ``torch.save`` zip
archives of ``{"format", "version", "state_dict", "meta"}``. They are read with
``torch.load(weights_only=True)``, which refuses every pickled object but tensors and plain
containers; a refused file is one clear error, never unpickled as code.
"""

from __future__ import annotations

import io
import itertools
import json
import pickle
from collections import OrderedDict
from typing import Any, Mapping

import torch

from loop.errors import InputError

FORMAT = "synthloop-checkpoint"
VERSION = 2
LEGACY_VERSION = 1
TENSOR_MARK = "$tensor"
"""The key of ``{"$tensor": "@N"}``, a tensor's place in the JSON metadata (a reserved key there)."""
EXTRA_PREFIX = "@"
"""Names of the metadata's tensors start with this; no state-dict key may."""
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's zip archive


class CheckpointError(InputError):
    """A checkpoint cannot be written, read, verified or loaded into a model."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _refusal(exc: BaseException) -> str:
    """What torch's weights-only unpickler refused, in one line (its message is many lines of advice)."""
    for line in str(exc).splitlines():
        if "GLOBAL" in line or "nsupported" in line:
            line = line.strip().removeprefix("WeightsUnpickler error: ")
            return line.split(". ")[0].rstrip(".")
    return _first_line(exc)


def pack(state: Mapping[str, torch.Tensor], meta: Any, source: str = "checkpoint") -> bytes:
    """The safetensors bytes of ``state`` (names -> tensors) and ``meta`` (nested dicts with
    string keys, lists, str, int, finite float, bool, None and tensors); errors name ``source``."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    storages: set[int] = set()

    def put(name: str, tensor: torch.Tensor) -> None:
        tensor = tensor.detach().cpu().contiguous()
        storage = tensor.untyped_storage()
        if storage.nbytes():
            if storage.data_ptr() in storages:  # safetensors refuses tensors that share memory
                tensor = tensor.clone()
            storages.add(tensor.untyped_storage().data_ptr())
        tensors[name] = tensor

    for key, tensor in state.items():
        if key.startswith(EXTRA_PREFIX):
            raise CheckpointError(f"{source}: model_state key {key!r} starts with {EXTRA_PREFIX!r}, reserved for the "
                                  "metadata's tensors")
        put(key, tensor)

    extras = itertools.count()

    def encode(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            name = f"{EXTRA_PREFIX}{next(extras)}"
            put(name, value)
            return {TENSOR_MARK: name}
        if isinstance(value, (list, tuple)):
            return [encode(v) for v in value]
        if isinstance(value, Mapping):
            return {k: encode(v) for k, v in value.items()}
        return value

    try:
        header = {
            "format": FORMAT,
            "version": str(VERSION),
            "state_keys": json.dumps(list(state)),
            "meta": json.dumps(encode(meta), allow_nan=False),
        }
        return save(tensors, metadata=header)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{source}: cannot be written as safetensors ({_first_line(exc)})") from exc


def _safetensors_header(data: bytes) -> dict[str, Any] | None:
    """The JSON header of safetensors bytes, or None when ``data`` is no safetensors file."""
    if len(data) < 10:
        return None
    size = int.from_bytes(data[:8], "little")
    if size < 2 or 8 + size > len(data) or data[8:9] != b"{":
        return None
    try:
        header = json.loads(data[8:8 + size])
    except ValueError:
        return None
    return header if isinstance(header, dict) else None


def unpack(data: bytes, source: str) -> tuple["OrderedDict[str, torch.Tensor]", dict[str, Any]]:
    """``(state_dict, meta)`` from checkpoint bytes, safetensors or legacy torch; errors name ``source``.

    Raises :class:`CheckpointError` for bytes that are neither, a file without the synthloop
    format marker, an unknown version, and a legacy file that holds pickled objects other
    than tensors and plain values.
    """
    if data[:4] == _ZIP_MAGIC:
        return _unpack_legacy(data, source)
    header = _safetensors_header(data)
    if header is None:
        raise CheckpointError(f"{source}: cannot be read: neither a safetensors file nor a legacy torch checkpoint")
    fields = header.get("__metadata__") or {}
    if fields.get("format") != FORMAT:
        raise CheckpointError(f"{source}: not a {FORMAT} file (no format marker)")
    if fields.get("version") != str(VERSION):
        raise CheckpointError(f"{source}: format version {fields.get('version')!r}, expected {VERSION}")
    from safetensors.torch import load

    try:
        tensors = load(data)
        keys = json.loads(fields["state_keys"])
        state = OrderedDict((k, tensors[k]) for k in keys)
        meta = _decode(json.loads(fields["meta"]), tensors)
    except Exception as exc:  # a damaged header or body: several exception types
        raise CheckpointError(f"{source}: cannot be read as a {FORMAT} safetensors file ({_first_line(exc)})") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"{source}: its metadata is {type(meta).__name__}, expected a table")
    return state, meta


def _decode(value: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if isinstance(value, dict):
        if set(value) == {TENSOR_MARK}:
            return tensors[value[TENSOR_MARK]]
        return {k: _decode(v, tensors) for k, v in value.items()}
    return value


def _unpack_legacy(data: bytes, source: str) -> tuple["OrderedDict[str, torch.Tensor]", dict[str, Any]]:
    """A version-1 checkpoint: a ``torch.save`` zip archive, loaded weights-only."""
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{source}: refused: a legacy torch file holding pickled objects other than tensors and plain "
            f"values, which are never unpickled ({_refusal(exc)})"
        ) from exc
    except Exception as exc:  # torch raises several types for a damaged file
        raise CheckpointError(f"{source}: cannot be read as a weights-only torch file ({_first_line(exc)})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{source}: not a {FORMAT} file (no format marker)")
    if payload.get("version") != LEGACY_VERSION:
        raise CheckpointError(f"{source}: legacy torch file of format version {payload.get('version')!r}, "
                              f"expected {LEGACY_VERSION}")
    state, meta = payload.get("state_dict"), payload.get("meta")
    if not isinstance(state, Mapping) or not isinstance(meta, Mapping):
        raise CheckpointError(f"{source}: a legacy checkpoint without a state dict and a meta table")
    return OrderedDict(state), dict(meta)
