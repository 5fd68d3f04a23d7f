"""Checkpoints: round trip with digest, corruption and mismatch errors naming the file."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid

import pytest
import torch
from torch import nn

from loop.train.checkpoints import (
    CheckpointError,
    check_recorded_digest,
    load_checkpoint,
    load_state_into,
    read_verified,
    remove_temporaries,
    save_checkpoint,
)


def _state(out_features: int = 3) -> dict:
    torch.manual_seed(0)
    return nn.Linear(2, out_features).state_dict()


def test_round_trip_keeps_state_meta_and_digest(tmp_path):
    uri = str(tmp_path / "sub" / "c.pt")
    meta = {"model": {"encoder": "resnet18"}, "losses": [1.0, 0.5], "n": 3, "t": torch.arange(3), "none": None}
    digest = save_checkpoint(uri, _state(), meta)
    data = (tmp_path / "sub" / "c.pt").read_bytes()
    assert digest == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "sub" / "c.pt.sha256").read_text() == f"{digest}  c.pt\n"
    state, got = load_checkpoint(uri)
    for k, v in _state().items():
        assert torch.equal(state[k], v)
    assert got["model"] == meta["model"] and got["losses"] == [1.0, 0.5] and got["none"] is None
    assert torch.equal(got["t"], torch.arange(3))
    assert not list(tmp_path.glob("sub/*.tmp-*"))


def test_fsspec_uris_work():
    uri = "memory://synthloop-test/ckpt/a.pt"
    save_checkpoint(uri, _state(), {"x": 1})
    state, meta = load_checkpoint(uri)
    assert meta == {"x": 1} and set(state) == {"weight", "bias"}


def test_corrupted_file_is_refused(tmp_path):
    uri = str(tmp_path / "c.pt")
    save_checkpoint(uri, _state(), {})
    data = bytearray((tmp_path / "c.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "c.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"c\.pt.*sha256.*corrupted"):
        load_checkpoint(uri)


def test_missing_or_malformed_digest_is_refused(tmp_path):
    uri = str(tmp_path / "c.pt")
    save_checkpoint(uri, _state(), {})
    (tmp_path / "c.pt.sha256").write_text("not a digest\n")
    with pytest.raises(CheckpointError, match=r"c\.pt\.sha256 holds no sha256"):
        load_checkpoint(uri)
    (tmp_path / "c.pt.sha256").unlink()
    with pytest.raises(CheckpointError, match=r"digest file .*c\.pt\.sha256 is missing"):
        load_checkpoint(uri)
    with pytest.raises(CheckpointError, match=r"nothere\.pt: file not found"):
        load_checkpoint(str(tmp_path / "nothere.pt"))


def test_foreign_file_with_a_valid_digest_is_refused(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"definitely not a torch file")
    (tmp_path / "junk.pt.sha256").write_text(hashlib.sha256(path.read_bytes()).hexdigest() + "  junk.pt\n")
    with pytest.raises(CheckpointError, match=r"junk\.pt: cannot be read"):
        load_checkpoint(str(path))
    other = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(1)}, other)
    (tmp_path / "plain.pt.sha256").write_text(hashlib.sha256(other.read_bytes()).hexdigest() + "\n")
    with pytest.raises(CheckpointError, match=r"plain\.pt: not a synthloop-checkpoint"):
        load_checkpoint(str(other))


def test_meta_must_be_plain(tmp_path):
    with pytest.raises(CheckpointError, match=r"meta\.cfg.*got object"):
        save_checkpoint(str(tmp_path / "c.pt"), _state(), {"cfg": object()})
    with pytest.raises(CheckpointError, match=r"meta\.loss.*finite"):
        save_checkpoint(str(tmp_path / "c.pt"), _state(), {"loss": float("nan")})
    assert not (tmp_path / "c.pt").exists()


def test_loading_into_a_different_architecture_names_keys_and_shapes(tmp_path):
    uri = str(tmp_path / "c.pt")
    save_checkpoint(uri, _state(3), {})
    state, _ = load_checkpoint(uri)
    with pytest.raises(CheckpointError, match=r"c\.pt.*shape mismatch.*weight: \(3, 2\) given, \(4, 2\) expected"):
        load_state_into(nn.Linear(2, 4), state, f"checkpoint {uri}")
    with pytest.raises(CheckpointError, match=r"missing key\(s\): 0\.weight.*unexpected key\(s\): weight"):
        load_state_into(nn.Sequential(nn.Linear(2, 3)), state, f"checkpoint {uri}")
    model = nn.Linear(2, 3)
    load_state_into(model, state, f"checkpoint {uri}")
    assert torch.equal(model.weight, state["weight"])


# --- durability and recorded digests (issue 15, items 7 and 8) ------------------------------------


def test_save_returns_once_both_files_and_their_names_are_on_disk(tmp_path, monkeypatch):
    log: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        log.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        log.append(("rename", os.fspath(src), os.fspath(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    folder = tmp_path / "checkpoints"
    save_checkpoint(str(folder / "cycle_000.pt"), _state(), {})
    for name in ("cycle_000.pt", "cycle_000.pt.sha256"):
        final = str(folder / name)
        renamed = next(i for i, e in enumerate(log) if e[0] == "rename" and e[2] == final)
        tmp = log[renamed][1]
        assert tmp.startswith(final + ".tmp-")
        assert ("fsync", tmp) in log[:renamed]  # the bytes before the name
        assert ("fsync", str(folder)) in log[renamed + 1:]  # the name after the rename
    assert ("fsync", str(tmp_path)) in log  # the new checkpoints folder's own name
    assert sorted(p.name for p in folder.iterdir()) == ["cycle_000.pt", "cycle_000.pt.sha256"]


def test_remove_temporaries_takes_only_what_a_killed_save_left(tmp_path):
    folder = tmp_path / "checkpoints"
    save_checkpoint(str(folder / "cycle_000.pt"), _state(), {})
    stale = [f"cycle_001.pt.tmp-{uuid.uuid4().hex}", f"cycle_001.pt.sha256.tmp-{uuid.uuid4().hex}"]
    for name in stale:
        (folder / name).write_bytes(b"half a checkpoint")
    (folder / "notes.tmp-1").write_text("not ours")
    assert sorted(remove_temporaries(str(folder))) == sorted(stale)
    assert sorted(p.name for p in folder.iterdir()) == ["cycle_000.pt", "cycle_000.pt.sha256", "notes.tmp-1"]
    assert remove_temporaries(str(tmp_path / "none")) == []
    load_checkpoint(str(folder / "cycle_000.pt"))


def test_a_checkpoint_swapped_with_its_digest_file_fails_against_the_recorded_digest(tmp_path):
    ours = tmp_path / "run" / "checkpoints" / "cycle_000.pt"
    theirs = tmp_path / "other" / "checkpoints" / "cycle_000.pt"
    recorded = save_checkpoint(str(ours), _state(), {"run": "ours"})
    other = save_checkpoint(str(theirs), _state(4), {"run": "theirs"})
    check_recorded_digest(str(ours), recorded, "the journal")
    assert read_verified(str(ours), recorded) == ours.read_bytes()
    shutil.copy(theirs, ours)
    shutil.copy(str(theirs) + ".sha256", str(ours) + ".sha256")
    load_checkpoint(str(ours))  # consistent with its own digest file...
    with pytest.raises(CheckpointError, match=rf"cycle_000\.pt: its digest file holds sha256 {other}, but the "
                                              rf"journal recorded {recorded}"):
        check_recorded_digest(str(ours), recorded, "the journal")  # ...but not with the record
    with pytest.raises(CheckpointError, match=rf"sha256 {other} does not match {recorded}, the digest recorded"):
        load_checkpoint(str(ours), digest=recorded)
    with pytest.raises(CheckpointError, match="records no sha256 hex digest"):
        check_recorded_digest(str(ours), "abc", "the journal")


def test_a_save_over_an_older_checkpoint_replaces_it_whole(tmp_path):
    uri = str(tmp_path / "c.pt")
    save_checkpoint(uri, _state(3), {"n": 1})
    digest = save_checkpoint(uri, _state(4), {"n": 2})
    state, meta = load_checkpoint(uri, digest=digest)
    assert meta == {"n": 2} and state["weight"].shape == (4, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt", "c.pt.sha256"]


# --- safetensors, and the legacy torch format (issue 17, item 2) -----------------------------------


def _legacy_save(path, state: dict, meta: dict) -> str:
    """Write ``path`` as checkpoints were written before safetensors (format version 1)."""
    torch.save({"format": "synthloop-checkpoint", "version": 1, "state_dict": state, "meta": meta}, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")
    return digest


def test_a_checkpoint_is_a_safetensors_file_with_its_meta_as_json(tmp_path):
    from safetensors import safe_open

    uri = str(tmp_path / "cycle_000.safetensors")
    meta = {"model": {"encoder": "resnet18", "sizes": (64, 128)}, "n": 3, "t": torch.arange(3)}
    save_checkpoint(uri, _state(), meta)
    assert (tmp_path / "cycle_000.safetensors").read_bytes()[:4] != b"PK\x03\x04"  # no torch zip, no pickle
    with safe_open(uri, framework="pt") as f:  # any safetensors reader sees the weights by name
        header = f.metadata()
        assert set(f.keys()) == {"weight", "bias", "@0"}
        assert torch.equal(f.get_tensor("weight"), _state()["weight"])
    assert header["format"] == "synthloop-checkpoint" and header["version"] == "2"
    assert json.loads(header["meta"]) == {"model": {"encoder": "resnet18", "sizes": [64, 128]}, "n": 3,
                                          "t": {"$tensor": "@0"}}
    state, got = load_checkpoint(uri)
    assert list(state) == ["weight", "bias"] and got["model"]["sizes"] == [64, 128]
    assert torch.equal(got["t"], torch.arange(3))
    with pytest.raises(CheckpointError, match=r"meta\.x: key '\$tensor' is reserved"):
        save_checkpoint(uri, _state(), {"x": {"$tensor": "@0"}})
    with pytest.raises(CheckpointError, match=r"model_state key '@0' starts with '@'"):
        save_checkpoint(uri, {"@0": torch.zeros(1)}, {})


def test_shared_and_strided_tensors_are_written_whole(tmp_path):
    base = torch.arange(12.0).reshape(3, 4)
    state = {"a": base, "b": base[:, 1], "c": base}  # safetensors refuses shared memory as it is
    save_checkpoint(str(tmp_path / "c.safetensors"), state, {"again": base})
    back, meta = load_checkpoint(str(tmp_path / "c.safetensors"))
    assert torch.equal(back["b"], base[:, 1]) and torch.equal(back["c"], base) and torch.equal(meta["again"], base)


def test_a_legacy_torch_checkpoint_still_loads(tmp_path):
    path = tmp_path / "cycle_000.pt"
    digest = _legacy_save(path, _state(), {"model": {"encoder": "resnet18"}, "losses": [1.0, 0.5]})
    state, meta = load_checkpoint(str(path), digest=digest)
    assert torch.equal(state["weight"], _state()["weight"]) and meta["losses"] == [1.0, 0.5]


class Payload:
    """Any class: unpickling it would run code chosen by whoever wrote the file."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_pickle_is_refused_and_never_unpickled(tmp_path, capfd):
    import pickle

    path = tmp_path / "cycle_000.pt"
    _legacy_save(path, _state(), {"model": Payload()})
    with pytest.raises(CheckpointError, match=r"cycle_000\.pt: refused: a legacy torch file holding pickled objects "
                                              r"other than tensors.*GLOBAL .*system"):
        load_checkpoint(str(path))
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(Payload()))
    (tmp_path / "raw.pt.sha256").write_text(hashlib.sha256(raw.read_bytes()).hexdigest() + "  raw.pt\n")
    with pytest.raises(CheckpointError, match=r"raw\.pt: cannot be read: neither a safetensors file nor a legacy "
                                              r"torch checkpoint$"):
        load_checkpoint(str(raw))
    assert "pwned" not in capfd.readouterr().out


def test_remove_temporaries_knows_safetensors(tmp_path):
    stale = f"cycle_002.stage.safetensors.tmp-{uuid.uuid4().hex}"
    (tmp_path / stale).write_bytes(b"half")
    assert remove_temporaries(str(tmp_path)) == [stale]
