"""File I/O at stage edges: atomic writes, schema-checked Parquet tables, JSON."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import polars as pl

from vpo.core.frame_checks import validate_frame
from vpo.core.schemas import record_schema, validate_records


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` so that readers see either the old file or the whole new one, never a torn file."""
    atomic_write_chunks(path, [data])


def atomic_write_chunks(path: str | os.PathLike, chunks: Iterable[bytes | memoryview]) -> None:
    """`atomic_write_bytes` of the chunks one after the other (no copy joins them first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        make_shareable(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def make_shareable(path: str | os.PathLike) -> None:
    """Give a temp file the mode a plain `open` would have (mkstemp makes it owner-only)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def write_records(path: str | os.PathLike, records: Iterable[Mapping[str, Any]], record_type: str) -> int:
    """Validate `records` against the JSON Schema of `record_type` and write them as Parquet."""
    rows = [dict(r) for r in records]
    _write_parquet(path, records_frame(rows, record_type, where=str(path)))
    return len(rows)


def write_frame(path: str | os.PathLike, frame: pl.DataFrame, record_type: str) -> int:
    """Validate a frame of `record_type` records and write it as Parquet, columns as the schema has them."""
    validate_frame(frame, record_type, where=str(path))
    _write_parquet(path, conform(frame, record_type))
    return frame.height


def conform(frame: pl.DataFrame, record_type: str) -> pl.DataFrame:
    """The record type's columns, in its order and with its column types (a column of nulls included)."""
    return frame.select(pl.col(name).cast(dtype) for name, dtype in polars_schema(record_type).items())


def records_frame(rows: Sequence[Mapping[str, Any]], record_type: str, where: str) -> pl.DataFrame:
    """`rows` as a frame of the record type's columns, checked against its schema (RecordError if not)."""
    schema = polars_schema(record_type)
    frame = _exact_frame(rows, schema)
    if frame is None:
        # A value polars would have to convert (a bool for an integer, 2.0, a missing field): the row
        # validator names the record and field, or accepts it, and polars converts as it always did.
        validate_records(rows, record_type, where)
        return pl.DataFrame(rows, schema=schema, strict=False)
    validate_frame(frame, record_type, where, rows=rows)
    return frame


def _exact_frame(rows: Sequence[Mapping[str, Any]], schema: dict[str, pl.DataType]) -> pl.DataFrame | None:
    """The frame of `rows` if each holds exactly the schema's fields, with values polars stores unchanged."""
    if any(len(row) != len(schema) for row in rows):
        return None
    try:
        columns = {name: [row[name] for row in rows] for name in schema}
    except KeyError:
        return None
    if not all(_exact_types(columns[name], dtype) for name, dtype in schema.items()):
        return None
    try:
        return pl.DataFrame(
            [pl.Series(name, columns[name], dtype, strict=True) for name, dtype in schema.items()]
        )
    except (TypeError, OverflowError, pl.exceptions.PolarsError):  # an integer beyond 64 bits
        return None


_EXACT_TYPES: dict[pl.DataType, set[type]] = {
    pl.String: {str},
    pl.Int64: {int},
    pl.Float64: {int, float},
    pl.Boolean: {bool},
}


def _exact_types(values: list[Any], dtype: pl.DataType) -> bool:
    """Every value is None or of a Python type (exactly: a bool is no int) that `dtype` holds as it is."""
    kinds = set(map(type, values)) - {type(None)}
    if isinstance(dtype, pl.List):
        return kinds <= {list} and _exact_types(
            list(chain.from_iterable(v for v in values if v)), dtype.inner
        )
    return kinds <= _EXACT_TYPES[dtype]


def _write_parquet(path: str | os.PathLike, frame: pl.DataFrame) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.write_parquet(tmp)
    os.replace(tmp, path)


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    return pl.read_parquet(path).to_dicts()


def read_frame(paths: Iterable[str | os.PathLike], columns: Sequence[str] | None = None) -> pl.DataFrame:
    """Records of one type from Parquet files as one frame, only `columns` read when given. The files
    are read in parallel, so they must share their column types, as `write_records` writes them."""
    frame = pl.scan_parquet([Path(p) for p in paths], glob=False)
    return (frame.select(columns) if columns is not None else frame).collect()


def read_many(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for p in paths:
        rows.extend(read_records(p))
    return rows


_POLARS_TYPES = {"string": pl.String, "integer": pl.Int64, "number": pl.Float64, "boolean": pl.Boolean}


def polars_schema(record_type: str) -> dict[str, pl.DataType]:
    """Column types from the record's JSON Schema, so that empty tables keep their columns."""
    columns: dict[str, pl.DataType] = {}
    for name, spec in record_schema(record_type)["properties"].items():
        columns[name] = _polars_type(spec)
    return columns


def _polars_type(spec: dict) -> pl.DataType:
    types = spec.get("type", "string")
    types = [types] if isinstance(types, str) else types
    base = next((t for t in types if t != "null"), "string")
    if base == "array":
        return pl.List(_polars_type(spec.get("items", {})))
    return _POLARS_TYPES[base]
