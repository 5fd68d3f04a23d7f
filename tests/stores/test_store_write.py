"""Creating, opening and writing a run: the commit rule, validation and every bad input."""

from __future__ import annotations

import math
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from storefakes import SPACE, FakeGenerator, create_run, make_batch

from stores import FORMAT_VERSION, RunStore, StoreError


def tree(path) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes (to show that nothing changed)."""
    out = {}
    for folder, _, files in os.walk(path):
        for name in files:
            full = os.path.join(folder, name)
            with open(full, "rb") as f:
                out[os.path.relpath(full, path)] = f.read()
    return out


def test_create_then_open_gives_the_frozen_config(tmp_path):
    store = create_run(tmp_path / "run", config={"policy": "worst10", "seeds": [1, 2], "model": {"lr": 0.001}})
    again = RunStore.open(tmp_path / "run")
    assert again.space == SPACE
    assert (again.generator_name, again.generator_version, again.task) == ("fake", "0.1", "segmentation")
    assert again.config == {"policy": "worst10", "seeds": [1, 2], "model": {"lr": 0.001}}
    assert again.uri == store.uri == str(tmp_path / "run")
    assert again.committed_batches() == [] and again.params().num_rows == 0
    assert again.metrics().num_rows == 0


def test_create_refuses_an_existing_run_and_an_untomlable_config(tmp_path):
    create_run(tmp_path / "run")
    with pytest.raises(StoreError, match="already exists"):
        create_run(tmp_path / "run")
    with pytest.raises(StoreError, match="TOML"):
        create_run(tmp_path / "other", config={"seed": None})
    assert not (tmp_path / "other" / "run.toml").exists()


def test_open_a_path_that_is_not_a_run_names_it(tmp_path):
    with pytest.raises(StoreError, match=f"{tmp_path}.*not a run"):
        RunStore.open(tmp_path)


def test_open_an_incompatible_format_version_names_file_and_versions(tmp_path):
    create_run(tmp_path / "run")
    runfile = tmp_path / "run" / "run.toml"
    runfile.write_text(runfile.read_text().replace(f"format_version = {FORMAT_VERSION}", "format_version = 99"))
    with pytest.raises(StoreError, match=rf"run\.toml.*format_version 99.*format_version {FORMAT_VERSION}"):
        RunStore.open(tmp_path / "run")


def test_every_dimension_type_round_trips_through_parquet(run, generator):
    rows, images, masks = make_batch(generator, list(range(6)))
    run.write_batch(3, rows, images, masks)
    table = RunStore.open(run.uri).params()
    assert table.num_rows == 6
    for dim in SPACE:
        assert table.schema.field(dim.name).type == dim.arrow_type
        assert table[dim.name].to_pylist() == [r[dim.name] for r in rows]
    assert table.schema.field("grain_size").metadata[b"unit"] == b"um"
    assert table["batch"].to_pylist() == [3] * 6
    assert table["generator"].to_pylist() == ["fake"] * 6
    assert table["parent_id"].null_count == 6 and table["label"].null_count == 6
    assert table.schema.field("created_at").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("cycle").type == pa.int32()
    assert run.has_batch(3) and not run.has_batch(4)


def test_a_pyarrow_table_is_accepted_with_safe_casts(run, generator):
    rows, images, masks = make_batch(generator, [10, 11])
    table = pa.Table.from_pylist(rows)
    table = table.set_column(table.schema.get_field_index("n_phases"), "n_phases",
                             table["n_phases"].cast(pa.float64()))  # whole floats fit an integer dimension
    run.write_batch(0, table, images, masks)
    assert run.params()["n_phases"].to_pylist() == [r["n_phases"] for r in rows]


def test_params_filters_by_split_and_cycle(run, generator):
    for b, (cycle, split) in enumerate([(0, "train"), (0, "val"), (1, "train")]):
        rows, images, masks = make_batch(generator, [b * 10, b * 10 + 1], cycle=cycle, split=split)
        run.write_batch(b, rows, images, masks)
    assert run.params(split="train")["sample_id"].to_pylist() == [0, 1, 20, 21]
    assert run.params(cycle=0, split="val")["sample_id"].to_pylist() == [10, 11]
    assert run.committed_batches() == [0, 1, 2]
    with pytest.raises(StoreError, match="split"):
        run.params(split="holdout")


def _bad_rows(case: str, rows: list[dict]) -> list[dict]:
    rows = [dict(r) for r in rows]
    if case == "unknown column":
        rows[1]["colour"] = 3.0
    elif case == "missing parameter":
        del rows[0]["grain_size"]
    elif case == "wrong type":
        rows[1]["n_phases"] = 2.5
    elif case == "out of bounds":
        rows[0]["boundary_thickness"] = 9.0
    elif case == "bad option":
        rows[0]["texture"] = "glossy"
    elif case == "duplicate id":
        rows[1]["sample_id"] = rows[0]["sample_id"]
    elif case == "store column":
        rows[0]["batch"] = 1
    elif case == "bad split":
        rows[0]["split"] = "holdout"
    elif case == "bool id":
        rows[0]["sample_id"] = True
    return rows


@pytest.mark.parametrize("case, pattern", [
    ("unknown column", r"batch 5, row 1, column 'colour': unknown"),
    ("missing parameter", r"batch 5, row 0, column 'grain_size': missing"),
    ("wrong type", r"batch 5, row 1: parameter 'n_phases'"),
    ("out of bounds", r"batch 5, row 0: parameter 'boundary_thickness': out of bounds"),
    ("bad option", r"batch 5, row 0: parameter 'texture': not an option"),
    ("duplicate id", r"batch 5, column 'sample_id': id 0 appears 2 times"),
    ("store column", r"batch 5, row 0, column 'batch': is set by the store"),
    ("bad split", r"batch 5, column 'split': value 'holdout'"),
    ("bool id", r"batch 5, row 0, column 'sample_id': expected an integer"),
])
def test_bad_rows_raise_naming_batch_and_column_and_change_nothing(run, generator, case, pattern):
    rows, images, masks = make_batch(generator, [0, 1, 2])
    before = tree(run.uri)
    with pytest.raises(StoreError, match=pattern):
        run.write_batch(5, _bad_rows(case, rows), images, masks)
    assert tree(run.uri) == before


@pytest.mark.parametrize("column, values, pattern", [
    ("boundary_thickness", pa.array([1.0, math.nan]), "'boundary_thickness': value nan out of the space"),
    ("n_phases", pa.array([1.0, 2.5]), "'n_phases': values do not fit int64"),
    ("grain_size", pa.array(["a", "b"]), "'grain_size': wrong type string"),
    ("texture", pa.array([1, 2]), "'texture': wrong type int64"),
    ("seed", pa.array([True, False]), "'seed': wrong type bool"),
    ("sample_id", pa.array([1, None], pa.int64()), "'sample_id': has 1 null values"),
])
def test_bad_table_columns_raise_and_change_nothing(run, generator, column, values, pattern):
    rows, images, masks = make_batch(generator, [0, 1])
    table = pa.Table.from_pylist(rows)
    table = table.set_column(table.schema.get_field_index(column), column, values)
    before = tree(run.uri)
    with pytest.raises(StoreError, match=f"batch 2, column {pattern}"):
        run.write_batch(2, table, images, masks)
    assert tree(run.uri) == before


@pytest.mark.parametrize("images, masks, pattern", [
    (np.zeros((3, 8, 8), np.float32), np.zeros((3, 8, 8), np.uint8), "images: expected an .* uint8 array, got 3-D float32"),
    (np.zeros((3, 8), np.uint8), np.zeros((3, 8), np.uint8), "images: expected an .* got 2-D uint8"),
    (np.zeros((2, 8, 8), np.uint8), np.zeros((2, 8, 8), np.uint8), "images: has 2 samples, expected 3"),
    (np.zeros((3, 8, 8), np.uint8), np.zeros((3, 8, 9), np.uint8), r"masks: shape \(3, 8, 9\), expected \(3, 8, 8\)"),
    (np.zeros((3, 8, 8), np.uint8), None, "masks: missing"),
    ([[0]], None, "images: expected a numpy array"),
])
def test_bad_images_raise_and_change_nothing(run, generator, images, masks, pattern):
    rows, _, _ = make_batch(generator, [0, 1, 2])
    before = tree(run.uri)
    with pytest.raises(StoreError, match=pattern):
        run.write_batch(1, rows, images, masks)
    assert tree(run.uri) == before


def test_a_committed_batch_or_sample_id_cannot_be_written_again(run, generator):
    rows, images, masks = make_batch(generator, [0, 1])
    run.write_batch(0, rows, images, masks)
    before = tree(run.uri)
    with pytest.raises(StoreError, match="batch 0: already committed"):
        run.write_batch(0, *make_batch(generator, [7, 8]))
    with pytest.raises(StoreError, match="batch 1, column 'sample_id': id 1 is already committed"):
        run.write_batch(1, *make_batch(generator, [1, 9]))
    assert tree(run.uri) == before
    with pytest.raises(StoreError, match="batch: expected an integer >= 0"):
        run.write_batch(-1, rows, images, masks)


def test_classification_needs_labels(tmp_path):
    gen = FakeGenerator("classification")
    store = create_run(tmp_path / "run", task="classification")
    rows, images, _ = make_batch(gen, [0, 1])
    store.write_batch(0, rows, images)
    assert store.params()["label"].to_pylist() == [r["label"] for r in rows]
    rows, images, _ = make_batch(gen, [2, 3])
    del rows[1]["label"]
    with pytest.raises(StoreError, match="batch 1, column 'label': 1 rows without a label"):
        store.write_batch(1, rows, images)


def test_a_foreign_fragment_is_refused_naming_the_file(run, generator):
    run.write_batch(0, *make_batch(generator, [0, 1]))
    foreign = os.path.join(run.uri, "params", "b000001.parquet")
    pq.write_table(pa.table({"sample_id": [5], "batch": [1], "colour": [0.3]}), foreign)
    with pytest.raises(StoreError, match=r"b000001\.parquet: schema does not match.*'cycle'"):
        RunStore.open(run.uri).params()
    os.unlink(foreign)
    stray = os.path.join(run.uri, "params", "notes.parquet")
    pq.write_table(pa.table({"a": [1]}), stray)
    with pytest.raises(StoreError, match=r"notes\.parquet: not a fragment"):
        RunStore.open(run.uri).params()


def test_a_run_on_an_fsspec_memory_location(generator):
    uri = "memory://synthloop-test-store/run"
    try:
        store = create_run(uri)
        rows, images, masks = make_batch(generator, [0, 1, 2])
        store.write_batch(0, rows, images, masks)
        again = RunStore.open(uri)
        assert again.uri == store.uri == "memory:///synthloop-test-store/run"
        assert again.committed_batches() == [0]
        image, mask = again.view()[1]
        assert np.array_equal(image, images[1]) and np.array_equal(mask, masks[1])
        with pytest.raises(StoreError, match="already committed"):
            again.write_batch(0, rows, images, masks)
    finally:
        import fsspec

        fsspec.filesystem("memory").rm("/synthloop-test-store", recursive=True)


def test_a_space_with_a_dimension_named_like_a_store_column_is_refused(tmp_path):
    from generators.space import Continuous, ParamSpace

    with pytest.raises(StoreError, match="dimension 'seed' has the name of a store column"):
        RunStore.create(tmp_path / "run", generator_name="g", generator_version="1", task="segmentation",
                        space=ParamSpace([Continuous("seed", "", "", 0.0, 1.0)]), config={})
    assert not (tmp_path / "run").exists()
