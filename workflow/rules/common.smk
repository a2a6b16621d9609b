# Small input functions and path helpers shared by the rule files.
import json
import math
import os
import re

from snakemake.logging import logger

from vpo.config import scheduling
from vpo.config.checks import unpinned_models
from vpo.config.resolve import checkpoint_spec, hub_manifest, llm_spec, model_path, reward_spec, t2v_spec
from vpo.core import rounds
from vpo.stages.curate import shard_count
from vpo.core.queries import count_raw_queries
from vpo.core.suites import suite_prompts
from vpo.models.provision import HUB_CACHE_ENV
from vpo.core.run_options import RUN_OPTIONS_ENV, run_options
from vpo.reward.factory import reward_backend
from vpo.t2v import t2v_backend

# How LLM requests are sent (concurrency, pacing, retries, Batch API), what they may cost, and the batch
# sizes and memory switches of sampling, rendering and scoring reach the jobs through the environment,
# not params: changing them must not re-run anything (vpo.core.run_options).
os.environ[RUN_OPTIONS_ENV] = json.dumps(run_options(CFG))
# Jobs load hub models offline from the configured cache (vpo.models.provision.offline_hub_env).
if any(m["revision"] for m in CFG["models"].values()):
    os.environ[HUB_CACHE_ENV] = CFG["hub_cache"]


def _n_shards(set_name):
    raw = count_raw_queries(CFG["queries"][set_name])
    cap = CFG["curation"]["max_queries"]
    return shard_count(min(raw, cap) if cap else raw, CFG["sharding"]["queries_per_shard"])


N_SHARDS = {s: _n_shards(s) for s in ("sft", "dpo")}


def shards(set_name, pattern):
    return [pattern.format(k=k) for k in range(N_SHARDS[set_name])]


def built_model(name):
    """What a stage waits for before it loads `models.<name>`: the folder the workflow builds, or the
    manifest of a hub download (rule provision_<name>); nothing for a local folder."""
    model = CFG["models"][name]
    if model["revision"]:
        return [hub_manifest(CFG, name)]
    return [model["source"]] if model["build"] else []


def policy_base(wildcards, input):
    """The base policy for SFT: a local folder (built, downloaded into the hub cache, or configured). A
    function, not a value: Snakemake's lint wants a path under an input's folder computed, not literal."""
    return model_path(CFG, CFG["policy_model"])


def on_device(spec):
    """A stage's model spec with `device: cpu` when the run uses no GPUs (config `use_gpus`)."""
    return spec if CFG["use_gpus"] else {**spec, "device": "cpu"}


def llm_name(stage, phase="sft"):
    """The `llms` entry a stage uses; the judge can use another one on the DPO side (`<stage>.dpo_llm`).
    `phase` is a text folder (`sft`, `dpo/round-2/<target>`, ...) or its side (`sft`, `dpo`)."""
    return scheduling.stage_llm_name(CFG, stage, rounds.side(phase))


def stage_llm(stage, phase="sft"):
    return on_device(llm_spec(CFG, llm_name(stage, phase)))


def stage_llm_inputs(stage, phase="sft"):
    spec = stage_llm(stage, phase)
    model = spec.get("model")
    return built_model(model) if model in CFG["models"] and "model_path" in spec else []


def sampler_spec(wildcards, input):
    return as_json(policy_spec(input.model))


def backend_env(section):
    """The conda env of the `t2v` or `reward` jobs: their backend's, from its table (vpo.core.registry,
    relative to the repository root), as a rule file names it."""
    backend = {"t2v": t2v_backend, "reward": reward_backend}[section](CFG[section]["backend"])
    return f"../../{backend.env}"


# Priority of the jobs on the way to the DPO checkpoint (model builds, draft, critique, refine, sft_data,
# train_sft, sample, generate_videos, score_videos, video_pairs, build_pairs, train_dpo): when more jobs
# are ready than cores are free, these go first and the evaluation of the original query and the
# baselines fills the gaps. On 2 cores the evaluation otherwise took a core from the SFT shards and
# delayed everything after them.
TRAINING_PATH = 10


def res(stage, key, default):
    """`<stage>.resources.<key>` (else `default`). Memory and wall time grow with the attempt, so that a
    job Slurm ended at its limit is retried with more (vpo.config.scheduling.GROWS_WITH_ATTEMPT)."""
    value = scheduling.configured(CFG, stage, key, default)
    if key in scheduling.GROWS_WITH_ATTEMPT:
        return lambda wildcards, attempt: scheduling.grown(value, attempt)
    return value


def llm_runtime(stage, default, llm):
    """`runtime` of the jobs whose LLM spec is `llm(wildcards)`, as `res`; at least the Batch API
    completion window (plus a margin) when that `llms` entry has `mode: batch`."""
    return lambda wildcards, attempt: scheduling.llm_runtime(
        CFG, stage, default, llm(wildcards).get("name"), attempt
    )


def gpus(stage, phase="sft"):
    """GPUs one job of a GPU-capable stage asks for: 0 without `use_gpus` or for a remote LLM."""
    llm = llm_name(stage, phase) if stage in scheduling.LLM_STAGES else None
    return scheduling.stage_gpus(CFG, stage, llm)


def as_json(value):
    return json.dumps(value, sort_keys=True)


def safe_name(name):
    """A config entry name as a rule-name fragment (rule names must be identifiers)."""
    return "".join(c if c.isalnum() else "_" for c in name)


def model_location(name):
    """Params function: the local folder of `models.<name>` (built, downloaded or configured)."""

    def location(wildcards, input):
        return model_path(CFG, name)  # the snapshot folder of a hub model, else `source`

    return location


# --- preference rounds × text-to-video targets (vpo.core.rounds) ---

ROUNDS = rounds.rounds(CFG)
TARGETS = rounds.targets(CFG)
ROUND_TARGETS = rounds.round_targets(CFG)
# The DPO side's text folders (round 1's shared, later rounds' per target) and all with judge turns.
DPO_PHASES = [p for p in rounds.text_phases(CFG) if p != "sft"]
TEXT_PHASES = rounds.text_phases(CFG)


def target_section(target, section):
    """A target's `t2v` or `reward` section (the top-level one with the target's own keys over it)."""
    return CFG["targets"][target][section]


def t2v_settings(target, **overrides):
    return on_device({**t2v_spec(CFG, target), **overrides})


def scorer_settings(target):
    return on_device(reward_spec(CFG, target))


def n_video_parts(target):
    """Parts per DPO shard, so that one T2V or reward job handles about `t2v.items_per_job` videos."""
    t2v = target_section(target, "t2v")
    per_shard = CFG["sharding"]["queries_per_shard"] * CFG["sample"]["k"] * t2v["videos_per_prompt"]
    return max(1, math.ceil(per_shard / t2v["items_per_job"]))


def video_parts(pattern, round_, target):
    """One path per (DPO shard, part) of one (round, target)."""
    return [
        pattern.format(round=round_, target=target, k=k, p=p)
        for k in range(N_SHARDS["dpo"])
        for p in range(n_video_parts(target))
    ]


def round_video_parts(pattern):
    """Input function: the parts of the job's own (round, target)."""
    return lambda w: video_parts(pattern, w.round, w.target)


def target_res(section, key, default):
    """`res` of a target's own `t2v`/`reward` resources (a 5B target may need more memory)."""

    def value(wildcards, attempt):
        # No wildcards: the run report's usage table asks for the rule's first try (the top-level section).
        values = CFG[section] if wildcards is None else target_section(wildcards.target, section)
        configured = values.get("resources", {}).get(key, default)
        grows = key in scheduling.GROWS_WITH_ATTEMPT
        return scheduling.grown(configured, attempt) if grows else configured

    return value


def target_gpus(section):
    return lambda w: scheduling.target_gpus(CFG, w.target, section)


def phase_shards(pattern, phases):
    """`pattern` (with `{phase}` and `{k}`) for every shard of these text folders."""
    return [
        path
        for phase in phases
        for path in shards("sft" if phase == "sft" else "dpo", pattern.replace("{phase}", phase))
    ]


def per_round_target(pattern):
    """One path per (round, target)."""
    return [pattern.format(round=r, target=t) for r, t in ROUND_TARGETS]


# --- evaluation (workflow/rules/eval.smk) ---


def policy_spec(folder):
    """A checkpoint runs at evaluation as it runs when sampling (the `sample` backend settings)."""
    return on_device(checkpoint_spec(CFG, folder))


def llm_method(name, template, generation):
    spec = on_device(llm_spec(CFG, name))
    inputs = built_model(spec["model"]) if "model_path" in spec and spec["model"] in CFG["models"] else []
    return {"llm": spec, "template": template, "generation": generation, "inputs": inputs}


def eval_methods():
    """name → how it rewrites: nothing (original), an `llms` entry, or a checkpoint; its DAG inputs; and
    the targets whose videos it is scored on (a DPO checkpoint: its own; the others: every target)."""
    section = CFG["eval"]
    methods = {"original": {"source": "the query itself", "inputs": []}}
    policy = {"template": section["template"], "generation": section["generation"]}
    for name in section["methods"]:
        if name == "fewshot":
            fewshot = section["fewshot"]
            llm = fewshot["llm"] or CFG["critique"]["llm"]
            methods[name] = {
                **llm_method(llm, fewshot["template"], fewshot["generation"]),
                "source": f"llms.{llm} with {fewshot['template']}",
            }
        elif name == "sft":
            path = rounds.SFT_CHECKPOINT
            methods[name] = {**policy, "llm": policy_spec(path), "inputs": [path], "source": path}
        elif name == "dpo":
            for method, (round_, target) in rounds.dpo_methods(CFG).items():
                path = rounds.checkpoint(round_, target)
                source = f"{path} (round {round_} for {target})"
                methods[method] = {**policy, "llm": policy_spec(path), "inputs": [path], "source": source}
                methods[method]["targets"] = [target]
    for name, extra in section["extra_methods"].items():
        if "llm" in extra:
            methods[name] = {
                **llm_method(extra["llm"], section["template"], section["generation"]),
                "source": f"llms.{extra['llm']}",
            }
        else:
            folder = extra["checkpoint"]
            methods[name] = {**policy, "llm": policy_spec(folder), "inputs": [], "source": folder}
    for spec in methods.values():
        spec.setdefault("targets", TARGETS)
    return methods


def target_methods(methods, target):
    """The methods whose prompts are rendered and scored for `target`, in table order."""
    return [m for m, spec in methods.items() if target in spec["targets"]]


def methods_regex(methods):
    """A wildcard constraint matching exactly these method names (none: a pattern that never matches)."""
    return "|".join(re.escape(m) for m in methods) or "(?!)"


def eval_gpus(spec):
    return res("eval", "gpu", 1) if CFG["use_gpus"] and "model_path" in spec else 0


def eval_rewriter(methods, wildcards):
    return methods[wildcards.method]


def per_method(methods, pattern):
    return [pattern.format(method=m) for m in methods]


def n_eval_parts(target):
    """Parts per method's videos, so that one render or score job handles about `t2v.items_per_job`."""
    section = CFG["eval"]
    files = [f for f in (section["queries"], section["unsafe_queries"]) if f]
    n_videos = sum(count_raw_queries(f) for f in files) * section["videos_per_prompt"]
    benchmark = sum(len(suite_prompts(s, section["suite_limit"])) for s in section["suites"])
    n_videos += benchmark * section["vbench"]["videos_per_prompt"]
    return max(1, math.ceil(n_videos / target_section(target, "t2v")["items_per_job"]))


def per_method_part(methods, target, pattern):
    """One path per (method, part) of `target`'s videos."""
    return [
        pattern.format(method=m, target=target, p=p) for m in methods for p in range(n_eval_parts(target))
    ]


def method_targets(methods):
    """Every (method, target) whose videos the evaluation renders and scores."""
    return [(m, t) for t in TARGETS for m in target_methods(methods, t)]


def first_try_mem_mb(rule):
    """The `mem_mb` a rule's first try asks for; None where it asks for Snakemake's default."""
    mem = rule.resources.get("mem_mb")  # a snakemake.resources.Resource, or None when not set
    if mem is None or not mem.is_evaluable():
        return mem.value if mem is not None else None
    if mem.raw is None:  # this workflow's own function of (wildcards, attempt): see `res`
        return mem.evaluate(None, 1).value
    # A profile's or command line's expression (raw text): its number, when it is one.
    return int(mem.raw) if str(mem.raw).isdigit() else None
