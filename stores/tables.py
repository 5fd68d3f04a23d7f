"""Parquet fragments: the parameter table (one fragment per batch) and the metric tables.

A fragment is immutable once committed. Committing is :meth:`Location.commit_bytes`: the
file appears whole under its final name or not at all, and an existing fragment is never
replaced. Readers list only final names (``b000042.parquet``, ``NAME.parquet``); temporary
and claim files start with a dot.
"""

from __future__ import annotations

import io
import json
import re
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from generators.space import Choice, ParamSpace, ParamSpaceError
from stores.errors import StoreError
from stores.location import Location

PARAMS_DIR = "params"
METRICS_DIR = "metrics"
SPLITS = ("train", "val", "test")
"""Training data, the validation set the policies read, and the held-out test set no policy sees."""
TIMESTAMP = pa.timestamp("us", tz="UTC")

# Columns of the parameter table that the caller gives, with their types; parent_id and
# label may be left out (null).
CALLER_FIELDS = (
    pa.field("sample_id", pa.int64(), nullable=False),
    pa.field("cycle", pa.int32(), nullable=False),
    pa.field("split", pa.string(), nullable=False),
    pa.field("policy", pa.string(), nullable=False),
    pa.field("parent_id", pa.int64()),
    pa.field("seed", pa.int64(), nullable=False),
    pa.field("label", pa.int64()),
)
OPTIONAL_COLUMNS = ("parent_id", "label")
# Columns the store fills in.
STORE_COLUMNS = ("batch", "generator", "generator_version", "created_at")
# Key columns of a metric fragment; every other column is a float64 metric.
METRIC_KEY_FIELDS = (
    pa.field("sample_id", pa.int64(), nullable=False),
    pa.field("cycle", pa.int32(), nullable=False),
    pa.field("checkpoint", pa.string(), nullable=False),
    pa.field("created_at", TIMESTAMP, nullable=False),
)
# Names the `samples` query view adds next to the parameter columns.
SAMPLES_EXTRA_COLUMNS = ("metrics_cycle", "checkpoint", "filename")

_PARAMS_NAME = re.compile(r"^b(\d+)\.parquet$")
_METRICS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def params_schema(space: ParamSpace) -> pa.Schema:
    """Schema of a parameter fragment: keys, one typed column per dimension, label, created_at."""
    caller = {f.name: f for f in CALLER_FIELDS}
    fields = [caller["sample_id"], pa.field("batch", pa.int64(), nullable=False), caller["cycle"],
              caller["split"], caller["policy"], caller["parent_id"], caller["seed"],
              pa.field("generator", pa.string(), nullable=False),
              pa.field("generator_version", pa.string(), nullable=False)]
    fields += list(space.arrow_schema())
    fields += [caller["label"], pa.field("created_at", TIMESTAMP, nullable=False)]
    return pa.schema(fields)


def check_space_names(space: ParamSpace) -> None:
    """Raise :class:`StoreError` if a dimension name clashes with a column the store defines."""
    taken = {f.name for f in CALLER_FIELDS} | set(STORE_COLUMNS) | set(SAMPLES_EXTRA_COLUMNS)
    for name in space.names:
        if name in taken:
            raise StoreError(f"space: dimension {name!r} has the name of a store column; "
                             f"rename it (taken: {', '.join(sorted(taken))})")


def params_fragment_name(batch: int) -> str:
    """File name of the parameter fragment of ``batch``."""
    return f"b{batch:06d}.parquet"


def parse_params_fragment(name: str) -> int | None:
    """Batch number of a committed parameter fragment's file name, else ``None``."""
    match = _PARAMS_NAME.match(name)
    return int(match.group(1)) if match else None


def check_metrics_name(name: str) -> str:
    """Check a metric fragment name (letters, digits, ``_.-``; not starting with a dot)."""
    if not isinstance(name, str) or not _METRICS_NAME.match(name) or name.endswith(".parquet"):
        raise StoreError(f"metrics name: expected letters, digits, '_', '.', '-' (not starting with "
                         f"'.' nor ending in '.parquet'), got {name!r}")
    return name


def now() -> datetime:
    """The current UTC time, as stored in ``created_at``."""
    return datetime.now(timezone.utc)


# --- building a parameter fragment ------------------------------------------------------------

def build_params_table(rows: Sequence[Mapping[str, Any]] | pa.Table, *, batch: int, space: ParamSpace,
                       task: str, generator_name: str, generator_version: str,
                       created_at: datetime) -> pa.Table:
    """Check ``rows`` against the space and the column contract; return the fragment table.

    Every problem raises :class:`StoreError` naming the batch and the column (and the row, for
    a list of dicts), the value and what was expected.
    """
    where = f"batch {batch}"
    if isinstance(rows, pa.Table):
        table = rows
    elif isinstance(rows, Sequence) and not isinstance(rows, (str, bytes)):
        table = _rows_to_table(rows, where, space)
    else:
        raise StoreError(f"{where}: rows: expected a list of dicts or a pyarrow Table, got {type(rows).__name__}")
    if table.num_rows == 0:
        raise StoreError(f"{where}: rows: expected at least one row, got none")
    _check_names(table.column_names, where, space)
    n = table.num_rows
    columns: dict[str, pa.Array] = {}
    for f in CALLER_FIELDS:
        if f.name in table.column_names:
            columns[f.name] = _cast(table[f.name], f.type, where, f.name, "an integer" if pa.types.is_integer(f.type) else "a string")
        else:
            columns[f.name] = pa.nulls(n, f.type)
        if not f.nullable and columns[f.name].null_count:
            raise StoreError(f"{where}, column {f.name!r}: has {columns[f.name].null_count} null values; expected none")
    for dim in space:
        expected = "a string" if isinstance(dim, Choice) else "a number"
        columns[dim.name] = _cast(table[dim.name], dim.arrow_type, where, dim.name, expected)
        _check_dimension(columns[dim.name], dim, where)
    _check_keys(columns, where, task)
    constant = {"batch": pa.array(np.full(n, batch, dtype=np.int64)),
                "generator": pa.array([generator_name] * n, pa.string()),
                "generator_version": pa.array([generator_version] * n, pa.string()),
                "created_at": pa.array([created_at] * n, TIMESTAMP)}
    schema = params_schema(space)
    return pa.table([columns.get(f.name, constant.get(f.name)) for f in schema], schema=schema)


def _rows_to_table(rows: Sequence[Mapping[str, Any]], where: str, space: ParamSpace) -> pa.Table:
    caller = {f.name: f.type for f in CALLER_FIELDS}
    data: dict[str, list[Any]] = {name: [] for name in (*caller, *space.names)}
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise StoreError(f"{where}, row {i}: expected a dict, got {type(row).__name__}")
        _check_names(list(row), f"{where}, row {i}", space)
        params = {k: v for k, v in row.items() if k not in caller}
        try:
            params = space.validate(params)
        except ParamSpaceError as exc:
            raise StoreError(f"{where}, row {i}: {exc}") from None
        for name in caller:
            value = row.get(name)
            if isinstance(value, (bool, np.bool_)) or (value is not None and pa.types.is_integer(caller[name])
                                                       and not isinstance(value, (int, np.integer))):
                raise StoreError(f"{where}, row {i}, column {name!r}: expected an integer, got {value!r}")
            data[name].append(value)
        for name, value in params.items():
            data[name].append(value)
    arrays = {}
    for name, values in data.items():
        arrow_type = caller[name] if name in caller else space[name].arrow_type
        try:
            arrays[name] = pa.array(values, arrow_type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError) as exc:
            raise StoreError(f"{where}, column {name!r}: values do not fit {arrow_type} ({exc})") from None
    return pa.table(arrays)


def _check_names(names: Iterable[str], where: str, space: ParamSpace) -> None:
    present = set(names)
    caller = {f.name for f in CALLER_FIELDS}
    for name in names:
        if name in STORE_COLUMNS:
            raise StoreError(f"{where}, column {name!r}: is set by the store; leave it out")
        if name not in caller and name not in space.names:
            raise StoreError(f"{where}, column {name!r}: unknown; expected the keys "
                             f"{', '.join(sorted(caller))} and the parameters {', '.join(space.names)}")
    missing = [n for n in (*(f.name for f in CALLER_FIELDS if f.name not in OPTIONAL_COLUMNS), *space.names)
               if n not in present]
    if missing:
        raise StoreError(f"{where}, column {missing[0]!r}: missing")


def _cast(column: pa.ChunkedArray | pa.Array, target: pa.DataType, where: str, name: str, expected: str) -> pa.Array:
    """Cast a column to its stored type without losing information, or raise naming it."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    source = column.type
    numeric_target = pa.types.is_integer(target) or pa.types.is_floating(target)
    ok = ((numeric_target and (pa.types.is_integer(source) or pa.types.is_floating(source)))
          or (pa.types.is_string(target) and (pa.types.is_string(source) or pa.types.is_large_string(source)))
          or pa.types.is_null(source))
    if not ok:
        raise StoreError(f"{where}, column {name!r}: wrong type {source}; expected {expected} ({target})")
    try:
        return column.cast(target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise StoreError(f"{where}, column {name!r}: values do not fit {target} ({exc})") from None


def _check_dimension(column: pa.Array, dim: Any, where: str) -> None:
    if column.null_count:
        raise StoreError(f"{where}, column {dim.name!r}: has {column.null_count} null values; "
                         f"expected {dim.bounds_text()}")
    if isinstance(dim, Choice):
        bad = pc.invert(pc.is_in(column, value_set=pa.array(dim.options)))
    else:
        values = column.to_numpy(zero_copy_only=False).astype(np.float64)
        bad = pa.array(~np.isfinite(values) | (values < dim.low) | (values > dim.high))
    if pc.any(bad).as_py():
        value = column.filter(bad)[0].as_py()
        raise StoreError(f"{where}, column {dim.name!r}: value {value!r} out of the space; "
                         f"expected {dim.bounds_text()}")


def _check_keys(columns: Mapping[str, pa.Array], where: str, task: str) -> None:
    ids = columns["sample_id"].to_numpy()
    unique, counts = np.unique(ids, return_counts=True)
    if len(unique) != len(ids):
        raise StoreError(f"{where}, column 'sample_id': id {int(unique[counts > 1][0])} appears "
                         f"{int(counts[counts > 1][0])} times; expected unique ids")
    if (ids < 0).any():
        raise StoreError(f"{where}, column 'sample_id': id {int(ids[ids < 0][0])}; expected ids >= 0")
    for name in ("cycle", "seed"):
        values = columns[name].to_numpy()
        if (values < 0).any():
            raise StoreError(f"{where}, column {name!r}: value {int(values[values < 0][0])}; expected >= 0")
    bad_split = pc.invert(pc.is_in(columns["split"], value_set=pa.array(SPLITS)))
    if pc.any(bad_split).as_py():
        raise StoreError(f"{where}, column 'split': value {columns['split'].filter(bad_split)[0].as_py()!r}; "
                         f"expected one of {', '.join(SPLITS)}")
    if task == "classification" and columns["label"].null_count:
        raise StoreError(f"{where}, column 'label': {columns['label'].null_count} rows without a label; "
                         "a classification run needs the class of every sample")


# --- building a metric fragment ---------------------------------------------------------------

def build_metrics_table(rows: Sequence[Mapping[str, Any]] | pa.Table, *, reserved: Iterable[str],
                        created_at: datetime, where: str = "metrics") -> pa.Table:
    """Check a metric table and return it in stored form.

    Keys: ``sample_id`` (int), ``cycle`` (int), ``checkpoint`` (string or int; stored as a
    string). Every other column is a metric, stored as float64; its name must not be one of
    ``reserved`` (the parameter table's columns). ``sample_id`` is unique within a fragment.
    """
    if isinstance(rows, pa.Table):
        table = rows
    elif isinstance(rows, Sequence) and not isinstance(rows, (str, bytes)):
        if not all(isinstance(r, Mapping) for r in rows):
            raise StoreError(f"{where}: rows: expected dicts")
        try:
            table = pa.Table.from_pylist(list(rows))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise StoreError(f"{where}: rows cannot form a table ({exc})") from None
    else:
        raise StoreError(f"{where}: expected a list of dicts or a pyarrow Table, got {type(rows).__name__}")
    if table.num_rows == 0:
        raise StoreError(f"{where}: expected at least one row, got none")
    for key in ("sample_id", "cycle", "checkpoint"):
        if key not in table.column_names:
            raise StoreError(f"{where}, column {key!r}: missing; expected sample_id, cycle, checkpoint and metric columns")
    if "created_at" in table.column_names:
        raise StoreError(f"{where}, column 'created_at': is set by the store; leave it out")
    reserved = set(reserved) | set(SAMPLES_EXTRA_COLUMNS)
    metric_names = [n for n in table.column_names if n not in ("sample_id", "cycle", "checkpoint")]
    if not metric_names:
        raise StoreError(f"{where}: no metric columns; expected at least one (e.g. iou, error, loss)")
    if len(set(table.column_names)) != len(table.column_names):
        raise StoreError(f"{where}: duplicate column names in {table.column_names}")
    sample_id = _cast(table["sample_id"], pa.int64(), where, "sample_id", "an integer")
    cycle = _cast(table["cycle"], pa.int32(), where, "cycle", "an integer")
    checkpoint = table["checkpoint"].combine_chunks()
    if pa.types.is_integer(checkpoint.type):
        checkpoint = checkpoint.cast(pa.string())
    checkpoint = _cast(checkpoint, pa.string(), where, "checkpoint", "a string or an integer")
    for name, column in (("sample_id", sample_id), ("cycle", cycle), ("checkpoint", checkpoint)):
        if column.null_count:
            raise StoreError(f"{where}, column {name!r}: has {column.null_count} null values; expected none")
    ids = sample_id.to_numpy()
    unique, counts = np.unique(ids, return_counts=True)
    if len(unique) != len(ids):
        raise StoreError(f"{where}, column 'sample_id': id {int(unique[counts > 1][0])} appears "
                         f"{int(counts[counts > 1][0])} times; expected one row per sample in a fragment")
    columns = [sample_id, cycle, checkpoint, pa.array([created_at] * table.num_rows, TIMESTAMP)]
    fields = list(METRIC_KEY_FIELDS)
    for name in metric_names:
        if name in reserved:
            raise StoreError(f"{where}, column {name!r}: is a name of the parameter table; "
                             "choose another metric name")
        column = table[name].combine_chunks()
        if pa.types.is_boolean(column.type):
            raise StoreError(f"{where}, column {name!r}: wrong type bool; expected a number")
        columns.append(_cast(column, pa.float64(), where, name, "a number"))
        fields.append(pa.field(name, pa.float64()))
    return pa.table(columns, schema=pa.schema(fields))


# --- writing and reading fragments ------------------------------------------------------------

def to_parquet_bytes(table: pa.Table) -> bytes:
    """The Parquet file of ``table``, in memory, with the pandas metadata of :func:`pandas_metadata`."""
    sink = io.BytesIO()
    pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), **pandas_metadata(table.schema)}),
                   sink, compression="zstd")
    return sink.getvalue()


def pandas_metadata(schema: pa.Schema) -> dict[bytes, bytes]:
    """Schema metadata under which pandas reads a nullable integer column (``parent_id``,
    ``label``) as a nullable integer (``Int64``), not as floats with NaN; empty when there is none.

    pandas (through pyarrow) takes a column's dtype from the ``numpy_type`` of its entry in the
    ``pandas`` metadata; columns without an entry convert as usual, so only these are listed.
    """
    columns = [{"name": f.name, "field_name": f.name, "pandas_type": str(f.type),
                "numpy_type": f"{'Int' if pa.types.is_signed_integer(f.type) else 'UInt'}{f.type.bit_width}",
                "metadata": None}
               for f in schema if f.nullable and pa.types.is_integer(f.type)]
    if not columns:
        return {}
    return {b"pandas": json.dumps({"index_columns": [], "column_indexes": [], "columns": columns,
                                   "creator": {"library": "synthloop"}}).encode()}


def read_fragment(location: Location, rel: str) -> pa.Table:
    """Read a fragment file; :class:`StoreError` naming it when it is not Parquet."""
    try:
        if location.local:
            return pq.read_table(location.join(rel))
        return pq.read_table(io.BytesIO(location.read_bytes(rel)))
    except (pa.ArrowInvalid, OSError) as exc:
        raise StoreError(f"{location.url(rel)}: not a readable Parquet fragment ({exc})") from None


def read_schema(location: Location, rel: str) -> pa.Schema:
    """Read only the schema of a fragment file (its footer)."""
    try:
        if location.local:
            return pq.read_schema(location.join(rel))
        with location.fs.open(location.join(rel), "rb") as f:
            return pq.read_schema(f)
    except (pa.ArrowInvalid, OSError) as exc:
        raise StoreError(f"{location.url(rel)}: not a readable Parquet fragment ({exc})") from None


def check_params_schema(schema: pa.Schema, expected: pa.Schema, path: str) -> None:
    """Raise :class:`StoreError` naming ``path`` unless its columns and types are ``expected``'s."""
    got = [(f.name, f.type) for f in schema]
    want = [(f.name, f.type) for f in expected]
    if got != want:
        raise StoreError(f"{path}: schema does not match this run's parameter table: "
                         f"{_schema_diff(got, want)}")


def check_metrics_schema(schema: pa.Schema, path: str) -> None:
    """Raise :class:`StoreError` naming ``path`` unless it has the metric keys and float64 metrics."""
    got = [(f.name, f.type) for f in schema]
    want = [(f.name, f.type) for f in METRIC_KEY_FIELDS]
    if got[:len(want)] != want:
        raise StoreError(f"{path}: schema does not match a metric fragment: {_schema_diff(got[:len(want)], want)}")
    for name, arrow_type in got[len(want):]:
        if arrow_type != pa.float64():
            raise StoreError(f"{path}: metric column {name!r} is {arrow_type}; expected double")
    if len(got) == len(want):
        raise StoreError(f"{path}: no metric columns")


def _schema_diff(got: list[tuple[str, pa.DataType]], want: list[tuple[str, pa.DataType]]) -> str:
    got_d, want_d = dict(got), dict(want)
    for name, t in want:
        if name not in got_d:
            return f"column {name!r} ({t}) is missing"
        if got_d[name] != t:
            return f"column {name!r} is {got_d[name]}, expected {t}"
    for name, _ in got:
        if name not in want_d:
            return f"column {name!r} is not expected"
    return f"columns are in order {[n for n, _ in got]}, expected {[n for n, _ in want]}"
