# Evaluation on held-out queries: each method's prompts → judge critiques (text level, once per method),
# and for each text-to-video target: videos → rewards → the target's tables. One job per (stage, method,
# target), so a new DPO checkpoint re-runs only its own rows; the other methods' videos and scores stay.
# A DPO checkpoint is scored on its own target's videos; the other methods on every target's.
import re

from vpo.core.suites import needs_downloads, suite_dimension, suite_source, vbench_info_file

EVAL = CFG["eval"]
VBENCH = EVAL["vbench"]
SUITES = {suite_dimension(s): s for s in EVAL["suites"]}
# The installed vbench package's prompt file (found here, where Snakemake runs: the jobs' own envs need not
# hold the package), an input of the jobs that read it, so that another vbench version re-runs them.
SUITE_FILE, SUITE_LABEL = vbench_info_file() if SUITES else (None, None)
# provision_vbench's manifest, when a configured dimension loads weights (temporal_flickering does not).
VBENCH_MANIFEST = (
    [os.path.join(VBENCH["weights"], "vpo-manifest.json")] if any(needs_downloads(d) for d in SUITES) else []
)


EVAL_METHODS = eval_methods()
EVAL_JUDGE = llm_method(
    EVAL["judge"]["llm"] or CFG["critique"]["llm"], EVAL["judge"]["template"], EVAL["judge"]["generation"]
)


wildcard_constraints:
    method="|".join(re.escape(m) for m in EVAL_METHODS),
    dimension=methods_regex(SUITES),
    target=rounds.regex(TARGETS),


EVAL_VIDEOS = "results/eval/{method}/{target}/videos/part-{p}.parquet"
EVAL_REWARDS = "results/eval/{method}/{target}/rewards/part-{p}.parquet"
EVAL_VBENCH = "results/eval/{method}/{target}/vbench/{dimension}.json"


rule eval_queries:
    """The held-out queries, curated like the training sets; overlap with a training query is an error."""
    localrule: True
    input:
        queries=EVAL["queries"],
        unsafe=[EVAL["unsafe_queries"]] if EVAL["unsafe_queries"] else [],
        training=[rules.curate.output.queries.format(set=s) for s in ("sft", "dpo")],
        suite_file=[str(SUITE_FILE)] if SUITES else [],
    output:
        queries="results/eval/queries.parquet",
        dropped="results/eval/dropped.parquet",
        report="results/eval/queries.report.json",
    params:
        c=CFG["curation"],
        unsafe=lambda w, input: ["--unsafe-queries", *input.unsafe] if input.unsafe else [],
        suites=(
            [
                "--suites",
                *EVAL["suites"],
                "--suite-file",
                str(SUITE_FILE),
                "--suite-source",
                suite_source(SUITE_LABEL),
            ]
            if SUITES
            else []
        ),
        limit=["--suite-limit", EVAL["suite_limit"]] if EVAL["suite_limit"] else [],
        on_overlap=EVAL["on_overlap"],
    log:
        "results/logs/eval/queries.log",
    benchmark:
        "results/benchmarks/eval/queries.tsv"
    # Runs as soon as the training sets are curated: a near-duplicate overlap stops the run early.
    priority: 100
    threads: 1
    conda:
        "../../envs/core.yaml"
    shell:
        "python -m vpo.evaluation.queries --queries {input.queries:q} {params.unsafe:q}"
        " {params.suites:q} {params.limit:q}"
        " --training {input.training:q} --on-overlap {params.on_overlap:q}"
        " --min-words {params.c[min_words]:q} --max-words {params.c[max_words]:q}"
        " --max-special-char-ratio {params.c[max_special_char_ratio]:q}"
        " --near-duplicate-jaccard {params.c[near_duplicate_jaccard]:q} --shingle-words {params.c[shingle_words]:q}"
        " --out {output.queries:q} --dropped {output.dropped:q} --report {output.report:q} > {log:q} 2>&1"


rule eval_original_prompts:
    """The baseline: each held-out query is its own prompt (no model, so no GPU)."""
    localrule: True
    input:
        queries=rules.eval_queries.output.queries,
    output:
        records="results/eval/original/prompts.parquet",
        report="results/eval/original/prompts.report.json",
    params:
        seed=CFG["seed"],
    log:
        "results/logs/eval/original/prompts.log",
    threads: 1
    conda:
        "../../envs/core.yaml"
    shell:
        "python -m vpo.evaluation.prompts --method original --queries {input.queries:q} --seed {params.seed:q}"
        " --out {output.records:q} --report {output.report:q} > {log:q} 2>&1"


rule eval_prompts:
    """One method's rewrite of every held-out query, with the method's template and decoding."""
    input:
        queries=rules.eval_queries.output.queries,
        template=lambda w: eval_rewriter(EVAL_METHODS, w)["template"],
        model=lambda w: eval_rewriter(EVAL_METHODS, w)["inputs"],
    output:
        records="results/eval/{method}/prompts.parquet",
        report="results/eval/{method}/prompts.report.json",
    params:
        llm=lambda w: as_json(eval_rewriter(EVAL_METHODS, w)["llm"]),
        generation=lambda w: as_json(eval_rewriter(EVAL_METHODS, w)["generation"]),
        seed=CFG["seed"],
    log:
        "results/logs/eval/{method}/prompts.log",
    benchmark:
        "results/benchmarks/eval/{method}/prompts.tsv"
    wildcard_constraints:
        # The original query needs no rewrite; API methods run as eval_prompts_local (local.smk).
        method=methods_regex(m for m in EVAL_METHODS if m not in ("original", *LOCAL_EVAL_METHODS)),
    threads: res("eval", "threads", 2)
    resources:
        mem_mb=res("eval", "mem_mb", 4000),
        runtime=llm_runtime("eval", 60, lambda w: eval_rewriter(EVAL_METHODS, w)["llm"]),
        gpu=lambda w: eval_gpus(eval_rewriter(EVAL_METHODS, w)["llm"]),
    conda:
        "../../envs/llm.yaml"
    shell:
        "python -m vpo.evaluation.prompts --method {wildcards.method:q} --queries {input.queries:q}"
        " --llm {params.llm:q} --template {input.template:q} --generation {params.generation:q}"
        " --seed {params.seed:q} --threads {threads:q} --out {output.records:q}"
        " --report {output.report:q} --server-log {log:q}.server > {log:q} 2>&1"


if LOCAL_EVAL_METHODS:

    # The rewrites by a remote API, as a local rule (see workflow/rules/local.smk).
    use rule eval_prompts as eval_prompts_local with:
        wildcard_constraints:
            method=methods_regex(LOCAL_EVAL_METHODS),


rule eval_judge:
    """The judge critiques one method's prompts: aligned or not, safe or not."""
    input:
        prompts="results/eval/{method}/prompts.parquet",
        template=EVAL_JUDGE["template"],
        model=EVAL_JUDGE["inputs"],
    output:
        records="results/eval/{method}/judgements.parquet",
        report="results/eval/{method}/judgements.report.json",
    params:
        llm=as_json(EVAL_JUDGE["llm"]),
        generation=as_json(EVAL_JUDGE["generation"]),
        retries=EVAL["judge"]["max_parse_retries"],
        seed=CFG["seed"],
    log:
        "results/logs/eval/{method}/judge.log",
    benchmark:
        "results/benchmarks/eval/{method}/judge.tsv"
    threads: res("eval", "threads", 2)
    resources:
        mem_mb=res("eval", "mem_mb", 4000),
        runtime=llm_runtime("eval", 60, lambda w: EVAL_JUDGE["llm"]),
        gpu=eval_gpus(EVAL_JUDGE["llm"]),
    conda:
        "../../envs/llm.yaml"
    shell:
        "python -m vpo.evaluation.judge --prompts {input.prompts:q} --template {input.template:q}"
        " --llm {params.llm:q} --generation {params.generation:q} --seed {params.seed:q}"
        " --max-parse-retries {params.retries:q} --threads {threads:q} --out {output.records:q}"
        " --report {output.report:q} --server-log {log:q}.server > {log:q} 2>&1"


rule eval_videos:
    """Render one method's prompts with one target's model; a query's seeds are the same for every method
    (paired comparison)."""
    input:
        prompts="results/eval/{method}/prompts.parquet",
        model=lambda w: built_model(target_section(w.target, "t2v")["model"]),
    output:
        records=EVAL_VIDEOS,
        report="results/eval/{method}/{target}/videos/part-{p}.report.json",
    params:
        model=lambda w, input: model_path(CFG, target_section(w.target, "t2v")["model"]),
        revision="",  # the model folder is local (a hub model: its pinned snapshot)
        t2v=lambda w: as_json(t2v_settings(w.target, videos_per_prompt=EVAL["videos_per_prompt"])),
        benchmark=VBENCH["videos_per_prompt"],
        seed=CFG["seed"],
        parts=lambda w: n_eval_parts(w.target),
    log:
        "results/logs/eval/{method}/{target}/videos/part-{p}.log",
    benchmark:
        "results/benchmarks/eval/{method}/{target}/videos/part-{p}.tsv"
    threads: res("t2v", "threads", 2)
    resources:
        mem_mb=target_res("t2v", "mem_mb", 4000),
        runtime=target_res("t2v", "runtime", 60),
        gpu=target_gpus("t2v"),
    conda:
        backend_env("t2v")
    shell:
        "python -m vpo.stages.generate_videos --candidates {input.prompts:q} --part {wildcards.p:q} --parts {params.parts:q}"
        " --seed-by query_id --benchmark-videos-per-prompt {params.benchmark:q} --model {params.model:q}"
        " --revision={params.revision:q} --t2v {params.t2v:q} --target {wildcards.target:q} --seed {params.seed:q}"
        " --threads {threads:q} --out {output.records:q} --report {output.report:q} > {log:q} 2>&1"


rule eval_rewards:
    """The target's checklist reward model scores one method's videos (not the benchmark suites': VBench
    does)."""
    input:
        videos=EVAL_VIDEOS,
        queries=rules.eval_queries.output.queries,
        checklist=lambda w: target_section(w.target, "reward")["checklist"],
        model=lambda w: built_model(target_section(w.target, "reward")["model"]),
    output:
        records=EVAL_REWARDS,
        report="results/eval/{method}/{target}/rewards/part-{p}.report.json",
    params:
        scorer=lambda w: as_json(scorer_settings(w.target)),
    log:
        "results/logs/eval/{method}/{target}/rewards/part-{p}.log",
    benchmark:
        "results/benchmarks/eval/{method}/{target}/rewards/part-{p}.tsv"
    threads: res("reward", "threads", 2)
    resources:
        mem_mb=target_res("reward", "mem_mb", 4000),
        runtime=target_res("reward", "runtime", 60),
        gpu=target_gpus("reward"),
    conda:
        backend_env("reward")
    shell:
        "python -m vpo.stages.score_videos --videos {input.videos:q} --checklist {input.checklist:q}"
        " --skip-benchmark {input.queries:q} --scorer {params.scorer:q} --target {wildcards.target:q}"
        " --threads {threads:q} --out {output.records:q} --report {output.report:q} > {log:q} 2>&1"


if VBENCH_MANIFEST:

    rule provision_vbench:
        """VBench's scorer weights for the configured suites, downloaded once where the workflow starts."""
        localrule: True
        output:
            manifest=VBENCH_MANIFEST[0],
        params:
            dimensions=sorted(SUITES),
            dest=VBENCH["weights"],
            mirror=["--mirror", VBENCH["mirror"]] if VBENCH["mirror"] else [],
        log:
            "results/logs/provision/vbench.log",
        benchmark:
            "results/benchmarks/provision/vbench.tsv"
        threads: 1
        conda:
            "../../envs/llm.yaml"  # huggingface_hub, as the hub models' provision rules
        shell:
            "python -m vpo.models.vbench_weights --dimensions {params.dimensions:q} --dest {params.dest:q}"
            " {params.mirror:q} --manifest {output.manifest:q} > {log:q} 2>&1"


rule eval_vbench:
    """VBench scores one method's videos (of one target) of one benchmark suite on the suite's dimension."""
    input:
        suite_file=[str(SUITE_FILE)] if SUITES else [],
        queries=rules.eval_queries.output.queries,
        videos=lambda w: [
            EVAL_VIDEOS.format(method=w.method, target=w.target, p=p) for p in range(n_eval_parts(w.target))
        ],
        weights=VBENCH_MANIFEST,
    output:
        scores=EVAL_VBENCH,
        report="results/eval/{method}/{target}/vbench/{dimension}.report.json",
    params:
        suite=lambda w: SUITES[w.dimension],
        weights=VBENCH["weights"],
        manifest=lambda w, input: ["--manifest", *input.weights] if input.weights else [],
        videos_per_prompt=VBENCH["videos_per_prompt"],
        device="auto" if CFG["use_gpus"] else "cpu",
    log:
        "results/logs/eval/{method}/{target}/vbench/{dimension}.log",
    benchmark:
        "results/benchmarks/eval/{method}/{target}/vbench/{dimension}.tsv"
    threads: res("eval.vbench", "threads", 2)
    resources:
        mem_mb=res("eval.vbench", "mem_mb", 8000),
        runtime=res("eval.vbench", "runtime", 60),
        gpu=gpus("eval.vbench"),
    conda:
        "../../envs/vbench.yaml"
    shell:
        "python -m vpo.evaluation.vbench_scores --method {wildcards.method:q} --suite {params.suite:q}"
        " --suite-file {input.suite_file:q}"
        " --queries {input.queries:q} --videos {input.videos:q} --weights {params.weights:q} {params.manifest:q}"
        " --videos-per-prompt {params.videos_per_prompt:q} --device {params.device:q} --threads {threads:q}"
        " --out {output.scores:q} --report {output.report:q} > {log:q} 2>&1"


rule eval_table:
    """One target's comparison table (CSV, Markdown, HTML), the paper's Tables A and C and the plots: a row
    per method (a DPO checkpoint per round), every video rendered and scored with this target's models."""
    localrule: True
    input:
        queries=rules.eval_queries.output.queries,
        prompts=lambda w: per_method(
            target_methods(EVAL_METHODS, w.target), "results/eval/{method}/prompts.parquet"
        ),
        judgements=lambda w: per_method(
            target_methods(EVAL_METHODS, w.target), rules.eval_judge.output.records
        ),
        videos=lambda w: per_method_part(target_methods(EVAL_METHODS, w.target), w.target, EVAL_VIDEOS),
        rewards=lambda w: per_method_part(target_methods(EVAL_METHODS, w.target), w.target, EVAL_REWARDS),
        vbench=lambda w: [
            EVAL_VBENCH.format(method=m, target=w.target, dimension=d)
            for m in target_methods(EVAL_METHODS, w.target)
            for d in SUITES
        ],
        reference="resources/reference/vpo_reported.yaml",
    output:
        csv="results/eval/tables/{target}/table.csv",
        markdown="results/eval/tables/{target}/table.md",
        page=report(
            "results/eval/tables/{target}/table.html",
            caption="../report/eval_table.rst",
            category="Evaluation",
            subcategory="{target}",
        ),
        rewards_plot=report(
            "results/eval/tables/{target}/rewards.svg",
            caption="../report/eval_rewards.rst",
            category="Evaluation",
            subcategory="{target}",
        ),
        safety_plot=report(
            "results/eval/tables/{target}/safety.svg",
            caption="../report/eval_safety.rst",
            category="Evaluation",
            subcategory="{target}",
        ),
        a_csv="results/eval/tables/{target}/table_a.csv",
        a_md="results/eval/tables/{target}/table_a.md",
        a_html=report(
            "results/eval/tables/{target}/table_a.html",
            caption="../report/eval_table_a.rst",
            category="Evaluation",
            subcategory="{target}",
        ),
        c_csv="results/eval/tables/{target}/table_c.csv",
        c_md="results/eval/tables/{target}/table_c.md",
        c_html=report(
            "results/eval/tables/{target}/table_c.html",
            caption="../report/eval_table_c.rst",
            category="Evaluation",
            subcategory="{target}",
        ),
        report="results/eval/tables/{target}/table.report.json",
    params:
        methods=lambda w: as_json(
            [
                {"name": m, "source": EVAL_METHODS[m]["source"]}
                for m in target_methods(EVAL_METHODS, w.target)
            ]
        ),
        convention=CFG["pairs"]["score_convention"],
        tie_margin=EVAL["tie_margin"],
        samples=EVAL["bootstrap_samples"],
        seed=CFG["seed"],
        videos_per_prompt=EVAL["videos_per_prompt"],
        vbench=lambda w, input: ["--vbench", *input.vbench] if input.vbench else [],
    log:
        "results/logs/eval/tables/{target}.log",
    benchmark:
        "results/benchmarks/eval/tables/{target}.tsv"
    threads: 1
    conda:
        "../../envs/core.yaml"
    shell:
        "python -m vpo.evaluation.table --methods {params.methods:q} --target {wildcards.target:q} --queries {input.queries:q}"
        " --prompts {input.prompts:q} --judgements {input.judgements:q} --videos {input.videos:q}"
        " --rewards {input.rewards:q} --convention {params.convention:q} --tie-margin {params.tie_margin:q}"
        " --bootstrap-samples {params.samples:q} --seed {params.seed:q}"
        " --videos-per-prompt {params.videos_per_prompt:q} --csv {output.csv:q} --markdown {output.markdown:q}"
        " --html {output.page:q} --plot-rewards {output.rewards_plot:q} --plot-safety {output.safety_plot:q}"
        " {params.vbench:q} --reference {input.reference:q}"
        " --table-a {output.a_csv:q} {output.a_md:q} {output.a_html:q}"
        " --table-c {output.c_csv:q} {output.c_md:q} {output.c_html:q} --report {output.report:q} > {log:q} 2>&1"
