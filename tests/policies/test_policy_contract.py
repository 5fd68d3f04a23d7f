"""The contract every registered policy keeps: n proposals, valid, deterministic, checked."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from policies import Policy, PolicyError, PolicyView, Proposal, get_policy

SPECS = [
    "random", "sobol", "sobol:scramble=false,seed=0", "lhs", "worst10",
    "worst:k=0.2,m=3,radius=0.1,dims=thickness|shape", "worst:k=0.1,metric=error",
    "mix:worst10=0.7,random=0.3", "mix:sobol=0.5,lhs=0.25,worst=0.25",
]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("n", [1, 7, 64])
def test_exactly_n_valid_proposals(spec: str, n: int, scored_view: PolicyView) -> None:
    policy = get_policy(spec)
    proposals = policy.propose(scored_view, n, np.random.default_rng(0))
    assert len(proposals) == n
    for p in proposals:
        assert isinstance(p, Proposal)
        assert scored_view.space.validate(p.params) == p.params
        assert list(p.params) == list(scored_view.space.names)
        assert p.parent_id is None or isinstance(p.parent_id, int)
        assert p.policy and get_policy(p.policy).name == p.policy


@pytest.mark.parametrize("spec", SPECS)
def test_deterministic_for_the_same_view_n_and_seed(spec: str, scored_view: PolicyView) -> None:
    policy = get_policy(spec)
    first = policy.propose(scored_view, 30, np.random.default_rng(11))
    again = get_policy(spec).propose(scored_view, 30, np.random.default_rng(11))
    assert first == again


@pytest.mark.parametrize("spec", ["random", "lhs", "worst10", "mix:worst10=0.5,random=0.5"])
def test_rng_seed_matters_for_random_policies(spec: str, scored_view: PolicyView) -> None:
    policy = get_policy(spec)
    assert policy.propose(scored_view, 20, np.random.default_rng(1)) != \
        policy.propose(scored_view, 20, np.random.default_rng(2))


def test_random_draws_cover_every_dimension_kind(scored_view: PolicyView) -> None:
    rows = [p.params for p in get_policy("random").propose(scored_view, 400, np.random.default_rng(3))]
    assert {r["shape"] for r in rows} == {"voronoi", "hex", "square"}
    assert {r["n_phases"] for r in rows} == set(range(1, 21))
    sizes = np.log([r["grain_size"] for r in rows])
    # Log-uniform: about half the draws fall below the geometric mean of the bounds (32 px).
    assert 0.4 < np.mean(sizes < np.log(32.0)) < 0.6
    assert all(p.parent_id is None for p in get_policy("random").propose(scored_view, 5, np.random.default_rng(3)))


def test_zero_proposals_need_no_metrics(make_view) -> None:
    assert get_policy("worst10").propose(make_view([]), 0, np.random.default_rng(0)) == []


@pytest.mark.parametrize("n", [-1, 2.5, True, "3"])
def test_bad_n_is_refused(n, scored_view: PolicyView) -> None:
    with pytest.raises(PolicyError, match="n must be an integer >= 0"):
        get_policy("random").propose(scored_view, n, np.random.default_rng(0))


def test_bad_rng_and_view_are_refused(scored_view: PolicyView) -> None:
    with pytest.raises(PolicyError, match="numpy.random.Generator"):
        get_policy("random").propose(scored_view, 2, 0)
    with pytest.raises(PolicyError, match="PolicyView"):
        get_policy("random").propose({"space": scored_view.space}, 2, np.random.default_rng(0))


def test_view_checks_its_fields(policy_space) -> None:
    with pytest.raises(PolicyError, match="ParamSpace"):
        PolicyView(None, pa.table({}), pa.table({}), 0)
    with pytest.raises(PolicyError, match="metrics: expected a pyarrow.Table"):
        PolicyView(policy_space, pa.table({}), {"iou": []}, 0)
    with pytest.raises(PolicyError, match="cycle: expected an integer >= 0, got -1"):
        PolicyView(policy_space, pa.table({}), pa.table({}), -1)


class _Broken(Policy):
    """A policy that breaks the contract in a chosen way."""

    kind = "broken"

    def __init__(self, mode: str):
        self.mode = mode

    @property
    def name(self) -> str:
        return f"broken:mode={self.mode}"

    def _propose(self, view, n, rng):
        good = view.space.sample(rng, n)
        if self.mode == "short":
            return [Proposal(params=p) for p in good[:-1]]
        if self.mode == "outside":
            return [Proposal(params={**p, "thickness": 99.0}) for p in good]
        return [Proposal(params=p, parent_id="seven") for p in good]


@pytest.mark.parametrize("mode, message", [
    ("short", "returned 2 proposals; 3 were asked for"),
    ("outside", "outside the space.*thickness.*99"),
    ("parent", "parent_id must be an int or None"),
])
def test_contract_breaches_are_caught(mode: str, message: str, scored_view: PolicyView) -> None:
    with pytest.raises(PolicyError, match=message):
        _Broken(mode).propose(scored_view, 3, np.random.default_rng(0))


def test_policies_compare_by_name() -> None:
    assert get_policy("worst10") == get_policy("worst:radius=0.05,m=10,k=0.1")
    assert get_policy("worst10") != get_policy("worst:k=0.2")
    assert len({get_policy("sobol"), get_policy("sobol:seed=0"), get_policy("sobol:seed=1")}) == 2
