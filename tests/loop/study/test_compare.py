"""`loop compare`: settings, forks, a smoke comparison end to end, its report, resume and bad input."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from click.testing import CliRunner
from scipy import stats

from generators.space import Choice, Continuous, Integer, ParamSpace
from loop.cli import main
from loop.study.compare import _Job, _run_jobs, compare, gpu_share_per_run, parallel_runs, threads_per_run
from loop.study.compare_settings import (
    CompareConfig, CompareError, policy_slug, read_settings, resolve_settings, run_dir, split_policies,
)
from loop.study.failures import analyse
from loop.errors import InputError
from loop.run.lifecycle import run_status
from policies import PolicyError
from stores import RunStore

TINY = dict(policies="random,worst10", seeds=2, preset="smoke", cycles=1, n_train=8, n_val=10, n_per_cycle=6, size=64)


# --- settings and bad input (no Ray) --------------------------------------------------------------

def test_policies_split_on_commas_keeping_settings_together() -> None:
    assert split_policies("random,worst10") == ("random", "worst10")
    assert split_policies("random, worst:k=0.2,m=5,sobol") == ("random", "worst:k=0.2,m=5", "sobol")
    assert policy_slug("worst:k=0.2,m=5") == "worst_k=0.2_m=5"
    with pytest.raises(CompareError, match="empty policy name"):
        split_policies("random,,worst10")


@pytest.mark.parametrize(("given", "error", "message"), [
    (dict(TINY, policies="random,nope"), PolicyError, "unknown policy 'nope'.*known: .*random.*worst10"),
    (dict(TINY, seeds=0), CompareError, "seeds: expected an integer >= 1, got 0"),
    (dict(TINY, cycles=0), CompareError, "cycles: expected an integer >= 1"),
    (dict(TINY, policies="worst10,worst:k=0.1,m=10,radius=0.05"), CompareError, "same policy as 'worst10'"),
    (dict(TINY, preset="huge"), CompareError, "preset: expected one of paper, cpu, smoke"),
])
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, given, error, message) -> None:
    with pytest.raises(error, match=message):
        compare(str(tmp_path / "out"), given)
    assert not (tmp_path / "out").exists()


def test_an_out_made_with_other_settings_names_the_differing_setting(tmp_path) -> None:
    out = str(tmp_path / "out")
    frozen = resolve_settings(out, TINY)
    assert (tmp_path / "out" / "compare.toml").exists()
    assert frozen.n_train == 8 and frozen.policies == ("random", "worst10")
    assert resolve_settings(out, {}) == frozen  # nothing given: the frozen settings
    assert resolve_settings(out, dict(TINY, policies=("random", "worst10"))) == frozen
    with pytest.raises(CompareError, match=r"compare.toml: policies is random,worst10 in this comparison, "
                                           r"got random,sobol"):
        resolve_settings(out, dict(TINY, policies="random,sobol"))
    with pytest.raises(CompareError, match="no comparison there yet; --policies is needed"):
        resolve_settings(str(tmp_path / "new"), {"seeds": 2})


def test_a_comparison_extends_to_more_cycles_and_never_to_fewer(tmp_path) -> None:
    out = str(tmp_path / "out")
    frozen = resolve_settings(out, dict(TINY, cycles=2))
    with pytest.raises(CompareError, match=r"cycles is 2 in this comparison, got 1; a comparison can be extended "
                                           r"to more cycles, not cut back \(`loop compare .* --report --at-cycle 1`"):
        resolve_settings(out, dict(TINY, cycles=1))
    with pytest.raises(CompareError, match="seeds is 2 in this comparison, got 3"):  # nothing else may change with it
        resolve_settings(out, dict(TINY, cycles=3, seeds=3))
    assert read_settings(out) == frozen
    extended = resolve_settings(out, {"cycles": 3})
    assert extended == dataclasses.replace(frozen, cycles=3) and read_settings(out) == extended
    assert resolve_settings(out, {}) == extended


def test_cli_errors_are_one_line(tmp_path) -> None:
    runner = CliRunner()
    base = ["compare", str(tmp_path / "a"), "--policies", "random,worst10", "--seeds", "2", "--preset", "smoke"]
    cases = [
        (["compare", str(tmp_path / "a"), "--policies", "random,nope", "--seeds", "2"], "known: "),
        (["compare", str(tmp_path / "a"), "--policies", "random", "--seeds", "0"], "seeds: expected an integer >= 1"),
        (["compare", "--report", str(tmp_path / "none")], "not a comparison"),
        ([*base, "--primary", "nope:miou"], "--primary 'nope:miou': unknown source 'nope'; expected one of val, test"),
        ([*base, "--primary", "val:nope"], "--primary 'val:nope': unknown metric 'nope'; expected one of miou, "
                                           "error, boundary_f1, grain_count_rel_error, mean_intercept_rel_error"),
        ([*base, "--real", "=x"], "'=x' has an empty name"),
        ([*base, "--real", f"iron={tmp_path / 'none'}"], "real group 'iron': "),
        ([*base, "--real", f"a={tmp_path}", "--real", f"a={tmp_path}"], "group name 'a' is given twice"),
        ([*base, "--reference", "sobol"], "not one of the compared policies random, worst10"),
        ([*base, "--encoder-weights", str(tmp_path / "none.pth")], "encoder_weights:"),
    ]
    for args, message in cases:
        result = runner.invoke(main, args)
        assert result.exit_code == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("loop: error:") and message in lines[0], result.stderr


def _real_folder(root: Path, names: tuple[str, ...] = ("a", "b"), size: int = 64) -> str:
    """A tiny real labelled folder of synthetic PNGs: a grid of grain boundaries, grey grains."""
    from PIL import Image

    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(names))
    for name in names:
        mask = np.zeros((size, size), np.uint8)
        mask[::16, :] = 255
        mask[:, ::16] = 255
        image = np.where(mask > 0, 40, 170 + rng.integers(-20, 20, (size, size))).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"{name}.png")
        Image.fromarray(mask).save(root / "masks" / f"{name}.png")
    return str(root)


def test_primary_endpoint_and_reference_are_declared_up_front_and_frozen(tmp_path) -> None:
    out = str(tmp_path / "out")
    frozen = resolve_settings(out, TINY)
    assert (frozen.primary, frozen.reference) == ("test:miou", "random")  # no --real: the held-out test set
    toml = (tmp_path / "out" / "compare.toml").read_text()
    assert 'primary = "test:miou"' in toml and 'reference = "random"' in toml and "n_test = 8" in toml
    assert resolve_settings(out, dict(TINY, primary="test:miou")) == frozen
    with pytest.raises(CompareError, match=r"primary is 'test:miou' in this comparison, got 'val:error'"):
        resolve_settings(out, dict(TINY, primary="val:error"))
    with_real = CompareConfig(**dict(TINY, real=("iron=/data/iron", "/data/tbm")))
    assert with_real.primary == "real:miou" and with_real.real == (("iron", "/data/iron"), ("tbm", "/data/tbm"))
    assert with_real.sources == ("val", "test", "real", "real/iron", "real/tbm")
    chosen = CompareConfig(**dict(TINY, policies="sobol,worst10,near-random", primary=" real/tbm : error ",
                                  reference="near-random", real=("iron=/data/iron", "tbm=/data/tbm")))
    assert (chosen.primary, chosen.reference) == ("real/tbm:error", "near-random")
    grains = CompareConfig(**dict(TINY, primary="real/iron:mean_intercept_rel_error", real=("iron=/data/iron",)))
    assert grains.primary == "real/iron:mean_intercept_rel_error"
    assert CompareConfig(**dict(TINY, primary="real:boundary_intercept_rel_error", real=("iron=/data/iron",))
                         ).primary == "real:boundary_intercept_rel_error"
    with pytest.raises(CompareError, match="unknown source 'real/zinc'; expected one of val, test, real, real/iron$"):
        CompareConfig(**dict(TINY, primary="real/zinc:miou", real=("iron=/x",)))
    cracks = CompareConfig(**dict(TINY, generator="cracks", real=("tiles=/data/cracks",)))
    assert cracks.primary == "real:balanced_error"  # crack-free tiles would make plain error the false-alarm rate
    assert CompareConfig(**dict(TINY, generator="cracks")).primary == "test:error"
    with pytest.raises(CompareError, match="balanced_error is scored on real images only"):
        CompareConfig(**dict(TINY, generator="cracks", primary="test:balanced_error"))
    assert CompareConfig(**dict(TINY, policies="sobol,worst10")).reference == "sobol"  # no random: the first
    assert CompareConfig(**dict(TINY, policies="worst10,random")).reference == "random"


@pytest.mark.parametrize(("given", "message"), [
    (dict(primary="nope:miou"), "--primary 'nope:miou': unknown source 'nope'; expected one of val, test"),
    (dict(primary="val:nope"), "--primary 'val:nope': unknown metric 'nope'; expected one of miou, error, boundary_f1, "
                               "grain_count_rel_error, mean_intercept_rel_error, boundary_intercept_rel_error, "
                               "balanced_error, miss_rate, false_alarm_rate"),
    (dict(primary="val:boundary_intercept_rel_error"), "--primary 'val:boundary_intercept_rel_error': "
                                                       "boundary_intercept_rel_error is scored on real images only"),
    (dict(primary="test:grain_count_rel_error"), "--primary 'test:grain_count_rel_error': grain_count_rel_error is "
                                                 "scored on real images only; expected source real or real/NAME"),
    (dict(primary="miou"), "--primary 'miou': expected SOURCE:METRIC"),
    (dict(primary="real:miou"), "unknown source 'real' (real needs --real); expected one of val, test"),
    (dict(primary="test:miou", n_test=0), "unknown source 'test' (test needs n_test > 0); expected one of val"),
    (dict(reference="sobol"), "--reference 'sobol': not one of the compared policies random, worst10"),
    (dict(real=("=/x",)), "--real: '=/x' has an empty name; expected NAME=DIR"),
    (dict(real=("iron=",)), "--real: 'iron=' names no folder"),
    (dict(real=("iron=/x", "iron=/y")), "--real: group name 'iron' is given twice"),
    (dict(real=("/x/iron", "iron=/y")), "--real: group name 'iron' is given twice"),
    (dict(encoder_weights="/no/such.pth"), "encoder_weights: '/no/such.pth' is not a file"),
    (dict(finetune_on="some"), "finetune_on: expected one of new, all, got 'some'"),
])
def test_bad_primary_reference_and_real_groups_are_refused(tmp_path, given, message) -> None:
    with pytest.raises(CompareError) as info:
        compare(str(tmp_path / "out"), dict(TINY, **given))
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_real_groups_start_options_and_old_settings_files(tmp_path) -> None:
    iron = _real_folder(tmp_path / "iron")
    weights = tmp_path / "encoder.pth"
    weights.write_bytes(b"not read here")
    out = str(tmp_path / "out")
    frozen = resolve_settings(out, dict(TINY, real=(f"pure={iron}", iron), encoder_weights=str(weights),
                                        finetune_on="new", n_per_cycle=5))
    assert frozen.real == (("pure", iron), ("iron", iron)) and frozen.encoder_weights == str(weights)
    assert read_settings(out) == frozen  # frozen in compare.toml, [name, dir] pairs
    run = frozen.run_config(1, "worst10")
    assert run.real == frozen.real and run.finetune_on == "new" and run.n_per_cycle == 5 and run.n_test == 8
    with pytest.raises(CompareError, match="finetune_on is 'new' in this comparison, got 'all'"):
        resolve_settings(out, dict(TINY, n_per_cycle=5, finetune_on="all"))
    with pytest.raises(CompareError, match="freeze_random_encoder is None in this comparison, got False"):
        resolve_settings(out, dict(TINY, n_per_cycle=5, freeze_random_encoder=False))
    trained = resolve_settings(str(tmp_path / "trained"), dict(TINY, freeze_random_encoder=False))
    assert trained.freeze_random_encoder is False and read_settings(str(tmp_path / "trained")) == trained
    with pytest.raises(CompareError, match="freeze_random_encoder: expected true or false, got 'no'"):
        resolve_settings(str(tmp_path / "bad"), dict(TINY, freeze_random_encoder="no"))
    with pytest.raises(CompareError, match="input_norm: expected one of fixed, per_image, got 'z'"):
        resolve_settings(str(tmp_path / "bad"), dict(TINY, input_norm="z"))
    assert resolve_settings(str(tmp_path / "norm"), dict(TINY, input_norm="per_image")).preset_overrides() == {
        "encoder_weights": None, "freeze_random_encoder": None, "input_norm": "per_image", "augment": None}
    turned = resolve_settings(str(tmp_path / "aug"), dict(TINY, augment={"rotate": 180.0, "flip": False}))
    assert read_settings(str(tmp_path / "aug")) == turned  # frozen in compare.toml as a table
    assert turned.preset_overrides()["augment"] == {"rotate": 180.0, "flip": False}
    assert turned.run_config(1, "random") == resolve_settings(str(tmp_path / "norm"), {}).run_config(1, "random")
    with pytest.raises(CompareError, match=r"augment: augment.zoom: expected a number in \[0.0, 0.5\], got 2"):
        resolve_settings(str(tmp_path / "bad"), dict(TINY, augment={"zoom": 2}))
    with pytest.raises(CompareError, match="augment: .*unexpected keyword argument 'spin'"):
        resolve_settings(str(tmp_path / "bad"), dict(TINY, augment={"spin": 2}))
    assert not (tmp_path / "bad").exists()
    # A missing group folder fails before anything is written, naming the group.
    with pytest.raises(InputError, match=r"real group 'zinc': .*/zinc: real data folder not found"):
        compare(str(tmp_path / "other"), dict(TINY, real=(f"zinc={tmp_path / 'zinc'}",)))
    assert not (tmp_path / "other").exists()
    # A compare.toml written before groups, with one real_dir, loads as one group named after it.
    old = tmp_path / "old"
    old.mkdir()
    (old / "compare.toml").write_text(f'[compare]\npolicies = ["random", "worst10"]\nseeds = 2\npreset = "smoke"\n'
                                      f'cycles = 1\nreal_dir = "{iron}"\n')
    legacy = read_settings(str(old))
    assert legacy.real == (("iron", iron),) and legacy.primary == "real:miou" and legacy.reference == "random"
    assert legacy.real_tile == 256 and legacy.run_config(1, "random").real_tile == 256  # as its runs were scored


def test_the_real_tile_is_frozen_with_the_comparison(tmp_path) -> None:
    out = str(tmp_path / "out")
    frozen = resolve_settings(out, dict(TINY))
    assert frozen.real_tile == 64 and read_settings(out).real_tile == 64  # smoke trains at 64 px
    assert frozen.run_config(2).real_tile == frozen.run_config(2, "worst10").real_tile == 64
    assert "real_tile = 64" in (tmp_path / "out" / "compare.toml").read_text()
    with pytest.raises(CompareError, match="real_tile is 64 in this comparison, got 128"):
        resolve_settings(out, dict(TINY, real_tile=128))
    assert resolve_settings(str(tmp_path / "wide"), dict(TINY, real_tile=256)).run_config(1).real_tile == 256
    with pytest.raises(CompareError, match=r"real_tile: expected a multiple of 32 px .*, got 100"):
        resolve_settings(str(tmp_path / "bad"), dict(TINY, real_tile=100))
    assert not (tmp_path / "bad").exists()


def test_parallel_runs_follow_the_gpus() -> None:
    assert parallel_runs({"CPU": 64.0}) == 1
    assert parallel_runs({"CPU": 16.0, "GPU": 1.0}) == 1
    assert parallel_runs({"CPU": 16.0, "GPU": 4.0}) == 4  # a run's trainer and evaluator share one GPU


@pytest.mark.parametrize("slots", [1, 3])
def test_jobs_wait_for_their_base_and_a_failure_skips_only_its_dependants(slots) -> None:
    order: list[str] = []
    lock = threading.Lock()

    def work(name: str, fail: bool = False):
        def run() -> None:
            with lock:
                order.append(name)
            if fail:
                raise RuntimeError(f"{name} broke")
        return run

    jobs = [_Job("b1", work("b1")), _Job("p1", work("p1"), after="b1"), _Job("q1", work("q1"), after="b1"),
            _Job("b2", work("b2", fail=True)), _Job("p2", work("p2"), after="b2")]
    failures = _run_jobs(jobs, slots, say=lambda line: None)
    assert [name for name, _ in failures] == ["b2", "p2"] or sorted(n for n, _ in failures) == ["b2", "p2"]
    assert "p2" not in order and sorted(order) == ["b1", "b2", "p1", "q1"]
    assert order.index("b1") < order.index("p1") and order.index("b1") < order.index("q1")
    if slots == 1:
        assert order == ["b1", "p1", "q1", "b2"]


def test_failure_analysis_bins_by_quantiles_and_counts_new_samples() -> None:
    space = ParamSpace([Continuous("x", "px", "a length", 0.0, 1.0), Integer("k", "", "a count", 0, 1),
                        Choice("mode", "", "a kind", ("a", "b"))])
    x = np.linspace(0.05, 0.95, 10)
    k = np.array([0, 1, 1, 0, 1, 1, 0, 1, 1, 0])
    mode = np.array(["a", "b"] * 5, dtype=object)
    base = [{"x": x, "k": k, "mode": mode, "score": x.copy()}]  # the start fails at small x
    better = [{"x": x, "k": k, "mode": mode, "score": np.full(10, 0.5)}]
    new = [{"x": np.array([0.1, 0.1, 0.2, 0.9]), "k": np.array([0, 0, 1, 1]), "mode": np.array(["a"] * 4, dtype=object)}]
    result = analyse(space, "segmentation", base, {"worst10": better}, {"worst10": new}, n_bins=2)
    by_name = {p["parameter"]: p for p in result["parameters"]}
    xs = by_name["x"]
    assert xs["n_val"] == [5, 5]
    assert xs["cycle0"] == pytest.approx([x[:5].mean(), x[5:].mean()])
    assert xs["final"]["worst10"] == pytest.approx([0.5, 0.5])
    assert xs["new_share"]["worst10"] == pytest.approx([0.75, 0.25])
    assert by_name["k"]["bins"] == ["0", "1"] and by_name["k"]["n_val"] == [4, 6]  # one bin per value
    assert by_name["mode"]["bins"] == ["a", "b"] and by_name["mode"]["new_share"]["worst10"] == [1.0, 0.0]
    worst = result["worst"]["cycle 0"][0]
    assert worst["parameter"] == "x" and worst["mean"] == pytest.approx(x[:5].mean())
    assert result["metric"] == "iou" and result["n_val_samples"] == 10


def test_visibility_gains_pair_each_sample_with_its_cycle0_score() -> None:
    from loop.study.failures import visibility_gains

    ids = np.arange(4)
    vis = [{"sample_id": ids, "visibility": np.array([1.0, 1.1, 3.0, 4.0])},
           {"sample_id": ids, "visibility": np.array([1.05, np.nan, 3.5, 2.5])}]
    base = [{"sample_id": ids[::-1], "score": np.array([0.8, 0.7, 0.4, 0.3])},  # ids 3, 2, 1, 0
            {"sample_id": ids, "score": np.array([0.2, 0.5, 0.6, 0.9])}]
    final = {"worst10": [{"sample_id": ids, "score": np.array([0.5, 0.4, 0.7, 0.8])},
                         {"sample_id": ids[:3], "score": np.array([0.3, 0.6, 0.5])}]}  # seed 2 lost id 3's score
    new = {"worst10": [{"visibility": np.array([1.0, 1.02, 1.04, 3.0])}, {"visibility": np.array([])}]}
    result = visibility_gains(vis, base, final, new, n_bins=2)
    # Edges: quantiles of the finite pooled validation visibility 1, 1.1, 3, 4, 1.05, 3.5, 2.5 -> median 2.5.
    assert result["bins"] == ["1–2.5", "2.5–4"]
    # Seed 1: ids 0, 1 (low) gain 0.5-0.3, 0.4-0.4; ids 2, 3 (high) 0.7-0.7, 0.8-0.8.
    # Seed 2: id 0 low 0.3-0.2; id 1 NaN visibility (left out); id 2 high 0.5-0.6; id 3 unscored (left out).
    assert result["n_val"] == [3, 3]
    assert result["gain"]["worst10"] == pytest.approx([(0.2 + 0.0 + 0.1) / 3, (0.0 + 0.0 - 0.1) / 3])
    assert result["cycle0"] == pytest.approx([(0.3 + 0.4 + 0.2) / 3, (0.7 + 0.8 + 0.6) / 3])
    assert result["final"]["worst10"] == pytest.approx([(0.5 + 0.4 + 0.3) / 3, (0.7 + 0.8 + 0.5) / 3])
    assert result["new_share"]["worst10"] == pytest.approx([0.75, 0.25])


def test_report_of_a_comparison_that_has_not_run_yet(tmp_path) -> None:
    from loop.study.report import write_report

    out = str(tmp_path / "out")
    resolve_settings(out, TINY)
    result = write_report(out, say=lambda line: None)
    assert result["complete_seeds"] == [] and result["statistics"] == {}
    assert set(result["files"]) == {"report", "json"}
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Complete seeds (every policy run finished): 0 of 2" in report and "No seed is complete yet" in report
    assert report.count("| absent |") == 6


def test_fork_refuses_an_unfinished_base_and_an_occupied_destination(tmp_path) -> None:
    from generators import get_generator
    from loop.run.fork import ForkError, fork_run

    grains = get_generator("grains")
    base = str(tmp_path / "base")
    RunStore.create(base, generator_name=grains.name, generator_version=grains.version, task=grains.task,
                    space=grains.space, config={})
    with pytest.raises(ForkError, match="cycle 0 is not done"):
        fork_run(base, str(tmp_path / "fork"), policy="random", cycles=1)
    with pytest.raises(ForkError, match="already holds a run"):
        fork_run(base, base, policy="random", cycles=1)
    with pytest.raises(PolicyError, match="unknown policy"):
        fork_run(base, str(tmp_path / "fork"), policy="nope", cycles=1)
    assert not (tmp_path / "fork").exists()


# --- a smoke comparison end to end ----------------------------------------------------------------

@pytest.fixture(scope="module")
def comparison(ray_local, tmp_path_factory) -> tuple[str, list[str]]:
    """2 seeds × random, worst10 on the smoke preset with tiny sizes, 1 cycle."""
    out = str(tmp_path_factory.mktemp("compare") / "out")
    lines: list[str] = []
    compare(out, TINY, say=lines.append)
    return out, lines


def _final_val(run: str, cycle: int, metric: str) -> float:
    """The run's mean validation score of ``cycle``, straight from its metric table (the validation
    samples' rows, not the held-out test set's)."""
    store = RunStore.open(run)
    metrics, val = store.metrics(), store.params(split="val")["sample_id"].combine_chunks()
    rows = metrics.filter(pc.and_(pc.equal(metrics["cycle"], cycle), pc.is_in(metrics["sample_id"], value_set=val)))
    return float(pc.mean(rows[metric]).as_py())


def _params(run: str, cycle: int) -> list[dict]:
    return RunStore.open(run).params(cycle=cycle).drop(["created_at"]).sort_by("sample_id").to_pylist()


def test_policies_fine_tune_one_shared_start(comparison) -> None:
    out, lines = comparison
    assert any("6 runs (2 base + 4 policy runs), 1 at a time" in line for line in lines)
    for seed in (1, 2):
        base = run_dir(out, seed)
        digest = Path(base, "checkpoints", "cycle_000.safetensors.sha256").read_text()
        new_ids = []
        for policy in ("random", "worst10"):
            run = run_dir(out, seed, policy)
            status = run_status(run)  # a fork is a normal run
            assert status["policy"] == policy and [c["state"] for c in status["cycles"]] == ["done", "done"]
            assert _params(run, 0) == _params(base, 0)
            assert Path(run, "checkpoints", "cycle_000.safetensors.sha256").read_text() == digest
            assert _final_val(run, 0, "miou") == _final_val(base, 0, "miou")
            new = _params(run, 1)
            assert len(new) == 6 and {r["split"] for r in new} == {"train"}
            new_ids.append([r["sample_id"] for r in new])
        assert new_ids[0] == new_ids[1]  # the same number of new samples, numbered alike
    # Different seeds start from different data.
    assert _params(run_dir(out, 1), 0) != _params(run_dir(out, 2), 0)


def test_report_numbers_equal_the_run_directories(comparison) -> None:
    out, _ = comparison
    report = (Path(out) / "report.md").read_text()
    data = json.loads((Path(out) / "report.json").read_text())
    for name in ("primary.png", "metric_per_cycle.png", "paired_final.png", "failures.png"):
        assert (Path(out) / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert data["complete_seeds"] == [1, 2]
    # The first screen: the primary table, then its plot, then the verdict.
    assert report.index("| policy − random |") < report.index("![primary endpoint](plots/primary.png)") \
        < report.index("**Verdict:**")
    val = data["statistics"]["val"]
    finals = {}
    for metric in ("miou", "error", "boundary_f1"):
        finals[metric] = {p: [_final_val(run_dir(out, s, p), 1, metric) for s in (1, 2)] for p in ("random", "worst10")}
        for policy, values in finals[metric].items():
            summary = val["summary"][metric][policy]
            assert summary["mean"] == pytest.approx(np.mean(values), abs=1e-12)
            assert summary["sd"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
            assert f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}" in report
            assert f"[{summary['ci_low']:.4f}, {summary['ci_high']:.4f}]" in report
        (test,) = val["tests"][metric]
        expected = stats.ttest_rel(finals[metric]["random"], finals[metric]["worst10"]).pvalue
        if math.isfinite(expected):
            assert test["p_value"] == pytest.approx(expected)
        assert f"| {metric} | random − worst10 |" in report
    start = [_final_val(run_dir(out, s), 0, "miou") for s in (1, 2)]
    assert val["cycle0"]["miou"]["mean"] == pytest.approx(np.mean(start), abs=1e-12)
    assert val["summary"]["error"]["random"]["interval"] == "agresti-coull"
    assert "## Failure analysis" in report and "**boundary_thickness**" in report
    assert data["failures"]["n_val_samples"] == 20
    assert "**boundary visibility (image)**" in report and sum(data["failures"]["visibility"]["n_val"]) == 20
    own = [(run_dir(out, s), 0) for s in (1, 2)] + [(run_dir(out, s, p), 1) for s in (1, 2) for p in ("random", "worst10")]
    run_s = sum(run_status(run)["cycles"][c]["wall_s"]["cycle_done"] for run, c in own)
    assert data["time"]["runs"] == 6 and data["time"]["run_s"] == pytest.approx(run_s)
    assert 0 < data["time"]["wall_s"] and f"Time: {data['time']['wall_s'] / 60:.1f} min from the first run's start" in report
    assert all(sum(share) == pytest.approx(1.0) for share in data["failures"]["visibility"]["new_share"].values())

    # --report re-renders the same numbers from the run directories, running nothing.
    result = CliRunner().invoke(main, ["compare", "--report", out, "--json"])
    assert result.exit_code == 0, result.output
    again = json.loads(result.stdout)
    assert again["statistics"] == json.loads(json.dumps(data["statistics"]))
    assert again["failures"] == data["failures"]


def _link_tree(src: str, dst: str) -> None:
    """Copy a comparison cheaply: hard links, except the files written in place (journals,
    settings, reports and plots, zarr metadata), so the copy's work never reaches the original."""
    def copy(s: str, d: str) -> None:
        if s.endswith((".jsonl", ".toml", ".json", ".md", ".png")):
            shutil.copy2(s, d)
        else:
            os.link(s, d)
    shutil.copytree(src, dst, copy_function=copy)


def test_policy_runs_not_begun_yet_count_their_bases_cycle0(comparison, tmp_path) -> None:
    from loop.study.report import collect, statistics

    original, _ = comparison
    out = str(tmp_path / "out")
    _link_tree(original, out)
    shutil.rmtree(run_dir(out, 2, "worst10"))  # seed 2's base is done, its worst10 run not forked yet
    data = collect(out)
    base, absent = data["runs"]["seed02/base"], data["runs"]["seed02/worst10"]
    assert absent["state"] == "absent" and data["complete_seeds"] == [1]
    assert absent["cycles"]["val"] == [base["cycles"]["val"][0]] and base["cycles"]["val"][0]["miou"] > 0
    per_cycle = statistics(data)["val"]["per_cycle"]
    assert per_cycle["miou"]["worst10"][0]["n"] == 2 and per_cycle["miou"]["worst10"][1]["n"] == 1


@pytest.mark.slow
def test_resume_does_only_the_missing_work(comparison, tmp_path) -> None:
    original, _ = comparison
    out = str(tmp_path / "out")
    _link_tree(original, out)
    # seed 2's worst10 run never started; seed 1's worst10 run was killed after generating cycle 1.
    shutil.rmtree(run_dir(out, 2, "worst10"))
    journal = Path(run_dir(out, 1, "worst10"), "journal.jsonl")
    events = [json.loads(line) for line in journal.read_text().splitlines()]
    cut = next(i for i, e in enumerate(events) if e["event"] == "generated" and e.get("cycle") == 1)
    journal.write_text("".join(json.dumps(e) + "\n" for e in events[:cut + 1]))
    untouched = {run: Path(run, "journal.jsonl").read_bytes() for run in
                 (run_dir(out, 1), run_dir(out, 2), run_dir(out, 1, "random"), run_dir(out, 2, "random"))}

    lines: list[str] = []
    compare(out, {}, say=lines.append)

    for run, before in untouched.items():
        assert Path(run, "journal.jsonl").read_bytes() == before, run
    assert sum("done already, skipped" in line for line in lines) == 4
    resumed = [json.loads(line) for line in journal.read_text().splitlines()][cut + 1:]
    # Training progress lines are journaled only when training takes long enough (a loaded machine): not counted.
    assert [e["event"] for e in resumed if e["event"] != "train_progress"][:2] == ["resumed", "trained"]
    assert resumed[-1]["event"] == "finished"
    assert not any(e["event"] == "generated" for e in resumed)  # cycle 1's data was kept
    assert any(e["event"] == "forked" for e in map(json.loads, Path(run_dir(out, 2, "worst10"), "journal.jsonl")
                                                      .read_text().splitlines()))
    # The redone run proposes exactly what the original did: same start, same seed.
    assert _params(run_dir(out, 2, "worst10"), 1) == _params(run_dir(original, 2, "worst10"), 1)
    assert json.loads((Path(out) / "report.json").read_text())["complete_seeds"] == [1, 2]


def test_extending_a_comparison_keeps_its_first_cycles_and_their_report(comparison, tmp_path) -> None:
    original, _ = comparison
    out = str(tmp_path / "out")
    shutil.copytree(original, out)  # extending writes in many places: a whole copy keeps the fixture's intact
    before = json.loads((Path(original) / "report.json").read_text())

    lines: list[str] = []
    compare(out, {"cycles": 2}, say=lines.append)

    assert any("extended from 1 to 2 cycles; the report after cycle 1 is kept in " + f"{out}/cycle_01/report.md" in line
               for line in lines)
    kept = json.loads((Path(out) / "cycle_01" / "report.json").read_text())
    assert kept["statistics"] == before["statistics"] and kept["failures"] == before["failures"]
    assert kept["primary"] == before["primary"]
    assert "(this report: after cycle 1)" in (Path(out) / "cycle_01" / "report.md").read_text()
    assert (Path(out) / "cycle_01" / "plots" / "failures.png").exists()
    for seed in (1, 2):
        for policy in ("random", "worst10"):
            run = run_dir(out, seed, policy)
            assert [c["state"] for c in run_status(run)["cycles"]] == ["done"] * 3
            assert _params(run, 1) == _params(run_dir(original, seed, policy), 1)  # cycle 1 untouched
            assert len(_params(run, 2)) == 6
    after = json.loads((Path(out) / "report.json").read_text())
    assert after["settings"]["cycles"] == 2 and after["complete_seeds"] == [1, 2]
    final = {p: [_final_val(run_dir(out, s, p), 2, "miou") for s in (1, 2)] for p in ("random", "worst10")}
    for policy, values in final.items():
        assert after["statistics"]["val"]["summary"]["miou"][policy]["mean"] == pytest.approx(np.mean(values))
    # The kept report is the one --report --at-cycle 1 renders; a cycle the comparison lacks is refused.
    result = CliRunner().invoke(main, ["compare", "--report", out, "--at-cycle", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["statistics"] == kept["statistics"]
    result = CliRunner().invoke(main, ["compare", "--report", out, "--at-cycle", "3"])
    assert result.exit_code != 0 and "at_cycle: expected a cycle 1..2" in result.output
    result = CliRunner().invoke(main, ["compare", out, "--at-cycle", "1"])
    assert result.exit_code != 0 and "use it with --report" in result.output


# --- a smoke comparison with two groups of real images -----------------------------------------------

def _crop_folder(shared: Path, root: Path, names: list[str], size: int = 96) -> str:
    """A tiny real folder: the top-left ``size`` px of each named pair of the shared grain images."""
    from PIL import Image

    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
        for name in names:
            with Image.open(shared / "grains" / sub / f"{name}.png") as picture:
                picture.crop((0, 0, size, size)).save(root / sub / f"{name}.png")
    return str(root)


@pytest.fixture(scope="module")
def grouped_comparison(ray_local, tmp_path_factory, shared_data) -> str:
    """2 seeds × random, near-random, 1 cycle, scored on two real groups (crops of ../shared/data/grains)
    and on a third crop given as --real-val."""
    tmp = tmp_path_factory.mktemp("grouped")
    iron = _crop_folder(shared_data, tmp / "iron", ["iron_001"])
    tbm = _crop_folder(shared_data, tmp / "tbm", ["tbm_10-0-768", "tbm_11-0-0"])
    dev = _crop_folder(shared_data, tmp / "dev", ["tbm_12-256-512"])
    out = str(tmp / "out")
    compare(out, dict(TINY, policies="random,near-random", real=(f"iron={iron}", f"tbm={tbm}"), real_val=dev),
            say=lambda line: None)
    return out


def test_a_comparison_with_real_groups_opens_with_the_primary_endpoint(grouped_comparison) -> None:
    from loop.study.statistics import compare_to_reference, holm

    out = grouped_comparison
    report = (Path(out) / "report.md").read_text()
    data = json.loads((Path(out) / "report.json").read_text())
    assert data["settings"]["primary"] == "real:miou" and data["settings"]["reference"] == "random"
    # The primary endpoint comes first: its section, its table (the report's first), then its verdict.
    first_section = next(line for line in report.splitlines() if line.startswith("## "))
    assert first_section == "## Primary endpoint: real images (all groups pooled), mIoU (`real:miou`), against random"
    first_table = next(line for line in report.splitlines() if line.startswith("|"))
    assert first_table == ("| policy − random | mean difference | 95 % CI (paired t) | t | p (paired t) | p (Holm) "
                           "| p (Wilcoxon) | seeds |")
    assert report.index("**Verdict:** on real images (all groups pooled) mIoU after N = 2 seeds: near-random") \
        < report.index("## Final scores side by side") < report.index("## Secondary endpoints")

    # Each group is scored on its own and pooled (every image counts once: 1 iron + 2 tbm images).
    finals = {}
    for policy in ("random", "near-random"):
        per_seed = []
        for seed in (1, 2):
            last = run_status(run_dir(out, seed, policy))["cycles"][-1]
            groups = last["real_groups"]
            assert set(groups) == {"iron", "tbm"}
            assert last["real"]["miou"] == pytest.approx((groups["iron"]["miou"] + 2 * groups["tbm"]["miou"]) / 3)
            per_seed.append(last["real"]["miou"])
        finals[policy] = per_seed
    (expected,) = compare_to_reference(finals, "random")
    (got,) = data["primary"]["comparisons"]
    assert got["a"] == "near-random" and got["b"] == "random" and got["n"] == 2
    assert got["mean_difference"] == pytest.approx(expected.mean_difference)
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((expected.ci_low, expected.ci_high), nan_ok=True)
    assert f"| near-random − random | {expected.mean_difference:+.4f} |" in report

    stats = data["statistics"]
    assert {"val", "real", "real/iron", "real/tbm"} <= set(stats)
    # Grain statistics are reported for the real sources only (the synthetic sets count no grains).
    assert stats["val"]["metrics"] == ["miou", "error", "boundary_f1"]
    for source in ("real", "real/iron", "real/tbm"):
        assert stats[source]["metrics"][3:] == ["grain_count_rel_error", "mean_intercept_rel_error",
                                                "boundary_intercept_rel_error"]
    assert "| policy | val | " in report and "| real | real/iron | real/tbm |" in report  # side by side
    assert "### Real images, group iron, after cycle 1" in report and "### Real images, group tbm" in report
    # Secondary: every test but the primary one, Holm-adjusted together.
    secondary = [t for block in stats.values() for tests in block["tests"].values() for t in tests if not t["primary"]]
    primary = [t for block in stats.values() for tests in block["tests"].values() for t in tests if t["primary"]]
    assert len(primary) == 1 and primary[0]["a"] == "random" and primary[0]["b"] == "near-random"
    # one test per source and metric that both policies have on every seed (a grain statistic is NaN
    # for an image without closed grains), but the primary one
    assert len(secondary) == sum(len(block["final"][m]) > 1 for block in stats.values() for m in block["metrics"]) - 1
    adjusted = holm([math.nan if t["p_value"] is None else t["p_value"] for t in secondary])
    for t, p in zip(secondary, adjusted):
        assert (t["p_holm"] is None) if math.isnan(p) else t["p_holm"] == pytest.approx(p)


def test_runs_side_by_side_on_cpus_share_the_cores() -> None:
    assert threads_per_run({"CPU": 16.0}, 4) == 4
    assert threads_per_run({"CPU": 2.0}, 2) == 1
    assert threads_per_run({"CPU": 2.0}, 3) == 1  # never none
    assert threads_per_run({"CPU": 8.0}, 1) is None  # one run at a time: every core, the run's default
    assert threads_per_run({"CPU": 16.0, "GPU": 2.0}, 2) is None


def test_more_runs_than_gpus_share_the_gpus() -> None:
    from loop.run.lifecycle import RunError, actor_options

    assert gpu_share_per_run({"CPU": 16.0, "GPU": 1.0}, 4) == 0.25
    assert gpu_share_per_run({"CPU": 16.0, "GPU": 2.0}, 3) == pytest.approx(2 / 3)
    assert gpu_share_per_run({"CPU": 16.0, "GPU": 2.0}, 2) is None  # a GPU per run: the default
    assert gpu_share_per_run({"CPU": 16.0, "GPU": 1.0}, 1) is None
    assert gpu_share_per_run({"CPU": 16.0}, 4) is None  # no GPU
    # each run's trainer and evaluator take turns on its share: half of it each, no CPU slot
    assert actor_options({"CPU": 16.0, "GPU": 1.0}) == {"num_gpus": 0.5, "num_cpus": 0}
    assert actor_options({"CPU": 16.0, "GPU": 1.0}, 0.25) == {"num_gpus": 0.125, "num_cpus": 0}
    assert actor_options({"CPU": 16.0}, 0.25) == {"num_gpus": 0, "num_cpus": 0}
    with pytest.raises(RunError, match=r"gpu_share: expected a fraction of a GPU in \(0, 1\], got 1.5"):
        actor_options({"GPU": 2.0}, 1.5)


def test_a_runs_actors_take_the_threads_they_are_given(ray_local) -> None:
    from loop.run.lifecycle import _actors

    def torch_threads(actor) -> int:
        return ray_local.get(actor.__ray_call__.remote(lambda self: __import__("torch").get_num_threads()))

    with _actors(1) as (trainer, evaluator, _):
        assert torch_threads(trainer) == 1 and torch_threads(evaluator) == 1


def test_the_report_scores_the_checkpoint_the_real_validation_images_pick(grouped_comparison) -> None:
    from loop.study.statistics import compare_to_reference

    out = grouped_comparison
    data = json.loads((Path(out) / "report.json").read_text())
    selection = data["selection"]
    assert selection["source"] == "real" and selection["metric"] == "miou" and selection["criterion"] == "miou"
    values = {}
    for policy in ("random", "near-random"):
        rows = selection["picks"][policy]
        for seed, row in zip((1, 2), rows):
            status = run_status(run_dir(out, seed, policy))
            best = status["best_real_val"]
            assert row["seed"] == seed and row["cycle"] == best["cycle"]
            assert row["value"] == pytest.approx(status["cycles"][best["cycle"]]["real"]["miou"])
            assert row["last"] == pytest.approx(status["cycles"][1]["real"]["miou"])
        values[policy] = [row["value"] for row in rows]
    (expected,) = compare_to_reference(values, "random")
    (got,) = selection["comparisons"]
    assert got["mean_difference"] == pytest.approx(expected.mean_difference)
    report = (Path(out) / "report.md").read_text()
    assert report.index("## The checkpoint the real validation images pick") < report.index("## Secondary endpoints")
    assert "; real validation images (`--real-val`, never the real test images): " in report.splitlines()[2]
