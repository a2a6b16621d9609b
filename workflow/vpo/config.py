"""Config validation at DAG build time: schema errors and cross-key checks with the key and the fix."""

from __future__ import annotations

import copy
import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from vpo.curate import CurationRules, rule_violation
from vpo.ids import normalize_query
from vpo.prompts import conversation, load_template
from vpo.queries import QueryFileError, read_raw_queries
from vpo.reward.checklist import ChecklistError, load_checklist
from vpo.run_options import EXECUTION_KEYS
from vpo.scheduling import runs_model_locally
from vpo.schemas import load_schema
from vpo.secrets import key_shaped_values, url_has_credential

CONFIG_SCHEMA = "config.schema.yaml"


class ConfigError(ValueError):
    """A config problem found before any job ran."""


def load_config(path: str | Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return validate_config(config or {}, source=str(path))


def validate_config(
    config: dict[str, Any], source: str = "config", check_files: bool = True
) -> dict[str, Any]:
    """Return a copy with schema defaults filled in, or raise ConfigError naming the key and the fix."""
    _refuse_credentials(config, source)
    schema = load_schema(CONFIG_SCHEMA)
    validator = jsonschema.Draft202012Validator(schema)
    config = copy.deepcopy(config)
    _coerce_strings(config, validator)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("\n".join(_describe(source, e) for e in errors[:10]))
    _fill_defaults(config, schema, schema)
    problems = _cross_checks(config, check_files)
    if problems:
        raise ConfigError("\n".join(f"{source}: {p}" for p in problems))
    return config


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
_PATTERN_HINTS = {
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
        hint = _PATTERN_HINTS.get(pattern, ("", f"it must match {pattern}. Fix: change it"))[1]
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
    schema = _resolve(root, schema)
    if not isinstance(node, dict):
        return
    properties = schema.get("properties", {})
    for name, child in properties.items():
        child = _resolve(root, child)
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


def _cross_checks(config: dict[str, Any], check_files: bool) -> list[str]:
    problems: list[str] = []
    models, llms = config["models"], config["llms"]
    problems += _hub_model_checks(models)
    if config["policy_model"] not in models:
        problems.append(
            f"key 'policy_model': {config['policy_model']!r} is not an entry of 'models' "
            f"({', '.join(models)}). Fix: name one of them."
        )
    for name, llm in llms.items():
        key = f"llms.{name}"
        if "model" not in llm:
            problems.append(
                f"key '{key}.model' is missing. Fix: name an entry of 'models' or the remote model."
            )
            continue
        remote = llm["backend"] == "openai" and llm["base_url"]
        if not remote and llm["model"] not in models:
            problems.append(
                f"key '{key}.model': {llm['model']!r} is not an entry of 'models'. Fix: name one "
                f"of {', '.join(models)}, or set base_url for a remote endpoint."
            )
        if llm["backend"] == "openai" and not llm["base_url"] and not llm["serve"]:
            problems.append(
                f"key '{key}': backend openai needs base_url (remote) or serve (local server). "
                "Fix: set one of them."
            )
        if llm["backend"] == "openai" and llm["base_url"] and llm["serve"]:
            problems.append(f"key '{key}': base_url and serve are exclusive. Fix: drop one.")
        if llm["mode"] == "batch" and not remote:
            problems.append(
                f"key '{key}.mode': batch needs a remote endpoint (backend openai with base_url). "
                "Fix: set base_url, or mode: online."
            )
        if llm["structured_output"] and not (remote or llm["serve"] == "vllm"):
            problems.append(
                f"key '{key}.structured_output': this backend ignores response_format (hf, transformers "
                "serve). Fix: set it to false, or use a remote endpoint or serve: vllm."
            )
        if llm["run_locally"] and not remote:
            problems.append(
                f"key '{key}.run_locally': true would run the model itself on the machine running "
                "Snakemake (the login node); it is for remote endpoints (base_url). Fix: set it to null or "
                "false, or set base_url."
            )
    for stage, key in (("draft", "llm"), ("critique", "llm"), ("refine", "llm"), ("critique", "dpo_llm"),
                       ("refine", "dpo_llm")):  # fmt: skip
        name = config[stage].get(key)
        if name is not None and name not in llms:
            problems.append(
                f"key '{stage}.{key}': {name!r} is not an entry of 'llms' ({', '.join(llms)}). "
                "Fix: name one of them."
            )
    if config["sample"]["backend"] == "openai" and not config["sample"]["serve"]:
        problems.append(
            "key 'sample.serve': backend openai samples from a server started on the SFT "
            "checkpoint. Fix: set serve to transformers (CPU) or vllm (GPU), or use backend hf."
        )
    if config["curation"]["min_words"] > config["curation"]["max_words"]:
        problems.append(
            "keys 'curation.min_words' > 'curation.max_words': no query could pass. Fix: lower "
            "min_words or raise max_words."
        )
    if config["pairs"]["video"]:
        for section in ("t2v", "reward"):
            if section not in config:
                problems.append(
                    f"key '{section}' is missing but pairs.video is true. Fix: add the section "
                    "(see config/config.yaml) or set pairs.video to false."
                )
            elif config[section]["model"] not in models:
                problems.append(
                    f"key '{section}.model': {config[section]['model']!r} is not an entry of 'models' "
                    f"({', '.join(models)}). Fix: name one of them."
                )
    problems += _eval_checks(config)
    for stage in ("train_sft",):
        for key in ("pref_beta", "pref_loss"):
            if key in config[stage]:
                problems.append(f"key '{stage}.{key}' only applies to DPO. Fix: remove it.")
    if check_files:
        problems += _check_files(config)
    return problems


def _eval_checks(config: dict[str, Any]) -> list[str]:
    section = config.get("eval")
    if not section or not section["enabled"]:
        return []
    problems = []
    for needed in ("t2v", "reward"):
        if needed not in config:
            problems.append(
                f"key '{needed}' is missing but eval.enabled is true (the evaluation renders and scores "
                f"videos). Fix: add the section (see config/config.yaml) or set eval.enabled to false."
            )
        elif config[needed]["model"] not in config["models"] and not config["pairs"]["video"]:
            problems.append(
                f"key '{needed}.model': {config[needed]['model']!r} is not an entry of 'models'. "
                "Fix: name one of them."
            )
    for name in section["extra_methods"]:
        if name in ("original", "fewshot", "sft", "dpo") or not re.fullmatch(
            r"[A-Za-z0-9][A-Za-z0-9_.-]*", name
        ):
            problems.append(
                f"key 'eval.extra_methods.{name}': the name must not be a built-in method and may hold only "
                "letters, digits, '_', '.' and '-' (it names a folder under results/eval). Fix: rename it."
            )
    named = [("eval.fewshot.llm", section["fewshot"]["llm"]), ("eval.judge.llm", section["judge"]["llm"])]
    named += [(f"eval.extra_methods.{n}.llm", m.get("llm")) for n, m in section["extra_methods"].items()]
    for key, name in named:
        if name is not None and name not in config["llms"]:
            problems.append(
                f"key '{key}': {name!r} is not an entry of 'llms' ({', '.join(config['llms'])}). "
                "Fix: name one of them."
            )
    return problems


def _eval_file_checks(config: dict[str, Any], training_readable: bool) -> list[str]:
    from vpo.evaluation.heldout import overlap_problems

    section = config.get("eval")
    if not section or not section["enabled"]:
        return []
    problems = []
    for key in ("queries", "unsafe_queries"):
        if section[key] is not None:
            problems += _query_file_problems(f"eval.{key}", section[key], config["curation"])
    templates = [
        ("eval.template", section["template"], ["{query}"]),
        ("eval.fewshot.template", section["fewshot"]["template"], ["{query}"]),
        ("eval.judge.template", section["judge"]["template"], ["{query}", "{prompt}"]),
    ]
    for key, path, slots in templates:
        problems += _template_problems(key, path, slots)
    if not problems and training_readable:  # else the unreadable query files are reported already
        try:
            problems += overlap_problems(config)
        except QueryFileError as exc:
            problems.append(str(exc))
    return problems


def _query_file_problems(key: str, path: str, curation: dict[str, Any]) -> list[str]:
    """The file exists, reads (UTF-8, valid JSON) and keeps at least one query under the curation
    rules, so that no job starts on a set that curation would empty."""
    if not Path(path).is_file():
        return [
            f"key '{key}': file {path} not found. Fix: point it at an existing .txt, .json or .jsonl file "
            "(paths are relative to the working directory)."
        ]
    if Path(path).suffix not in (".txt", ".json", ".jsonl"):
        return [f"key '{key}': {path} has an unsupported extension. Fix: use .txt, .json or .jsonl."]
    try:
        raw = read_raw_queries(path)
    except QueryFileError as exc:
        return [f"key '{key}': {exc}"]
    rules = CurationRules(**{k: v for k, v in curation.items() if k != "max_queries"})
    reasons = Counter(rule_violation(normalize_query(text), rules) for _, text in raw)
    if set(reasons) <= {"empty"}:
        return [f"key '{key}': {path} holds no query. Fix: add one query per line (or entry)."]
    if None not in reasons:
        why = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
        return [
            f"key '{key}': curation would keep none of the {len(raw)} queries of {path} ({why}). Fix: "
            "loosen curation.min_words, curation.max_words or curation.max_special_char_ratio, or fix "
            "the file."
        ]
    return []


def _template_problems(key: str, path: str, slots: list[str]) -> list[str]:
    if not Path(path).is_file():
        return [f"key '{key}': file {path} not found. Fix: point it at a template file."]
    text = load_template(path)
    missing = [s for s in slots if s not in text]
    if missing:
        return [f"key '{key}': {path} lacks the slot(s) {' '.join(missing)}. Fix: add them."]
    try:
        conversation(text)
    except ValueError as exc:
        return [f"key '{key}': {path}: {exc}."]
    return []


_TEMPLATE_SLOTS = {
    "draft": ["{query}"],
    "critique": ["{query}", "{prompt}"],
    "refine": [],
    "sample": ["{query}"],
    "sft_data": ["{query}"],
}


def _check_files(config: dict[str, Any]) -> list[str]:
    problems = []
    for name, path in config["queries"].items():
        problems += _query_file_problems(f"queries.{name}", path, config["curation"])
    training_readable = not problems
    for stage, slots in _TEMPLATE_SLOTS.items():
        problems += _template_problems(f"{stage}.template", config[stage]["template"], slots)
    if config["pairs"]["video"] and "reward" in config:
        path = config["reward"]["checklist"]
        fetched = config["reward"]["backend"] == "visionreward" and not Path(path).exists()
        try:
            if not fetched:  # else the rule visionreward_checklist downloads it from the release
                load_checklist(path)
        except ChecklistError as exc:
            problems.append(f"key 'reward.checklist': {exc}")
    problems += _eval_file_checks(config, training_readable)
    for name, model in config["models"].items():
        if model["build"] is None and model["revision"] is None:
            problems += _local_model_problems(f"models.{name}", model["source"])
    extra = config["eval"]["extra_methods"] if config.get("eval", {}).get("enabled") else {}
    for name, method in extra.items():
        if "checkpoint" in method:
            problems += _model_location_problems(
                f"eval.extra_methods.{name}.checkpoint", method["checkpoint"]
            )
    for stage in ("train_sft", "train_dpo"):
        path = config[stage].get("deepspeed")
        if path is not None and not Path(path).is_file():
            problems.append(
                f"key '{stage}.deepspeed': file {path} not found. Fix: point it at a DeepSpeed JSON config "
                "(e.g. resources/deepspeed/zero3.json), or set null for none."
            )
    return problems


_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(?:/[A-Za-z0-9][A-Za-z0-9_.-]*)?")


def _model_location_problems(key: str, source: str) -> list[str]:
    """A model that is neither an existing folder nor shaped like a hub id (`name` or `org/name`, whose
    `org` is no local folder) is a mistyped path: refuse it here, not when a GPU job fails to download it."""
    path = Path(source)
    if path.exists():
        return []
    if source.startswith("~"):
        return [f"key '{key}': {source}: '~' is not expanded. Fix: write the full path."]
    looks_local = (
        not _HUB_ID.fullmatch(source)
        or source.startswith(".")
        or (len(path.parts) == 2 and Path(path.parts[0]).is_dir())
    )
    if looks_local:
        return [
            f"key '{key}': {source} does not exist (and is no model hub id, which reads `org/name`). Fix: "
            "correct the path (relative paths start at the working directory), or set a build recipe."
        ]
    return []


def _hub_model_checks(models: dict[str, Any]) -> list[str]:
    """A model with a revision is a hub repo the workflow downloads: `source` must read `org/name`, and
    no build recipe can make it too."""
    problems = []
    for name, model in models.items():
        if model["revision"] is None:
            continue
        if not _HUB_REPO.fullmatch(model["source"]):
            problems.append(
                f"key 'models.{name}.source': {model['source']!r} is no model hub id `org/name`, but "
                f"models.{name}.revision is set, which means the workflow downloads it from the hub. Fix: "
                "write the hub id (e.g. meta-llama/Meta-Llama-3-8B-Instruct), or set revision to null for "
                "a local folder."
            )
        if model["build"] is not None:
            problems.append(
                f"keys 'models.{name}.build' and 'models.{name}.revision' are exclusive: a model is either "
                "built here or downloaded from the hub. Fix: drop one."
            )
        if _SHORT_SHA.fullmatch(model["revision"]):
            problems.append(
                f"key 'models.{name}.revision': {model['revision']!r} reads like a short commit SHA, which "
                "is ambiguous. Fix: write the full 40-hex SHA "
                f"(`hf models info {model['source']}`, field sha)."
            )
    return problems


_SHORT_SHA = re.compile(r"[0-9a-f]{7,39}")
_COMMIT = re.compile(r"[0-9a-f]{40}")


def unpinned_models(config: dict[str, Any]) -> list[str]:
    """Warnings for the hub models whose revision is a branch or tag rather than a commit."""
    return [
        f"models.{name}.revision is {model['revision']!r}, not a commit: the weights are not pinned. The "
        "download records the commit it got (its manifest in hub_cache); pin it by writing that commit "
        f"(`hf models info {model['source']}`, field sha)."
        for name, model in config["models"].items()
        if model["revision"] is not None and not _COMMIT.fullmatch(model["revision"])
    ]


def _local_model_problems(key: str, source: str) -> list[str]:
    """With revision null, `source` is a folder that must exist: nothing downloads it."""
    if Path(source).exists():
        return []
    mistyped = _model_location_problems(f"{key}.source", source)
    if mistyped:
        return mistyped
    return [
        f"key '{key}.source': {source} is no local folder and reads like a model hub id, but "
        f"{key}.revision is null (which means a local folder). Fix: set {key}.revision to the repo's full "
        f"commit SHA (`hf models info {source}`, field sha) so that the workflow downloads it into "
        "hub_cache, or point source at a local folder."
    ]


_HUB_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


def model_path(config: dict[str, Any], name: str) -> str:
    """The local folder every loader gets for `models.<name>`: the hub snapshot of a model with a
    revision (downloaded by rule provision_<name>), else `source` itself."""
    model = config["models"][name]
    if model["revision"] is None:
        return model["source"]
    from vpo.provision import snapshot_path

    return str(snapshot_path(config["hub_cache"], model["source"], model["revision"]))


def hub_manifest(config: dict[str, Any], name: str) -> str | None:
    """The manifest rule provision_<name> writes for a model with a revision, else None."""
    model = config["models"][name]
    if model["revision"] is None:
        return None
    from vpo.provision import manifest_path

    return str(manifest_path(config["hub_cache"], model["source"], model["revision"]))


def runs_locally(config: dict[str, Any], name: str) -> bool:
    """Whether the jobs calling `llms.<name>` run on the machine running Snakemake (`run_locally`;
    null = yes for a remote endpoint, which compute nodes often cannot reach)."""
    llm = config["llms"][name]
    remote = llm["backend"] == "openai" and bool(llm["base_url"])
    return remote if llm["run_locally"] is None else bool(llm["run_locally"])


def llm_spec(config: dict[str, Any], name: str) -> dict[str, Any]:
    """The entry `llms.<name>` with its model resolved to a local folder (`model_path`), without its
    execution options (`vpo.run_options`): what decides the answers, hence the rules' params."""
    spec = {k: v for k, v in config["llms"][name].items() if k not in EXECUTION_KEYS}
    spec["name"] = name
    if runs_model_locally(config, name):
        spec["model_path"] = model_path(config, spec["model"])
        spec["revision"] = None  # a hub model is loaded from its snapshot folder, already pinned
    return spec


def reward_spec(config: dict[str, Any]) -> dict[str, Any]:
    """The `reward` section with its model resolved to a local folder (`model_path`)."""
    spec = {k: v for k, v in config["reward"].items() if k not in ("resources", "model", "checklist")}
    return {**spec, "model_path": model_path(config, config["reward"]["model"]), "revision": None}


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


def _resolve(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = root
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        merged = {**_resolve(root, target), **{k: v for k, v in node.items() if k != "$ref"}}
        return merged
    if "allOf" in node:
        merged = {k: v for k, v in node.items() if k != "allOf"}
        for part in node["allOf"]:
            part = _resolve(root, part)
            merged.setdefault("properties", {}).update(part.get("properties", {}))
            for key, value in part.items():
                if key not in ("properties", "required"):
                    merged.setdefault(key, value)
        return merged
    return node


def _type_of(node: dict[str, Any]) -> str:
    if "enum" in node:
        return " \\| ".join("null" if v is None else f"`{v}`" for v in node["enum"])
    kind = node.get("type", "object" if "properties" in node else "")
    text = " or ".join(kind) if isinstance(kind, list) else kind
    if node.get("pattern") in _PATTERN_HINTS:
        text = text.replace("string", f"string ({_PATTERN_HINTS[node['pattern']][0]})")
    bounds = [
        f"{b} {node[k]}"
        for k, b in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"))
        if k in node
    ]
    return ", ".join([text, *bounds]) if text else ", ".join(bounds)


def _doc_rows(root: dict[str, Any], node: dict[str, Any], prefix: str, lines: list[str]) -> None:
    node = _resolve(root, node)
    for name, child in node.get("properties", {}).items():
        child = _resolve(root, child)
        key = f"{prefix}{name}"
        description = " ".join(str(child.get("description", "")).split())
        if "default" in child:
            description += f" Default: `{json.dumps(child['default'])}`."
        lines.append(f"| `{key}` | {_type_of(child)} | {description} |")
        if "properties" in child:
            _doc_rows(root, child, key + ".", lines)
        elif isinstance(child.get("additionalProperties"), dict):
            _doc_rows(root, child["additionalProperties"], key + ".<name>.", lines)
