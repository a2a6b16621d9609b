rule draft:
    """The teacher drafts one prompt per SFT query of a shard."""
    input:
        queries="results/queries/sft/shard-{k}.parquet",
        template=CFG["draft"]["template"],
        model=stage_llm_inputs("draft"),
    output:
        records="results/sft/drafts/shard-{k}.parquet",
        report="results/sft/drafts/shard-{k}.report.json",
    params:
        llm=as_json(stage_llm("draft")),
        generation=as_json(CFG["draft"]["generation"]),
        seed=CFG["seed"],
    log:
        "results/logs/draft/shard-{k}.log",
    benchmark:
        "results/benchmarks/draft/shard-{k}.tsv"
    priority: TRAINING_PATH
    threads: res("draft", "threads", 2)
    resources:
        mem_mb=res("draft", "mem_mb", 4000),
        runtime=llm_runtime("draft", 60, lambda w: stage_llm("draft")),
        gpu=gpus("draft"),
    conda:
        "../../envs/llm.yaml"
    shell:
        "python -m vpo.stages.sample --role draft --k 1 --queries {input.queries:q} --template {input.template:q}"
        " --llm {params.llm:q} --generation {params.generation:q} --seed {params.seed:q}"
        " --threads {threads:q} --out {output.records:q} --report {output.report:q}"
        " --server-log {log:q}.server > {log:q} 2>&1"


rule sft_data:
    """SFT target = draft if judged Yes, else its refinement; LLaMA-Factory sharegpt format."""
    localrule: True
    input:
        critiques=shards("sft", "results/sft/critiques/shard-{k}.parquet"),
        refinements=shards("sft", "results/sft/refinements/shard-{k}.parquet"),
        template=CFG["sft_data"]["template"],
    output:
        dataset=directory("results/sft/dataset"),
        examples="results/sft/examples.parquet",
        report="results/sft/report.json",
    log:
        "results/logs/sft_data.log",
    benchmark:
        "results/benchmarks/sft_data.tsv"
    priority: TRAINING_PATH
    threads: 1
    conda:
        "../../envs/core.yaml"
    shell:
        "python -m vpo.stages.sft_data --critiques {input.critiques:q} --refinements {input.refinements:q}"
        " --template {input.template:q} --out-dir {output.dataset:q} --examples {output.examples:q}"
        " --report {output.report:q} > {log:q} 2>&1"


rule train_sft:
    """Supervised fine-tuning of the base policy with LLaMA-Factory."""
    input:
        dataset="results/sft/dataset",
        model=built_model(CFG["policy_model"]),
    output:
        model=directory("results/models/sft"),
        report="results/models/sft.report.json",
    params:
        base=policy_base,
        train=as_json(CFG["train_sft"]),
        seed=CFG["seed"],
    log:
        "results/logs/train_sft.log",
    benchmark:
        "results/benchmarks/train_sft.tsv"
    priority: TRAINING_PATH
    threads: res("train_sft", "threads", 2)
    resources:
        mem_mb=res("train_sft", "mem_mb", 8000),
        runtime=res("train_sft", "runtime", 120),
        gpu=gpus("train_sft"),
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m vpo.stages.train --stage sft --model {params.base:q} --dataset-dir {input.dataset:q}"
        " --dataset vpo_sft --train {params.train:q} --seed {params.seed:q} --threads {threads:q}"
        " --out {output.model:q} --report {output.report:q} > {log:q} 2>&1"
