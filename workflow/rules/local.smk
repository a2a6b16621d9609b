# Jobs whose LLM is a remote API run on the machine running Snakemake (the login node on a cluster):
# compute nodes often have no outbound network, and such a job only waits on HTTP
# (`llms.<name>.run_locally`, true by default with base_url). A rule is local only if the LLMs of all
# the phases it serves run locally. The evaluation's rewrites mix API methods and checkpoints, so
# eval.smk runs the API ones as rule eval_prompts_local. Without a cluster every rule runs locally.
# The bookkeeping rules (curate, shard_*, sft_data, build_pairs, video_pairs, video_report, eval_queries,
# eval_original_prompts, eval_table, run_report) are local where they are defined: seconds of work with no
# model, which on a cluster would wait in the queue far longer than they run.
from vpo.config.resolve import runs_locally


def _local_rule(rule, llm_names):
    return [rule] if all(runs_locally(CFG, name) for name in llm_names) else []


EVAL_ENABLED = CFG.get("eval", {}).get("enabled", False)


def _local_eval_methods():
    if not EVAL_ENABLED:
        return []
    return [
        method
        for method, spec in eval_methods().items()
        if "name" in spec.get("llm", {}) and runs_locally(CFG, spec["llm"]["name"])
    ]


LOCAL_EVAL_METHODS = _local_eval_methods()
LOCAL_LLM_RULES = [
    *_local_rule("draft", [llm_name("draft")]),
    *_local_rule("critique", [llm_name("critique", phase) for phase in ("sft", "dpo")]),
    *_local_rule("refine", [llm_name("refine", phase) for phase in ("sft", "dpo")]),
]
if EVAL_ENABLED:
    LOCAL_LLM_RULES += _local_rule("eval_judge", [CFG["eval"]["judge"]["llm"] or CFG["critique"]["llm"]])
    LOCAL_LLM_RULES += ["eval_prompts_local"] if LOCAL_EVAL_METHODS else []

# What the `localrules:` directive does, for names known only from the config.
workflow.localrules(*LOCAL_LLM_RULES)
