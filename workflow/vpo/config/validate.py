"""Config validation at DAG build time: schema errors and cross-key checks with the key and the fix."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from vpo.config.checks import cross_checks
from vpo.core.schemas import load_schema
from vpo.core.secrets import key_shaped_values, url_has_credential

CONFIG_SCHEMA = "config.schema.yaml"


class ConfigError(ValueError):
    """A config problem found before any job ran."""


def load_config(*paths: str | Path) -> dict[str, Any]:
    """The config of one file, or of layered files (later ones override earlier ones key by key, as
    `snakemake --configfile a.yaml b.yaml` merges them), validated."""
    config: dict[str, Any] = {}
    for path in paths:
        try:
            layer = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        config = _merged(config, layer or {})
    return validate_config(config, source=" + ".join(str(p) for p in paths))


def validate_config(
    config: dict[str, Any], source: str = "config", check_files: bool = True
) -> dict[str, Any]:
    """Return a copy with schema defaults filled in, or raise ConfigError naming the key and the fix."""
    _refuse_credentials(config, source)
    schema = load_schema(CONFIG_SCHEMA)
    validator = jsonschema.Draft202012Validator(schema)
    config = copy.deepcopy(config)
    _coerce_strings(config, validator)
    _merge_targets(config)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("\n".join(_describe(source, e) for e in errors[:10]))
    _fill_defaults(config, schema, schema)
    _default_target(config)
    problems = cross_checks(config, check_files)
    if problems:
        raise ConfigError("\n".join(f"{source}: {p}" for p in problems))
    return config


TARGET_SECTIONS = ("t2v", "reward")


def _merge_targets(config: dict[str, Any]) -> None:
    """Complete each `targets.<name>` with the top-level `t2v` and `reward` sections, its own keys over
    them (nested mappings merged key by key), so that the schema checks and fills what every target runs
    with. A section the config lacks stays absent (the schema and the cross checks say what is missing)."""
    targets = config.get("targets")
    if not isinstance(targets, dict):
        return
    for name, target in targets.items():
        if target is None:
            targets[name] = target = {}
        if not isinstance(target, dict):
            continue
        for section in TARGET_SECTIONS:
            base = config.get(section)
            if isinstance(base, dict):
                target[section] = _merged(base, target.get(section) or {})


def _merged(base: dict[str, Any], over: Any) -> Any:
    if not isinstance(over, dict):
        return copy.deepcopy(over)
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = _merged(base[key], value) if isinstance(base.get(key), dict) else copy.deepcopy(value)
    return out


def _default_target(config: dict[str, Any]) -> None:
    """Without `targets`: one target, named after `t2v.model`, with the top-level sections."""
    if config.get("targets"):
        return
    name = config["t2v"]["model"] if "t2v" in config else "text"
    config["targets"] = {name: {s: copy.deepcopy(config[s]) for s in TARGET_SECTIONS if s in config}}


def _refuse_credentials(config: dict[str, Any], source: str) -> None:
    """A key pasted into a shared config must stop the run before anything (a job report, a log, an
    error message) could copy it; the messages name the key, never the value."""
    fix = (
        "Fix: remove it, put the key in an environment variable and name that variable in "
        "llms.<name>.api_key_env (e.g. api_key_env: OPENAI_API_KEY). The value is not shown on purpose."
    )
    shaped = sorted(set(key_shaped_values(config)))
    if shaped:
        raise ConfigError(f"{source}: key(s) {', '.join(shaped)} hold a value shaped like an API key. {fix}")
    llms = config.get("llms")
    for name, llm in llms.items() if isinstance(llms, dict) else []:
        url = llm.get("base_url") if isinstance(llm, dict) else None
        if isinstance(url, str) and url_has_credential(url):
            raise ConfigError(
                f"{source}: key 'llms.{name}.base_url' carries a credential (user:password@ or a key or "
                f"token in the query string). {fix}"
            )


# What a value must look like where the schema gives a pattern: (its kind in config/README.md, what
# the error says, with the fix).
PATTERN_HINTS = {
    "^[^{}\\x00-\\x1f\\x7f]+$": (
        "path",
        "a path must not hold braces (Snakemake would read {x} as a wildcard) or control characters. "
        "Fix: rename the file or folder",
    ),
    "^[A-Za-z0-9._-]+$": (
        "name",
        "a name may hold only letters, digits, '.', '_' and '-' (it becomes part of rule names, folders "
        "and commands). Fix: rename it, and every reference to it",
    ),
    "^[A-Z_][A-Z0-9_]*$": (
        "variable name",
        "api_key_env takes the NAME of an environment variable (upper-case letters, digits, '_'), such as "
        "OPENAI_API_KEY, never the key itself. Fix: export the key in that variable and put its name here",
    ),
    "^https?://[^\\s]+$": (
        "URL",
        "an endpoint is an http(s) URL without spaces. Fix: e.g. https://api.openai.com/v1",
    ),
    "^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$": (
        "model name",
        "a model name holds letters, digits and ._:/@+-. Fix: correct it",
    ),
    "^[^\\x00-\\x1f\\x7f]+$": ("argument", "an argument must not hold control characters. Fix: remove them"),
    "^[A-Za-z_][A-Za-z0-9_]*$": (
        "identifier",
        "a class name is a Python identifier. Fix: e.g. CogVideoXPipeline",
    ),
    "^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$": (
        "revision",
        "a revision is the full 40-hex commit SHA of the hub repo (or a branch or tag name, unpinned). Fix: "
        "look it up with `hf models info <org>/<name>` (field sha) or `git ls-remote "
        "https://huggingface.co/<org>/<name>`, or set null for a local folder",
    ),
}


def _describe(source: str, error: jsonschema.ValidationError) -> str:
    key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "pattern":
        pattern = error.validator_value
        hint = PATTERN_HINTS.get(pattern, ("", f"it must match {pattern}. Fix: change it"))[1]
        if "propertyNames" in error.schema_path:  # the offending value is an entry's own name
            return f"{source}: key '{key}.{error.instance}': the name {error.instance!r} is refused: {hint}."
        # A wrong api_key_env or base_url may be a key itself (of a shape we do not know): never repeat it.
        shown = "" if key.endswith(("api_key_env", "base_url")) else f" {error.instance!r}"
        return f"{source}: key '{key}': the value{shown} is refused: {hint}."
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        allowed = ", ".join(sorted(error.schema.get("properties", {}))) or "see config/README.md"
        return (
            f"{source}: key '{key}': unknown key(s) {extra}. Fix: remove or rename them "
            f"(allowed here: {allowed})."
        )
    if error.validator == "required":
        return f"{source}: key '{key}': {error.message}. Fix: add it (documented in config/README.md)."
    if error.validator == "enum":
        choices = ", ".join(repr(c) for c in error.validator_value)
        return f"{source}: key '{key}': {error.instance!r} is not allowed. Fix: use one of {choices}."
    return f"{source}: key '{key}': {error.message}. Fix: see the key's description in config/README.md."


def _coerce_strings(config: dict[str, Any], validator: jsonschema.Draft202012Validator) -> None:
    """Turn "4" into 4 where the schema wants a number, boolean or null.

    Snakemake hands the values inside a `--config key='{a: 4}'` mapping over as strings; a string that
    reads as exactly the type the schema asks for is what the user meant. Anything else is left for
    the schema error.
    """
    for error in validator.iter_errors(config):
        wanted = error.schema.get(error.validator)
        if error.validator not in ("type", "enum") or not isinstance(error.instance, str):
            continue
        if not error.absolute_path or (error.validator == "enum" and None not in wanted):
            continue
        value = _scalar(error.instance)
        # Only the type is checked here: "0" for a key with minimum 1 becomes 0, and the schema then
        # says "0 is less than the minimum of 1" instead of "'0' is not of type 'integer'".
        if isinstance(value, str) or not jsonschema.Draft202012Validator({error.validator: wanted}).is_valid(
            value
        ):
            continue
        *parents, last = error.absolute_path
        node = config
        for part in parents:
            node = node[part]
        node[last] = value


def _scalar(text: str) -> Any:
    """A string as the number, boolean or null it spells; YAML 1.2 numbers such as 1e-5 included,
    which PyYAML (YAML 1.1) reads as strings when they are written without a dot."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        if not math.isfinite(number):
            return value
        return int(number) if number.is_integer() else number
    return value


def _fill_defaults(node: Any, schema: dict[str, Any], root: dict[str, Any]) -> None:
    """Fill the `default` of every absent key, as the schema (the one source of defaults) gives it."""
    schema = schema_node(root, schema)
    if not isinstance(node, dict):
        return
    properties = schema.get("properties", {})
    for name, child in properties.items():
        child = schema_node(root, child)
        if name not in node and "default" in child:
            node[name] = copy.deepcopy(child["default"])
        # `--config key='{a: null}'` arrives as the string "null": where null is allowed, it means null.
        if node.get(name) == "null" and "null" in (child.get("type") or []):
            node[name] = None
        if name in node:
            _fill_defaults(node[name], child, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for name, value in node.items():
            if name not in properties:
                _fill_defaults(value, extra, root)


def schema_node(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = root
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        merged = {**schema_node(root, target), **{k: v for k, v in node.items() if k != "$ref"}}
        return merged
    if "allOf" in node:
        merged = {k: v for k, v in node.items() if k != "allOf"}
        for part in node["allOf"]:
            part = schema_node(root, part)
            merged.setdefault("properties", {}).update(part.get("properties", {}))
            for key, value in part.items():
                if key not in ("properties", "required"):
                    merged.setdefault(key, value)
        return merged
    return node
