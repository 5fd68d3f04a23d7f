"""The loop end to end on the smoke preset: start, status, resume, kill -9 and resume, the lock,
training progress."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from loop.run.driver import CycleDriver
from loop.run.journal import Journal
from loop.run.lock import RunLock
from loop.config.run import RunConfig, run_config_from
from loop.run.lifecycle import RunError, resume_run, run_status, start_run
from policies import Policy, PolicyView, Proposal, registry
from stores import RunStore
from tests.loop.run.kill_harness import start_and_kill

SMALL = dict(n_train=8, n_val=10, n_per_cycle=6, size=64, batch_size=4, workers=2)
KEY_COLUMNS = ["sample_id", "batch", "cycle", "split", "policy", "parent_id", "seed"]
# What the smoke preset's held-out test set adds to a run.
N_TEST = 8


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
    assert info["cycles"][0]["samples"] == {"val": 10, "random": 8, **({"test": N_TEST} if N_TEST else {})}
    assert info["cycles"][1]["samples"] == {"worst:k=0.1,m=10,radius=0.05": 6}
    assert 0 <= info["cycles"][1]["val"]["miou"] <= 1
    assert set(info["cycles"][0]["wall_s"]) >= {"generated", "trained", "evaluated", "cycle_done"}

    store = RunStore.open(run)
    params = store.params()
    val = params.filter(pc.equal(params["split"], "val"))
    new = params.filter(pc.equal(params["cycle"], 1))
    # worst10 on 10 validation samples: the single worst sample is the parent of every new one.
    metrics = store.metrics().filter(pc.equal(store.metrics()["cycle"], 0))
    metrics = metrics.filter(pc.is_in(metrics["sample_id"], value_set=val["sample_id"].combine_chunks()))  # not test
    worst = min(zip(metrics["iou"].to_pylist(), metrics["sample_id"].to_pylist()))[1]
    assert set(new["parent_id"].to_pylist()) == {worst}
    assert worst in val["sample_id"].to_pylist()
    assert sorted(store.metrics()["cycle"].unique().to_pylist()) == [0, 1]
    for cycle in (0, 1):
        assert Path(store.path("checkpoints", f"cycle_{cycle:03d}.safetensors")).exists()

    with pytest.raises(RunError, match="is finished .* pass --cycles N"):
        resume_run(run)
    with pytest.raises(RunError, match="--cycles 0: the run already aims at 1 cycles"):
        resume_run(run, cycles=0)
    resume_run(run, cycles=2, say=lines.append)  # replays a journal full of train_progress events
    assert [c["state"] for c in run_status(run)["cycles"]] == ["done"] * 3
    assert len(param_rows(run)) == 10 + 8 + N_TEST + 6 + 6


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


def test_policies_and_real_groups_are_checked_against_the_run_before_it_starts(tmp_path) -> None:
    from policies import PolicyError

    with pytest.raises(PolicyError, match=r"run.policy 'paper' does not fit the cracks generator's space: policy "
                                          r"'worst:.*dims=grain_contrast\|boundary_thickness': setting dims names "
                                          r"unknown dimension\(s\) 'grain_contrast', 'boundary_thickness'"):
        start_run(str(tmp_path / "a"), small_config(generator="cracks", policy="paper"))
    with pytest.raises(RunError, match=r"real group 'zinc': .*zinc: real data folder not found"):
        start_run(str(tmp_path / "a"), small_config(real=(f"zinc={tmp_path / 'zinc'}",)))
    assert not (tmp_path / "a").exists()


def test_an_old_run_toml_loads_without_a_test_split_and_with_its_real_folder(tmp_path) -> None:
    old = {k: v for k, v in small_config().to_dict().items() if k not in ("n_test", "real")}
    config = run_config_from({**old, "real_dir": str(tmp_path / "iron")})
    assert config.n_test == 0 and config.real == (("iron", str(tmp_path / "iron")),)
    assert run_config_from(config.to_dict()) == config
    assert small_config().n_test == 8 and RunConfig.for_preset("cpu").n_test == 100
    assert RunConfig.for_preset("paper").n_test == 1000


def test_real_images_are_tiled_at_the_size_the_preset_trains_at_last(tmp_path) -> None:
    from loop.config.fields import ConfigError

    assert [RunConfig.for_preset(p).real_tile for p in ("smoke", "cpu", "paper")] == [64, 128, 512]
    assert RunConfig.for_preset("cpu").real_overlap == 32 and RunConfig.for_preset("cpu", real_tile=256).real_tile == 256
    old = {k: v for k, v in small_config().to_dict().items() if k != "real_tile"}
    assert run_config_from(old).real_tile == 256  # what a run of before was scored with
    assert run_config_from(small_config(real_tile=96).to_dict()).real_tile == 96
    for bad in (100, 16, True, "128", 8192):
        with pytest.raises(ConfigError, match=r"run.real_tile: expected a multiple of 32 px from 32 to 4096 .*, got "):
            small_config(real_tile=bad)


class SpyPolicy(Policy):
    """Records every view it is given and fails when one holds a held-out test row or score."""

    kind = "spy"
    views: list[PolicyView] = []

    @property
    def name(self) -> str:
        return self.kind

    def _propose(self, view, n, rng):
        SpyPolicy.views.append(view)
        assert "test" not in set(view.params["split"].to_pylist()), "a policy was shown test rows"
        if view.metrics.num_rows:
            scored = set(view.metrics["sample_id"].to_pylist())
            visible = set(view.params["sample_id"].to_pylist())
            assert scored <= visible, f"a policy was shown scores of samples {sorted(scored - visible)} it cannot see"
        return [Proposal(params=p) for p in view.space.sample(rng, n)]


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> type[SpyPolicy]:
    """The spy policy in a private copy of the registry."""
    monkeypatch.setattr(registry, "_POLICIES", dict(registry._POLICIES))
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))
    registry.register_policy("spy", SpyPolicy)
    monkeypatch.setattr(SpyPolicy, "views", [])
    return SpyPolicy


class _TableStore:
    """A store of tables only, as :func:`loop.run.driver.policy_view` reads one."""

    def __init__(self, space, params, metrics):
        self.space, self._params, self._metrics = space, params, metrics

    def params(self):
        return self._params

    def metrics(self):
        return self._metrics

    def committed_batches(self):
        return [0, 1, 2]


def test_a_policy_never_sees_the_held_out_test_set(spy) -> None:
    """Without Ray or a store: the test rows are the worst scored of all, and still no policy gets them."""
    import pyarrow as pa

    from generators import get_generator
    from policies.testing import params_table

    space = get_generator("grains").space
    points = space.sample(np.random.default_rng(0), 12)
    splits = ["val"] * 5 + ["train"] * 4 + ["test"] * 3
    params = params_table(space, [{"sample_id": i, "cycle": 0, "split": split, "policy": "random", "parent_id": None,
                                   "seed": i, **p} for i, (split, p) in enumerate(zip(splits, points))])
    ids = [0, 1, 2, 3, 4, 9, 10, 11]  # val and test scored; the test samples worst by far
    metrics = pa.table({"sample_id": ids, "cycle": [0] * 8, "iou": [0.6, 0.7, 0.8, 0.9, 0.5, 0.0, 0.0, 0.0]})
    store = _TableStore(space, params, metrics)
    for policy in ("spy", "worst:k=1,m=2", "mix:spy=0.5,worst10=0.5"):
        driver = CycleDriver(store, None, small_config(policy=policy), None, trainer=None, evaluator=None,
                             workers=1, remote=False, say=lambda line: None)
        plans = driver._plan_cycle(1)
        assert {p.split for p in plans} == {"train"} and sum(len(p) for p in plans) == 6
        parents = {pid for p in plans for pid in p.parent_ids}
        assert parents <= {None, 0, 1, 2, 3, 4}  # worst varies validation samples only
    assert len(spy.views) == 2
    # The spy does fail on a view that holds test rows.
    leaky = PolicyView(space, params, metrics.filter(pa.compute.equal(metrics["cycle"], 0)), 1)
    with pytest.raises(AssertionError, match="a policy was shown test rows"):
        spy().propose(leaky, 2, np.random.default_rng(0))


def test_the_test_split_is_drawn_once_scored_every_cycle_forked_and_never_shown(ray_local, tmp_path, spy) -> None:
    from click.testing import CliRunner

    from loop.cli import main
    from loop.run.fork import fork_run

    run = str(tmp_path / "run")
    start_run(run, small_config(cycles=1, n_test=4, policy="spy"), say=lambda line: None)
    assert len(spy.views) == 1 and spy.views[0].cycle == 1  # the spy's own assertions held
    info = run_status(run)
    assert info["cycles"][0]["samples"] == {"val": 10, "random": 8, "test": 4}
    for cycle in info["cycles"]:
        assert 0 <= cycle["test"]["miou"] <= 1 and 0 <= cycle["val"]["miou"] <= 1
    store = RunStore.open(run)
    params = store.params()
    test = params.filter(pc.equal(params["split"], "test"))
    # Drawn at cycle 0 from the initial policy, numbered after the training set.
    assert test["sample_id"].to_pylist() == [18, 19, 20, 21] and set(test["cycle"].to_pylist()) == {0}
    assert set(test["policy"].to_pylist()) == {"random"}
    assert {"val_c000", "val_c001", "test_c000", "test_c001"} <= set(store.metric_fragment_names())
    metrics = store.metrics()
    for cycle in (0, 1):
        rows = metrics.filter(pc.equal(metrics["cycle"], cycle))
        assert set(rows["sample_id"].to_pylist()) == set(range(10)) | {18, 19, 20, 21}
    # Status shows val and test side by side, as JSON and as a table.
    result = CliRunner().invoke(main, ["status", run, "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["cycles"][1]["test"] == info["cycles"][1]["test"]
    result = CliRunner().invoke(main, ["status", run])
    assert "val miou" in result.output and "test miou" in result.output

    fork = fork_run(run, str(tmp_path / "fork"), policy="random", cycles=1, say=lambda line: None)
    copied = RunStore.open(fork)
    assert copied.params(cycle=0).drop(["created_at"]).sort_by("sample_id") == \
        store.params(cycle=0).drop(["created_at"]).sort_by("sample_id")
    assert {"val_c000", "test_c000"} <= set(copied.metric_fragment_names())
    assert run_status(fork)["cycles"][0]["test"] == info["cycles"][0]["test"]


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


def _start_and_kill(run: str, after_event: str, cycle: int, before_kill=lambda: None) -> None:
    """A smoke worst10 run killed (-9) once ``after_event`` of ``cycle`` is journaled (``before_kill()`` just before)."""
    start_and_kill(run, ["--policy", "worst10", "--preset", "smoke", "--cycles", "1",
                         *[f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items() if k != "batch_size"]],
                   after_event, cycle, before_kill=before_kill)


@pytest.fixture(scope="module")
def reference_run(ray_local, tmp_path_factory) -> str:
    """The uninterrupted run that every killed-and-resumed run must reproduce."""
    run = str(tmp_path_factory.mktemp("reference") / "run")
    start_run(run, small_config(cycles=1, batch_size=16))
    return run


# One kill point in the default run (mid-training, the costliest state to lose); the others are
# `slow` (each is a whole smoke run plus a resume: about a minute on a loaded 2-core machine).
@pytest.mark.parametrize(("after_event", "cycle"), [
    pytest.param("generated", 0, marks=pytest.mark.slow), ("train_progress", 0),
    pytest.param("trained", 0, marks=pytest.mark.slow), pytest.param("planned", 1, marks=pytest.mark.slow)])
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


def test_the_best_cycle_on_real_val_is_the_finished_one_scored_best() -> None:
    from loop.run.lifecycle import best_real_val

    def cycle(n, state="done", **scores):
        return {"cycle": n, "state": state, **({"real_val": scores} if scores else {})}

    seg = [cycle(0, miou=0.52), cycle(1, miou=0.55), cycle(2, miou=0.55), cycle(3, "interrupted", miou=0.9), cycle(4)]
    assert best_real_val(seg) == {"cycle": 1, "metric": "miou", "value": 0.55}  # a tie goes to the earlier cycle
    cls = [cycle(0, balanced_error=0.3, miou=None), cycle(1, balanced_error=0.2, miou=None)]
    assert best_real_val(cls) == {"cycle": 1, "metric": "balanced_error", "value": 0.2}
    assert best_real_val([cycle(0), cycle(1, "pending")]) is None
