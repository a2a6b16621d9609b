# The run report: one page with the config, every job's provenance, per-stage statistics and plots
# (`snakemake --report` shows it under "Run summary", the plots under "Plots").
from vpo.core.run_options import without_run_options

VIDEO = CFG["pairs"]["video"]


# Every job report the run writes, from the rules' declared outputs (the shard rules, the model builds and
# downloads and the report pages write none). The Snakefile includes this file after every other rule
# file, so that all of them are declared here; tests/unit/test_run_report.py checks the list against the
# dry run's outputs.
RUN_REPORTS = [rules.curate.output.report.format(set=s) for s in ("sft", "dpo")]
RUN_REPORTS += shards("sft", rules.draft.output.report)
for _phase in DPO_PHASES:
    RUN_REPORTS += shards("dpo", rules.sample.output.report.replace("{phase}", _phase))
for _phase in TEXT_PHASES:
    _set = "sft" if _phase == "sft" else "dpo"
    RUN_REPORTS += shards(_set, rules.critique.output.report.replace("{phase}", _phase))
    RUN_REPORTS += shards(_set, rules.refine.output.report.replace("{phase}", _phase))
RUN_REPORTS += [rules.sft_data.output.report, rules.train_sft.output.report]
for _round, _target in ROUND_TARGETS:
    if VIDEO:
        RUN_REPORTS += video_parts(rules.generate_videos.output.report, _round, _target)
        RUN_REPORTS += video_parts(rules.score_videos.output.report, _round, _target)
        RUN_REPORTS.append(rules.video_pairs.output.report.format(round=_round, target=_target))
    RUN_REPORTS.append(rules.build_pairs.output.report.format(round=_round, target=_target))
    RUN_REPORTS.append(rules.train_dpo.output.report.format(round=_round, target=_target))
if EVALUATE:
    RUN_REPORTS.append(rules.eval_queries.output.report)
    # Per method; the original query's prompts come from rule eval_original_prompts, at the same path.
    RUN_REPORTS += per_method(EVAL_METHODS, rules.eval_prompts.output.report)
    RUN_REPORTS += per_method(EVAL_METHODS, rules.eval_judge.output.report)
    for _target in TARGETS:
        _methods = target_methods(EVAL_METHODS, _target)
        RUN_REPORTS += per_method_part(_methods, _target, rules.eval_videos.output.report)
        RUN_REPORTS += per_method_part(_methods, _target, rules.eval_rewards.output.report)
        RUN_REPORTS += [
            rules.eval_vbench.output.report.format(method=m, target=_target, dimension=d)
            for m in _methods
            for d in SUITES
        ]
        RUN_REPORTS.append(rules.eval_table.output.report.format(target=_target))


# Per rule: its benchmark and job-report path patterns and its memory request, for the run report's time
# and memory table (every rule above has a benchmark; the shard and build rules write no job report).
RULE_USAGE = {
    r.name: {
        "benchmark": str(r.benchmark),
        "report": str(r.output.report) if "report" in r.output.keys() else None,
        "mem_mb": first_try_mem_mb(r),
    }
    for r in workflow.rules
    if r.benchmark
}
DPO_CANDIDATES = phase_shards(rules.sample.output.records, DPO_PHASES)
# Per (round, target): the judge's verdicts on the round's candidates and the videos' rewards, for the
# report's plot of both across rounds.
ROUND_FEEDBACK = phase_shards(rules.critique.output.records, DPO_PHASES)
if VIDEO:
    ROUND_FEEDBACK += [
        p for r, t in ROUND_TARGETS for p in video_parts(rules.score_videos.output.records, r, t)
    ]
DPO_MODELS = {
    rounds.dpo_method(r, t): rules.train_dpo.output.model.format(round=r, target=t) for r, t in ROUND_TARGETS
}


rule run_report:
    """One page for the whole run: config, provenance of every job, per-stage statistics and plots."""
    localrule: True
    input:
        reports=RUN_REPORTS,
        raw_sft=CFG["queries"]["sft"],
        raw_dpo=CFG["queries"]["dpo"],
        queries=[rules.curate.output.queries.format(set=s) for s in ("sft", "dpo")],
        drafts=shards("sft", rules.draft.output.records),
        sft_refinements=phase_shards(rules.refine.output.records, ["sft"]),
        candidates=DPO_CANDIDATES,
        dpo_refinements=phase_shards(rules.refine.output.records, DPO_PHASES),
        round_feedback=ROUND_FEEDBACK,
        pairs=per_round_target(rules.build_pairs.output.pairs),
        sft_model=rules.train_sft.output.model,
        dpo_models=list(DPO_MODELS.values()),
        reward_plot=[rules.video_report.output.plot.format(round=1, target=TARGETS[0])] if VIDEO else [],
        video_page=per_round_target(rules.video_report.output.page) if VIDEO else [],
    output:
        page=report(
            "results/report/summary.html",
            caption="../report/run_summary.rst",
            category="Run summary",
        ),
        query_lengths=report(
            "results/report/query_lengths.svg",
            caption="../report/query_lengths.rst",
            category="Plots",
        ),
        prompt_lengths=report(
            "results/report/prompt_lengths.svg",
            caption="../report/prompt_lengths.rst",
            category="Plots",
        ),
        pairs_by_source=report(
            "results/report/pairs_by_source.svg",
            caption="../report/pairs_by_source.rst",
            category="Plots",
        ),
        loss_curves=report(
            "results/report/loss_curves.svg",
            caption="../report/loss_curves.rst",
            category="Plots",
        ),
        rounds=report(
            "results/report/rounds.svg",
            caption="../report/rounds.rst",
            category="Plots",
        ),
    params:
        # Without the run options (they reach jobs through the environment and re-run nothing).
        config=as_json(without_run_options(CFG)),
        # A function, so that the patterns' wildcards stay unfilled (string params are formatted).
        usage=lambda w: as_json(RULE_USAGE),
        trainer_logs=[
            f"{name}={path}" for name, path in {"sft": rules.train_sft.output.model, **DPO_MODELS}.items()
        ],
        video=lambda w, input: (
            ["--reward-plot", *input.reward_plot, "--video-page", *input.video_page]
            if input.reward_plot
            else []
        ),
    log:
        "results/logs/run_report.log",
    benchmark:
        "results/benchmarks/run_report.tsv"
    threads: 1
    conda:
        "../../envs/core.yaml"
    shell:
        "python -m vpo.pages.run_report --reports {input.reports:q} --config-json {params.config:q}"
        " --raw-queries sft={input.raw_sft:q} dpo={input.raw_dpo:q} --queries {input.queries:q}"
        " --drafts {input.drafts:q} --sft-refinements {input.sft_refinements:q}"
        " --candidates {input.candidates:q} --dpo-refinements {input.dpo_refinements:q}"
        " --round-feedback {input.round_feedback:q}"
        " --pairs {input.pairs:q} --trainer-logs {params.trainer_logs:q}"
        " {params.video:q} --page {output.page:q} --plot-query-lengths {output.query_lengths:q}"
        " --plot-prompt-lengths {output.prompt_lengths:q} --plot-pairs-by-source {output.pairs_by_source:q}"
        " --plot-loss-curves {output.loss_curves:q} --plot-rounds {output.rounds:q} --rule-usage {params.usage:q} > {log:q} 2>&1"
