"""Fixtures for the policy tests: a space with every dimension type and hand-made run views."""

from __future__ import annotations

from typing import Any, Callable

import pyarrow as pa
import pytest

from generators.space import ParamSpace
from policies import testing as policies_testing
from policies.base import PolicyView
from policies.testing import example_space, params_table


@pytest.fixture(scope="session")
def policy_space() -> ParamSpace:
    """One dimension of each kind."""
    return example_space()


@pytest.fixture
def make_view(policy_space: ParamSpace) -> Callable[..., PolicyView]:
    """Build a view from row dicts (missing bookkeeping fields get defaults) and metric rows."""

    def build(rows: list[dict[str, Any]] = (), metrics: dict[str, list] | None = None, cycle: int = 1,
              space: ParamSpace | None = None) -> PolicyView:
        space = space or policy_space
        full = [{"cycle": 0, "split": "val", "policy": "random", "parent_id": None, "seed": i, **r}
                for i, r in enumerate(rows)]
        return PolicyView(space, params_table(space, full), pa.table(metrics or {}), cycle)

    return build


@pytest.fixture
def scored_view(policy_space: ParamSpace) -> PolicyView:
    """40 random validation rows with iou = sample_id / 100 (so sample 0 is the worst), and 5 train rows."""
    return policies_testing.scored_view(policy_space)
