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
    threads: res("sample", "threads", 2)
    resources:
        mem_mb=res("sample", "mem_mb", 4000),
        runtime=res("sample", "runtime", 60),
        gpu=gpus("sample"),
    conda:
        "../../envs/llm.yaml"
    shell:
        "python -m vpo.generate --role sample --k {params.k} --queries {input.queries}"
        " --template {input.template} --llm {params.llm:q} --generation {params.generation:q}"
        " --seed {params.seed} --threads {threads} --out {output.records} --report {output.report}"
        " --server-log {log}.server > {log} 2>&1"


rule build_pairs:
    """Text-level pairs (refined > sampled), merged with video-level pairs; text takes precedence."""
    input:
        refinements=shards("dpo", "results/dpo/refinements/shard-{k}.parquet"),
        template=CFG["sample"]["template"],
        video=["results/dpo/video_pairs.parquet"] if CFG["pairs"]["video"] else [],
    output:
        pairs="results/dpo/pairs.parquet",
        dataset=directory("results/dpo/dataset"),
        report="results/dpo/pairs.report.json",
    params:
        video=lambda w, input: f"--video-pairs {input.video}" if input.video else "",
        shuffle_seed=CFG["pairs"]["shuffle_seed"],
    log:
        "results/logs/build_pairs.log",
    benchmark:
        "results/benchmarks/build_pairs.tsv"
    threads: 1
    conda:
        "../../envs/core.yaml"
    shell:
        "python -m vpo.pairs --refinements {input.refinements} {params.video} --template {input.template}"
        " --shuffle-seed {params.shuffle_seed} --pairs {output.pairs} --out-dir {output.dataset}"
        " --report {output.report} > {log} 2>&1"


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
    threads: res("train_dpo", "threads", 2)
    resources:
        mem_mb=res("train_dpo", "mem_mb", 8000),
        runtime=res("train_dpo", "runtime", 120),
        gpu=gpus("train_dpo"),
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m vpo.train --stage dpo --model {input.model} --dataset-dir {input.dataset}"
        " --dataset vpo_dpo --train {params.train:q} --seed {params.seed} --threads {threads}"
        " --out {output.model} --report {output.report} > {log} 2>&1"
