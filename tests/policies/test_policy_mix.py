"""mix: splits n by weight (largest remainder), delegates, keeps sub-policy names and streams."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies import MixPolicy, PolicyError, PolicyView, get_policy
from policies.mix import largest_remainder


@pytest.mark.parametrize("weights, n, counts", [
    ([0.7, 0.3], 10, [7, 3]),
    ([0.7, 0.3], 11, [8, 3]),       # 7.7 / 3.3: the larger remainder gets the spare unit
    ([0.5, 0.5], 7, [4, 3]),        # equal remainders: the first written wins
    ([1 / 3, 1 / 3, 1 / 3], 10, [4, 3, 3]),
    ([0.9, 0.05, 0.05], 3, [3, 0, 0]),
    ([0.25, 0.75], 0, [0, 0]),
])
def test_largest_remainder(weights, n, counts) -> None:
    assert largest_remainder(weights, n) == counts


@given(st.lists(st.integers(1, 1000), min_size=1, max_size=6), st.integers(0, 5000))
def test_largest_remainder_sums_to_n_and_stays_within_one(raw, n) -> None:
    weights = [r / sum(raw) for r in raw]
    counts = largest_remainder(weights, n)
    assert sum(counts) == n
    assert all(abs(c - w * n) < 1 for c, w in zip(counts, weights))


def test_mix_delegates_its_shares_in_order(scored_view: PolicyView) -> None:
    policy = get_policy("mix:worst10=0.7,random=0.3")
    assert policy.counts(23) == {"worst10": 16, "random": 7}
    proposals = policy.propose(scored_view, 23, np.random.default_rng(3))
    worst_name = get_policy("worst10").name
    assert [p.policy for p in proposals] == [worst_name] * 16 + ["random"] * 7
    assert all(p.parent_id is not None for p in proposals[:16])
    assert all(p.parent_id is None for p in proposals[16:])


def test_sub_streams_do_not_depend_on_the_other_counts(scored_view: PolicyView) -> None:
    mix = get_policy("mix:worst=0.5,random=0.5")
    assert mix.counts(10) == {"worst": 5, "random": 5} and mix.counts(11) == {"worst": 6, "random": 5}
    a = mix.propose(scored_view, 10, np.random.default_rng(4))
    b = mix.propose(scored_view, 11, np.random.default_rng(4))
    # random has its own child stream: the same 5 draws whether worst drew 5 or 6 variations first.
    assert [p.policy for p in a[5:]] == ["random"] * 5
    assert a[5:] == b[6:]


def test_sobol_inside_mix_continues_its_own_sequence(policy_space, make_view) -> None:
    mix = get_policy("mix:sobol=0.5,random=0.5")
    start = make_view([], cycle=0)
    first = mix.propose(start, 8, np.random.default_rng(0))
    rows = [{"sample_id": i, "cycle": 0, "split": "train", "policy": p.policy, **p.params}
            for i, p in enumerate(first)]
    second = mix.propose(make_view(rows, cycle=1), 8, np.random.default_rng(1))
    whole = get_policy("sobol").propose(start, 8, np.random.default_rng(0))
    assert [p.params for p in first[:4]] == [p.params for p in whole[:4]]
    assert [p.params for p in second[:4]] == [p.params for p in whole[4:]]


def test_mix_surfaces_a_sub_policy_error(make_view) -> None:
    with pytest.raises(PolicyError, match="no validation metrics yet"):
        get_policy("mix:worst10=0.5,random=0.5").propose(make_view([], cycle=0), 4, np.random.default_rng(0))


def test_programmatic_construction_matches_the_spec() -> None:
    assert MixPolicy(worst10=0.7, random=0.3) == get_policy("mix:worst10=0.7,random=0.3")
