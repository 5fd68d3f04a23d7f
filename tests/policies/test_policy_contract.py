"""The contract every registered policy keeps: n proposals, valid, deterministic, checked.

The contract itself is :class:`policies.testing.PolicyContract`; it runs here on every
registered policy name and alias (read from the registry, so a new policy gets it by
registering) and on the specs with settings below, over the views of ``conftest.py``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from policies import Policy, PolicyError, PolicyView, Proposal, RandomPolicy, get_policy, registry
from policies import settings as policy_settings
from policies import testing as policies_testing
from policies.testing import PolicyContract, contract_checks, registered_specs, run_contract, space_for

SPECS_WITH_SETTINGS = [
    "sobol:scramble=false,seed=0", "worst:k=0.2,m=3,radius=0.1,dims=thickness|shape", "worst:k=0.1,metric=error",
    "mix:worst10=0.7,random=0.3", "mix:sobol=0.5,lhs=0.25,worst=0.25",
    "anchored:floor=0.1,worst_share=0.3,metric=error", "mix:anchored=0.5,worst10=0.5",
]
"""Specs with settings the contract runs on besides the registered names and aliases."""

CONTRACT_SPECS = [
    *(pytest.param(spec, id=name) for name, spec in registered_specs().items()),
    *(pytest.param(spec, id=spec) for spec in SPECS_WITH_SETTINGS),
]


class TestEveryRegisteredPolicy(PolicyContract):
    """The whole contract, once per registered name, alias and spec with settings."""

    @pytest.fixture(params=CONTRACT_SPECS)
    def policy_spec(self, request: pytest.FixtureRequest) -> str:
        """A spec that builds the policy under test."""
        return request.param

    @pytest.fixture
    def contract_view(self, policy_spec: str, scored_view: PolicyView) -> PolicyView:
        """conftest's scored view, or the same over a generator's space for a policy that names its
        dimensions (``paper``)."""
        space = space_for(policy_spec, scored_view.space)
        return scored_view if space is scored_view.space else policies_testing.scored_view(space)

    @pytest.fixture
    def contract_empty_view(self, policy_spec: str, make_view) -> PolicyView:
        """conftest's view with no rows and no metrics (over the policy's space, as above)."""
        return make_view([], space=space_for(policy_spec, make_view([]).space))


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


class ToyPolicy(Policy):
    """A tiny policy that keeps the contract: uniform draws in a cube of side ``spread`` at the centre.

    ``mode`` breaks it in one way, to show the contract notices.
    """

    kind = "toy"
    mode = "good"

    def __init__(self, spread: float | str = 0.5):
        self.spread = policy_settings.number(self.kind, "spread", spread, low=0.0, high=1.0, low_open=True)
        self._kept = np.random.default_rng(0)

    @property
    def name(self) -> str:
        return f"{self.kind}:spread={policy_settings.fmt(self.spread)}"

    def _propose(self, view, n, rng):
        # "stateful" draws from a Generator kept between calls instead of the rng it is given.
        source = self._kept if self.mode == "stateful" else rng
        unit = 0.5 + self.spread * (source.random((n, len(view.space))) - 0.5)
        return [Proposal(params=p) for p in view.space.from_unit(unit)]


class NeedyPolicy(RandomPolicy):
    """A policy that cannot be built without a setting; its error says how, as the contract asks."""

    kind = "needy"

    def __init__(self, **found: str):
        if set(found) != {"tag"}:
            raise PolicyError(f"policy 'needy': takes exactly the setting tag, got {sorted(found)}; e.g. needy:tag=a")
        self.tag = policy_settings.names(self.kind, "tag", found["tag"])[0]

    @property
    def name(self) -> str:
        return f"{self.kind}:tag={self.tag}"


@pytest.fixture
def toy_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Private copies of the registry's dicts, so registering toys leaves the real ones alone."""
    monkeypatch.setattr(registry, "_POLICIES", dict(registry._POLICIES))
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))


def test_registering_a_policy_is_enough_for_the_contract(toy_registry, scored_view: PolicyView, make_view) -> None:
    registry.register_policy("toy", ToyPolicy)
    registry.register_alias("toy_wide", "toy:spread=1")
    registry.register_policy("needy", NeedyPolicy)
    specs = registered_specs()  # what CONTRACT_SPECS is built from
    assert specs["toy"] == "toy" and specs["toy_wide"] == "toy_wide" and specs["needy"] == "needy:tag=a"
    for name in ("toy", "toy_wide", "needy"):
        ran = run_contract(PolicyContract(), policy_spec=specs[name], contract_view=scored_view,
                           contract_empty_view=make_view([]))
        assert {r.partition("[")[0] for r in ran} == set(contract_checks(PolicyContract))
        assert "test_exactly_n_valid_proposals[n=64]" in ran and "test_bad_n_is_refused[n='3']" in ran

    class TestToy(PolicyContract):
        spec = "toy:spread=0.25"

    assert len(run_contract(TestToy(), policy_spec=TestToy.spec, contract_view=scored_view,
                            contract_empty_view=make_view([]))) == len(ran)


def test_a_policy_that_breaks_the_contract_fails_it(toy_registry, scored_view: PolicyView, make_view) -> None:
    class Stateful(ToyPolicy):
        """Draws from a Generator it keeps between calls."""

        kind = "stateful"
        mode = "stateful"

    class Lenient(ToyPolicy):
        """Accepts any setting and ignores it."""

        kind = "lenient"

        def __init__(self, **ignored: str):
            super().__init__()

    for cls, failed in [(Stateful, "test_deterministic_for_the_same_view_n_and_seed"),
                        (Lenient, "test_unknown_setting_is_refused_naming_it")]:
        kind = cls.kind
        registry.register_policy(kind, cls)
        with pytest.raises(AssertionError, match="contract check") as info:
            run_contract(PolicyContract(), policy_spec=kind, contract_view=scored_view,
                         contract_empty_view=make_view([]))
        assert failed in str(info.value)
