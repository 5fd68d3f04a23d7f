"""ParamSpace: sampling, validation, clipping, unit-cube maps, Arrow schema."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from generators import Choice, Continuous, Integer, LogRange, ParamSpace, ParamSpaceError


@pytest.fixture
def space() -> ParamSpace:
    return ParamSpace([
        Continuous("contrast", "grey", "grain contrast", 0.0, 80.0),
        Integer("lloyd", "", "Lloyd steps", 0, 4),
        LogRange("sigma", "px", "noise sigma", 0.1, 10.0),
        Choice("polarity", "", "boundary polarity", ("dark", "bright")),
    ])


def test_sample_is_valid_and_seeded(space: ParamSpace) -> None:
    a = space.sample(np.random.default_rng(3), 50)
    b = space.sample(np.random.default_rng(3), 50)
    assert a == b
    assert a != space.sample(np.random.default_rng(4), 50)
    for row in a:
        assert space.validate(row) == row
        assert list(row) == list(space.names)
    assert {type(v) for v in (row["lloyd"] for row in a)} == {int}
    assert {row["polarity"] for row in a} == {"dark", "bright"}


def test_log_range_samples_uniformly_in_log(space: ParamSpace) -> None:
    values = np.array([r["sigma"] for r in space.sample(np.random.default_rng(0), 4000)])
    # Uniform in log: the median is the geometric mean of the bounds, 1.0.
    assert 0.85 < np.median(values) < 1.15


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"contrast": 1.0, "lloyd": 1, "sigma": 1.0, "polarity": "dark", "extra": 3}, "unknown parameter 'extra'"),
        ({"contrast": 1.0, "lloyd": 1, "sigma": 1.0}, "missing parameter 'polarity'"),
        ({"contrast": 99.0, "lloyd": 1, "sigma": 1.0, "polarity": "dark"}, "'contrast': out of bounds (got 99.0; expected continuous in [0.0, 80.0] grey)"),
        ({"contrast": 1.0, "lloyd": 1.5, "sigma": 1.0, "polarity": "dark"}, "'lloyd': wrong type float"),
        ({"contrast": "x", "lloyd": 1, "sigma": 1.0, "polarity": "dark"}, "'contrast': wrong type str"),
        ({"contrast": 1.0, "lloyd": True, "sigma": 1.0, "polarity": "dark"}, "'lloyd': wrong type bool"),
        ({"contrast": 1.0, "lloyd": 1, "sigma": 0.01, "polarity": "dark"}, "'sigma': out of bounds"),
        ({"contrast": float("nan"), "lloyd": 1, "sigma": 1.0, "polarity": "dark"}, "'contrast': not a finite number"),
        ({"contrast": 1.0, "lloyd": 1, "sigma": 1.0, "polarity": "grey"}, "'polarity': not an option (got 'grey'; expected one of 'dark', 'bright')"),
    ],
)
def test_validate_names_parameter_value_and_bounds(space: ParamSpace, params: dict, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        space.validate(params)
    assert isinstance(info.value, ParamSpaceError)
    assert fragment in str(info.value)


def test_validate_accepts_whole_float_for_integer(space: ParamSpace) -> None:
    out = space.validate({"contrast": 1, "lloyd": 2.0, "sigma": 1, "polarity": "dark"})
    assert out == {"contrast": 1.0, "lloyd": 2, "sigma": 1.0, "polarity": "dark"}
    assert type(out["lloyd"]) is int and type(out["contrast"]) is float


def test_clip_moves_into_bounds(space: ParamSpace) -> None:
    clipped = space.clip({"contrast": -5.0, "lloyd": 9.7, "sigma": 50.0, "polarity": "bright"})
    assert clipped == {"contrast": 0.0, "lloyd": 4, "sigma": 10.0, "polarity": "bright"}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4))
def test_unit_cube_round_trip(u: list[float]) -> None:
    space = ParamSpace([
        Continuous("contrast", "grey", "grain contrast", 0.0, 80.0),
        Integer("lloyd", "", "Lloyd steps", 0, 4),
        LogRange("sigma", "px", "noise sigma", 0.1, 10.0),
        Choice("polarity", "", "boundary polarity", ("dark", "bright")),
    ])
    (params,) = space.from_unit(np.array([u]))
    assert space.validate(params) == params
    back = space.to_unit(params)
    assert np.all((back >= 0) & (back <= 1))
    assert space.from_unit(back[None])[0] == pytest.approx(params)


def test_unit_map_endpoints(space: ParamSpace) -> None:
    lo, hi = space.from_unit(np.array([[0.0] * 4, [1.0] * 4]))
    assert lo == {"contrast": 0.0, "lloyd": 0, "sigma": pytest.approx(0.1), "polarity": "dark"}
    assert hi == {"contrast": 80.0, "lloyd": 4, "sigma": pytest.approx(10.0), "polarity": "bright"}
    with pytest.raises(ParamSpaceError, match="3 coordinates; the space has 4"):
        space.from_unit(np.zeros((1, 3)))


def test_arrow_schema_types_and_metadata(space: ParamSpace) -> None:
    schema = space.arrow_schema()
    assert schema.names == list(space.names)
    assert [f.type for f in schema] == [pa.float64(), pa.int64(), pa.float64(), pa.string()]
    assert schema.field("sigma").metadata[b"unit"] == b"px"
    table = pa.Table.from_pylist(space.sample(np.random.default_rng(0), 5), schema=schema)
    assert table.num_rows == 5


def test_dict_round_trip(space: ParamSpace) -> None:
    assert ParamSpace.from_dict(space.to_dict()) == space


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda: Continuous("a", "", "", 2.0, 1.0), "low < high"),
        (lambda: LogRange("a", "", "", 0.0, 1.0), "needs low > 0"),
        (lambda: Integer("a", "", "", 0.5, 3), "whole numbers"),
        (lambda: Choice("a", "", "", ("x", "x")), "distinct options"),
        (lambda: ParamSpace([Continuous("a", "", "", 0, 1), Continuous("a", "", "", 0, 1)]), "duplicate"),
    ],
)
def test_bad_declarations(build, fragment: str) -> None:
    with pytest.raises(ParamSpaceError, match=fragment):
        build()


def test_unknown_dimension_lookup(space: ParamSpace) -> None:
    with pytest.raises(ParamSpaceError, match="unknown parameter 'nope'; known: contrast, lloyd, sigma, polarity"):
        space["nope"]
