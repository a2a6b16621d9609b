"""config/README.md, generated from the config schema (the one source of the keys' documentation)."""

from __future__ import annotations

import json
from typing import Any

from vpo.config.validate import CONFIG_SCHEMA, PATTERN_HINTS, schema_node
from vpo.core.schemas import load_schema


def config_doc(schema: dict[str, Any] | None = None) -> str:
    """Markdown documentation of every config key, generated from the schema."""
    schema = schema or load_schema(CONFIG_SCHEMA)
    lines = [
        "# Configuration keys",
        "",
        "Generated from `workflow/schemas/config.schema.yaml` by `vpo config-doc > config/README.md`;",
        "a test fails when this file is stale. `config/config.yaml` is the embedded CPU default,",
        "`config/paper.yaml` the paper's settings. Unknown keys are errors.",
        "",
        "A *name* (of a model, an LLM entry, a method) holds only letters, digits, `.`, `_` and `-`; a",
        "*path* may hold spaces but no braces (Snakemake would read `{x}` as a wildcard) and no control",
        "characters; no value may hold an API key (the config names the variable that holds it). Values",
        "given with `--config key='{a: 4}'` arrive as strings and are read as the type the key wants.",
        "",
        "| key | type | description |",
        "| --- | --- | --- |",
    ]
    _doc_rows(schema, schema, "", lines)
    return "\n".join(lines) + "\n"


def _type_of(node: dict[str, Any]) -> str:
    if "enum" in node:
        return " \\| ".join("null" if v is None else f"`{v}`" for v in node["enum"])
    kind = node.get("type", "object" if "properties" in node else "")
    text = " or ".join(kind) if isinstance(kind, list) else kind
    if node.get("pattern") in PATTERN_HINTS:
        text = text.replace("string", f"string ({PATTERN_HINTS[node['pattern']][0]})")
    bounds = [
        f"{b} {node[k]}"
        for k, b in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"))
        if k in node
    ]
    return ", ".join([text, *bounds]) if text else ", ".join(bounds)


def _doc_rows(root: dict[str, Any], node: dict[str, Any], prefix: str, lines: list[str]) -> None:
    node = schema_node(root, node)
    for name, raw in node.get("properties", {}).items():
        child = schema_node(root, raw)
        section = raw.get("$ref", "").removeprefix("#/properties/")
        if section != raw.get("$ref", ""):  # another section's keys (a target's t2v): documented there
            description = " ".join(str(raw.get("description", "")).split())
            lines.append(f"| `{prefix}{name}` | object | {description} Keys: those of `{section}`. |")
            continue
        key = f"{prefix}{name}"
        description = " ".join(str(child.get("description", "")).split())
        if "default" in child:
            description += f" Default: `{json.dumps(child['default'])}`."
        lines.append(f"| `{key}` | {_type_of(child)} | {description} |")
        if "properties" in child:
            _doc_rows(root, child, key + ".", lines)
        elif isinstance(child.get("additionalProperties"), dict):
            _doc_rows(root, child["additionalProperties"], key + ".<name>.", lines)
