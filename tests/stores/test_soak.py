"""Soak: several writers on one run, each SIGKILLed at random moments and restarted.

Run it on its own (it is ``slow``)::

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -m slow tests/stores/test_soak.py -s

Writers: ``loop generate`` processes and a driver (``loop resume RUN --cycles N`` on a smoke
run), restarted whenever they end. A seeded numpy Generator picks when to kill and whom (the
whole process group, Ray included). Every writer takes the run lock, so most attempts are
refused while another holds it; kills land mid-batch, mid-recovery, mid-training. Afterwards:
every committed sample id is unique, has its image and mask, and they verify (chunk checksums)
and equal a fresh render of the sample's parameters; every batch a driver planned holds the
planned samples; every batch seen committed during the soak is still there (lost = 0); no
writer failed other than by being killed or refused by the lock; ``loop status`` and
``loop query`` work. The figures are printed.

Settings (environment): ``SOAK_SECONDS`` (120), ``SOAK_KILLS`` (20), ``SOAK_SEED`` (0),
``SOAK_GENERATORS`` (3), ``SOAK_DRIVER`` (1: include the driver).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from stores import RunStore, StoreError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_ADDRESS": "", "RAY_DEDUP_LOGS": "0"}
SIZE = 64
LOCKED = "is in use by"


def _setting(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass
class Writer:
    """One writer slot: its command, its current process, and what became of its attempts."""

    name: str
    kind: str  # "generate" or "driver"
    proc: subprocess.Popen | None = None
    started: float = 0.0
    attempt: int = 0
    restart_at: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    log: Path | None = None
    journal_at_start: int = 0


class Soak:
    def __init__(self, run: Path, logs: Path, rng: np.random.Generator, generators: int, driver: bool):
        self.run = run
        self.logs = logs
        self.rng = rng
        self.writers = [Writer(f"generate-{i}", "generate") for i in range(generators)]
        if driver:
            self.writers.append(Writer("driver", "driver"))
        self.driver_target = 1
        self.kills: list[tuple[float, str, str]] = []  # (time, writer, what it was doing)
        self.seen: dict[int, list[int]] = {}  # batch -> sample ids, as first seen committed
        self._stop = threading.Event()
        self._t0 = time.monotonic()

    # --- writers --------------------------------------------------------------------------------

    def _command(self, w: Writer) -> list[str]:
        if w.kind == "driver":
            return [sys.executable, "-m", "loop.cli", "resume", str(self.run), "--cycles", str(self.driver_target)]
        seed = 1000 * int(w.name.rsplit("-", 1)[1]) + w.attempt
        return [sys.executable, "-m", "loop.cli", "generate", str(self.run), "--n", "12", "--size", str(SIZE),
                "--batch-size", "4", "--seed", str(seed)]

    def _start(self, w: Writer) -> None:
        w.attempt += 1
        w.log = self.logs / f"{w.name}-{w.attempt:03d}.log"
        with open(w.log, "w") as out:
            w.proc = subprocess.Popen(self._command(w), cwd=ROOT, env=ENV, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        w.started = time.monotonic()
        w.journal_at_start = self._journal_size()

    def _journal_size(self) -> int:
        """Events in the run's journal."""
        try:
            return (self.run / "journal.jsonl").read_bytes().count(b"\n")
        except FileNotFoundError:
            return 0

    def _killable(self, w: Writer) -> bool:
        """A driver spends its first seconds starting Ray: it is killed only once it has journaled
        progress, so that kills land mid-cycle (generating, training, evaluating)."""
        if w.proc is None or w.proc.poll() is not None:
            return False
        return w.kind != "driver" or self._journal_size() >= w.journal_at_start + 2  # "resumed" and more

    def _reap(self, w: Writer) -> None:
        code = w.proc.poll()
        if code is None:
            return
        text = w.log.read_text(errors="replace")
        if code == -signal.SIGKILL:
            kind = "killed"
        elif code == 0:
            kind = "finished"
            if w.kind == "driver":
                self.driver_target = min(self.driver_target + 1, 4)
        elif code == 1 and LOCKED in text:
            kind = "refused (lock)"
        elif code == 1 and w.kind == "driver" and "is finished" in text:
            kind = "finished"
            self.driver_target = min(self.driver_target + 1, 4)
        else:
            kind = "failed"
            w.failures.append(f"{w.log.name}: exit {code}: {' | '.join(text.strip().splitlines()[-3:])}")
        w.outcomes[kind] = w.outcomes.get(kind, 0) + 1
        w.proc = None
        # Refused writers retry soon; the others after a random pause.
        w.restart_at = time.monotonic() + float(self.rng.uniform(0.2, 1.0) if kind == "refused (lock)"
                                                else self.rng.uniform(0.0, 2.0))

    def _holder(self) -> Writer | None:
        """The writer that holds the run lock now (its pid is in ``RUN/.lock``), if one of ours."""
        try:
            text = (self.run / ".lock").read_text()
        except FileNotFoundError:
            return None
        m = re.match(r"^pid (\d+) ", text)
        for w in self.writers:
            if m and w.proc is not None and w.proc.poll() is None and w.proc.pid == int(m.group(1)):
                return w
        return None

    def _kill(self, w: Writer, at: float, holding: bool) -> None:
        age = time.monotonic() - w.started
        try:
            os.killpg(w.proc.pid, signal.SIGKILL)  # the writer leads its own session: Ray goes too
        except ProcessLookupError:
            return
        w.proc.wait()
        self.kills.append((round(at, 1), w.name, f"{'holding the lock' if holding else 'not holding it'}, "
                                                 f"{age:.1f} s after its start"))

    # --- the committed batches, as they appear --------------------------------------------------

    def _watch(self) -> None:
        params = self.run / "params"
        while not self._stop.is_set():
            try:
                names = os.listdir(params)
            except FileNotFoundError:
                names = []
            for name in names:
                m = re.match(r"^b(\d+)\.parquet$", name)
                if m and int(m.group(1)) not in self.seen:
                    ids = pq.read_table(params / name, columns=["sample_id"])["sample_id"].to_pylist()
                    self.seen[int(m.group(1))] = ids
            self._stop.wait(0.05)

    # --- the soak -------------------------------------------------------------------------------

    def go(self, seconds: float, kills: int) -> None:
        watcher = threading.Thread(target=self._watch, daemon=True)
        watcher.start()
        mean_gap = seconds / kills
        next_kill = self._t0 + float(self.rng.exponential(mean_gap))
        try:
            while True:
                now = time.monotonic()
                elapsed = now - self._t0
                if elapsed > seconds and len(self.kills) >= kills:
                    break
                if elapsed > 3 * seconds:
                    break  # too few live writers to kill: stop anyway, the figures say so
                for w in self.writers:
                    if w.proc is not None:
                        self._reap(w)
                    if w.proc is None and now >= w.restart_at:
                        self._start(w)
                if now >= next_kill:
                    # Mostly the writer at work (the lock holder), sometimes any live one.
                    alive = [w for w in self.writers if self._killable(w)]
                    holder = self._holder()
                    if holder is not None and self._killable(holder) and self.rng.random() < 0.75:
                        victim = holder
                    elif alive:
                        victim = alive[int(self.rng.integers(len(alive)))]
                    else:
                        victim = None
                    if victim is not None:
                        self._kill(victim, elapsed, victim is holder)
                        self._reap(victim)
                    next_kill = now + float(self.rng.exponential(mean_gap))
                time.sleep(0.02)
        finally:
            for w in self.writers:  # the end: whoever still runs is killed too
                if w.proc is not None and w.proc.poll() is None:
                    self._kill(w, time.monotonic() - self._t0, w is self._holder())
                if w.proc is not None:
                    self._reap(w)
            self._stop.set()
            watcher.join()


def make_cycle_run(run: Path) -> None:
    """A smoke run as `loop start` makes it, before its driver starts (the soak's driver resumes it)."""
    from generators import get_generator
    from loop.config.run import RunConfig
    from loop.run.lifecycle import resolved_preset

    config = RunConfig.for_preset("smoke", cycles=1, n_train=8, n_val=10, n_per_cycle=6, size=SIZE, batch_size=4,
                                  workers=2)
    gen = get_generator(config.generator)
    RunStore.create(str(run), generator_name=gen.name, generator_version=gen.version, task=gen.task,
                    space=gen.space, config={"run": config.to_dict(), **resolved_preset(config).to_dict()})


def loop_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loop.cli", *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def check(run: Path, soak: Soak) -> dict[str, object]:
    """The figures of the soak, from the run as it is after a last recovering writer."""
    from generators import get_generator

    store = RunStore.open(str(run))
    table = store.params()
    ids = table["sample_id"].to_pylist()
    unique, counts = np.unique(np.asarray(ids, dtype=np.int64), return_counts=True)
    duplicated = int((counts - 1).sum())

    corrupted: list[str] = []
    gen = get_generator(store.generator_name)
    view = store.view()
    rows = view.params.to_pylist()
    for i, row in enumerate(rows):
        try:
            image, mask = view[i]
        except StoreError as exc:
            corrupted.append(f"sample {row['sample_id']}: {exc}")
            continue
        sample = gen.render({k: row[k] for k in store.space.names}, row["seed"], SIZE)
        if not (np.array_equal(image, sample.image) and np.array_equal(mask, sample.mask)):
            corrupted.append(f"sample {row['sample_id']} (batch {row['batch']}): pixels differ from its render")

    committed = {b: table.filter(table["batch"].to_numpy() == b)["sample_id"].to_pylist()
                 for b in store.committed_batches()}
    lost = sum(len(seen) for b, seen in soak.seen.items() if committed.get(b) != seen)

    foreign = []  # planned batches of the driver that hold other samples than planned
    journal = run / "journal.jsonl"
    planned = driver_committed = 0
    cycles_done: set[int] = set()
    if journal.exists():
        for line in journal.read_text().splitlines():
            event = json.loads(line) if line.strip() else {}
            if event.get("event") == "cycle_done":
                cycles_done.add(event["cycle"])
            for plan in event.get("plans", []) if event.get("event") == "planned" else []:
                planned += 1
                try:
                    driver_committed += store.has_batch_of(plan["batch"], plan["sample_ids"])
                except StoreError as exc:
                    foreign.append(str(exc))

    leftovers = sorted(n for n in os.listdir(run / "params") if not re.match(r"^b\d+\.parquet$", n))
    logs = "".join(p.read_text(errors="replace") for p in sorted(soak.logs.iterdir()))
    recovered = len(re.findall(r"was not committed \(a writer stopped mid-batch\)", logs))
    outcomes: dict[str, int] = {}
    for w in soak.writers:
        for k, v in w.outcomes.items():
            outcomes[k] = outcomes.get(k, 0) + v
    return {
        "writers": f"{len(soak.writers)} ({', '.join(w.name for w in soak.writers)})",
        "attempts": sum(w.attempt for w in soak.writers),
        "outcomes": ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())),
        "kills": len(soak.kills),
        "batches committed": len(committed),
        "samples committed": len(ids),
        "samples seen committed during the soak": sum(len(v) for v in soak.seen.values()),
        "uncommitted batches recovered": recovered,
        "driver batches planned / committed": f"{planned} / {driver_committed}",
        "driver cycles done": len(cycles_done),
        "planned batches holding other samples": len(foreign),
        "lost": lost,
        "duplicated": duplicated,
        "corrupted": len(corrupted),
        "leftover claim/temp files": len(leftovers),
        "unexpected writer failures": sum(len(w.failures) for w in soak.writers),
        "_details": {"corrupted": corrupted[:5], "foreign": foreign[:5], "leftovers": leftovers[:5],
                     "failures": [f for w in soak.writers for f in w.failures][:5], "kills": soak.kills},
    }


def test_soak_writers_killed_at_random_lose_nothing(tmp_path) -> None:
    seconds, kills = _setting("SOAK_SECONDS", 120), _setting("SOAK_KILLS", 20)
    rng = np.random.default_rng(_setting("SOAK_SEED", 0))
    run, logs = tmp_path / "run", tmp_path / "logs"
    logs.mkdir()
    driver = bool(_setting("SOAK_DRIVER", 1))
    if driver:
        make_cycle_run(run)
    soak = Soak(run, logs, rng, _setting("SOAK_GENERATORS", 3), driver)
    t0 = time.monotonic()
    soak.go(seconds, kills)
    soak_s = time.monotonic() - t0

    # The run's next writer recovers what the last kills left (under the lock), then adds its samples.
    last = loop_cli("generate", str(run), "--n", "4", "--size", str(SIZE), "--batch-size", "4", "--seed", "999")
    assert last.returncode == 0, last.stderr
    (logs / "zz-last-generate.log").write_text(last.stdout + last.stderr)
    figures = check(run, soak)
    figures["soak seconds"] = round(soak_s, 1)
    status = loop_cli("status", str(run), "--json") if driver else None
    query = loop_cli("query", str(run), "SELECT count(*) AS n, count(DISTINCT sample_id) AS d FROM samples",
                     "--format", "json")

    details = figures.pop("_details")
    width = max(len(k) for k in figures)
    print("\nsoak figures")
    for key, value in figures.items():
        print(f"  {key.ljust(width)}  {value}")
    print("  kills (s into the soak, writer, what it was doing):")
    for kill in details["kills"]:
        print(f"    {kill[0]:6.1f}  {kill[1]:<12} {kill[2]}")
    for key in ("corrupted", "foreign", "leftovers", "failures"):
        if details[key]:
            print(f"  {key}: {details[key]}")

    assert figures["lost"] == 0 and figures["duplicated"] == 0 and figures["corrupted"] == 0
    assert figures["planned batches holding other samples"] == 0
    assert figures["leftover claim/temp files"] == 0
    assert figures["unexpected writer failures"] == 0, details["failures"]
    assert figures["kills"] >= kills
    assert query.returncode == 0, query.stderr
    n = json.loads(query.stdout)[0]
    assert n["n"] == n["d"] == figures["samples committed"]
    if status is not None:
        assert status.returncode == 0, status.stderr
        info = json.loads(status.stdout)
        assert sum(sum(c["samples"].values()) for c in info["cycles"]) <= figures["samples committed"]
