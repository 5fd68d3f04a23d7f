"""anchored: draws around real images located in the space, weighted by the model's error on them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from policies import AnchoredPolicy, PolicyError, PolicyView, get_policy
from policies.anchored import anchors_table, spread_column, unit_column
from policies.testing import example_anchors

RANGE_DIMS = ["thickness", "grain_size", "n_phases"]


def _view(view: PolicyView, anchors: pa.Table) -> PolicyView:
    return PolicyView(view.space, view.params, view.metrics, view.cycle, anchors=anchors)


def _anchors(unit_rows, spread=0.0, **scores) -> pa.Table:
    unit = np.array([[u] * len(RANGE_DIMS) for u in unit_rows])
    return anchors_table([f"r{i}.png" for i in range(len(unit_rows))], RANGE_DIMS, unit,
                         np.full(unit.shape, spread), scores)


def _unit(view: PolicyView, proposals) -> np.ndarray:
    return view.space.to_unit([p.params for p in proposals])


def test_proposals_concentrate_around_the_anchors(scored_view: PolicyView) -> None:
    view = _view(scored_view, _anchors([0.2, 0.8]))  # no scores: equal shares
    proposals = AnchoredPolicy(floor=0.02).propose(view, 200, np.random.default_rng(0))
    unit = _unit(view, proposals)
    cont = view.space.names.index("thickness")
    first, second = unit[:100, cont], unit[100:, cont]  # grouped by anchor, in the table's order
    assert abs(first.mean() - 0.2) < 0.01 and abs(second.mean() - 0.8) < 0.01
    assert 0.012 < first.std() < 0.03  # sd = floor when the ensemble agrees
    assert all(p.parent_id is None and p.policy == "anchored:floor=0.02" for p in proposals)
    shapes = {p.params["shape"] for p in proposals}  # a choice is not located: drawn uniformly
    assert shapes == {"voronoi", "hex", "square"}


def test_the_spread_widens_the_draws_and_clips_to_the_space(scored_view: PolicyView) -> None:
    anchors = _anchors([0.5, 0.0])
    wide = anchors.set_column(anchors.schema.get_field_index(spread_column("thickness")), spread_column("thickness"),
                              pa.array([0.2, 0.3]))
    view = _view(scored_view, wide)
    unit = _unit(view, AnchoredPolicy(floor=0.01).propose(view, 400, np.random.default_rng(1)))
    cont = view.space.names.index("thickness")
    assert 0.17 < unit[:200, cont].std() < 0.23  # the ensemble's spread, above the floor
    assert unit[:, cont].min() >= 0.0 and unit[:, cont].max() <= 1.0
    assert np.mean(unit[200:, cont] == 0.0) > 0.4  # an anchor at the edge: half its draws clip there
    size = view.space.names.index("grain_size")
    assert unit[:200, size].std() < 0.02  # that dimension's spread is 0: the floor


def test_anchors_are_weighted_by_the_error_on_them(scored_view: PolicyView) -> None:
    # mIoU 0.9, 0.6, 0.0: badness 0.1, 0.4, 1.0 -> 7, 27, 66 of 100 (largest remainder, ties to the first).
    view = _view(scored_view, _anchors([0.1, 0.5, 0.9], miou=[0.9, 0.6, 0.0], error=[0.01, 0.2, 0.1]))
    policy = AnchoredPolicy(floor=0.01)
    assert policy.weights(view.anchors) == pytest.approx([0.1 / 1.5, 0.4 / 1.5, 1.0 / 1.5])
    unit = _unit(view, policy.propose(view, 100, np.random.default_rng(2)))[:, view.space.names.index("thickness")]
    assert [int(np.sum(np.abs(unit - c) < 0.1)) for c in (0.1, 0.5, 0.9)] == [7, 27, 66]
    # metric=error weights by the pixel error instead.
    assert AnchoredPolicy(metric="error").weights(view.anchors) == pytest.approx([0.01 / 0.31, 0.2 / 0.31, 0.1 / 0.31])
    # Without scores (a folder of images only), or all perfect: equal shares.
    assert AnchoredPolicy().weights(_anchors([0.1, 0.5])) == pytest.approx([0.5, 0.5])
    assert AnchoredPolicy().weights(_anchors([0.1, 0.5], miou=[1.0, 1.0])) == pytest.approx([0.5, 0.5])
    # A classifier's anchors: weighted by the loss; a missing score gets the others' mean.
    assert AnchoredPolicy().weights(_anchors([0.1, 0.5, 0.9], loss=[0.2, None, 0.6])) == pytest.approx(
        [0.2 / 1.2, 0.4 / 1.2, 0.6 / 1.2])


def test_counts_follow_the_weights_exactly(scored_view: PolicyView) -> None:
    view = _view(scored_view, _anchors([0.1, 0.5, 0.9], miou=[0.9, 0.6, 0.0]))
    policy = AnchoredPolicy(floor=0.001)
    unit = _unit(view, policy.propose(view, 15, np.random.default_rng(3)))[:, view.space.names.index("thickness")]
    # 15 × (1/15, 4/15, 10/15) = 1, 4, 10, grouped by anchor.
    assert np.allclose(unit, [0.1] * 1 + [0.5] * 4 + [0.9] * 10, atol=0.01)


def test_same_seed_same_proposals_and_the_seed_matters(scored_view: PolicyView) -> None:
    policy = get_policy("anchored:worst_share=0.25")
    first = policy.propose(scored_view, 40, np.random.default_rng(5))
    assert get_policy(policy.name).propose(scored_view, 40, np.random.default_rng(5)) == first
    assert policy.propose(scored_view, 40, np.random.default_rng(6)) != first


def test_worst_share_comes_from_worst10(scored_view: PolicyView) -> None:
    proposals = get_policy("anchored:worst_share=0.3").propose(scored_view, 20, np.random.default_rng(4))
    anchored, worst = proposals[:14], proposals[14:]
    assert {p.policy for p in anchored} == {"anchored:floor=0.05,worst_share=0.3"}
    assert {p.policy for p in worst} == {"worst:k=0.1,m=10,radius=0.05"}
    assert {p.parent_id for p in worst} <= {0, 1, 2, 3}  # the worst 10 % of 40 (iou = sample_id / 100)
    assert all(p.parent_id is None for p in anchored)
    # Without validation metrics the worst share cannot be proposed; the anchored part alone can.
    bare = PolicyView(scored_view.space, scored_view.params, pa.table({}), 1, anchors=example_anchors())
    with pytest.raises(PolicyError, match="no validation metrics yet"):
        get_policy("anchored:worst_share=0.3").propose(bare, 20, np.random.default_rng(4))
    assert len(get_policy("anchored").propose(bare, 20, np.random.default_rng(4))) == 20


def test_names_settings_and_bad_settings() -> None:
    assert get_policy("anchored").name == "anchored:floor=0.05"
    assert get_policy("anchored:metric=miou,worst_share=0.5,floor=0.1").name == \
        "anchored:floor=0.1,worst_share=0.5,metric=miou"
    assert get_policy("anchored").uses_anchors() and get_policy("mix:anchored=0.5,random=0.5").uses_anchors()
    assert not get_policy("worst10").uses_anchors()
    for spec, message in [("anchored:floor=0", r"floor=0 is out of range; expected a number in \(0, 1\]"),
                          ("anchored:worst_share=1", r"worst_share=1 is out of range; expected a number in \[0, 1\)"),
                          ("anchored:metric=iou", "metric=iou is not known; expected one of miou, error, loss")]:
        with pytest.raises(PolicyError, match=message):
            get_policy(spec)


def test_no_anchors_or_anchors_of_another_space_are_refused(scored_view: PolicyView) -> None:
    with pytest.raises(PolicyError, match=r"policy 'anchored:floor=0.05': the view has no real-val anchors \(cycle 1\); "
                                          r"it needs a run started with --real-val DIR"):
        AnchoredPolicy().propose(_view(scored_view, pa.table({})), 5, np.random.default_rng(0))
    other = anchors_table(["a.png"], ["width"], [[0.5]], [[0.1]])
    with pytest.raises(PolicyError, match="the anchors locate none of the space's dimensions"):
        AnchoredPolicy().propose(_view(scored_view, other), 5, np.random.default_rng(0))
    missing = _anchors([0.5]).set_column(4, unit_column("thickness"), pa.array([None], pa.float64()))
    with pytest.raises(PolicyError, match="an anchor has no estimate of 'thickness'"):
        AnchoredPolicy().propose(_view(scored_view, missing), 5, np.random.default_rng(0))
    with pytest.raises(PolicyError, match="PolicyView.anchors: expected a pyarrow.Table"):
        PolicyView(scored_view.space, scored_view.params, scored_view.metrics, 1, anchors={"a": 1})
