"""`loop generate` on a run in use (issue 15, items 1 and 9): it holds the run lock, refuses a run a
driver or another `generate` holds (naming the holder), recovers only under the lock, leaves
nothing behind when it fails, and the messages say what is wrong. Second processes are real."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from loop.cli import main
from stores import RunStore

ROOT = Path(__file__).resolve().parents[3]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_ADDRESS": ""}


def loop_cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loop.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=ENV)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("loop: error: "), proc.stderr
    return lines[0]


# A `loop generate` that stops after writing (and flushing) the arrays of its batch `stop_at`,
# before its claim check and commit, until the file `go` appears; `reached` says it got there.
PAUSED_GENERATE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from stores.location import Location
    run, reached, go, stop_at = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    real = Location.sync_tree
    def pause(self, rel):
        real(self, rel)
        if rel == "images.zarr/" + stop_at:
            Path(reached).write_text("x")
            while not Path(go).exists():
                time.sleep(0.01)
    Location.sync_tree = pause
    from loop.cli import main
    main(["generate", run, "--n", "8", "--size", "64", "--seed", "3", "--batch-size", "4"])
""")

# What a driver (`loop start`/`loop resume`) does to a run: it holds the lock while it works.
DRIVER_HOLDING_THE_LOCK = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from loop.run.lock import RunLock
    run, reached, go = sys.argv[1], sys.argv[2], sys.argv[3]
    with RunLock(run):
        Path(reached).write_text("x")
        while not Path(go).exists():
            time.sleep(0.01)
""")


def start_script(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"helper exited with {proc.returncode}: {proc.stderr.read()}")
        assert time.monotonic() < deadline, "helper did not get there"
        time.sleep(0.02)


def assert_samples_verify(run: str, n: int) -> None:
    """n committed samples, ids 0..n-1 once each, each with its image and mask (checksums verified)."""
    store = RunStore.open(run)
    ids = store.params()["sample_id"].to_pylist()
    assert sorted(ids) == list(range(n))
    view = store.view()
    for i in range(len(view)):
        image, mask = view[i]
        assert image.shape == (64, 64) and mask.shape == (64, 64)


def test_a_second_generate_is_refused_naming_the_first_and_harms_nothing(tmp_path) -> None:
    """Issue 15 item 1b: the second `generate`'s recovery deleted the first's batch and claim."""
    run = str(tmp_path / "run")
    assert loop_cli("generate", run, "--n", "4", "--size", "64", "--batch-size", "4").returncode == 0
    reached, go = tmp_path / "reached", tmp_path / "go"
    first = start_script(PAUSED_GENERATE, run, str(reached), str(go), "b000002")
    try:
        wait_for(reached, first)  # batch 1 committed, batch 2's arrays written, its claim held
        line = one_line_error(loop_cli("generate", run, "--n", "8", "--size", "64", "--seed", "5"))
        assert f"run {run} is in use by pid {first.pid} on " in line and "(`loop generate`)" in line
        assert (Path(run) / "params" / ".b000002.claim").exists()
        assert (Path(run) / "images.zarr" / "b000002").is_dir()
    finally:
        go.write_text("go")
        try:
            out, err = first.communicate(timeout=180)
        finally:
            if first.poll() is None:
                first.kill()
    assert first.returncode == 0, err
    assert_samples_verify(run, 12)
    assert RunStore.open(run).committed_batches() == [0, 1, 2]


def test_generate_is_refused_while_a_driver_holds_the_run(tmp_path) -> None:
    """Issue 15 item 1a: `generate` took the batch number the driver had planned."""
    run = str(tmp_path / "run")
    assert loop_cli("generate", run, "--n", "4", "--size", "64").returncode == 0
    before = sorted(os.listdir(Path(run) / "params"))
    reached, go = tmp_path / "reached", tmp_path / "go"
    driver = start_script(DRIVER_HOLDING_THE_LOCK, run, str(reached), str(go))
    try:
        wait_for(reached, driver)
        line = one_line_error(loop_cli("generate", run, "--n", "8", "--size", "64", "--seed", "5"))
        assert f"is in use by pid {driver.pid} on " in line and "wait for it or stop it first" in line
        assert sorted(os.listdir(Path(run) / "params")) == before
    finally:
        go.write_text("go")
        try:
            driver.communicate(timeout=60)
        finally:
            if driver.poll() is None:
                driver.kill()
    assert loop_cli("generate", run, "--n", "4", "--size", "64").returncode == 0  # free again
    assert_samples_verify(run, 8)


@pytest.mark.parametrize(("args", "message"), [
    (["--seed", "-1"], "--seed: expected an integer >= 0, got -1"),
    (["--seed", "3", "--workers", "1", "--batch-size", "1", "--split", "train", "--size", "8"],
     "size: expected an integer in [32, 4096] px, got 8"),
])
def test_bad_generate_arguments_are_one_line_and_leave_no_run(tmp_path, args, message) -> None:
    """Issue 15 item 9: `--seed -1` was an internal error and left an empty run behind."""
    run = tmp_path / "run"
    line = one_line_error(loop_cli("generate", str(run), "--n", "2", *args))
    assert message in line
    assert not run.exists()


def test_a_generate_that_fails_on_a_new_run_leaves_no_run(tmp_path, monkeypatch) -> None:
    import loop.run.generation as generation

    def broken(*args, **kwargs):
        raise RuntimeError("the generator crashed")

    monkeypatch.setattr(generation, "render_plan", broken)
    result = CliRunner().invoke(main, ["generate", str(tmp_path / "run"), "--n", "2", "--size", "64"])
    assert result.exit_code != 0
    assert not (tmp_path / "run").exists()
    existing = tmp_path / "kept"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    result = CliRunner().invoke(main, ["generate", str(existing), "--n", "2", "--size", "64"])
    assert result.exit_code != 0
    assert sorted(os.listdir(existing)) == ["notes.txt"]


def test_show_on_a_run_it_cannot_write_says_so(tmp_path, monkeypatch) -> None:
    """Issue 15 item 9: `loop show` on a read-only run said only `No such file or directory`."""
    from stores.location import Location

    run = str(tmp_path / "run")
    assert CliRunner().invoke(main, ["generate", run, "--n", "2", "--size", "64"]).exit_code == 0

    def read_only(self, rel, data):
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(Location, "write_bytes", read_only)
    result = CliRunner().invoke(main, ["show", run])
    assert result.exit_code == 1
    assert f"loop: error: cannot write the contact sheet into run {run} " in result.output
    assert "pass --out FILE" in result.output and len(result.output.strip().splitlines()) == 1
    result = CliRunner().invoke(main, ["show", run, "--out", str(tmp_path / "no" / "such" / "sheet.png")])
    assert result.exit_code == 1 and "--out " in result.output and "cannot write the contact sheet" in result.output
    assert CliRunner().invoke(main, ["show", run, "--out", str(tmp_path / "sheet.png")]).exit_code == 0


def test_the_message_for_a_run_without_cycles() -> None:
    from loop.run.adding import NotACycleRun, check_cycle_run

    class Made:
        uri = "/runs/r"

        def __init__(self, config):
            self.config = config

    check_cycle_run(Made({"run": {"policy": "random"}}))
    with pytest.raises(NotACycleRun, match=r"^/runs/r was made by `loop generate`, it has no cycles; "):
        check_cycle_run(Made({"made_by": "loop generate", "seed": 0, "size": 64}))
    with pytest.raises(NotACycleRun, match="^/runs/r was made by `loop generate`"):
        check_cycle_run(Made({"seed": 0, "size": 64}))  # runs made before `made_by` was recorded


@pytest.mark.parametrize("command", ["status", "resume"])
def test_status_and_resume_on_a_run_made_by_generate(tmp_path, command) -> None:
    """Issue 15 item 9: `loop status` said `'run'` (a KeyError)."""
    run = str(tmp_path / "run")
    assert CliRunner().invoke(main, ["generate", run, "--n", "2", "--size", "64"]).exit_code == 0
    result = CliRunner().invoke(main, [command, run])
    assert result.exit_code == 1
    assert result.output.strip() == (f"loop: error: {run} was made by `loop generate`, it has no cycles; `loop show` "
                                     "and `loop query` read its samples, `loop generate` adds to it, "
                                     "`loop start --run NEW` makes a run with cycles")
    assert np.isfinite(len(RunStore.open(run).params()))


def test_generate_leaves_the_batches_a_killed_driver_planned_free(tmp_path) -> None:
    """Issue 15 item 1a, the other order: a driver planned cycle 1 and was killed; `generate` runs
    in between (the lock is free); the resumed driver must still find its planned batches free."""
    from loop.run.generation import BatchPlan, run_plans
    from loop.run.journal import Journal

    run = str(tmp_path / "run")
    assert loop_cli("generate", run, "--n", "4", "--size", "64", "--batch-size", "4").returncode == 0
    store = RunStore.open(run)
    proposals = [dict(r) for r in store.params().select(store.space.names).to_pylist()]
    plans = [BatchPlan(batch=1 + b, cycle=1, split="train", size=64, sample_ids=tuple(range(4 + 2 * b, 6 + 2 * b)),
                       seeds=(11, 12), params=tuple(proposals[:2]), parent_ids=(0, 1), policies=("worst", "worst"))
             for b in range(2)]
    import dataclasses

    Journal(store.path("journal.jsonl")).append("planned", cycle=1, plans=[dataclasses.asdict(p) for p in plans])

    assert loop_cli("generate", run, "--n", "4", "--size", "64", "--batch-size", "4").returncode == 0
    table = RunStore.open(run).params()
    assert RunStore.open(run).committed_batches() == [0, 3]
    assert table["sample_id"].to_pylist() == [0, 1, 2, 3, 8, 9, 10, 11]

    run_plans(run, "grains", plans)  # the resumed driver writes what it planned
    store = RunStore.open(run)
    assert store.committed_batches() == [0, 1, 2, 3]
    for plan in plans:
        assert store.has_batch_of(plan.batch, plan.sample_ids)
    assert_samples_verify(run, 12)
