"""Records checked a whole polars frame at once against their JSON Schema (workflow/schemas/records/).

The checks are compiled once per schema into polars expressions; only the first failing row is found,
and its message comes from `jsonschema` on that row (`vpo.core.schemas.row_error`), so a frame check and
`validate_records` say the same. A schema keyword not understood here makes `frame_checks` raise, so no
check is ever skipped silently.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from vpo.core.schemas import RecordError, record_schema, row_error

# What `validate_frame` understands; any other keyword makes `frame_checks` raise, so none is skipped.
RECORD_KEYWORDS = frozenset(
    {"title", "description", "type", "additionalProperties", "required", "properties"}
)
FIELD_KEYWORDS = frozenset({"description", "type", "enum", "minLength", "minimum", "pattern", "items"})
ITEM_KEYWORDS = frozenset({"description", "type", "enum"})
FRAME_TYPES = frozenset({"string", "integer", "number", "boolean", "null", "array"})


class UnsupportedSchema(ValueError):
    """A record schema that `validate_frame` cannot check completely."""


@dataclass(frozen=True)
class ValueRule:
    """What one field (or one list item) allows, from its schema."""

    types: frozenset[str] | None  # None: any type
    enum: frozenset[str] | None  # None: any value; the null of an enum is in `nullable`
    nullable: bool
    min_length: int | None = None
    minimum: float | None = None
    pattern: str | None = None
    items: ValueRule | None = None


def _value_rule(spec: Mapping[str, Any], allowed: frozenset[str], where: str) -> ValueRule:
    unknown = set(spec) - allowed
    if unknown:
        raise UnsupportedSchema(f"{where}: keyword(s) {sorted(unknown)} not supported by validate_frame")
    types = spec.get("type")
    types = frozenset([types] if isinstance(types, str) else types) if types is not None else None
    if types is not None and not types <= FRAME_TYPES:
        raise UnsupportedSchema(f"{where}: type(s) {sorted(types - FRAME_TYPES)} not supported")
    enum = spec.get("enum")
    if enum is not None and not all(v is None or isinstance(v, str) for v in enum):
        raise UnsupportedSchema(f"{where}: only string (and null) enum values are supported, got {enum}")
    items = None
    if "items" in spec:
        if types is None or "array" not in types:
            raise UnsupportedSchema(f"{where}: `items` is supported on a field of type array only")
        items = _value_rule(spec["items"], ITEM_KEYWORDS, f"{where}/items")
        if items.types is not None and "array" in items.types:
            raise UnsupportedSchema(f"{where}/items: nested arrays are not supported")
    return ValueRule(
        types=types,
        enum=frozenset(v for v in enum if v is not None) if enum is not None else None,
        nullable=(types is None or "null" in types) and (enum is None or None in enum),
        min_length=spec.get("minLength"),
        minimum=spec.get("minimum"),
        pattern=spec.get("pattern"),
        items=items,
    )


def frame_checks(schema: Mapping[str, Any]) -> dict[str, ValueRule]:
    """Each field's rule, or UnsupportedSchema when the schema says something the frame check can't."""
    title = schema.get("title", "schema")
    unknown = set(schema) - RECORD_KEYWORDS
    if unknown:
        raise UnsupportedSchema(f"{title}: keyword(s) {sorted(unknown)} not supported by validate_frame")
    properties = schema.get("properties", {})
    # A frame has no "missing" cell, only null: every field must be required and no other allowed.
    if schema.get("type") != "object" or schema.get("additionalProperties") is not False:
        raise UnsupportedSchema(f"{title}: needs `type: object` and `additionalProperties: false`")
    if set(schema.get("required", ())) != set(properties):
        raise UnsupportedSchema(f"{title}: every property must be required")
    return {name: _value_rule(spec, FIELD_KEYWORDS, f"{title}/{name}") for name, spec in properties.items()}


@functools.cache
def _record_checks(record_type: str) -> dict[str, ValueRule]:
    return frame_checks(record_schema(record_type))


def _kind(dtype: pl.DataType) -> str:
    """The JSON type of a polars column's values once converted to Python (float and decimal apart)."""
    if dtype == pl.String:
        return "string"
    if dtype == pl.Boolean:
        return "boolean"
    if dtype == pl.Null:
        return "null"
    if isinstance(dtype, pl.List):
        return "array"
    if isinstance(dtype, pl.Decimal):
        return "decimal"
    if dtype.is_integer():
        return "integer"
    if dtype.is_float():
        return "float"
    return "other"


def _wrong_type(expr: pl.Expr, kind: str, types: frozenset[str] | None) -> pl.Expr | None:
    """Where a non-null value is not of the rule's types; None: nowhere."""
    if types is None or kind in types or (kind in ("integer", "float", "decimal") and "number" in types):
        return None
    if kind == "float" and "integer" in types:  # jsonschema counts 2.0 as an integer
        return ~(expr.is_finite() & (expr.floor() == expr))
    return pl.lit(True)


def _python_search(pattern: str) -> Callable[[pl.Series], pl.Series]:
    """Regex search by Python's `re`, as jsonschema does: Rust's regex differs (`$` before a final
    newline, what `\\s` and `\\w` match), and a pattern must mean what the row validator makes of it."""
    search = re.compile(pattern).search

    def apply(values: pl.Series) -> pl.Series:
        return pl.Series([v is None or search(v) is not None for v in values], dtype=pl.Boolean)

    return apply


def _violation(expr: pl.Expr, dtype: pl.DataType, rule: ValueRule) -> pl.Expr:
    """Where a value breaks `rule` (true/false, never null)."""
    kind = _kind(dtype)
    checks: list[pl.Expr] = []  # of non-null values, as jsonschema's keywords apply to their own types
    wrong_type = None if kind == "null" else _wrong_type(expr, kind, rule.types)
    if wrong_type is not None:
        checks.append(wrong_type)
    if rule.enum is not None and kind != "null":
        checks.append(~expr.is_in(sorted(rule.enum)) if kind == "string" else pl.lit(True))
    if kind == "string" and rule.min_length is not None:
        checks.append(expr.str.len_chars() < rule.min_length)
    if kind == "string" and rule.pattern is not None:
        checks.append(~expr.map_batches(_python_search(rule.pattern), return_dtype=pl.Boolean))
    if kind in ("integer", "float", "decimal") and rule.minimum is not None:
        checks.append(expr < rule.minimum)
    if kind == "array" and rule.items is not None:
        checks.append(expr.list.eval(_violation(pl.element(), dtype.inner, rule.items)).list.any())
    bad_null = pl.lit(False) if rule.nullable else expr.is_null()
    if not checks:
        return bad_null
    return bad_null | (expr.is_not_null() & pl.any_horizontal(checks).fill_null(False))


def _plain(dtype: pl.DataType) -> pl.DataType:
    """The type a column converts to Python as: categoricals as strings, fixed-size arrays as lists."""
    if isinstance(dtype, (pl.Categorical, pl.Enum)):
        return pl.String()
    if isinstance(dtype, (pl.Array, pl.List)):
        return pl.List(_plain(dtype.inner))
    return dtype


def first_invalid_row(frame: pl.DataFrame, record_type: str) -> int | None:
    """Index of the first row that breaks the schema of `record_type`, or None."""
    checks = _record_checks(record_type)
    if frame.is_empty():
        return None
    if set(frame.columns) != set(checks):
        return 0
    frame = frame.cast({name: _plain(dtype) for name, dtype in frame.schema.items()})
    bad = pl.any_horizontal(_violation(pl.col(n), frame.schema[n], r) for n, r in checks.items())
    found = frame.select(bad.arg_true().first()).item()
    return None if found is None else int(found)


def validate_frame(
    frame: pl.DataFrame,
    record_type: str,
    where: str,
    rows: Sequence[Mapping[str, Any]] | None = None,
) -> None:
    """Check every row of `frame` against the schema of `record_type`; raise RecordError with the message
    `validate_records` would give. `rows`, when the frame was built from them, are what that message
    quotes (a Python int stays an int there, where the frame holds a float)."""
    checks = _record_checks(record_type)
    if frame.is_empty() and set(frame.columns) != set(checks):
        raise RecordError(
            f"{where}: no {record_type} records, and columns {sorted(frame.columns)} are not its fields"
        )
    index = first_invalid_row(frame, record_type)
    if index is None:
        return
    row = rows[index] if rows is not None else frame.row(index, named=True)
    message = row_error(row, record_type, index, where)
    # The frame check and jsonschema disagree only through a bug here; still no bad record gets written.
    raise RecordError(
        message or f"{where}: record {index} ({record_type}) fails the frame check of its schema"
    )
