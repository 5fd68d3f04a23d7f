"""Claims under attack, with real second processes: recovery while a writer runs, a claim removed
behind a writer's back, two retries taking over one dead writer's batch, a batch number taken twice."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import time

import numpy as np
import pytest
from storefakes import (FakeGenerator, make_batch, seed_of, write_after_slow_claim_reads, write_batches,
                        write_then_hang, write_when_told)

from stores import RunStore, StoreError

PER_BATCH = 4
CTX = multiprocessing.get_context("spawn")


def wait_for(path: str, proc, timeout: float = 120.0) -> None:
    """Block until ``path`` exists, failing if ``proc`` died first."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert proc.is_alive(), f"child exited with {proc.exitcode} before reaching the hook"
        assert time.monotonic() < deadline, "child did not reach the hook"
        time.sleep(0.01)


def outcome(path: str, proc) -> dict:
    proc.join(timeout=120)
    assert proc.exitcode == 0, f"child exited with {proc.exitcode}"
    with open(path) as f:
        return json.load(f)


def rows_of(run_uri: str, batch: int) -> list[dict]:
    table = RunStore.open(run_uri).params()
    return table.filter(table["batch"].to_numpy() == batch).drop(["created_at"]).to_pylist()


def expected_rows(batch: int, rng_seed: int) -> list[dict]:
    rows, _, _ = make_batch(FakeGenerator(), [batch * PER_BATCH + i for i in range(PER_BATCH)], rng_seed=rng_seed)
    return rows


def assert_every_sample_reads_as_rendered(run_uri: str) -> None:
    """Every committed sample has its image and mask, and they are the ones its row renders to."""
    view = RunStore.open(run_uri).view()
    gen = FakeGenerator()
    for i, row in enumerate(view.params.to_pylist()):
        sample = gen.render({k: row[k] for k in gen.space.names}, seed_of(row["sample_id"]), 16)
        image, mask = view[i]
        assert np.array_equal(image, sample.image) and np.array_equal(mask, sample.mask), row["sample_id"]


def start(target, *args):
    proc = CTX.Process(target=target, args=args)
    proc.start()
    return proc


def test_recovery_leaves_the_batch_of_a_live_writer_alone(run, tmp_path):
    """Issue 15 item 1b: a second process's recovery used to delete a live writer's arrays and claim."""
    write_batches(run.uri, [0], PER_BATCH)
    reached, go, result = (str(tmp_path / n) for n in ("reached", "go", "result"))
    writer = start(write_when_told, run.uri, 1, PER_BATCH, 0, reached, go, result)
    wait_for(reached, writer)

    other = RunStore.open(run.uri, recover=True)  # e.g. a `loop generate` that did not take the lock
    assert other.recovered == [] and other.removed_files == []
    assert os.path.exists(os.path.join(run.uri, "params", ".b000001.claim"))
    with pytest.raises(StoreError, match=rf"batch 1: another writer holds it \(pid {writer.pid} on "):
        other.write_batch(1, *make_batch(FakeGenerator(), [4, 5, 6, 7], rng_seed=9))

    open(go, "w").close()
    assert outcome(result, writer) == {"ok": True}
    assert RunStore.open(run.uri).committed_batches() == [0, 1]
    assert sorted(os.listdir(os.path.join(run.uri, "params"))) == ["b000000.parquet", "b000001.parquet"]
    assert_every_sample_reads_as_rendered(run.uri)


def test_a_writer_whose_claim_was_removed_deletes_nothing_and_leaves_the_new_claim(run, tmp_path):
    """Issue 15 item 1b: the first writer's `finally` deleted the arrays of the batch another writer
    committed, and removed the other writer's claim without checking whose it was."""
    first = [str(tmp_path / f"first-{n}") for n in ("reached", "go", "result")]
    second = [str(tmp_path / f"second-{n}") for n in ("reached", "go", "result")]
    a = start(write_when_told, run.uri, 0, PER_BATCH, 0, *first)
    wait_for(first[0], a)
    # What the old unlocked recovery of another process did: A's claim and arrays are removed...
    os.remove(os.path.join(run.uri, "params", ".b000000.claim"))
    shutil.rmtree(os.path.join(run.uri, "images.zarr", "b000000"))
    # ...and a second writer claims the batch and writes it.
    b = start(write_when_told, run.uri, 0, PER_BATCH, 50, *second)
    wait_for(second[0], b)

    open(first[1], "w").close()
    lost = outcome(first[2], a)
    assert "batch 0: this writer lost its claim" in lost["error"]
    assert os.path.exists(os.path.join(run.uri, "params", ".b000000.claim"))  # B's claim is still there
    assert os.path.isdir(os.path.join(run.uri, "images.zarr", "b000000"))

    open(second[1], "w").close()
    assert outcome(second[2], b) == {"ok": True}
    assert [{k: r[k] for k in ("sample_id", "boundary_thickness")} for r in rows_of(run.uri, 0)] == \
        [{k: r[k] for k in ("sample_id", "boundary_thickness")} for r in expected_rows(0, 50)]
    assert_every_sample_reads_as_rendered(run.uri)
    assert sorted(os.listdir(os.path.join(run.uri, "params"))) == ["b000000.parquet"]


def test_a_writer_that_fails_after_another_committed_deletes_no_committed_arrays(run, tmp_path):
    reached, go, result = (str(tmp_path / n) for n in ("reached", "go", "result"))
    a = start(write_when_told, run.uri, 0, PER_BATCH, 0, reached, go, result)
    wait_for(reached, a)
    os.remove(os.path.join(run.uri, "params", ".b000000.claim"))  # a rule-breaker again
    RunStore.open(run.uri).write_batch(0, *make_batch(FakeGenerator(), [0, 1, 2, 3], rng_seed=50))
    open(go, "w").close()
    assert "batch 0: this writer lost its claim" in outcome(result, a)["error"]
    assert_every_sample_reads_as_rendered(run.uri)
    assert rows_of(run.uri, 0)[0]["boundary_thickness"] == expected_rows(0, 50)[0]["boundary_thickness"]


def test_two_retries_cannot_both_take_over_a_dead_writers_batch(run, tmp_path):
    """Issue 15 item 1b: the takeover read the dead holder, then deleted without re-checking."""
    sentinel = str(tmp_path / "dead-reached")
    dead = start(write_then_hang, run.uri, 0, PER_BATCH, sentinel)
    wait_for(sentinel, dead)
    os.kill(dead.pid, signal.SIGKILL)
    dead.join(timeout=30)

    go = str(tmp_path / "go")
    results = [str(tmp_path / f"result-{i}") for i in range(2)]
    retries = [start(write_after_slow_claim_reads, run.uri, 0, PER_BATCH, 100 * (i + 1), go, results[i], 1.0)
               for i in range(2)]
    time.sleep(3)  # both children imported and waiting
    open(go, "w").close()
    outcomes = [outcome(r, p) for r, p in zip(results, retries)]
    winners = [i for i, o in enumerate(outcomes) if o == {"ok": True}]
    assert len(winners) == 1, outcomes
    loser = outcomes[1 - winners[0]]
    assert "batch 0: another writer holds it" in loser["error"], loser
    assert rows_of(run.uri, 0)[0]["boundary_thickness"] == \
        expected_rows(0, 100 * (winners[0] + 1))[0]["boundary_thickness"]
    assert_every_sample_reads_as_rendered(run.uri)
    assert os.listdir(os.path.join(run.uri, "params")) == ["b000000.parquet"]


def test_a_batch_number_taken_by_another_writer_is_an_error_naming_both(run):
    gen = FakeGenerator()
    run.write_batch(3, *make_batch(gen, [40, 41, 42], cycle=0))
    assert run.has_batch_of(3, [40, 41, 42]) is True  # one's own earlier attempt
    assert run.has_batch_of(4, [43]) is False
    with pytest.raises(StoreError) as err:
        run.has_batch_of(3, [40, 41, 42, 43, 44])
    text = str(err.value)
    assert text.startswith("batch 3: already committed by another writer (samples 40..42 (3), cycle 0, "
                           "policy random, made ")
    assert "not the samples 40..44 (5) this writer planned" in text and run.uri in text
    with pytest.raises(StoreError, match=r"^batch 3: already committed by another writer \(samples 40\.\.42 .*"
                                         r"this writer's batch holds samples 50\.\.51 \(2\), cycle 2"):
        run.write_batch(3, *make_batch(gen, [50, 51], cycle=2))


def test_recovery_removes_every_generation_of_a_dead_writers_claims(run, tmp_path):
    for attempt in range(2):  # the writer, then its retry, both killed mid-batch
        sentinel = str(tmp_path / f"reached-{attempt}")
        child = start(write_then_hang, run.uri, 0, PER_BATCH, sentinel)
        wait_for(sentinel, child)
        os.kill(child.pid, signal.SIGKILL)
        child.join(timeout=30)
    assert sorted(os.listdir(os.path.join(run.uri, "params"))) == [".b000000-1.claim", ".b000000.claim"]
    owner = RunStore.open(run.uri, recover=True)
    assert owner.recovered == [0]
    assert sorted(owner.removed_files) == ["params/.b000000-1.claim", "params/.b000000.claim"]
    assert os.listdir(os.path.join(run.uri, "params")) == []
    assert not os.path.exists(os.path.join(run.uri, "images.zarr", "b000000"))
