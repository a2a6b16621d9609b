"""The schema files themselves: only JSON Schema keywords (a stray comma in a YAML flow mapping
silently turns the end of a description into a keyword nobody checks) and a description everywhere."""

from pathlib import Path

import pytest
import yaml

SCHEMAS = sorted((Path(__file__).resolve().parents[2] / "workflow/schemas").rglob("*.yaml"))
KEYWORDS = {
    "$schema", "$id", "$ref", "$defs", "title", "description", "type", "enum", "const", "default",
    "properties", "additionalProperties", "patternProperties", "required", "minProperties",
    "maxProperties", "propertyNames", "items", "minItems", "maxItems", "uniqueItems", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength", "maxLength", "pattern", "format",
    "allOf", "anyOf", "oneOf", "not", "if", "then", "else",
}  # fmt: skip
NAMED_CHILDREN = {"properties", "$defs", "patternProperties"}


def unknown_keywords(node, path=()):
    if isinstance(node, list):
        for i, child in enumerate(node):
            yield from unknown_keywords(child, (*path, str(i)))
    elif isinstance(node, dict):
        for key, child in node.items():
            if path and path[-1] in NAMED_CHILDREN:
                yield from unknown_keywords(child, (*path, key))
                continue
            if key not in KEYWORDS:
                yield "/".join(path), key
            if key not in {"enum", "const", "default", "required"}:
                yield from unknown_keywords(child, (*path, key))


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.name)
def test_schema_uses_only_json_schema_keywords(path):
    assert list(unknown_keywords(yaml.safe_load(path.read_text()))) == []


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.name)
def test_every_property_is_described(path):
    def undocumented(node, path=()):
        if isinstance(node, dict):
            for name, child in node.get("properties", {}).items():
                if isinstance(child, dict) and "description" not in child and "$ref" not in child:
                    yield "/".join((*path, name))
            for key, child in node.items():
                yield from undocumented(child, (*path, key))

    assert list(undocumented(yaml.safe_load(path.read_text()))) == []
