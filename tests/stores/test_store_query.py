"""Metric fragments, the `samples` latest-metrics join, read-only SQL and result formatting."""

from __future__ import annotations

import csv
import io
import json
import math
import os

import numpy as np
import pyarrow as pa
import pytest
from storefakes import create_run, make_batch

from stores import RunStore, StoreError, format_table, query


@pytest.fixture
def scored(run, generator):
    """Samples 0..5 in two batches (0..2 train, 3..5 val)."""
    run.write_batch(0, *make_batch(generator, [0, 1, 2]))
    run.write_batch(1, *make_batch(generator, [3, 4, 5], split="val"))
    return run


def test_metrics_append_and_union_of_metric_columns(scored):
    first = scored.append_metrics([{"sample_id": 0, "cycle": 0, "checkpoint": 3, "iou": 0.5}])
    second = scored.append_metrics(pa.table({"sample_id": [0, 1], "cycle": [1, 1], "checkpoint": ["c1", "c1"],
                                             "iou": [0.6, 0.7], "loss": [1, 2]}), name="cycle1")
    assert second == "cycle1" and first != second
    table = RunStore.open(scored.uri).metrics()
    assert table.column_names == ["sample_id", "cycle", "checkpoint", "created_at", "iou", "loss"]
    assert table["checkpoint"].to_pylist() == ["3", "c1", "c1"]
    assert table["loss"].to_pylist() == [None, 1.0, 2.0]
    assert table.schema.field("loss").type == pa.float64()


@pytest.mark.parametrize("rows, name, pattern", [
    ([{"sample_id": 42, "cycle": 0, "checkpoint": "a", "iou": 0.1}], None, r"1 ids are not committed samples \(first: \[42\]\)"),
    ([{"sample_id": 0, "cycle": 0, "checkpoint": "a", "iou": 0.1}] * 2, None, "id 0 appears 2 times"),
    ([{"sample_id": 0, "cycle": 0, "checkpoint": "a", "seed": 0.1}], None, "column 'seed': is a name of the parameter table"),
    ([{"sample_id": 0, "cycle": 0, "checkpoint": "a", "ok": True}], None, "column 'ok': wrong type bool"),
    ([{"sample_id": 0, "cycle": 0, "checkpoint": "a", "note": "x"}], None, "column 'note': wrong type string"),
    ([{"sample_id": 0, "checkpoint": "a", "iou": 0.1}], None, "column 'cycle': missing"),
    ([{"sample_id": 0, "cycle": 0, "checkpoint": "a"}], None, "no metric columns"),
    ([{"sample_id": 0, "cycle": 0, "checkpoint": "a", "iou": 0.1}], "../evil", "metrics name"),
    ([{"sample_id": 0, "cycle": 0, "checkpoint": "a", "iou": 0.1}], "dup", "already exists"),
])
def test_bad_metrics_are_refused_and_change_nothing(scored, rows, name, pattern):
    scored.append_metrics([{"sample_id": 1, "cycle": 0, "checkpoint": "a", "iou": 0.1}], name="dup")
    before = sorted(os.listdir(os.path.join(scored.uri, "metrics")))
    with pytest.raises(StoreError, match=pattern):
        scored.append_metrics(rows, name=name)
    assert sorted(os.listdir(os.path.join(scored.uri, "metrics"))) == before


def test_samples_joins_the_latest_metrics_of_each_sample(scored):
    scored.append_metrics([{"sample_id": 1, "cycle": 2, "checkpoint": "late-cycle", "iou": 0.9}], name="a")
    scored.append_metrics([{"sample_id": 0, "cycle": 0, "checkpoint": "x", "iou": 0.1},
                           {"sample_id": 1, "cycle": 1, "checkpoint": "x", "iou": 0.2}], name="b")
    scored.append_metrics([{"sample_id": 0, "cycle": 1, "checkpoint": "y", "iou": 0.3}], name="c")
    scored.append_metrics([{"sample_id": 0, "cycle": 1, "checkpoint": "z", "iou": 0.4, "loss": 2.0}], name="d")
    result = query(scored.uri, "SELECT sample_id, metrics_cycle, checkpoint, iou, loss FROM samples ORDER BY sample_id")
    rows = result.to_pylist()
    # Highest cycle wins; within a cycle the most recently committed fragment wins.
    assert rows[0] == {"sample_id": 0, "metrics_cycle": 1, "checkpoint": "z", "iou": 0.4, "loss": 2.0}
    # Cycle beats commit order: sample 1's cycle-2 row was committed first.
    assert rows[1] == {"sample_id": 1, "metrics_cycle": 2, "checkpoint": "late-cycle", "iou": 0.9, "loss": None}
    assert rows[2] == {"sample_id": 2, "metrics_cycle": None, "checkpoint": None, "iou": None, "loss": None}
    assert len(rows) == 6
    assert query(scored, "SELECT count(*) AS n FROM metrics")["n"].to_pylist() == [5]


def test_the_group_by_query_of_the_failure_analysis(run, generator):
    for b in range(3):
        run.write_batch(b, *make_batch(generator, [b * 4 + i for i in range(4)]))
    params = run.params()
    iou = {sid: (sid % 5) / 5 for sid in params["sample_id"].to_pylist()}
    run.append_metrics([{"sample_id": s, "cycle": 0, "checkpoint": "final", "iou": v} for s, v in iou.items()])
    result = query(run, "SELECT boundary_thickness, avg(iou) FROM samples GROUP BY 1 ORDER BY 2")
    assert result.num_rows == 12
    got = result.column(1).to_pylist()
    assert got == sorted(got)
    by_thickness = dict(zip(params["boundary_thickness"].to_pylist(), params["sample_id"].to_pylist()))
    for thickness, mean in zip(result.column(0).to_pylist(), got):
        assert mean == pytest.approx(iou[by_thickness[thickness]])


def test_samples_without_any_metrics(scored):
    table = query(scored, "SELECT * FROM samples ORDER BY sample_id")
    assert table.num_rows == 6
    assert table.column_names == scored.params_schema.names + ["metrics_cycle", "checkpoint"]
    assert table["metrics_cycle"].null_count == 6 and table["checkpoint"].null_count == 6
    with pytest.raises(StoreError, match="query failed: .*iou"):
        query(scored, "SELECT avg(iou) FROM samples")


def test_an_empty_run_can_be_queried(run):
    assert query(run, "SELECT count(*) AS n FROM samples")["n"].to_pylist() == [0]
    assert "boundary_thickness" in query(run, "DESCRIBE params")["column_name"].to_pylist()


@pytest.mark.parametrize("sql", [
    "COPY (SELECT * FROM params) TO 'out.csv'",
    "ATTACH 'other.db' AS other",
    "DETACH other",
    "DROP VIEW params",
    "CREATE TABLE t AS SELECT * FROM params",
    "INSERT INTO params SELECT * FROM params",
    "UPDATE params SET seed = 0",
    "DELETE FROM params",
    "SET threads = 1",
    "PRAGMA database_list",
    "INSTALL httpfs",
    "LOAD httpfs",
    "CALL pragma_version()",
    "EXPORT DATABASE 'dump'",
    "SELECT 1; DROP VIEW params",
    "EXPLAIN ANALYZE COPY (SELECT 1) TO 'out.csv'",
    "",
])
def test_anything_but_a_query_is_refused(scored, sql, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError, match="^query is read-only: "):
        query(scored, sql)
    assert os.listdir(tmp_path) == ["run"]


@pytest.mark.parametrize("sql", [
    "SELECT count(*) FROM params",
    "WITH t AS (SELECT * FROM params WHERE split = 'val') SELECT count(*) FROM t",
    "DESCRIBE samples",
    "SHOW TABLES",
    "EXPLAIN SELECT * FROM samples",
    "SUMMARIZE params",
    "FROM metrics",
])
def test_read_only_queries_run(scored, sql):
    assert isinstance(query(scored, sql), pa.Table)


def test_files_outside_the_run_cannot_be_read(scored, tmp_path):
    outside = tmp_path / "secret.csv"
    outside.write_text("a\n1\n")
    with pytest.raises(StoreError, match="query failed: .*(Permission|disabled)"):
        query(scored, f"SELECT * FROM read_csv('{outside}')")


def test_a_query_on_a_run_with_a_foreign_fragment_names_it(scored):
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"sample_id": [9]}), os.path.join(scored.uri, "metrics", "foreign.parquet"))
    with pytest.raises(StoreError, match=r"foreign\.parquet: schema does not match a metric fragment"):
        query(scored.uri, "SELECT * FROM samples")


def test_query_on_an_fsspec_memory_run(generator):
    import fsspec

    uri = "memory://synthloop-test-query/run"
    try:
        store = create_run(uri)
        store.write_batch(0, *make_batch(generator, [0, 1, 2]))
        store.append_metrics([{"sample_id": i, "cycle": 0, "checkpoint": "a", "iou": i / 2} for i in range(3)])
        result = query(uri, "SELECT sum(iou) AS s FROM samples")
        assert result["s"].to_pylist() == [1.5]
    finally:
        fsspec.filesystem("memory").rm("/synthloop-test-query", recursive=True)


@pytest.mark.parametrize("kind", ["local", "memory"])
@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_text('{secret}')",
    "SELECT * FROM read_csv('{secret}')",
    "SELECT * FROM '{secret}'",
    "SELECT * FROM glob('/*')",
    "SELECT * FROM read_parquet('{params}')",
    "SELECT * FROM read_text('http://127.0.0.1:9/x')",
    "SELECT * FROM secret_table",
])
def test_the_sandbox_holds_for_every_kind_of_run(generator, tmp_path, kind, sql):
    """No file of the machine, no file of the run, no network, no Python variable: only the views."""
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    secret_table = pa.table({"a": [1]})  # noqa: F841 - a Python variable DuckDB must not find
    uri = str(tmp_path / "run") if kind == "local" else "memory://synthloop-test-sandbox/run"
    try:
        store = create_run(uri)
        store.write_batch(0, *make_batch(generator, [0, 1, 2]))
        params = store.path("params", "b000000.parquet")
        with pytest.raises(StoreError, match="query failed: "):
            query(uri, sql.format(secret=secret, params=params))
        assert query(uri, "SELECT count(*) AS n FROM params")["n"].to_pylist() == [3]
    finally:
        if kind == "memory":
            import fsspec

            fsspec.filesystem("memory").rm("/synthloop-test-sandbox", recursive=True)


def test_format_table_renders_table_csv_and_json():
    table = pa.table({"name": ["a", None], "iou": [0.25, math.nan], "n": [1, 22]})
    text = format_table(table)
    lines = text.splitlines()
    assert lines[0].split() == ["name", "iou", "n"] and lines[-1] == "(2 rows)"
    assert "NULL" in lines[3] and lines[2].endswith(" 1") and lines[3].endswith("22")
    assert list(csv.reader(io.StringIO(format_table(table, "csv")))) == [
        ["name", "iou", "n"], ["a", "0.25", "1"], ["", "nan", "22"]]
    assert json.loads(format_table(table, "json")) == [{"name": "a", "iou": 0.25, "n": 1},
                                                       {"name": None, "iou": None, "n": 22}]
    stamped = pa.table({"t": pa.array([0], pa.timestamp("s", tz="UTC"))})
    assert json.loads(format_table(stamped, "json")) == [{"t": "1970-01-01T00:00:00+00:00"}]
    with pytest.raises(StoreError, match="format: expected one of table, csv, json"):
        format_table(table, "xml")
    assert np.isnan(table["iou"][1].as_py())


def test_duckdb_is_loaded_only_by_a_query():
    """The store and the run's actors work where DuckDB is not importable; only SQL needs it."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['duckdb'] = None\n"  # None: any `import duckdb` raises ImportError
            "import stores, loop.run.driver, loop.run.trainer_actor, loop.run.evaluator_actor\n"
            "try:\n    stores.query('.', 'SELECT 1')\nexcept ImportError:\n    print('needs duckdb')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "needs duckdb"
