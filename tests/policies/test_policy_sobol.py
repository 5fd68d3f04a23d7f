"""sobol (covers evenly, continues across cycles, independent of rng) and lhs (stratified)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import qmc

from generators.space import Continuous, LogRange, ParamSpace
from policies import LatinHypercubePolicy, PolicyView, SobolPolicy, get_policy


@pytest.fixture(scope="module")
def cube() -> ParamSpace:
    """A space whose unit map is exact, for discrepancy measures."""
    return ParamSpace([Continuous(f"x{i}", "", "", -1.0, 3.0) for i in range(3)]
                      + [LogRange("s", "", "", 0.1, 10.0)])


def _unit(view: PolicyView, proposals) -> np.ndarray:
    return view.space.to_unit([p.params for p in proposals])


def _recorded(view: PolicyView, proposals, cycle: int, make_view, first_id: int = 0) -> list[dict]:
    return [{"sample_id": first_id + i, "cycle": cycle, "split": "train", "policy": p.policy, **p.params}
            for i, p in enumerate(proposals)]


def test_sobol_covers_the_space_better_than_random(cube, make_view) -> None:
    view = make_view([], cycle=0, space=cube)
    sobol = qmc.discrepancy(_unit(view, get_policy("sobol").propose(view, 256, np.random.default_rng(0))))
    randoms = [qmc.discrepancy(_unit(view, get_policy("random").propose(view, 256, np.random.default_rng(s))))
               for s in range(5)]
    assert sobol < 0.25 * min(randoms), (sobol, randoms)


def test_sobol_continues_across_cycles(cube, make_view) -> None:
    policy = get_policy("sobol")
    start = make_view([], cycle=0, space=cube)
    whole = policy.propose(start, 24, np.random.default_rng(0))
    cycle0 = policy.propose(start, 10, np.random.default_rng(1))
    assert cycle0 == whole[:10]
    rows = _recorded(start, cycle0, 0, make_view)
    cycle1 = policy.propose(make_view(rows, cycle=1, space=cube), 14, np.random.default_rng(2))
    assert cycle1 == whole[10:24]
    assert not {tuple(p.params.values()) for p in cycle1} & {tuple(p.params.values()) for p in cycle0}


def test_sobol_counts_only_its_own_rows_from_earlier_cycles(cube, make_view) -> None:
    policy = get_policy("sobol")
    start = make_view([], cycle=0, space=cube)
    whole = policy.propose(start, 8, np.random.default_rng(0))
    mine = _recorded(start, whole[:4], 0, make_view)
    others = _recorded(start, get_policy("random").propose(start, 5, np.random.default_rng(0)), 0, make_view, 100)
    same_cycle = _recorded(start, whole[4:6], 1, make_view, 200)
    view = make_view(mine + others + same_cycle, cycle=1, space=cube)
    # A second proposal for cycle 1 after part of it was recorded gives the same points again.
    assert policy.propose(view, 4, np.random.default_rng(9)) == whole[4:8]
    # Another seed is another sequence, which does not count the default sequence's rows.
    other_seed = get_policy("sobol:seed=5")
    assert other_seed.propose(view, 3, np.random.default_rng(0)) == \
        other_seed.propose(start, 3, np.random.default_rng(0))
    assert other_seed.propose(start, 3, np.random.default_rng(0)) != whole[:3]


def test_sobol_first_batch_matches_scipy_without_a_warning(cube, make_view) -> None:
    view = make_view([], cycle=0, space=cube)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        proposals = SobolPolicy(seed=3).propose(view, 10, np.random.default_rng(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = qmc.Sobol(4, scramble=True, rng=3).random(10)
    np.testing.assert_allclose(_unit(view, proposals), expected, atol=1e-12)


def test_unscrambled_sobol_starts_at_the_lower_corner(policy_space, make_view) -> None:
    first = get_policy("sobol:scramble=false").propose(make_view([], cycle=0), 1, np.random.default_rng(0))[0]
    assert first.params == {"thickness": 1.0, "grain_size": 4.0, "n_phases": 1, "shape": "voronoi"}


def test_lhs_puts_one_point_in_each_cell_of_every_dimension(cube, make_view) -> None:
    view = make_view([], cycle=0, space=cube)
    n = 50
    unit = _unit(view, LatinHypercubePolicy().propose(view, n, np.random.default_rng(8)))
    for j in range(unit.shape[1]):
        cells = np.floor(np.clip(unit[:, j], 0, 1 - 1e-12) * n).astype(int)
        assert sorted(cells) == list(range(n))
    centred = _unit(view, get_policy("lhs:scramble=false").propose(view, n, np.random.default_rng(8)))
    np.testing.assert_allclose(np.sort(centred[:, 0]), (np.arange(n) + 0.5) / n, atol=1e-9)
