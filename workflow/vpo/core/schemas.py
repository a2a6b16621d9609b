"""JSON Schemas of the config and of every record type, loaded from workflow/schemas/.

Records are checked row by row here (`validate_records`, jsonschema) and a whole polars frame at once in
`vpo.core.frame_checks`, which gives the same message; this module stays free of polars, so that the
Snakefile's config validation does not import it (about 1.5 s of every Snakemake start)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema
import yaml

from vpo.core.layout import SCHEMA_DIR


class RecordError(ValueError):
    """A record that does not match its schema: a bug in the stage that wrote it."""


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    return yaml.safe_load((SCHEMA_DIR / name).read_text(encoding="utf-8"))


def record_schema(record_type: str) -> dict[str, Any]:
    return load_schema(f"records/{record_type}.schema.yaml")


@functools.cache
def _validator(record_type: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(record_schema(record_type))


def row_error(row: Mapping[str, Any], record_type: str, index: int, where: str) -> str | None:
    """The message of the most relevant schema violation of one record, or None when it is valid."""
    error = jsonschema.exceptions.best_match(_validator(record_type).iter_errors(row))
    if error is None:
        return None
    field = "/".join(str(p) for p in error.absolute_path) or "(record)"
    return f"{where}: record {index} ({record_type}) field {field}: {error.message}"


def validate_records(rows: Sequence[Mapping[str, Any]], record_type: str, where: str) -> None:
    for index, row in enumerate(rows):
        message = row_error(row, record_type, index, where)
        if message is not None:
            raise RecordError(message)
