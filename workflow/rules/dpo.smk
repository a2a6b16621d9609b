rule sample:
    """The SFT policy samples K candidate prompts per DPO query of a shard."""
    input:
        queries="results/queries/dpo/shard-{k}.parquet",
        template=CFG["sample"]["template"],
        model="results/models/sft",
    output:
        records="results/dpo/candidates/shard-{k}.parquet",
        report="results/dpo/candidates/shard-{k}.report.json",
    params:
        llm=sampler_spec,
        generation=as_json(CFG["sample"]["generation"]),
        k=CFG["sample"]["k"],
        seed=CFG["seed"],
    log:
        "results/logs/sample/shard-{k}.log",
    benchmark:
        "results/benchmarks/sample/shard-{k}.tsv"
    priority: TRAINING_PATH
    threads: res("sample", "threads", 2)
    resources:
        mem_mb=res("sample", "mem_mb", 4000),
        runtime=res("sample", "runtime", 60),
        gpu=gpus("sample"),
    conda:
        "../../envs/llm.yaml"
    shell:
        "python -m vpo.stages.sample --role sample --k {params.k:q} --queries {input.queries:q}"
        " --template {input.template:q} --llm {params.llm:q} --generation {params.generation:q}"
        " --seed {params.seed:q} --threads {threads:q} --out {output.records:q} --report {output.report:q}"
        " --server-log {log:q}.server > {log:q} 2>&1"


rule build_pairs:
    """Text-level pairs (refined > sampled), merged with video-level pairs; text takes precedence."""
    localrule: True
    input:
        refinements=shards("dpo", "results/dpo/refinements/shard-{k}.parquet"),
        template=CFG["sample"]["template"],
        video=["results/dpo/video_pairs.parquet"] if CFG["pairs"]["video"] else [],
    output:
        pairs="results/dpo/pairs.parquet",
        dataset=directory("results/dpo/dataset"),
        report="results/dpo/pairs.report.json",
    params:
        video=lambda w, input: ["--video-pairs", *input.video] if input.video else [],
        shuffle_seed=CFG["pairs"]["shuffle_seed"],
    log:
        "results/logs/build_pairs.log",
    benchmark:
        "results/benchmarks/build_pairs.tsv"
    priority: TRAINING_PATH
    threads: 1
    conda:
        "../../envs/core.yaml"
    shell:
        "python -m vpo.stages.build_pairs --refinements {input.refinements:q} {params.video:q} --template {input.template:q}"
        " --shuffle-seed {params.shuffle_seed:q} --pairs {output.pairs:q} --out-dir {output.dataset:q}"
        " --report {output.report:q} > {log:q} 2>&1"


rule train_dpo:
    """DPO of the SFT checkpoint (policy and frozen reference) on the pairs, with LLaMA-Factory."""
    input:
        dataset="results/dpo/dataset",
        model="results/models/sft",
    output:
        model=directory("results/models/dpo"),
        report="results/models/dpo.report.json",
    params:
        train=as_json(CFG["train_dpo"]),
        seed=CFG["seed"],
    log:
        "results/logs/train_dpo.log",
    benchmark:
        "results/benchmarks/train_dpo.tsv"
    priority: TRAINING_PATH
    threads: res("train_dpo", "threads", 2)
    resources:
        mem_mb=res("train_dpo", "mem_mb", 8000),
        runtime=res("train_dpo", "runtime", 120),
        gpu=gpus("train_dpo"),
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m vpo.stages.train --stage dpo --model {input.model:q} --dataset-dir {input.dataset:q}"
        " --dataset vpo_dpo --train {params.train:q} --seed {params.seed:q} --threads {threads:q}"
        " --out {output.model:q} --report {output.report:q} > {log:q} 2>&1"
