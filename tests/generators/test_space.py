"""ParamSpace: sampling, validation, clipping, unit-cube maps, Arrow schema."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from generators import Choice, Continuous, Integer, LogRange, ParamSpace, ParamSpaceError
from generators.space import check_subspace, load_space_file, save_space_file


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
        (lambda: Continuous("a", "", "", 2.0, 1.0), "low <= high"),
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


@pytest.mark.parametrize("dim", [Continuous("a", "", "", 0.3, 0.3), LogRange("a", "", "", 2.0, 2.0),
                                 Integer("a", "", "", 4, 4)])
def test_fixed_dimension_always_gives_its_value(dim) -> None:
    space = ParamSpace([dim, Continuous("b", "", "", 0.0, 1.0)])
    rows = space.sample(np.random.default_rng(0), 20)
    assert {r["a"] for r in rows} == {dim.low}
    assert np.all(space.to_unit(rows)[:, 0] == 0.5)
    assert space.from_unit(np.array([[0.0, 0.5], [1.0, 0.5]]))[1]["a"] == dim.low
    with pytest.raises(ParamSpaceError, match="out of bounds"):
        space.validate({"a": dim.low + 1, "b": 0.5})


def test_space_file_round_trip_with_comment_and_extra(tmp_path, space: ParamSpace) -> None:
    path = save_space_file(space, tmp_path / "deep" / "s.toml", comment="line one\nline two", extra={"fit": {"n": 3}})
    text = path.read_text()
    assert text.startswith("# line one\n# line two\n") and "[fit]" in text
    assert load_space_file(path) == space


@pytest.mark.parametrize(("content", "fragment"), [
    (None, "not found"),
    ("dimensions = [", "cannot be read as TOML"),
    ("x = 1", "a table with a \\[\\[dimensions"),
    ('[[dimensions]]\nname = "a"\nkind = "continuous"\nlow = 0.0\n', "lacks or mistypes"),
    ('[[dimensions]]\nname = "a"\nkind = "continuous"\nlow = 1.0\nhigh = 0.0\n', "low <= high"),
])
def test_bad_space_files_name_the_file(tmp_path, content, fragment) -> None:
    path = tmp_path / "s.toml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ParamSpaceError, match=fragment) as info:
        load_space_file(path)
    assert str(path) in str(info.value)


def test_subspace_check(space: ParamSpace) -> None:
    narrow = ParamSpace([replace(d, low=d.low, high=d.low) if not isinstance(d, Choice) else replace(d, options=d.options[:1])
                         for d in space])
    check_subspace(narrow, space)
    check_subspace(space, space)
    with pytest.raises(ParamSpaceError, match="missing"):
        check_subspace(ParamSpace(list(space)[1:]), space, source="f.toml")
    wide = ParamSpace([replace(space.dimensions[0], high=space.dimensions[0].high + 1), *space.dimensions[1:]])
    with pytest.raises(ParamSpaceError, match=f"{space.names[0]!r} has bounds"):
        check_subspace(wide, space)


def test_complete_space_fixes_missing_dimensions_at_their_defaults(space: ParamSpace) -> None:
    from generators.space import complete_space, with_defaults

    old = ParamSpace([space["contrast"], space["sigma"]])
    full = complete_space(old, space, {"lloyd": 2, "polarity": "dark"})
    assert full.names == space.names  # the generator's order
    assert (full["lloyd"].low, full["lloyd"].high) == (2, 2) and full["polarity"].options == ("dark",)
    check_subspace(full, space)
    assert complete_space(space, space, {"lloyd": 2}) is space
    partial = complete_space(old, space, {"lloyd": 2})
    with pytest.raises(ParamSpaceError, match=r"missing \['polarity'\]"):
        check_subspace(partial, space)
    assert with_defaults({"a": 1}, {"a": 5, "b": 2}) == {"a": 1, "b": 2}
