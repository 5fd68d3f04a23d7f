"""Locations: path joins, the link-or-fail commit and exclusive create, local and fsspec."""

from __future__ import annotations

import os

import fsspec
import numpy as np
import pytest
import zarr

from stores.images import encode_shard
from stores.location import Location


@pytest.fixture(params=["local", "memory"])
def location(request, tmp_path):
    if request.param == "local":
        yield Location(tmp_path / "run")
    else:
        yield Location("memory://synthloop-test-location/run")
        fsspec.filesystem("memory").rm("/synthloop-test-location", recursive=True)


def test_uris_and_joins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = Location("relative/run")
    assert local.local and local.uri == str(tmp_path / "relative" / "run")
    assert local.join("params", "b000001.parquet") == f"{local.uri}/params/b000001.parquet"
    assert Location(f"file://{tmp_path}/run").uri == str(tmp_path / "run")
    remote = Location("memory://bucket/run/")
    assert not remote.local and remote.uri == "memory:///bucket/run"
    assert remote.url("run.toml") == "memory:///bucket/run/run.toml"


def test_commit_never_replaces_and_leaves_no_temp_file(location):
    location.makedirs("params")
    location.commit_bytes("params/b000001.parquet", b"first")
    with pytest.raises(FileExistsError):
        location.commit_bytes("params/b000001.parquet", b"second")
    assert location.read_bytes("params/b000001.parquet") == b"first"
    assert location.listdir("params") == ["b000001.parquet"]


def test_exclusive_create_and_remove(location):
    location.makedirs("params")
    location.create_exclusive("params/.b000002.claim", b"me")
    with pytest.raises(FileExistsError):
        location.create_exclusive("params/.b000002.claim", b"you")
    location.remove("params/.b000002.claim")
    location.remove("params/.b000002.claim")  # already gone: no error
    assert location.listdir("params") == [] and location.listdir("absent") == []


def test_read_range_from_start_and_end(location):
    location.makedirs("")
    location.write_bytes("data/blob", bytes(range(10)))
    path = location.join("data", "blob")
    assert location.read_range(path, 2, 3) == bytes([2, 3, 4])
    assert location.read_range(path, -4, 4) == bytes([6, 7, 8, 9])


def test_an_encoded_shard_is_what_zarr_reads(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (5, 12, 10), dtype=np.uint8)
    data[3] = 0
    from zarr.codecs import ZstdCodec
    import numcodecs

    arr = zarr.create_array(str(tmp_path / "a"), shape=data.shape, dtype="uint8", chunks=(1, 12, 10),
                            shards=data.shape, compressors=ZstdCodec(level=1), fill_value=0)
    shard = os.path.join(str(tmp_path / "a"), arr.metadata.encode_chunk_key((0, 0, 0)))
    os.makedirs(os.path.dirname(shard))
    with open(shard, "wb") as f:
        f.write(encode_shard(data, numcodecs.Zstd(level=1)))
    assert np.array_equal(zarr.open_array(str(tmp_path / "a"), mode="r")[...], data)


def test_exists_path_and_fragment_names(tmp_path, run) -> None:
    from stores import RunStore

    assert not RunStore.exists(tmp_path / "nothing")
    store = run
    assert RunStore.exists(tmp_path / "run")
    assert store.path("checkpoints", "cycle_000.pt") == str(tmp_path / "run" / "checkpoints" / "cycle_000.pt")
    assert store.metric_fragment_names() == []


def test_an_encoded_shard_with_chunk_checksums_is_what_zarr_reads(tmp_path):
    import numcodecs
    from zarr.codecs import Crc32cCodec, ZstdCodec

    rng = np.random.default_rng(1)
    data = rng.integers(0, 255, (4, 9, 11), dtype=np.uint8)
    data[2] = 0
    arr = zarr.create_array(str(tmp_path / "a"), shape=data.shape, dtype="uint8", chunks=(1, 9, 11),
                            shards=data.shape, compressors=(ZstdCodec(level=1), Crc32cCodec()), fill_value=0)
    shard = os.path.join(str(tmp_path / "a"), arr.metadata.encode_chunk_key((0, 0, 0)))
    os.makedirs(os.path.dirname(shard))
    with open(shard, "wb") as f:
        f.write(encode_shard(data, numcodecs.Zstd(level=1), checksum=True))
    assert np.array_equal(zarr.open_array(str(tmp_path / "a"), mode="r")[...], data)
