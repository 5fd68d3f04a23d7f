"""Checkpoints: round trip with digest, corruption and mismatch errors naming the file."""

from __future__ import annotations

import hashlib

import pytest
import torch
from torch import nn

from loop.train.checkpoints import CheckpointError, load_checkpoint, load_state_into, save_checkpoint


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
