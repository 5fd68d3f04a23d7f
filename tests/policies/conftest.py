"""Fixtures for the policy tests: a space with every dimension type and hand-made run views."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pytest

from generators.space import Choice, Continuous, Integer, LogRange, ParamSpace
from policies.base import PolicyView


@pytest.fixture(scope="session")
def policy_space() -> ParamSpace:
    """One dimension of each kind."""
    return ParamSpace([
        Continuous("thickness", "px", "boundary thickness", 1.0, 5.0),
        LogRange("grain_size", "px", "mean grain diameter", 4.0, 256.0),
        Integer("n_phases", "", "number of grey levels", 1, 20),
        Choice("shape", "", "grain shape", ("voronoi", "hex", "square")),
    ])


def params_table(space: ParamSpace, rows: list[dict[str, Any]]) -> pa.Table:
    """A parameter table in the store's layout (bookkeeping columns, then one per parameter)."""
    schema = pa.schema([
        ("sample_id", pa.int64()), ("cycle", pa.int64()), ("split", pa.string()), ("policy", pa.string()),
        ("parent_id", pa.int64()), ("seed", pa.int64()), *space.arrow_schema(),
    ])
    return pa.Table.from_pylist(rows, schema=schema)


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
def scored_view(policy_space: ParamSpace, make_view) -> PolicyView:
    """40 random validation rows with iou = sample_id / 100 (so sample 0 is the worst), and 5 train rows."""
    points = policy_space.sample(np.random.default_rng(7), 45)
    rows = [{"sample_id": i, "split": "val" if i < 40 else "train", **p} for i, p in enumerate(points)]
    return make_view(rows, {"sample_id": list(range(45)), "iou": [i / 100 for i in range(45)],
                            "error": [1 - i / 100 for i in range(45)]})
