"""Cross-key and file checks the schema cannot express, each problem worded with its key and the fix."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from vpo.config.resolve import is_remote
from vpo.core.ids import normalize_text
from vpo.core.queries import CurationRules, QueryFileError, exact_overlaps, read_raw_queries, rule_violation
from vpo.core.suites import SuiteError, parse_suite, vbench_info_file
from vpo.core.templates import conversation, load_template
from vpo.reward.checklist import ChecklistError, load_checklist


def cross_checks(config: dict[str, Any], check_files: bool) -> list[str]:
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
        remote = is_remote(llm)
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
    problems += _target_checks(config)
    problems += _eval_checks(config)
    for stage in ("train_sft",):
        for key in ("pref_beta", "pref_loss"):
            if key in config[stage]:
                problems.append(f"key '{stage}.{key}' only applies to DPO. Fix: remove it.")
    if check_files:
        problems += _check_files(config)
    return problems


def _target_checks(config: dict[str, Any]) -> list[str]:
    """Each target's models exist; its name can be a folder beside the round's text-level folders."""
    from vpo.core.rounds import TEXT_FOLDERS

    problems: list[str] = []
    targets, models = config["targets"], config["models"]
    if len(targets) > 1 and not config["pairs"]["video"]:
        problems.append(
            f"key 'targets': {len(targets)} targets but pairs.video is false, so every target would train "
            "the same DPO checkpoint from text pairs alone. Fix: set pairs.video to true, or keep one target."
        )
    for name, target in targets.items():
        if name in TEXT_FOLDERS:
            problems.append(
                f"key 'targets.{name}': the name is taken by a folder of each round "
                f"({', '.join(TEXT_FOLDERS)}). Fix: rename the target."
            )
        for section in ("t2v", "reward"):
            model = target.get(section, {}).get("model")
            backend, base_backend = (
                target.get(section, {}).get("backend"),
                config.get(section, {}).get("backend"),
            )
            if backend != base_backend:
                problems.append(
                    f"key 'targets.{name}.{section}.backend': {backend!r} differs from {section}.backend "
                    f"({base_backend!r}); the jobs of one rule run in one conda env. Fix: set "
                    f"{section}.backend instead, or give each backend its own run."
                )
            threads = target.get(section, {}).get("resources", {}).get("threads")
            if threads != config.get(section, {}).get("resources", {}).get("threads"):
                problems.append(
                    f"key 'targets.{name}.{section}.resources.threads': the render and score jobs of every "
                    f"target take {section}.resources.threads (memory, runtime and GPUs are per target). "
                    f"Fix: set it in the top-level {section} section instead."
                )
            base = config.get(section, {}).get("model")  # a wrong base model is reported once, above
            if model is not None and model != base and model not in models:
                problems.append(
                    f"key 'targets.{name}.{section}.model': {model!r} is not an entry of 'models' "
                    f"({', '.join(models)}). Fix: name one of them."
                )
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
    for i, name in enumerate(section["suites"]):
        try:
            parse_suite(name)
        except SuiteError as exc:
            problems.append(f"key 'eval.suites[{i}]': {exc}")
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
    if section["suites"]:
        try:
            vbench_info_file()
        except SuiteError as exc:
            problems.append(f"key 'eval.suites': {exc}")
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
    reasons = Counter(rule_violation(normalize_text(text), rules) for _, text in raw)
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


def overlap_problems(config: dict[str, Any]) -> list[str]:
    """Config-time check (exact overlaps only; near duplicates are checked by the job)."""
    section = config["eval"]
    if section["on_overlap"] != "error":
        return []
    held_out = {"general": section["queries"], "unsafe": section["unsafe_queries"]}
    overlaps = exact_overlaps(held_out, config["queries"])
    if not overlaps:
        return []
    shown = "\n  ".join(o.describe() for o in overlaps[:10])
    more = f"\n  ... and {len(overlaps) - 10} more" if len(overlaps) > 10 else ""
    return [
        f"key 'eval.queries': {len(overlaps)} held-out queries are training queries too:\n  {shown}{more}\n"
        "Fix: remove them from the held-out file (or from the training file), or set eval.on_overlap: drop "
        "to evaluate without them."
    ]
