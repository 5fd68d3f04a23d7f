"""worst-k: picks the worst, varies them within radius, along dims only, records parents."""

from __future__ import annotations

import math

import numpy as np
import pytest

from generators.space import Choice, Integer
from policies import PolicyError, PolicyView, WorstPolicy, get_policy


def _hand_made(make_view, ious: list[float | None], *, train_iou: float = 0.0) -> PolicyView:
    """Validation rows with the given ious (sample_id = 10 + position) plus one better-hidden train row."""
    rows, ids = [], []
    for i, _ in enumerate(ious):
        ids.append(10 + i)
        rows.append({"sample_id": 10 + i, "thickness": 1.0 + i * 0.1, "grain_size": 16.0, "n_phases": 5,
                     "shape": "hex"})
    rows.append({"sample_id": 99, "split": "train", "thickness": 2.0, "grain_size": 16.0, "n_phases": 5,
                 "shape": "hex"})
    return make_view(rows, {"sample_id": [*ids, 99], "iou": [*ious, train_iou]})


def test_picks_exactly_the_worst_k_of_the_validation_set(make_view) -> None:
    ious = [0.9, 0.2, 0.8, 0.5, 0.1, 0.7, 0.3, 0.95, 0.6, 0.4]
    view = _hand_made(make_view, ious)
    worst = WorstPolicy(k=0.3).worst(view)
    # Worst three by iou: 0.1 (id 14), 0.2 (id 11), 0.3 (id 16); the train row (iou 0) is not eligible.
    assert worst["sample_id"].to_pylist() == [14, 11, 16]
    proposals = WorstPolicy(k=0.3, m=2).propose(view, 6, np.random.default_rng(0))
    assert [p.parent_id for p in proposals] == [14, 14, 11, 11, 16, 16]


def test_lower_is_better_metrics_rank_the_other_way(scored_view: PolicyView) -> None:
    by_iou = WorstPolicy(k=0.1).worst(scored_view)["sample_id"].to_pylist()
    by_error = WorstPolicy(k=0.1, metric="error").worst(scored_view)["sample_id"].to_pylist()
    # iou = id/100 and error = 1 - id/100: both say samples 0..3 are worst (train rows 40.. excluded).
    assert by_iou == by_error == [0, 1, 2, 3]


def test_ties_break_by_sample_id_and_nan_is_skipped(make_view) -> None:
    view = _hand_made(make_view, [0.5, 0.2, float("nan"), 0.2, None, 0.2, 0.9, 0.8])
    # 6 scored rows, k=0.5 -> 3 worst: the three 0.2s in sample_id order.
    assert WorstPolicy(k=0.5).worst(view)["sample_id"].to_pylist() == [11, 13, 15]


def test_worst_count_is_ceil_k_n_without_float_noise(make_view) -> None:
    view = _hand_made(make_view, [i / 50 for i in range(50)])
    assert WorstPolicy(k=0.14).worst(view).num_rows == 7  # 0.14 * 50 is 7.000000000000001 in floats
    assert WorstPolicy(k=0.25).worst(view).num_rows == 13
    assert WorstPolicy(k=0.01).worst(view).num_rows == 1
    assert WorstPolicy(k=0.1, m=10).suggested_n(view) == 50


def test_unvaried_dims_keep_the_stored_value_bit_for_bit(make_view) -> None:
    # grain_size 16.0 comes back from the log unit map as 15.999999999999998: it must not go through it.
    view = _hand_made(make_view, [0.1, 0.2, 0.3])
    proposals = get_policy("worst:k=1,dims=thickness").propose(view, 30, np.random.default_rng(0))
    assert {p.params["grain_size"] for p in proposals} == {16.0}
    assert {(p.params["n_phases"], p.params["shape"]) for p in proposals} == {(5, "hex")}


def test_variations_stay_within_radius_and_inside_the_space(scored_view: PolicyView) -> None:
    radius = 0.05
    policy = WorstPolicy(k=0.25, m=25, radius=radius)
    proposals = policy.propose(scored_view, 250, np.random.default_rng(5))
    space = scored_view.space
    parents = {r["sample_id"]: r for r in scored_view.params.to_pylist()}
    assert {p.parent_id for p in proposals} == set(range(10))
    moved = 0
    for p in proposals:
        assert space.validate(p.params) == p.params
        parent = {k: parents[p.parent_id][k] for k in space.names}
        delta = space.to_unit(p.params) - space.to_unit(parent)
        for j, dim in enumerate(space):
            if isinstance(dim, (Integer, Choice)):
                cells = dim.high - dim.low + 1 if isinstance(dim, Integer) else len(dim.options)
                # A cell-centred coordinate moved by <= radius lands at most round(radius*cells) cells away.
                assert abs(delta[j]) * cells <= math.floor(0.5 + radius * cells) + 1e-9
            else:
                assert abs(delta[j]) <= radius + 1e-9, (dim.name, delta[j])
        moved += p.params["thickness"] != parent["thickness"]
    assert moved == len(proposals)  # continuous dims always move


def test_clipped_at_the_space_edges(policy_space, make_view) -> None:
    edge = {"sample_id": 1, "thickness": 5.0, "grain_size": 4.0, "n_phases": 20, "shape": "square"}
    view = make_view([edge], {"sample_id": [1], "iou": [0.0]})
    proposals = WorstPolicy(k=1.0, radius=0.5).propose(view, 200, np.random.default_rng(2))
    thickness = np.array([p.params["thickness"] for p in proposals])
    sizes = np.array([p.params["grain_size"] for p in proposals])
    assert thickness.max() <= 5.0 and thickness.min() >= 3.0 and (thickness == 5.0).any()
    assert sizes.min() >= 4.0 and sizes.max() <= 4.0 * (256 / 4) ** 0.5 + 1e-9


def test_only_the_named_dims_change(scored_view: PolicyView) -> None:
    policy = get_policy("worst:k=0.1,m=50,radius=0.3,dims=thickness|shape")
    proposals = policy.propose(scored_view, 200, np.random.default_rng(4))
    parents = {r["sample_id"]: r for r in scored_view.params.to_pylist()}
    shapes_changed = 0
    for p in proposals:
        parent = parents[p.parent_id]
        assert p.params["grain_size"] == parent["grain_size"]
        assert p.params["n_phases"] == parent["n_phases"]
        assert p.params["thickness"] != parent["thickness"]
        shapes_changed += p.params["shape"] != parent["shape"]
    assert shapes_changed > 0  # radius 0.3 crosses a third-wide choice cell often


def test_counts_round_robin_over_the_worst(scored_view: PolicyView) -> None:
    policy = WorstPolicy(k=0.1, m=10)  # 4 worst of 40
    assert policy.suggested_n(scored_view) == 40
    parents = [p.parent_id for p in policy.propose(scored_view, 40, np.random.default_rng(0))]
    assert parents == [0] * 10 + [1] * 10 + [2] * 10 + [3] * 10
    parents = [p.parent_id for p in policy.propose(scored_view, 10, np.random.default_rng(0))]
    assert parents == [0, 0, 0, 1, 1, 1, 2, 2, 3, 3]
    parents = [p.parent_id for p in policy.propose(scored_view, 3, np.random.default_rng(0))]
    assert parents == [0, 1, 2]


def test_no_metrics_yet_is_a_clear_error(make_view, scored_view: PolicyView) -> None:
    empty = make_view([], cycle=0)
    with pytest.raises(PolicyError, match=r"no validation metrics yet \(cycle 0\).*random or sobol"):
        get_policy("worst10").propose(empty, 10, np.random.default_rng(0))
    unscored = PolicyView(scored_view.space, scored_view.params,
                          scored_view.metrics.filter(scored_view.metrics["sample_id"].to_numpy() >= 40), 1)
    with pytest.raises(PolicyError, match="no 'val' row of view.params has a 'iou' score"):
        get_policy("worst10").propose(unscored, 10, np.random.default_rng(0))


def test_missing_metric_column_names_it_and_the_available(scored_view: PolicyView) -> None:
    view = PolicyView(scored_view.space, scored_view.params, scored_view.metrics.drop(["iou"]), 1)
    with pytest.raises(PolicyError, match=r"lacks column\(s\) 'iou'; it has: sample_id, error"):
        get_policy("worst10").propose(view, 5, np.random.default_rng(0))


def test_unknown_dims_and_split_are_reported(scored_view: PolicyView) -> None:
    with pytest.raises(PolicyError, match="unknown dimension.*'colour'.*thickness, grain_size, n_phases, shape"):
        get_policy("worst:dims=thickness|colour").propose(scored_view, 5, np.random.default_rng(0))
    with pytest.raises(PolicyError, match="no 'test' row"):
        get_policy("worst:split=test").propose(scored_view, 5, np.random.default_rng(0))


def test_duplicate_metric_rows_are_refused(scored_view: PolicyView) -> None:
    import pyarrow as pa

    doubled = pa.concat_tables([scored_view.metrics, scored_view.metrics.slice(0, 1)])
    view = PolicyView(scored_view.space, scored_view.params, doubled, 1)
    with pytest.raises(PolicyError, match="view.metrics repeats a sample_id"):
        get_policy("worst10").propose(view, 5, np.random.default_rng(0))
