"""JSON Schemas of the config and of every record type, loaded from workflow/schemas/."""

from __future__ import annotations

import functools
from collections.abc import Sequence
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


def validate_records(rows: Sequence[dict[str, Any]], record_type: str, where: str) -> None:
    validator = _validator(record_type)
    for index, row in enumerate(rows):
        error = jsonschema.exceptions.best_match(validator.iter_errors(row))
        if error is not None:
            field = "/".join(str(p) for p in error.absolute_path) or "(record)"
            raise RecordError(f"{where}: record {index} ({record_type}) field {field}: {error.message}")
