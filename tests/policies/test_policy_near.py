"""near: worst's variations around randomly chosen validation samples; the paper alias and its space."""

from __future__ import annotations

import numpy as np
import pytest

from generators import get_generator
from policies import NearPolicy, PolicyError, PolicyView, WorstPolicy, get_policy
from policies import worst as worst_module


def test_near_picks_ceil_k_n_distinct_random_scored_validation_samples(scored_view: PolicyView) -> None:
    near = NearPolicy(k=0.1, m=10)
    parents = near.parents(scored_view, np.random.default_rng(0))["sample_id"].to_pylist()
    assert len(parents) == 4 and len(set(parents)) == 4  # ceil(0.1 * 40) of the 40 scored val rows
    assert all(0 <= p < 40 for p in parents)  # never a train row (40..44)
    draws = {tuple(near.parents(scored_view, np.random.default_rng(s))["sample_id"].to_pylist()) for s in range(20)}
    assert len(draws) > 10  # the rng decides, not the scores
    assert near.suggested_n(scored_view) == WorstPolicy(k=0.1, m=10).suggested_n(scored_view) == 40


def test_near_makes_worst_variations_around_its_parents(scored_view: PolicyView) -> None:
    """The same variation step as worst (one shared function): proposals equal vary_around on near's parents."""
    near = get_policy("near:k=0.25,m=3,radius=0.1,dims=thickness|shape")
    proposals = near.propose(scored_view, 30, np.random.default_rng(9))
    rng = np.random.default_rng(9)
    parents = near.parents(scored_view, rng)
    again = worst_module.vary_around(scored_view.space, parents, 30, rng, radius=0.1, dims=("thickness", "shape"))
    assert [(p.params, p.parent_id) for p in proposals] == [(p.params, p.parent_id) for p in again]
    assert [p.parent_id for p in proposals] == [pid for pid in parents["sample_id"].to_pylist() for _ in range(3)]
    stored = {r["sample_id"]: r for r in scored_view.params.to_pylist()}
    for p in proposals:
        assert p.params["grain_size"] == stored[p.parent_id]["grain_size"]  # not in dims: kept bit for bit
        assert abs(p.params["thickness"] - stored[p.parent_id]["thickness"]) <= 0.1 * 4.0 + 1e-9
    assert NearPolicy._propose is WorstPolicy._propose  # no copy of the neighbourhood code


def test_near_needs_scores_like_worst(make_view) -> None:
    with pytest.raises(PolicyError, match=r"policy 'near:k=0.1,m=10,radius=0.05': no validation metrics yet "
                                          r"\(cycle 0\); it varies randomly chosen scored samples"):
        get_policy("near-random").propose(make_view([], cycle=0), 10, np.random.default_rng(0))


def test_paper_alias_fits_grains_and_says_clearly_why_not_cracks() -> None:
    paper = get_policy("paper")
    assert paper.dims == ("grain_contrast", "boundary_thickness") and (paper.k, paper.m, paper.radius) == (0.1, 10, 0.05)
    paper.check_space(get_generator("grains").space)
    with pytest.raises(PolicyError, match=r"dims names unknown dimension\(s\) 'grain_contrast', "
                                          r"'boundary_thickness'; the space has: crack_probability"):
        paper.check_space(get_generator("cracks").space)
    get_policy("near-random").check_space(get_generator("cracks").space)  # no dims: any space
    with pytest.raises(PolicyError, match="'grain_contrast'"):
        get_policy("mix:paper=0.5,random=0.5").check_space(get_generator("cracks").space)
