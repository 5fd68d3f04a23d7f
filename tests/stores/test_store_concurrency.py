"""Several writers at once, racing writers, and a writer killed mid-batch."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time

import numpy as np
import pytest
from storefakes import FakeGenerator, make_batch, seed_of, write_batches, write_then_hang

from stores import RunStore, StoreError

PER_BATCH = 4


def assert_consistent(store: RunStore, batches: list[int]) -> None:
    """Exactly the given batches are committed, each id once, and every image is its sample's."""
    store = RunStore.open(store.uri)
    assert store.committed_batches() == sorted(batches)
    ids = store.params()["sample_id"].to_numpy()
    expected = sorted(b * PER_BATCH + i for b in batches for i in range(PER_BATCH))
    assert sorted(ids.tolist()) == expected
    view = store.view()
    gen = FakeGenerator()
    params = view.params.to_pylist()
    for i in range(len(view)):
        row = params[i]
        sample = gen.render({k: row[k] for k in gen.space.names}, seed_of(row["sample_id"]), 16)
        image, mask = view[i]
        assert np.array_equal(image, sample.image) and np.array_equal(mask, sample.mask)


def test_threads_writing_different_batches_lose_and_duplicate_nothing(run):
    shared = RunStore.open(run.uri)
    errors = []

    def work(worker: int) -> None:
        try:
            store = shared if worker % 2 else RunStore.open(run.uri)
            gen = FakeGenerator()
            for b in range(worker, 12, 4):
                store.write_batch(b, *make_batch(gen, [b * PER_BATCH + i for i in range(PER_BATCH)]))
        except Exception as exc:  # surfaced below; a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert_consistent(run, list(range(12)))


def test_processes_writing_different_batches_lose_and_duplicate_nothing(run):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=write_batches, args=(run.uri, [w, w + 2, w + 4], PER_BATCH)) for w in range(2)]
    for p in procs:
        p.start()
    write_batches(run.uri, [6, 7], PER_BATCH)  # and this process at the same time
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert_consistent(run, list(range(8)))


def test_two_writers_racing_on_one_batch_one_wins_the_other_gets_an_error(run):
    gen = FakeGenerator()
    for batch in range(4):
        barrier = threading.Barrier(2)
        outcome: dict[int, object] = {}

        def race(writer: int) -> None:
            store = RunStore.open(run.uri)
            rows, images, masks = make_batch(gen, [batch * PER_BATCH + i for i in range(PER_BATCH)],
                                             rng_seed=writer * 100)
            barrier.wait()
            try:
                store.write_batch(batch, rows, images, masks)
                outcome[writer] = rows
            except StoreError as exc:
                outcome[writer] = exc

        threads = [threading.Thread(target=race, args=(w,)) for w in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [w for w, o in outcome.items() if isinstance(o, list)]
        losers = [o for o in outcome.values() if isinstance(o, StoreError)]
        assert len(winners) == 1 and len(losers) == 1
        assert f"batch {batch}" in str(losers[0])
        table = RunStore.open(run.uri).params()
        mine = table.filter(table["batch"].to_numpy() == batch)
        assert mine["boundary_thickness"].to_pylist() == [r["boundary_thickness"] for r in outcome[winners[0]]]
    assert_consistent(run, list(range(4)))


def wait_for(path: str, proc: multiprocessing.process.BaseProcess, timeout: float = 120.0) -> None:
    """Block until ``path`` exists (the child reached its hook), failing if the child died first."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert proc.is_alive(), f"child exited with {proc.exitcode} before reaching the hook"
        assert time.monotonic() < deadline, "child did not reach the hook"
        time.sleep(0.02)


def test_a_writer_killed_mid_batch_is_recovered_only_when_asked(run, tmp_path, caplog):
    write_batches(run.uri, [0, 1], PER_BATCH)
    sentinel = str(tmp_path / "reached-commit")
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=write_then_hang, args=(run.uri, 2, PER_BATCH, sentinel))
    child.start()
    wait_for(sentinel, child)
    os.kill(child.pid, signal.SIGKILL)
    child.join(timeout=30)
    assert child.exitcode == -signal.SIGKILL
    partial = os.path.join(run.uri, "images.zarr", "b000002")
    assert os.path.isdir(partial)

    # A plain open (another writer) must not touch the in-flight batch...
    plain = RunStore.open(run.uri)
    assert plain.recovered == [] and os.path.isdir(partial)
    assert plain.committed_batches() == [0, 1]
    claim = os.path.join(run.uri, "params", ".b000002.claim")
    dead_claim = open(claim, "rb").read()
    with open(claim, "w") as f:  # as if the writer were still alive: its claim is respected
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "token": "live"}, f)
    with pytest.raises(StoreError, match="batch 2: another writer holds it"):
        plain.write_batch(2, *make_batch(FakeGenerator(), [8, 9, 10, 11]))
    with open(claim, "wb") as f:
        f.write(dead_claim)
    stray = os.path.join(run.uri, "metrics", ".m1.parquet.0123abcd.tmp")
    with open(stray, "wb") as f:
        f.write(b"half a fragment")

    # ...the owner's recovering open removes it and says so.
    with caplog.at_level(logging.WARNING, logger="stores.store"):
        owner = RunStore.open(run.uri, recover=True)
    assert owner.recovered == [2]
    assert sorted(owner.removed_files) == ["metrics/.m1.parquet.0123abcd.tmp", "params/.b000002.claim"]
    assert "batch 2 was not committed" in caplog.text
    assert not os.path.exists(partial) and not os.path.exists(stray)
    assert_consistent(owner, [0, 1])
    write_batches(run.uri, [2], PER_BATCH)  # the batch can be generated again
    assert_consistent(owner, [0, 1, 2])
    assert RunStore.open(run.uri, recover=True).recovered == []


def test_a_writer_that_loses_after_claiming_leaves_the_winners_images(run, monkeypatch):
    gen = FakeGenerator()
    write_batches(run.uri, [0], PER_BATCH)
    late = RunStore.open(run.uri)
    real = RunStore.has_batch
    calls = []

    def racing_has_batch(self, b):  # the first check misses the commit, as if it raced with it
        calls.append(b)
        return len(calls) > 1 and real(self, b)

    monkeypatch.setattr(RunStore, "has_batch", racing_has_batch)
    monkeypatch.setattr(RunStore, "_check_new_ids", lambda self, ids, where: None)
    with pytest.raises(StoreError, match="batch 0: already committed"):
        late.write_batch(0, *make_batch(gen, [0, 1, 2, 3], rng_seed=7))
    monkeypatch.undo()
    assert calls == [0, 0]
    assert_consistent(run, [0])
    assert not os.path.exists(os.path.join(run.uri, "params", ".b000000.claim"))


def test_a_retry_takes_over_the_batch_of_a_writer_killed_on_this_host(run, tmp_path):
    """What a Ray task retry does after its worker died mid-batch: the batch is redone."""
    sentinel = str(tmp_path / "reached-commit")
    child = multiprocessing.get_context("spawn").Process(target=write_then_hang, args=(run.uri, 0, PER_BATCH, sentinel))
    child.start()
    wait_for(sentinel, child)
    os.kill(child.pid, signal.SIGKILL)
    child.join(timeout=30)
    write_batches(run.uri, [0], PER_BATCH)
    assert not os.path.exists(os.path.join(run.uri, "params", ".b000000.claim"))
    assert_consistent(run, [0])
