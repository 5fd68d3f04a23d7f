"""The policy contract as a pytest test base: a new policy gets its tests by registering.

:class:`PolicyContract` holds the checks every registered policy (and alias, and spec with
settings) must pass — the rules of :mod:`policies.base` made executable. A test module
subclasses it (the class name starting with ``Test``) and supplies the ``policy_spec``
fixture, or sets :attr:`PolicyContract.spec`::

    from policies.testing import PolicyContract

    class TestMyPolicy(PolicyContract):
        spec = "mine:spread=0.2"

``tests/policies/test_policy_contract.py`` parametrises ``policy_spec`` over
:func:`registered_specs`, i.e. over :func:`policies.available_policies` itself, so
registering a policy (``register_policy``) or an alias (``register_alias``) is all it takes
for the whole contract to run on it. :func:`generators.testing.run_contract` runs the same
checks without a pytest session.

The checks propose from two views, the ``contract_view`` and ``contract_empty_view``
fixtures: by default :func:`scored_view` (45 rows, 40 of them scored validation samples)
(with the real-image anchors of :func:`example_anchors`) and :func:`empty_view` (no rows, no
metrics, no anchors), both over :func:`example_space`, which has one
dimension of each kind — or, for a policy that names dimensions of a generator's space (the
alias ``paper`` varies the grains generator's ``grain_contrast`` and ``boundary_thickness``),
over the space of the first registered generator it fits (:func:`space_for`). A test module
may override them.

This module imports :mod:`pytest`, which is a *test* dependency only: the ``policies``
package never imports this module; importing ``policies.testing`` needs pytest.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pytest

from generators.registry import available as available_generators, get_generator
from generators.space import Choice, Continuous, Integer, LogRange, ParamSpace
from generators.testing import contract_checks, run_contract
from policies.anchored import anchors_table
from policies.base import Policy, PolicyError, PolicyView, Proposal
from policies.registry import available_policies, get_policy, parse_spec

__all__ = [
    "PolicyContract", "check_proposals", "contract_checks", "empty_view", "example_anchors", "example_space",
    "example_spec",
    "params_table", "registered_specs", "run_contract", "scored_view", "space_for", "without_metrics",
]

UNKNOWN_SETTING = "zz_unknown_setting"
"""A setting no policy has: a spec carrying it must be refused with an error naming it."""

_EXAMPLE = re.compile(r"e\.g\.\s+(\S+)")


def example_spec(name: str) -> str:
    """A spec that builds the policy registered (or aliased) as ``name``, read from the registry.

    The bare name when ``get_policy(name)`` builds it. A policy that needs settings (``mix``
    needs its sub-policies) must say so in its :class:`PolicyError`, with an example spec
    after ``e.g.`` (``"... e.g. mix:worst10=0.7,random=0.3"``); that example is returned. If
    there is none (or the error is not a PolicyError), the bare name is returned and the
    contract's checks fail on it, quoting the error — at test time, not at collection.
    """
    try:
        get_policy(name)
        return name
    except PolicyError as err:
        for found in _EXAMPLE.findall(str(err)):
            candidate = found.rstrip(".,;:)")
            try:
                if parse_spec(candidate)[0] == name:
                    return candidate
            except PolicyError:
                continue
        return name
    except Exception:  # noqa: BLE001 - a broken constructor is reported by the checks, not at collection
        return name


def registered_specs() -> dict[str, str]:
    """Every registered policy name and alias (:func:`available_policies`) -> a spec that builds it."""
    return {name: example_spec(name) for name in available_policies()}


def example_space() -> ParamSpace:
    """A space with one dimension of each kind (continuous, log, integer, choice)."""
    return ParamSpace([
        Continuous("thickness", "px", "boundary thickness", 1.0, 5.0),
        LogRange("grain_size", "px", "mean grain diameter", 4.0, 256.0),
        Integer("n_phases", "", "number of grey levels", 1, 20),
        Choice("shape", "", "grain shape", ("voronoi", "hex", "square")),
    ])


def space_for(spec: str, space: ParamSpace | None = None) -> ParamSpace:
    """The space to check policy ``spec`` in: ``space`` (default :func:`example_space`) when the
    policy fits it (:meth:`Policy.check_space`), else the space of the first registered generator
    it fits. A spec that does not build, or fits no space, gets ``space`` (the checks then fail
    on it, quoting the error)."""
    space = space or example_space()
    try:
        policy = get_policy(spec)
    except Exception:  # noqa: BLE001 - reported by the checks, not here
        return space
    for candidate in (space, *(get_generator(name).space for name in available_generators())):
        try:
            policy.check_space(candidate)
        except PolicyError:
            continue
        return candidate
    return space


def params_table(space: ParamSpace, rows: list[dict[str, Any]]) -> pa.Table:
    """A parameter table in the store's layout (bookkeeping columns, then one per parameter)."""
    schema = pa.schema([
        ("sample_id", pa.int64()), ("cycle", pa.int64()), ("split", pa.string()), ("policy", pa.string()),
        ("parent_id", pa.int64()), ("seed", pa.int64()), *space.arrow_schema(),
    ])
    return pa.Table.from_pylist(rows, schema=schema)


def example_anchors(space: ParamSpace | None = None) -> pa.Table:
    """Three real-image anchors (:func:`policies.anchored.anchors_table`) over ``space``'s range
    dimensions: near the low corner, the middle and the high corner in unit-cube coordinates,
    with spreads 0.01, 0.1, 0.2 and mIoU 0.2, 0.5, 0.8."""
    space = space or example_space()
    dims = [d.name for d in space if hasattr(d, "low") and d.high != d.low]
    unit = np.array([[0.1], [0.5], [0.9]]).repeat(len(dims), axis=1)
    spread = np.array([[0.01], [0.1], [0.2]]).repeat(len(dims), axis=1)
    return anchors_table(["a.png", "b.png", "c.png"], dims, unit, spread,
                         {"miou": [0.2, 0.5, 0.8], "error": [0.08, 0.05, 0.02]})


def scored_view(space: ParamSpace | None = None, cycle: int = 1) -> PolicyView:
    """40 validation rows scored ``iou = sample_id / 100`` (and ``error = 1 - iou``), plus 5 train rows,
    and the three real-image anchors of :func:`example_anchors`.

    The rows are drawn from ``space`` (default :func:`example_space`) with a seeded numpy
    Generator; they come from cycle 0 and policy ``random``.
    """
    space = space or example_space()
    points = space.sample(np.random.default_rng(7), 45)
    rows = [{"sample_id": i, "cycle": 0, "split": "val" if i < 40 else "train", "policy": "random",
             "parent_id": None, "seed": i, **p} for i, p in enumerate(points)]
    metrics = pa.table({"sample_id": list(range(45)), "iou": [i / 100 for i in range(45)],
                        "error": [1 - i / 100 for i in range(45)]})
    return PolicyView(space, params_table(space, rows), metrics, cycle, anchors=example_anchors(space))


def empty_view(space: ParamSpace | None = None, cycle: int = 1) -> PolicyView:
    """A view of a run with nothing generated or scored yet (no rows, no metrics)."""
    space = space or example_space()
    return PolicyView(space, params_table(space, []), pa.table({}), cycle)


def without_metrics(view: PolicyView) -> PolicyView:
    """``view`` with its rows but no metrics (a run generated, not yet evaluated)."""
    return PolicyView(view.space, view.params, pa.table({}), view.cycle)


def check_proposals(proposals: Any, view: PolicyView, n: int) -> None:
    """Assert that ``proposals`` are ``n`` valid proposals for ``view``.

    Each is a :class:`Proposal` whose params validate to themselves in the space's order,
    whose ``parent_id`` is ``None`` or an ``int`` naming a row of ``view.params``, and whose
    ``policy`` is a canonical spec.
    """
    assert len(proposals) == n
    ids = set(view.params["sample_id"].to_pylist()) if "sample_id" in view.params.column_names else set()
    for p in proposals:
        assert isinstance(p, Proposal)
        assert view.space.validate(p.params) == p.params
        assert list(p.params) == list(view.space.names)
        assert p.parent_id is None or isinstance(p.parent_id, int)
        assert p.parent_id is None or p.parent_id in ids, f"parent_id {p.parent_id} is not a sample of the view"
        assert p.policy and get_policy(p.policy).name == p.policy


def _global_random_state() -> tuple[Any, ...]:
    """numpy's legacy global random state, in a form that compares with ``==``."""
    return tuple(v.tobytes() if isinstance(v, np.ndarray) else v for v in np.random.get_state())


class PolicyContract:
    """Checks every policy spec must pass; subclass it in a test module to run them.

    Supply the policy by setting :attr:`spec` or by overriding the ``policy_spec`` fixture
    (e.g. parametrised over :func:`registered_specs`). Each check is a ``test_*`` method
    taking only fixtures (``policy_spec``, ``contract_view``, ``contract_empty_view``) and
    its own ``parametrize`` arguments, so :func:`run_contract` can call them directly too.
    """

    spec: ClassVar[str | None] = None
    """Spec of the policy under test (or override the ``policy_spec`` fixture)."""

    @pytest.fixture
    def policy_spec(self) -> str:
        """The spec under test: :attr:`spec`."""
        if self.spec is None:
            pytest.fail(f"{type(self).__name__}: set spec or override the 'policy_spec' fixture")
        return self.spec

    @pytest.fixture
    def contract_view(self, policy_spec: str) -> PolicyView:
        """A scored view (:func:`scored_view`) over the policy's space (:func:`space_for`)."""
        return scored_view(space_for(policy_spec))

    @pytest.fixture
    def contract_empty_view(self, policy_spec: str) -> PolicyView:
        """A view with no rows and no metrics (:func:`empty_view`) over the policy's space."""
        return empty_view(space_for(policy_spec))

    # -- the contract ----------------------------------------------------------------------

    def test_builds_and_names_itself(self, policy_spec: str) -> None:
        """The spec builds a Policy whose canonical name starts with its kind and rebuilds an equal policy."""
        policy = get_policy(policy_spec)
        assert isinstance(policy, Policy)
        assert isinstance(policy.name, str) and policy.name
        kind = type(policy).kind
        assert kind in available_policies(), f"{type(policy).__name__}.kind {kind!r} is not registered"
        assert parse_spec(policy.name)[0] == kind, f"name {policy.name!r} does not start with kind {kind!r}"
        again = get_policy(policy.name)
        assert again == policy and hash(again) == hash(policy) and again.name == policy.name
        assert get_policy(policy_spec) == policy

    @pytest.mark.parametrize("n", [1, 7, 64])
    def test_exactly_n_valid_proposals(self, policy_spec: str, n: int, contract_view: PolicyView) -> None:
        """``propose`` returns exactly n valid proposals with int-or-None parent ids of the view's samples."""
        policy = get_policy(policy_spec)
        proposals = policy.propose(contract_view, n, np.random.default_rng(0))
        check_proposals(proposals, contract_view, n)

    def test_deterministic_for_the_same_view_n_and_seed(self, policy_spec: str, contract_view: PolicyView) -> None:
        """Same view, n and rng seed: same proposals, from a fresh policy or the same one called again."""
        policy = get_policy(policy_spec)
        first = policy.propose(contract_view, 30, np.random.default_rng(11))
        again = get_policy(policy_spec).propose(contract_view, 30, np.random.default_rng(11))
        assert first == again
        assert policy.propose(contract_view, 30, np.random.default_rng(11)) == first, \
            f"policy {policy.name!r} keeps state between calls"

    def test_leaves_global_random_state_alone(self, policy_spec: str, contract_view: PolicyView) -> None:
        """A policy draws only from the rng it is given: numpy's global random state is untouched."""
        before = _global_random_state()
        get_policy(policy_spec).propose(contract_view, 12, np.random.default_rng(4))
        assert _global_random_state() == before

    def test_zero_proposals_need_no_metrics(self, policy_spec: str, contract_view: PolicyView,
                                            contract_empty_view: PolicyView) -> None:
        """n = 0 gives an empty list, even from a view with nothing in it."""
        assert get_policy(policy_spec).propose(contract_empty_view, 0, np.random.default_rng(0)) == []
        assert get_policy(policy_spec).propose(contract_view, 0, np.random.default_rng(0)) == []

    def test_view_without_metrics_works_or_says_so(self, policy_spec: str, contract_view: PolicyView,
                                                   contract_empty_view: PolicyView) -> None:
        """With no metrics, a policy proposes valid sets, or raises a PolicyError naming a policy and the metrics."""
        for view in (contract_empty_view, without_metrics(contract_view)):
            try:
                proposals = get_policy(policy_spec).propose(view, 5, np.random.default_rng(0))
            except PolicyError as err:
                message = str(err)
                assert "policy '" in message and "metric" in message.lower(), message
            else:
                check_proposals(proposals, view, 5)

    def test_suggested_n_is_none_or_a_count(self, policy_spec: str, contract_view: PolicyView) -> None:
        """``suggested_n`` is None or an int >= 0 that ``propose`` accepts."""
        policy = get_policy(policy_spec)
        n = policy.suggested_n(contract_view)
        assert n is None or (isinstance(n, int) and not isinstance(n, bool) and n >= 0), n
        if n:
            check_proposals(policy.propose(contract_view, n, np.random.default_rng(0)), contract_view, n)

    @pytest.mark.parametrize("n", [-1, 2.5, True, "3"])
    def test_bad_n_is_refused(self, policy_spec: str, n: Any, contract_view: PolicyView) -> None:
        """n must be an integer >= 0."""
        with pytest.raises(PolicyError, match="n must be an integer >= 0"):
            get_policy(policy_spec).propose(contract_view, n, np.random.default_rng(0))

    def test_bad_rng_and_view_are_refused(self, policy_spec: str, contract_view: PolicyView) -> None:
        """rng must be a numpy Generator and view a PolicyView."""
        with pytest.raises(PolicyError, match="numpy.random.Generator"):
            get_policy(policy_spec).propose(contract_view, 2, 0)
        with pytest.raises(PolicyError, match="PolicyView"):
            get_policy(policy_spec).propose({"space": contract_view.space}, 2, np.random.default_rng(0))

    def test_unknown_setting_is_refused_naming_it(self, policy_spec: str) -> None:
        """An unknown setting raises PolicyError (a ValueError) whose message names the setting."""
        spec = policy_spec + ("," if ":" in policy_spec else ":") + f"{UNKNOWN_SETTING}=1"
        with pytest.raises(PolicyError) as info:
            get_policy(spec)
        assert UNKNOWN_SETTING in str(info.value)
        assert isinstance(info.value, ValueError)

