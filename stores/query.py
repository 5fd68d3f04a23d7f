"""Read-only SQL over a run's Parquet fragments, with DuckDB.

Views:

``params``
    the parameter table (one row per committed sample).
``metrics``
    every metric row of every fragment: ``sample_id, cycle, checkpoint, created_at`` and the
    union of the metric columns (NULL where a fragment lacks one).
``samples``
    ``params`` left-joined with each sample's *latest* metric row: the row of the highest
    ``cycle``; among rows of that cycle, the one of the most recently committed fragment
    (``created_at``, then fragment file name). Adds ``metrics_cycle``, ``checkpoint`` and the
    metric columns; samples without metrics have NULLs there. When the run has no metrics
    yet, ``metrics_cycle`` and ``checkpoint`` are NULL and there are no metric columns (so a
    query naming a metric fails with DuckDB's "column not found").

Only one query statement is run (SELECT, WITH, VALUES, FROM, DESCRIBE, SHOW, SUMMARIZE,
EXPLAIN of these); anything else is refused before it runs. DuckDB gets the tables as Arrow
tables and may open no file and reach no network, for every kind of run.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from stores.errors import StoreError
from stores.store import RunStore
from stores.tables import METRIC_KEY_FIELDS, METRICS_DIR

if TYPE_CHECKING:
    import duckdb

_EXPLAIN = re.compile(r"^\s*explain\s+(analyze\s+)?(?P<rest>.*)$", re.IGNORECASE | re.DOTALL)
FORMATS = ("table", "csv", "json")


def check_read_only(sql: str) -> None:
    """Raise ``StoreError("query is read-only: ...")`` unless ``sql`` is one read-only query."""
    if not isinstance(sql, str) or not sql.strip():
        raise StoreError(f"query is read-only: expected one SELECT query, got {sql!r}")
    # Imported here, not at the top: every actor imports `stores`, only queries need DuckDB.
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise StoreError(f"query: cannot parse ({exc})") from None
    if len(statements) != 1:
        raise StoreError(f"query is read-only: expected one statement, got {len(statements)}")
    statement = statements[0]
    kind = statement.type
    if kind == duckdb.StatementType.EXPLAIN:
        # EXPLAIN ANALYZE runs its statement, so the statement itself must be a query.
        match = _EXPLAIN.match(statement.query)
        if match is None:
            raise StoreError(f"query is read-only: cannot check the explained statement in {sql!r}")
        check_read_only(match.group("rest"))
        return
    if kind != duckdb.StatementType.SELECT:
        raise StoreError(f"query is read-only: {kind.name} statements are refused; "
                         "expected SELECT, WITH, DESCRIBE, SHOW or EXPLAIN")


def query(uri_or_store: RunStore | str | os.PathLike[str], sql: str) -> pa.Table:
    """Run one read-only SQL query over a run's ``params``, ``metrics`` and ``samples`` views.

    Examples
    --------
    >>> query(run_dir, "SELECT boundary_thickness, avg(iou) FROM samples GROUP BY 1 ORDER BY 2")  # doctest: +SKIP
    """
    import duckdb

    check_read_only(sql)
    store = uri_or_store if isinstance(uri_or_store, RunStore) else RunStore.open(uri_or_store)
    con = _connect(store)
    try:
        relation = con.sql(sql)
        return relation.to_arrow_table() if relation is not None else pa.table({})
    except duckdb.Error as exc:
        raise StoreError(f"query failed: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()


def _connect(store: RunStore) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB holding the run's tables, sandboxed before it sees the query.

    The fragments are read here (the store checks their schemas) and handed to DuckDB as
    Arrow tables, so DuckDB never opens a file itself, whatever kind of run it is (local,
    ``memory://``, ``s3://``): external access (files, network, extensions, Python variables)
    is switched off and the configuration locked before the caller's query runs.
    """
    import duckdb

    params = store.params()
    fragments = store._metric_fragments_in_order()
    con = duckdb.connect(":memory:", config={
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
        "python_enable_replacements": False,
    })
    try:
        con.register("params", params)
        raw_fields = [*METRIC_KEY_FIELDS, pa.field("filename", pa.string())]
        if fragments:
            tables = [table.append_column("filename", pa.array([store.path(METRICS_DIR, f"{name}.parquet")]
                                                               * table.num_rows, pa.string()))
                      for name, table in fragments]
            metric_rows = pa.concat_tables(tables, promote_options="default")
            # The key columns first, then the metric columns (each fragment's own, in order).
            keys = [f.name for f in raw_fields]
            metric_rows = metric_rows.select(keys + [n for n in metric_rows.column_names if n not in keys])
        else:
            metric_rows = pa.schema(raw_fields).empty_table()
        con.register("_metric_rows", metric_rows)
        con.execute("CREATE VIEW metrics AS SELECT * EXCLUDE (filename) FROM _metric_rows")
        con.execute("""
            CREATE VIEW samples AS
            SELECT p.*, m.cycle AS metrics_cycle, m.checkpoint,
                   m.* EXCLUDE (sample_id, cycle, checkpoint, created_at, filename)
            FROM params AS p
            LEFT JOIN (
                SELECT * FROM _metric_rows
                QUALIFY row_number() OVER (PARTITION BY sample_id
                                           ORDER BY cycle DESC, created_at DESC, filename DESC) = 1
            ) AS m USING (sample_id)
        """)
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


def format_table(table: pa.Table, fmt: str = "table") -> str:
    """Render a query result: ``table`` (aligned text), ``csv`` or ``json`` (a list of row objects)."""
    if fmt not in FORMATS:
        raise StoreError(f"format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    rows = table.to_pylist()
    names = table.column_names
    if fmt == "json":
        return json.dumps([{k: _json_value(v) for k, v in row.items()} for row in rows])
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([["" if row[n] is None else row[n] for n in names] for row in rows])
        return out.getvalue()
    cells = [[_text(row[n]) for n in names] for row in rows]
    widths = [max([len(n), *(len(r[j]) for r in cells)]) for j, n in enumerate(names)]
    numeric = [pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
               for t in table.schema.types]
    lines = ["  ".join(n.rjust(w) if num else n.ljust(w) for n, w, num in zip(names, widths, numeric)),
             "  ".join("-" * w for w in widths)]
    for r in cells:
        lines.append("  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric)))
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines)


def _text(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN or infinity
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return value.isoformat() if hasattr(value, "isoformat") else str(value)
