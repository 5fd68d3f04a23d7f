"""The loop end to end on the smoke preset: start, status, resume, kill -9 and resume, the lock,
training progress."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.compute as pc
import pytest

from loop.run.journal import Journal
from loop.run.lock import RunLock
from loop.config.run import RunConfig
from loop.run.lifecycle import RunError, resume_run, run_status, start_run
from stores import RunStore

SMALL = dict(n_train=8, n_val=10, n_per_cycle=6, size=64, batch_size=4, workers=2)
KEY_COLUMNS = ["sample_id", "batch", "cycle", "split", "policy", "parent_id", "seed"]


def small_config(**overrides) -> RunConfig:
    return RunConfig.for_preset("smoke", **{**SMALL, **overrides})


def param_rows(run: str) -> list[dict]:
    """The parameter table without its creation times, in sample-id order."""
    table = RunStore.open(run).params().drop(["created_at"]).sort_by("sample_id")
    return table.to_pylist()


def test_start_status_and_resume_more_cycles(ray_local, tmp_path) -> None:
    run = str(tmp_path / "run")
    lines: list[str] = []
    records: list[dict] = []
    start_run(run, small_config(cycles=1), say=lines.append, train_progress=records.append)
    assert any("cycle 1/1" in line for line in lines)

    # Training progress: one record per epoch of each cycle's schedule (2 stages of 1 epoch in
    # smoke), mid-epoch ones maybe in between, all journaled as they came.
    epochs = [(r["cycle"], r["stage"], r["epoch"]) for r in records if r["kind"] == "epoch"]
    assert epochs == [(0, 0, 0), (0, 1, 0), (1, 0, 0), (1, 1, 0)]
    for r in records:
        assert {"stage_name", "epochs", "loss", "images_per_s", "elapsed_s", "eta_s", "fraction"} <= set(r)
    assert records[-1]["fraction"] == 1 and records[-1]["eta_s"] == 0
    journaled = [e for e in Journal(str(Path(run) / "journal.jsonl")).events() if e["event"] == "train_progress"]
    assert [(e["cycle"], e["stage"], e["epoch"]) for e in journaled if e["kind"] == "epoch"] == epochs

    info = run_status(run)
    assert [c["state"] for c in info["cycles"]] == ["done", "done"]
    assert info["state"] == "finished" and info["lock_holder"] is None
    assert not any("train_progress" in c for c in info["cycles"])  # only unfinished cycles carry it
    assert info["cycles"][0]["samples"] == {"val": 10, "random": 8}
    assert info["cycles"][1]["samples"] == {"worst:k=0.1,m=10,radius=0.05": 6}
    assert 0 <= info["cycles"][1]["val"]["miou"] <= 1
    assert set(info["cycles"][0]["wall_s"]) >= {"generated", "trained", "evaluated", "cycle_done"}

    store = RunStore.open(run)
    params = store.params()
    val = params.filter(pc.equal(params["split"], "val"))
    new = params.filter(pc.equal(params["cycle"], 1))
    # worst10 on 10 validation samples: the single worst sample is the parent of every new one.
    metrics = store.metrics().filter(pc.equal(store.metrics()["cycle"], 0))
    worst = min(zip(metrics["iou"].to_pylist(), metrics["sample_id"].to_pylist()))[1]
    assert set(new["parent_id"].to_pylist()) == {worst}
    assert worst in val["sample_id"].to_pylist()
    assert sorted(store.metrics()["cycle"].unique().to_pylist()) == [0, 1]
    for cycle in (0, 1):
        assert Path(store.path("checkpoints", f"cycle_{cycle:03d}.pt")).exists()

    with pytest.raises(RunError, match="is finished .* pass --cycles N"):
        resume_run(run)
    with pytest.raises(RunError, match="--cycles 0: the run already aims at 1 cycles"):
        resume_run(run, cycles=0)
    resume_run(run, cycles=2, say=lines.append)  # replays a journal full of train_progress events
    assert [c["state"] for c in run_status(run)["cycles"]] == ["done"] * 3
    assert len(param_rows(run)) == 10 + 8 + 6 + 6


def test_bad_input_changes_nothing(ray_local, tmp_path) -> None:
    from generators import GeneratorError
    from policies import PolicyError

    with pytest.raises(PolicyError, match="unknown policy 'nope'.*random"):
        start_run(str(tmp_path / "a"), small_config(policy="nope"))
    with pytest.raises(PolicyError, match="k"):
        start_run(str(tmp_path / "a"), small_config(policy="worst:k=2"))
    with pytest.raises(GeneratorError, match="unknown generator 'nope'; known: .*grains"):
        start_run(str(tmp_path / "a"), small_config(generator="nope"))
    assert not (tmp_path / "a").exists()
    from stores import StoreError

    with pytest.raises(StoreError, match="not a run"):
        resume_run(str(tmp_path))


def test_second_driver_on_the_same_run_is_refused(ray_local, tmp_path) -> None:
    run = str(tmp_path / "run")
    start_run(run, small_config(cycles=0))
    before = (tmp_path / "run" / "journal.jsonl").read_text()
    with RunLock(run):  # as if another `loop` process were driving the run
        with pytest.raises(RuntimeError, match="is in use by pid"):
            resume_run(run, cycles=1)
    assert (tmp_path / "run" / "journal.jsonl").read_text() == before


def _unfinished_run(tmp_path) -> str:
    """A run whose journal stops in cycle 0's training, as a killed driver leaves it."""
    from generators import get_generator

    gen = get_generator("grains")
    run = str(tmp_path / "run")
    config = small_config(cycles=1)
    RunStore.create(run, generator_name=gen.name, generator_version=gen.version, task=gen.task, space=gen.space,
                    config={"run": config.to_dict()})
    journal = Journal(str(Path(run) / "journal.jsonl"))
    journal.append("started", cycles=1, pid=os.getpid())
    journal.append("generated", cycle=0, samples=18, wall_s=1.0)
    journal.append("train_progress", cycle=0, kind="epoch", stage=0, stages=2, stage_name="head @64px", epoch=0,
                   epochs=1, step=2, steps=2, loss=0.9, images_per_s=10.0, elapsed_s=1.5, eta_s=2.0, fraction=0.4)
    return run


def test_status_tells_an_interrupted_cycle_from_a_running_one(tmp_path) -> None:
    run = _unfinished_run(tmp_path)
    # The driver is gone: .lock still names it, but nobody holds the lock and its pid is dead.
    (Path(run) / ".lock").write_text("pid 999999999 on somewhere")
    info = run_status(run)
    assert info["state"] == "interrupted" and info["lock_holder"] is None
    assert [c["state"] for c in info["cycles"]] == ["interrupted", "pending"]
    assert info["cycles"][0]["train_progress"]["fraction"] == 0.4 and "time" in info["cycles"][0]["train_progress"]

    # A live process holds the lock: the cycle is running.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from loop.run.lock import RunLock; lock = RunLock(sys.argv[1]).acquire(); "
                               "print('held', flush=True); time.sleep(600)", run],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        info = run_status(run)
        assert info["state"] == "running" and info["lock_holder"].startswith(f"pid {holder.pid} on ")
        assert [c["state"] for c in info["cycles"]] == ["running", "pending"]
    finally:
        holder.kill()
        holder.wait()
    # Killed (-9): the OS dropped its lock, so the cycle is interrupted again.
    assert [c["state"] for c in run_status(run)["cycles"]] == ["interrupted", "pending"]
    with RunLock(run):
        assert run_status(run)["state"] == "running"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "loop.cli", *args]


def _start_and_kill(run: str, after_event: str, cycle: int, before_kill=lambda: None) -> None:
    """Start a run in its own process group and SIGKILL the whole group once ``after_event`` is journaled
    (``before_kill()`` is called just before)."""
    args = _cli("start", "--run", run, "--policy", "worst10", "--preset", "smoke", "--cycles", "1",
                *[f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items() if k != "batch_size"])
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "RAY_ADDRESS": ""})
    journal = Path(run) / "journal.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists():
            events = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
            if any(e["event"] == after_event and e.get("cycle") == cycle for e in events):
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the kill point"
    before_kill()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def reference_run(ray_local, tmp_path_factory) -> str:
    """The uninterrupted run that every killed-and-resumed run must reproduce."""
    run = str(tmp_path_factory.mktemp("reference") / "run")
    start_run(run, small_config(cycles=1, batch_size=16))
    return run


@pytest.mark.parametrize(("after_event", "cycle"), [("generated", 0), ("train_progress", 0), ("trained", 0),
                                                    ("planned", 1)])
def test_kill_9_then_resume_gives_the_uninterrupted_run(reference_run, tmp_path, after_event, cycle) -> None:
    reference = reference_run
    killed = str(tmp_path / "killed")
    seen = []
    _start_and_kill(killed, after_event, cycle, before_kill=lambda: seen.append(run_status(killed)))
    assert not any(e.get("event") == "finished" for e in map(json.loads, Path(killed, "journal.jsonl").read_text().splitlines()))
    # While its driver lived the run was running; killed, it is interrupted.
    assert seen[0]["state"] == "running" and seen[0]["lock_holder"]
    after = run_status(killed)
    assert after["state"] == "interrupted" and after["lock_holder"] is None
    assert after["cycles"][cycle]["state"] == "interrupted"
    if after_event == "train_progress":  # killed in training: the status shows how far it got
        assert seen[0]["cycles"][0]["state"] == "running" and "train_progress" in after["cycles"][0]
    resume_run(killed)  # past the train_progress events of the killed driver

    got, want = param_rows(killed), param_rows(reference)
    assert [r["sample_id"] for r in got] == [r["sample_id"] for r in want]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "batch"} for r in rows]  # noqa: E731
    assert strip(got) == strip(want)
    assert len({r["sample_id"] for r in got}) == len(got)
