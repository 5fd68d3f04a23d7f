"""``images.zarr``: one Zarr v3 group per batch holding ``image`` (and ``mask``) arrays.

Each batch group also holds ``sample_id`` (int64, one per row of the arrays) and attributes
saying what the batch is (:mod:`stores.describe`), so the images name their samples; batches
written before that have neither and are read all the same (the parameter table says it).

Each array is ``(n, H, W)`` uint8 with chunks ``(1, H, W)`` (one sample = one chunk),
compressed with zstd and followed by its crc32c (zarr's ``crc32c`` codec after the
compressor), and stored as a single shard per batch: one object per array on an object
store, one file to fsync on local disk. Zarr writes the metadata; the shard is encoded here,
because zarr's own write path runs at about half the speed of the compressor. Reading a
sample reads one chunk: the shard index (offsets and sizes of the chunks, with its own
crc32c) is read once per array and cached, then each sample is one byte-range read, a
checksum check and a zstd decode. A read that returns pixels has verified them; damaged
bytes raise :class:`StoreError` naming the run, batch, array and sample. Arrays written
before the chunk checksum (zstd alone) are still read, unverified. Arrays in any other
layout (written by another tool) are read through zarr's own indexing, which is correct but
slower (and verifies whatever checksum their codecs carry).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

import google_crc32c
import numcodecs
import numpy as np
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec, ZstdCodec
from zarr.codecs.sharding import ShardingCodecIndexLocation

from stores.errors import StoreError
from stores.location import Location

ZARR_DIR = "images.zarr"
IMAGE = "image"
MASK = "mask"
SAMPLE_ID = "sample_id"
DIMENSIONS = ("sample", "y", "x")
# Level 1 compresses micrograph-like uint8 images as well as level 3 at about twice the speed.
ZSTD_LEVEL = 1
_EMPTY = np.uint64(2**64 - 1)  # shard-index entry of a chunk that was not written (all fill value)
_GROUP = re.compile(r"^b(\d+)$")


def batch_group(batch: int) -> str:
    """Name of the Zarr group of ``batch`` (``b000042``)."""
    return f"b{batch:06d}"


def parse_batch_group(name: str) -> int | None:
    """The batch number of a group name, or ``None`` when ``name`` is not a batch group."""
    match = _GROUP.match(name)
    return int(match.group(1)) if match else None


def check_stack(what: str, array: Any, n: int | None = None, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Check that ``array`` is an (n, H, W) uint8 stack; return it C-contiguous."""
    if not isinstance(array, np.ndarray):
        raise StoreError(f"{what}: expected a numpy array (n, H, W) uint8, got {type(array).__name__}")
    if array.dtype != np.uint8 or array.ndim != 3:
        raise StoreError(f"{what}: expected an (n, H, W) uint8 array, got {array.ndim}-D {array.dtype} "
                         f"with shape {array.shape}")
    if min(array.shape) < 1:
        raise StoreError(f"{what}: expected a non-empty (n, H, W) array, got shape {array.shape}")
    if n is not None and array.shape[0] != n:
        raise StoreError(f"{what}: has {array.shape[0]} samples, expected {n} (one per row)")
    if shape is not None and array.shape != shape:
        raise StoreError(f"{what}: shape {array.shape}, expected {shape} (the images' shape)")
    return np.ascontiguousarray(array)


class ImageArrays:
    """Writes, lists and deletes the per-batch arrays of one run's ``images.zarr``."""

    def __init__(self, location: Location):
        self.location = location
        self._root: zarr.Group | None = None
        self._lock = threading.Lock()
        self._zstd = numcodecs.Zstd(level=ZSTD_LEVEL)

    def create(self, attributes: dict[str, Any] | None = None) -> None:
        """Create the empty root group with ``attributes`` (once, when the run is created)."""
        zarr.open_group(self.location.zarr_store(ZARR_DIR), mode="w-", zarr_format=3, attributes=attributes)

    def _group(self) -> zarr.Group:
        with self._lock:
            if self._root is None:
                # Not through the consolidated metadata: it lists batches up to its last refresh only.
                self._root = zarr.open_group(self.location.zarr_store(ZARR_DIR), mode="r+", zarr_format=3,
                                             use_consolidated=False)
            return self._root

    def write(self, batch: int, arrays: dict[str, np.ndarray], sample_ids: np.ndarray | None = None,
              attributes: dict[str, Any] | None = None) -> None:
        """Write the arrays of ``batch`` (replacing any left there) and flush them to disk.

        ``sample_ids`` (one per row) become the group's ``sample_id`` array and ``attributes``
        its attributes. The caller holds the batch's claim, so nothing else writes this group
        meanwhile.
        """
        group = self._group().create_group(batch_group(batch), overwrite=True, attributes=attributes or {})
        if sample_ids is not None:
            write_sample_ids(group, sample_ids)
        for name, data in arrays.items():
            n, h, w = data.shape
            # zarr writes the metadata; the shard itself is encoded here (encode_shard), at
            # about twice the speed of zarr's own write path. Tests check zarr reads it back.
            arr = group.create_array(
                name, shape=data.shape, dtype="uint8", chunks=(1, h, w), shards=(n, h, w),
                compressors=(ZstdCodec(level=ZSTD_LEVEL), Crc32cCodec()), fill_value=0,
                # "c.0.0.0": one file beside zarr.json instead of three nested folders, each
                # of which would need its own fsync.
                chunk_key_encoding={"name": "default", "separator": "."},
                dimension_names=DIMENSIONS, overwrite=True,
            )
            if _own_layout(arr) is not True:
                raise StoreError(f"{self.location.url(ZARR_DIR)}: zarr created {name!r} of batch {batch} "
                                 f"with codecs {arr.metadata.codecs}; expected one shard of zstd+crc32c chunks")
            key = arr.metadata.encode_chunk_key((0, 0, 0))
            self.location.write_bytes(f"{ZARR_DIR}/{batch_group(batch)}/{name}/{key}",
                                      encode_shard(data, self._zstd, checksum=True))
        self.location.sync_tree(f"{ZARR_DIR}/{batch_group(batch)}")

    def present(self) -> list[int]:
        """Batches that have a group in ``images.zarr``, committed or not."""
        found = (parse_batch_group(name) for name in self.location.listdir(ZARR_DIR))
        return sorted(b for b in found if b is not None)

    def delete(self, batch: int) -> None:
        """Remove the group of ``batch`` and its arrays."""
        self.location.remove_tree(f"{ZARR_DIR}/{batch_group(batch)}")


def write_sample_ids(group: zarr.Group, sample_ids: np.ndarray) -> None:
    """Write ``sample_ids`` as the group's ``sample_id`` array (int64 along ``sample``, replacing one there).

    Its fill value is -1, never a sample id: ids whose chunk was not written read as -1.
    """
    ids = np.ascontiguousarray(sample_ids, dtype=np.int64)
    arr = group.create_array(SAMPLE_ID, shape=ids.shape, dtype="int64", chunks=ids.shape, fill_value=-1,
                             chunk_key_encoding={"name": "default", "separator": "."},
                             dimension_names=DIMENSIONS[:1], overwrite=True)
    arr[...] = ids


def encode_shard(data: np.ndarray, zstd: numcodecs.Zstd, checksum: bool = False) -> bytes:
    """The bytes of one Zarr v3 shard holding every sample of ``data`` (n, H, W) as a chunk.

    As the sharding codec lays it out: the zstd-compressed chunks one after the other (each
    followed by the crc32c of its compressed bytes with ``checksum``: the inner codecs
    ``bytes, zstd, crc32c``), then the index (offset, size as little-endian uint64 per chunk)
    and its crc32c. A chunk that is all fill value (0) is left out, as zarr does.
    """
    parts = []
    index = np.empty((len(data), 2), dtype="<u8")
    offset = 0
    for i, sample in enumerate(data):
        if not sample.any():
            index[i] = _EMPTY
            continue
        chunk = zstd.encode(sample)
        if checksum:
            chunk += _crc(chunk)
        index[i] = (offset, len(chunk))
        parts.append(chunk)
        offset += len(chunk)
    body = index.tobytes()
    parts += [body, _crc(body)]
    return b"".join(parts)


def _crc(data: bytes) -> bytes:
    """The crc32c of ``data`` as zarr's ``crc32c`` codec stores it (4 bytes, little-endian)."""
    return np.array([google_crc32c.value(data)], dtype="<u4").tobytes()


@dataclass(frozen=True)
class _Shard:
    """An opened array in the store's own layout: where its chunks lie in its one shard file."""

    path: str
    index: np.ndarray  # (n, 2) uint64: offset, nbytes of each chunk
    shape: tuple[int, int]
    fill: int
    checksum: bool  # each chunk ends with the crc32c of its compressed bytes


class ChunkReader:
    """Reads single samples from ``images.zarr``, caching each opened array.

    Safe to create in a DataLoader worker: it holds only the location and caches filled on use.
    """

    def __init__(self, location: Location):
        self.location = location
        self._store: Any = None
        self._handles: dict[tuple[int, str], _Shard | zarr.Array] = {}
        self._zstd = numcodecs.Zstd()

    def shape(self, batch: int, name: str = IMAGE) -> tuple[int, int, int]:
        """Shape (n, H, W) of array ``name`` of ``batch``."""
        handle = self._handle(batch, name)
        if isinstance(handle, _Shard):
            return (len(handle.index), *handle.shape)
        return tuple(handle.shape)

    def read(self, batch: int, name: str, i: int, sample_id: int | None = None) -> np.ndarray:
        """Sample ``i`` of array ``name`` of ``batch`` as a writable (H, W) uint8 array.

        The bytes are verified (the chunk's crc32c) before they are decoded; damaged or
        missing bytes raise :class:`StoreError` naming the run, batch, array and sample
        (``sample_id`` when the caller knows it, else the row ``i``).
        """
        handle = self._handle(batch, name)
        if not isinstance(handle, _Shard):
            try:
                return np.asarray(handle[i])
            except (ValueError, RuntimeError, OSError, KeyError) as exc:
                raise self._damaged(batch, name, i, sample_id, f"{type(exc).__name__}: {exc}") from None
        offset, nbytes = handle.index[i]
        h, w = handle.shape
        if offset == _EMPTY:
            return np.full((h, w), handle.fill, dtype=np.uint8)
        try:
            raw = self.location.read_range(handle.path, int(offset), int(nbytes))
        except FileNotFoundError:
            raise self._damaged(batch, name, i, sample_id, f"{handle.path} is gone") from None
        if len(raw) != nbytes:
            raise self._damaged(batch, name, i, sample_id, f"read {len(raw)} of its {nbytes} bytes (file truncated)")
        if handle.checksum:
            if nbytes < 4 or _crc(raw[:-4]) != raw[-4:]:
                raise self._damaged(batch, name, i, sample_id, "chunk checksum (crc32c) does not match")
            raw = raw[:-4]
        out = np.empty(h * w, dtype=np.uint8)
        try:
            self._zstd.decode(raw, out=out)
        except (RuntimeError, ValueError) as exc:
            raise self._damaged(batch, name, i, sample_id, f"zstd cannot decode the chunk ({exc})") from None
        return out.reshape(h, w)

    def _damaged(self, batch: int, name: str, i: int, sample_id: int | None, why: str) -> StoreError:
        sample = f"sample {i} of the batch" if sample_id is None else f"sample {sample_id} (row {i} of the batch)"
        return StoreError(f"run {self.location.uri}, batch {batch}, array {name!r}, {sample}: {why}; "
                          "the image data is damaged")

    def _handle(self, batch: int, name: str) -> _Shard | zarr.Array:
        key = (batch, name)
        handle = self._handles.get(key)
        if handle is None:
            handle = self._open(batch, name)
            self._handles[key] = handle
        return handle

    def has(self, batch: int, name: str) -> bool:
        """Whether ``batch`` stored an array called ``name``."""
        return self.location.exists(ZARR_DIR, batch_group(batch), name, "zarr.json")

    def _open(self, batch: int, name: str) -> _Shard | zarr.Array:
        if self._store is None:
            self._store = self.location.zarr_store(ZARR_DIR, read_only=True)
        rel = f"{batch_group(batch)}/{name}"
        try:
            arr = zarr.open_array(self._store, path=rel, mode="r", zarr_format=3)
        except (FileNotFoundError, KeyError, ValueError) as exc:
            raise StoreError(f"{self.location.url(ZARR_DIR, rel)}: cannot open the array "
                             f"({type(exc).__name__}: {exc})") from None
        checksum = _own_layout(arr)
        if checksum is None:
            return arr
        n, h, w = arr.shape
        path = self.location.join(ZARR_DIR, rel, arr.metadata.encode_chunk_key((0, 0, 0)))
        where = f"run {self.location.uri}, batch {batch}, array {name!r}"
        size = n * 16 + 4
        try:
            tail = self.location.read_range(path, -size, size)
        except FileNotFoundError:
            raise StoreError(f"{where}: its shard {path} is missing") from None
        except OSError as exc:  # shorter than its index: seeking before the start fails
            raise StoreError(f"{where}: cannot read the shard index of {path} ({exc})") from None
        if len(tail) != size:
            raise StoreError(f"{where}: shard index of {path} is {len(tail)} bytes, expected {size}")
        body, crc = tail[:-4], tail[-4:]
        if _crc(body) != crc:
            raise StoreError(f"{where}: shard index checksum does not match (file {path} damaged)")
        index = np.frombuffer(body, dtype="<u8").reshape(n, 2)
        return _Shard(path=path, index=index, shape=(h, w), fill=int(arr.metadata.fill_value), checksum=checksum)


def _own_layout(arr: zarr.Array) -> bool | None:
    """Whether ``arr`` is laid out as :meth:`ImageArrays.write` writes it (one shard of zstd chunks):
    ``True`` with each chunk's crc32c (as written now), ``False`` without (runs written before
    it), ``None`` for any other layout."""
    meta = arr.metadata
    if arr.ndim != 3 or arr.dtype != np.uint8 or len(meta.codecs) != 1:
        return None
    shard = meta.codecs[0]
    if not isinstance(shard, ShardingCodec) or tuple(meta.chunk_grid.chunk_shape) != tuple(arr.shape):
        return None
    inner = shard.codecs
    index = shard.index_codecs
    if not (tuple(shard.chunk_shape) == (1, *arr.shape[1:])
            and len(inner) in (2, 3) and isinstance(inner[0], BytesCodec) and isinstance(inner[1], ZstdCodec)
            and len(index) == 2 and isinstance(index[0], BytesCodec) and isinstance(index[1], Crc32cCodec)
            and index[0].endian is not None and index[0].endian.value == "little"
            and shard.index_location == ShardingCodecIndexLocation.end):
        return None
    if len(inner) == 3:
        return True if isinstance(inner[2], Crc32cCodec) else None
    return False
