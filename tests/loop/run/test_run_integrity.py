"""What a run refuses to trust (issue 15, items 3, 5, 7 and 8): a missing or empty journal, a
checkpoint swapped together with its digest file, a truncated checkpoint (through Ray and the
CLI), and the temporary files of a killed checkpoint save."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from loop.config.run import RunConfig
from loop.run.lifecycle import RunError, resume_run, start_run
from loop.train.checkpoints import CheckpointError, load_checkpoint, save_checkpoint

SMALL = dict(n_train=8, n_val=10, n_per_cycle=6, size=64, batch_size=4, workers=2)


@pytest.fixture(scope="module")
def finished_run(ray_local, tmp_path_factory) -> Path:
    """A smoke run with cycle 0 done; each test works on a copy."""
    run = tmp_path_factory.mktemp("integrity") / "run"
    start_run(str(run), RunConfig.for_preset("smoke", cycles=0, **SMALL), say=lambda line: None)
    return run


@pytest.fixture
def run(finished_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def _events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "journal.jsonl").read_text().splitlines()]


def _swap_in_another_runs_checkpoint(run: Path, tmp_path: Path) -> None:
    """Replace cycle_000.safetensors and its .sha256 by another run's: same model, other weights."""
    ours = run / "checkpoints" / "cycle_000.safetensors"
    state, meta = load_checkpoint(str(ours))
    theirs = tmp_path / "other" / "checkpoints" / "cycle_000.safetensors"
    save_checkpoint(str(theirs), {k: v + 1 if v.is_floating_point() else v for k, v in state.items()},
                    {**meta, "n_samples": 1})
    shutil.copy(theirs, ours)
    shutil.copy(f"{theirs}.sha256", f"{ours}.sha256")


def test_resume_refuses_a_run_whose_journal_is_missing_or_empty(run) -> None:
    checkpoint = (run / "checkpoints" / "cycle_000.safetensors").read_bytes()
    (run / "journal.jsonl").unlink()
    message = (r"journal .*journal\.jsonl is missing or empty, but the run has \d+ committed batches and "
               r"checkpoints of cycles \[0\]; resuming would redo its cycles")
    with pytest.raises(RunError, match=message):
        resume_run(str(run), cycles=1, say=lambda line: None)
    (run / "journal.jsonl").write_bytes(b"")
    with pytest.raises(RunError, match=message):
        resume_run(str(run), say=lambda line: None)
    assert (run / "checkpoints" / "cycle_000.safetensors").read_bytes() == checkpoint
    assert (run / "journal.jsonl").read_bytes() == b""
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["cycle_000.safetensors",
                                                                       "cycle_000.safetensors.sha256"]


def test_a_checkpoint_swapped_with_its_digest_file_is_refused_as_the_next_cycles_start(run, tmp_path) -> None:
    recorded = next(e["digest"] for e in _events(run) if e["event"] == "trained" and e["cycle"] == 0)
    _swap_in_another_runs_checkpoint(run, tmp_path)
    # A checkpoint save killed mid-way left its temporary file: the driver removes it under the lock.
    stale = run / "checkpoints" / f"cycle_001.safetensors.tmp-{uuid.uuid4().hex}"
    stale.write_bytes(os.urandom(1000))
    lines: list[str] = []
    with pytest.raises(CheckpointError, match=rf"cycle_000\.safetensors: its digest file holds sha256 [0-9a-f]{{64}}, "
                                              rf"but the journal's trained event of cycle 0 recorded {recorded}"):
        resume_run(str(run), cycles=1, say=lines.append)
    assert not stale.exists()
    assert f"recovered: removed checkpoints/{stale.name}, left by a checkpoint save that was killed" in lines
    assert not (run / "checkpoints" / "cycle_001.safetensors").exists()  # nothing was trained from it


def test_a_checkpoint_swapped_with_its_digest_file_is_refused_by_the_evaluation(run, tmp_path) -> None:
    # The run as a driver killed between training and scoring cycle 0 leaves it.
    events = _events(run)
    trained = max(i for i, e in enumerate(events) if e["event"] == "trained")
    (run / "journal.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events[: trained + 1]))
    for fragment in (run / "metrics").glob("*_c000.parquet"):
        fragment.unlink()
    _swap_in_another_runs_checkpoint(run, tmp_path)
    with pytest.raises(CheckpointError, match=r"cycle_000\.safetensors: its digest file holds sha256 .* but the "
                                              r"journal's trained event of cycle 0 recorded"):
        resume_run(str(run), say=lambda line: None)
    assert not list((run / "metrics").glob("*_c000.parquet"))  # no scores of the swapped model


def test_a_truncated_checkpoint_reaches_the_cli_as_the_checkpoints_own_error(run) -> None:
    checkpoint = run / "checkpoints" / "cycle_000.safetensors"
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2])
    # Cycle 1 fine-tunes cycle 0's model in the trainer actor: the error is raised there, in Ray.
    out = subprocess.run([sys.executable, "-m", "loop.cli", "resume", str(run), "--cycles", "1"],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "RAY_ADDRESS": ""})
    assert out.returncode == 1, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"loop: error: checkpoint {re.escape(str(checkpoint))}: sha256 [0-9a-f]{{64}} does not "
                        rf"match [0-9a-f]{{64}} in {re.escape(str(checkpoint))}\.sha256; the file is corrupted or "
                        r"was replaced", last), out.stderr[-3000:]
    assert "ray::" not in last and "actor_id" not in last


@pytest.mark.parametrize("where", ["local", "memory"])
def test_a_fork_copies_a_verified_checkpoint_and_refuses_a_swapped_one(run, tmp_path, where) -> None:
    from loop.run.fork import fork_run
    from loop.run.journal import Journal

    recorded = next(e["digest"] for e in _events(run) if e["event"] == "trained" and e["cycle"] == 0)
    base = f"memory://fork-{uuid.uuid4().hex}" if where == "memory" else str(tmp_path)
    fork = fork_run(str(run), f"{base}/fork", policy="random", cycles=1, say=lambda line: None)
    checkpoint = f"{fork}/checkpoints/cycle_000.safetensors"
    load_checkpoint(checkpoint, digest=recorded)
    assert Journal(f"{fork}/journal.jsonl").recorded_digest(0) == recorded
    if where == "local":
        assert os.stat(checkpoint).st_ino == os.stat(run / "checkpoints" / "cycle_000.safetensors").st_ino  # linked
        assert sorted(p.name for p in tmp_path.iterdir()) == ["fork", "run"]  # no staging folder left
    _swap_in_another_runs_checkpoint(run, tmp_path)
    with pytest.raises(CheckpointError, match=rf"cycle_000\.safetensors: sha256 [0-9a-f]{{64}} does not match "
                                              rf"{recorded}, the digest recorded when it was saved"):
        fork_run(str(run), f"{base}/fork2", policy="random", cycles=1, say=lambda line: None)
    from stores import RunStore

    assert not RunStore.exists(f"{base}/fork2")


def test_a_run_made_before_safetensors_still_forks_and_resumes(run, tmp_path) -> None:
    """A run whose cycle-0 checkpoint is the old ``cycle_000.pt`` (a torch file, read weights-only)."""
    import hashlib

    import torch

    from loop.run.fork import fork_run

    folder = run / "checkpoints"
    state, meta = load_checkpoint(str(folder / "cycle_000.safetensors"))
    legacy = folder / "cycle_000.pt"
    torch.save({"format": "synthloop-checkpoint", "version": 1, "state_dict": dict(state), "meta": meta}, legacy)
    digest = hashlib.sha256(legacy.read_bytes()).hexdigest()
    (folder / "cycle_000.pt.sha256").write_text(f"{digest}  cycle_000.pt\n")
    for name in ("cycle_000.safetensors", "cycle_000.safetensors.sha256"):
        (folder / name).unlink()
    events = _events(run)
    for event in events:
        if event["event"] == "trained":
            event.update(checkpoint="cycle_000.pt", digest=digest)
    (run / "journal.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))

    fork = fork_run(str(run), str(tmp_path / "fork"), policy="random", cycles=1, say=lambda line: None)
    load_checkpoint(f"{fork}/checkpoints/cycle_000.pt", digest=digest)
    resume_run(str(run), cycles=1, say=lambda line: None)  # cycle 1 fine-tunes the legacy checkpoint
    assert sorted(p.name for p in folder.iterdir()) == ["cycle_000.pt", "cycle_000.pt.sha256",
                                                        "cycle_001.safetensors", "cycle_001.safetensors.sha256"]
    trained = [e for e in _events(run) if e["event"] == "trained"]
    assert [e["checkpoint"] for e in trained] == ["cycle_000.pt", "cycle_001.safetensors"]
    assert trained[0]["digest"] == digest
