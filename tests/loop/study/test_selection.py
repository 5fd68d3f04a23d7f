"""The checkpoint each run's real validation images pick (loop.study.selection), on made-up scores."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from loop.study.selection import checkpoint_selection


def _entry(run: str, real: list[float], real_val: list[float | None]) -> dict:
    return {"run": run, "cycles": {"real": [{"miou": v} for v in real]},
            "real_val": [None if v is None else {"miou": v, "n_images": 2} for v in real_val]}


def _data(runs: dict, real_val: str | None = "dev", seeds=(1, 2, 3)) -> dict:
    config = SimpleNamespace(real_val=real_val, policies=("random", "anchored"), primary="real:miou",
                             reference="random")
    return {"config": config, "cycle": 2, "complete_seeds": list(seeds), "runs": runs}


RUNS = {
    # real-val picks cycle 0, 1, 0 for random and 2, 2, 1 for anchored (a tie goes to the earlier cycle)
    "seed01/random": _entry("r1", [0.50, 0.48, 0.46], [0.60, 0.55, 0.50]),
    "seed02/random": _entry("r2", [0.51, 0.53, 0.47], [0.58, 0.61, 0.52]),
    "seed03/random": _entry("r3", [0.49, 0.45, 0.44], [0.57, 0.57, 0.50]),
    "seed01/anchored": _entry("a1", [0.50, 0.52, 0.56], [0.60, 0.62, 0.66]),
    "seed02/anchored": _entry("a2", [0.51, 0.54, 0.55], [0.58, 0.60, 0.63]),
    "seed03/anchored": _entry("a3", [0.49, 0.53, 0.50], [0.57, 0.64, 0.64]),
}


def test_each_run_keeps_the_cycle_its_real_validation_images_score_best() -> None:
    result = checkpoint_selection(_data(RUNS))
    assert [r["cycle"] for r in result["picks"]["random"]] == [0, 1, 0]
    assert [r["cycle"] for r in result["picks"]["anchored"]] == [2, 2, 1]
    assert [r["value"] for r in result["picks"]["random"]] == [0.50, 0.53, 0.49]
    assert [r["last"] for r in result["picks"]["anchored"]] == [0.56, 0.55, 0.50]
    assert result["summary"]["random"]["cycles"] == {0: 2, 1: 1}
    assert result["summary"]["anchored"]["mean"] == pytest.approx((0.56 + 0.55 + 0.53) / 3)
    assert result["summary"]["random"]["last_mean"] == pytest.approx((0.46 + 0.47 + 0.44) / 3)
    (diff,) = result["comparisons"]
    assert diff["a"] == "anchored" and diff["b"] == "random"
    assert diff["mean_difference"] == pytest.approx(((0.56 - 0.50) + (0.55 - 0.53) + (0.53 - 0.49)) / 3)
    assert result["criterion"] == "miou" and result["unscored"] == []


def test_runs_missing_a_real_val_score_leave_their_policy_out() -> None:
    runs = dict(RUNS, **{"seed02/anchored": _entry("a2", [0.51, 0.54, 0.55], [0.58, None, 0.63])})
    result = checkpoint_selection(_data(runs))
    assert set(result["picks"]) == {"random"} and result["unscored"] == ["a2"]
    assert result["comparisons"] == []  # nothing to pair with the reference
    assert checkpoint_selection(_data(RUNS, real_val=None)) is None  # no --real-val, no selection
