"""Runs on object storage, for real: an S3 server (moto) on 127.0.0.1 and ``loop`` CLI processes.

The whole runs (start, status, query, show, evaluate; kill -9 and resume) take a few minutes on two
cores and are marked slow (``pytest -m slow tests/deploy``); the store, lease and commit
tests run by default. ``test_s3_cluster.py`` runs a whole run on a two-node Ray cluster.

The endpoint and credentials reach every process the standard way (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``...), so nothing in the project knows it talks to moto. The run directory
is only on the server: each successful read by a Ray generator task, the trainer or the
evaluator actor is a read from the server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from s3server import BUCKET, keys

from loop.train.checkpoints import load_checkpoint
from loop.run.journal import Journal
from loop.run.lock import LOCK_FILE, RunLock, RunLockedError
from stores import RunStore

SMALL_ARGS = ["--n-train", "8", "--n-val", "10", "--n-test", "0", "--n-per-cycle", "6", "--size", "64", "--workers", "2"]
START_ARGS = ["--policy", "worst10", "--preset", "smoke", "--cycles", "1", *SMALL_ARGS]


def loop_cli(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``loop ARGS`` in a fresh process (it inherits the S3 environment of this one)."""
    out = subprocess.run([sys.executable, "-m", "loop.cli", *args], cwd=cwd, capture_output=True, text=True,
                         env={**os.environ, "RAY_ADDRESS": ""}, timeout=540)
    if check:
        assert out.returncode == 0, f"loop {' '.join(args)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out


def param_rows(run: str) -> list[dict]:
    """The parameter table without creation times and batch numbers, in sample-id order (as test_runs)."""
    table = RunStore.open(run).params().drop(["created_at", "batch"]).sort_by("sample_id")
    return table.to_pylist()


@pytest.fixture(scope="module")
def s3_run(s3, tmp_path_factory) -> tuple[str, Path]:
    """An uninterrupted smoke run on S3 made by `loop start`, and the (empty) folder it ran in."""
    cwd = tmp_path_factory.mktemp("s3-run-cwd")
    run = f"s3://{BUCKET}/runs/reference"
    out = loop_cli("start", "--run", run, *START_ARGS, cwd=cwd)
    assert "cycles 0..1 done" in out.stdout
    return run, cwd


@pytest.mark.slow
def test_a_run_lives_on_s3_end_to_end(s3_run) -> None:
    run, cwd = s3_run
    assert list(cwd.iterdir()) == [], "the run wrote to local disk"
    stored = keys("runs/reference/")
    for name in ("run.toml", "journal.jsonl", "params/b000000.parquet", "metrics/val_c000.parquet",
                 "metrics/val_c001.parquet", "checkpoints/cycle_001.safetensors",
                 "checkpoints/cycle_001.safetensors.sha256",
                 "images.zarr/b000000/image/zarr.json"):
        assert f"runs/reference/{name}" in stored
    assert f"runs/reference/{LOCK_FILE}" not in stored  # the driver's lease was released

    store = RunStore.open(run)
    assert store.uri == run
    params = store.params()
    assert params.num_rows == 10 + 8 + 6
    image, mask = store.view(split="val")[0]
    assert image.shape == mask.shape == (64, 64) and image.dtype == np.uint8
    events = [e["event"] for e in Journal(store.path("journal.jsonl")).events()]
    assert events[0] == "started" and events[-1] == "finished" and events.count("cycle_done") == 2
    state, meta = load_checkpoint(store.path("checkpoints", "cycle_001.safetensors"))  # digest checked on load
    assert state and meta

    status = json.loads(loop_cli("status", run, "--json", cwd=cwd).stdout)
    assert status["run"] == run and status["finished"]
    assert [c["state"] for c in status["cycles"]] == ["done", "done"]
    assert status["cycles"][0]["samples"] == {"val": 10, "random": 8}
    assert 0 <= status["cycles"][1]["val"]["miou"] <= 1

    sql = "SELECT split, count(*) AS n, count(iou) AS scored FROM samples GROUP BY split ORDER BY split"
    rows = json.loads(loop_cli("query", run, sql, "--format", "json", cwd=cwd).stdout)
    assert rows == [{"split": "train", "n": 14, "scored": 0}, {"split": "val", "n": 10, "scored": 10}]

    assert "contact_sheet.png" in loop_cli("show", run, "--n", "4", cwd=cwd).stdout
    assert store._location.read_bytes("reports/contact_sheet.png")[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(cwd.iterdir()) == []


def test_recovery_removes_a_killed_writers_batch_on_s3(s3) -> None:
    from generators import get_generator
    from loop.run.driver import policy_view
    from loop.run.generation import plan_batches, render_plan
    from policies import get_policy

    gen = get_generator("grains")
    run = f"s3://{BUCKET}/runs/recovery"
    store = RunStore.create(run, generator_name=gen.name, generator_version=gen.version, task=gen.task,
                            space=gen.space, config={})
    proposals = get_policy("random").propose(policy_view(store, 0), 6, np.random.default_rng(0))
    plans = plan_batches(proposals=proposals, first_sample_id=0, first_batch=0, batch_size=3, seed=0, cycle=0,
                         split="train", size=32)
    for plan in plans:
        store.write_batch(plan.batch, *render_plan("grains", plan))
    # As if the writer of batch 1 had been killed after its arrays and before its commit:
    fs = store._location.fs
    fs.rm_file(f"{BUCKET}/runs/recovery/params/b000001.parquet")
    fs.pipe_file(f"{BUCKET}/runs/recovery/params/.b000001.claim", b'{"pid": 1, "host": "elsewhere"}')
    assert any(k.startswith("runs/recovery/images.zarr/b000001/") for k in keys("runs/recovery/"))

    again = RunStore.open(run, recover=True)
    assert again.recovered == [1] and again.removed_files == ["params/.b000001.claim"]
    left = keys("runs/recovery/")
    assert not any(k.startswith("runs/recovery/images.zarr/b000001/") or k.endswith(".claim") for k in left)
    assert again.committed_batches() == [0]
    again.write_batch(1, *render_plan("grains", plans[1]))  # the batch can be redone
    assert RunStore.open(run).params().num_rows == 6


def test_a_commit_never_replaces_an_object(s3) -> None:
    from generators import get_generator
    from stores import StoreError

    gen = get_generator("grains")
    run = f"s3://{BUCKET}/runs/twice"
    RunStore.create(run, generator_name=gen.name, generator_version=gen.version, task=gen.task, space=gen.space,
                    config={"a": 1})
    with pytest.raises(StoreError, match="already exists"):
        RunStore.create(run, generator_name=gen.name, generator_version=gen.version, task=gen.task,
                        space=gen.space, config={"a": 2})
    # The conditional put itself (If-None-Match), without the existence check in front of it:
    fs = RunStore.open(run)._location.fs
    with pytest.raises(FileExistsError):
        fs.pipe_file(f"{BUCKET}/runs/twice/run.toml", b"x", mode="create")
    assert RunStore.open(run).config == {"a": 1}


def _lease_record(pid: int, host: str, renewed: float) -> bytes:
    return json.dumps({"pid": pid, "host": host, "token": "other", "renewed": renewed}).encode()


def test_the_run_lease_on_s3(s3) -> None:
    import fsspec

    run = f"s3://{BUCKET}/runs/lease"
    fs = fsspec.filesystem("s3", use_listings_cache=False)
    lock_key = f"{BUCKET}/runs/lease/{LOCK_FILE}"
    code = ("import sys; from loop.run.lock import RunLock, RunLockedError\n"
            f"try:\n    RunLock({run!r}).acquire()\nexcept RunLockedError as e:\n    print(e); sys.exit(3)\n")
    with RunLock(run, lease_s=3):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert out.returncode == 3, out.stderr[-2000:]
        assert "is in use by pid" in out.stdout and "its lease expires" in out.stdout
        first = json.loads(fs.cat_file(lock_key))["renewed"]
        deadline = time.monotonic() + 30
        while json.loads(fs.cat_file(lock_key))["renewed"] == first and time.monotonic() < deadline:
            time.sleep(0.1)
        assert json.loads(fs.cat_file(lock_key))["renewed"] > first  # renewed in the background
    assert not fs.exists(lock_key)

    # A driver of this host killed with -9 leaves its lease behind; the next driver takes it over.
    killed = ("import os, signal; from loop.run.lock import RunLock\n"
              f"RunLock({run!r}).acquire(); os.kill(os.getpid(), signal.SIGKILL)\n")
    subprocess.run([sys.executable, "-c", killed], timeout=120)
    assert fs.exists(lock_key)
    RunLock(run).acquire().release()

    # Another host's lease: refused while it is renewed, taken over once abandoned.
    fs.pipe_file(lock_key, _lease_record(1, "other-host", time.time()))
    with pytest.raises(RunLockedError, match="in use by pid 1 on other-host"):
        RunLock(run).acquire()
    fs.pipe_file(lock_key, _lease_record(1, "other-host", time.time() - 3600))
    lock = RunLock(run).acquire()
    assert json.loads(fs.cat_file(lock_key))["pid"] == os.getpid()
    lock.release()

    fs.pipe_file(lock_key, b"not json")
    with pytest.raises(RunLockedError, match="not a lease written by loop"):
        RunLock(run).acquire()
    fs.rm_file(lock_key)


def _start_and_kill(run: str, cwd: Path, after_event: str, cycle: int) -> None:
    """`loop start` in its own process group, SIGKILLed as a whole once ``after_event`` is journaled on S3."""
    proc = subprocess.Popen([sys.executable, "-m", "loop.cli", "start", "--run", run, *START_ARGS], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "RAY_ADDRESS": ""})
    journal = Journal(f"{run}/journal.jsonl")
    deadline = time.monotonic() + 400
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if journal.find(after_event, cycle=cycle):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before the kill point"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
def test_kill_9_then_resume_on_s3_gives_the_uninterrupted_run(s3_run, tmp_path) -> None:
    reference, _ = s3_run
    run = f"s3://{BUCKET}/runs/killed"
    _start_and_kill(run, tmp_path, "trained", 0)
    assert f"runs/killed/{LOCK_FILE}" in keys("runs/killed/")  # the killed driver's lease is left behind
    assert not Journal(f"{run}/journal.jsonl").find("finished")

    out = loop_cli("resume", run, cwd=tmp_path)
    assert "cycles 0..1 done" in out.stdout
    got, want = param_rows(run), param_rows(reference)
    assert [r["sample_id"] for r in got] == [r["sample_id"] for r in want]
    assert got == want
    status = json.loads(loop_cli("status", run, "--json", cwd=tmp_path).stdout)
    assert status["finished"] and [c["state"] for c in status["cycles"]] == ["done", "done"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_evaluate_writes_scores_and_overlays_next_to_the_run_on_s3(s3_run, shared_data, tmp_path) -> None:
    import shutil

    run, _ = s3_run
    real = tmp_path / "real"
    names = ["tbm_22-0-0.png", "tbm_22-256-0.png"]
    for folder in ("images", "masks"):
        (real / folder).mkdir(parents=True)
        for name in names:
            shutil.copy(shared_data / "grains" / folder / name, real / folder / name)
    result = json.loads(loop_cli("evaluate", run, "--real", str(real), "--json", cwd=tmp_path).stdout)
    assert result["n_images"] == 2
    stored = keys("runs/reference/reports/real_cycle_001/")
    assert "runs/reference/reports/real_cycle_001/scores.json" in stored
    assert {f"runs/reference/reports/real_cycle_001/{n}" for n in names} <= set(stored)  # the overlays
