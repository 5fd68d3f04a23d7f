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
EXPLAIN of these); anything else is refused before it runs. On local disk DuckDB may read
only the run's directory.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from typing import Any

import duckdb
import pyarrow as pa

from stores.errors import StoreError
from stores.store import RunStore
from stores.tables import METRIC_KEY_FIELDS, METRICS_DIR, PARAMS_DIR

_EXPLAIN = re.compile(r"^\s*explain\s+(analyze\s+)?(?P<rest>.*)$", re.IGNORECASE | re.DOTALL)
FORMATS = ("table", "csv", "json")


def check_read_only(sql: str) -> None:
    """Raise ``StoreError("query is read-only: ...")`` unless ``sql`` is one read-only query."""
    if not isinstance(sql, str) or not sql.strip():
        raise StoreError(f"query is read-only: expected one SELECT query, got {sql!r}")
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
    location = store._location
    params_files = store._fragment_paths(PARAMS_DIR)
    metric_files = store._fragment_paths(METRICS_DIR)
    con = duckdb.connect(":memory:")
    if not location.local:
        con.register_filesystem(location.fs)
        params_files = [location.fs.unstrip_protocol(p) for p in params_files]
        metric_files = [location.fs.unstrip_protocol(p) for p in metric_files]
    if params_files:
        con.execute(f"CREATE VIEW params AS SELECT * FROM read_parquet({_sql_list(params_files)})")
    else:
        con.register("params", store.params_schema.empty_table())
    raw_fields = [*METRIC_KEY_FIELDS, pa.field("filename", pa.string())]
    if metric_files:
        con.execute("CREATE VIEW _metric_rows AS SELECT * FROM read_parquet("
                    f"{_sql_list(metric_files)}, union_by_name = true, filename = true)")
    else:
        con.register("_metric_rows", pa.schema(raw_fields).empty_table())
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
    if location.local:
        con.execute(f"SET allowed_directories = [{_sql_str(location.root.rstrip('/') + '/')}]")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    return con


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _sql_list(items: list[str]) -> str:
    return "[" + ", ".join(_sql_str(i) for i in items) + "]"


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
