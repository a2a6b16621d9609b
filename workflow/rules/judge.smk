# The judge's two turns, shared by the SFT side (teacher drafts) and the DPO side (policy samples). A
# `phase` is the folder under results/ whose prompts are judged: sft (drafts), dpo/round-1 (the SFT
# checkpoint's candidates, shared by every target) and dpo/round-<r>/<target> from round 2 on.
PROMPTS = {"sft": "drafts"}


wildcard_constraints:
    phase=rounds.regex(TEXT_PHASES),


rule critique:
    """Judge each prompt of one shard; unparsable verdicts are retried, then kept as `unparsed`."""
    input:
        prompts=lambda w: f"results/{w.phase}/{PROMPTS.get(w.phase, 'candidates')}/shard-{w.k}.parquet",
        template=CFG["critique"]["template"],
        model=lambda w: stage_llm_inputs("critique", w.phase),
    output:
        records="results/{phase}/critiques/shard-{k}.parquet",
        report="results/{phase}/critiques/shard-{k}.report.json",
    params:
        llm=lambda w: as_json(stage_llm("critique", w.phase)),
        generation=as_json(CFG["critique"]["generation"]),
        retries=CFG["critique"]["max_parse_retries"],
        seed=CFG["seed"],
    log:
        "results/logs/critique/{phase}/shard-{k}.log",
    benchmark:
        "results/benchmarks/critique/{phase}/shard-{k}.tsv"
    priority: TRAINING_PATH
    threads: res("critique", "threads", 2)
    resources:
        mem_mb=res("critique", "mem_mb", 4000),
        runtime=llm_runtime("critique", 60, lambda w: stage_llm("critique", w.phase)),
        gpu=lambda w: gpus("critique", w.phase),
    conda:
        "../../envs/llm.yaml"
    shell:
        "python -m vpo.stages.critique --generations {input.prompts:q} --template {input.template:q}"
        " --llm {params.llm:q} --generation {params.generation:q} --seed {params.seed:q}"
        " --max-parse-retries {params.retries:q} --threads {threads:q} --out {output.records:q}"
        " --report {output.report:q} --server-log {log:q}.server > {log:q} 2>&1"


rule refine:
    """Second judge turn: rewrite the prompts judged No, read from [[start]] ... [[end]]."""
    input:
        critiques="results/{phase}/critiques/shard-{k}.parquet",
        critique_template=CFG["critique"]["template"],
        template=CFG["refine"]["template"],
        model=lambda w: stage_llm_inputs("refine", w.phase),
    output:
        records="results/{phase}/refinements/shard-{k}.parquet",
        report="results/{phase}/refinements/shard-{k}.report.json",
    params:
        llm=lambda w: as_json(stage_llm("refine", w.phase)),
        generation=as_json(CFG["refine"]["generation"]),
        retries=CFG["refine"]["max_parse_retries"],
        seed=CFG["seed"],
    log:
        "results/logs/refine/{phase}/shard-{k}.log",
    benchmark:
        "results/benchmarks/refine/{phase}/shard-{k}.tsv"
    priority: TRAINING_PATH
    threads: res("refine", "threads", 2)
    resources:
        mem_mb=res("refine", "mem_mb", 4000),
        runtime=llm_runtime("refine", 60, lambda w: stage_llm("refine", w.phase)),
        gpu=lambda w: gpus("refine", w.phase),
    conda:
        "../../envs/llm.yaml"
    shell:
        "python -m vpo.stages.refine --critiques {input.critiques:q} --critique-template {input.critique_template:q}"
        " --template {input.template:q} --llm {params.llm:q} --generation {params.generation:q}"
        " --seed {params.seed:q} --max-parse-retries {params.retries:q} --threads {threads:q}"
        " --out {output.records:q} --report {output.report:q} --server-log {log:q}.server > {log:q} 2>&1"
