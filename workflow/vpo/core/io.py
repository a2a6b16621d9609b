"""File I/O at stage edges: atomic writes, schema-checked Parquet tables, JSON."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from vpo.core.schemas import validate_records


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` so that readers see either the old file or the whole new one, never a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
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
    validate_records(rows, record_type, where=str(path))
    frame = pl.DataFrame(rows, schema=_polars_schema(record_type), strict=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.write_parquet(tmp)
    os.replace(tmp, path)
    return len(rows)


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    return pl.read_parquet(path).to_dicts()


def read_many(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for p in paths:
        rows.extend(read_records(p))
    return rows


_POLARS_TYPES = {"string": pl.String, "integer": pl.Int64, "number": pl.Float64, "boolean": pl.Boolean}


def _polars_schema(record_type: str) -> dict[str, pl.DataType]:
    """Column types from the record's JSON Schema, so that empty tables keep their columns."""
    from vpo.core.schemas import record_schema

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
