# Preference rounds × targets (vpo.core.rounds): round 1's candidates come from the SFT checkpoint and
# serve every target; round r's come from the target's round r−1 checkpoint.
wildcard_constraints:
    round=rounds.regex(ROUNDS),
    target=rounds.regex(TARGETS),


rule sample:
    """The round's starting checkpoint samples K candidate prompts per DPO query of a shard."""
    input:
        queries="results/queries/dpo/shard-{k}.parquet",
        template=CFG["sample"]["template"],
        model=lambda w: rounds.sampler(w.phase),
    output:
        records="results/{phase}/candidates/shard-{k}.parquet",
        report="results/{phase}/candidates/shard-{k}.report.json",
    params:
        llm=sampler_spec,
        generation=as_json(CFG["sample"]["generation"]),
        k=CFG["sample"]["k"],
        seed=CFG["seed"],
    log:
        "results/logs/sample/{phase}/shard-{k}.log",
    benchmark:
        "results/benchmarks/sample/{phase}/shard-{k}.tsv"
    wildcard_constraints:
        phase=rounds.regex(DPO_PHASES),
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
        refinements=lambda w: shards(
            "dpo", f"results/{rounds.text_phase(int(w.round), w.target)}/refinements/shard-{{k}}.parquet"
        ),
        template=CFG["sample"]["template"],
        video=["results/dpo/round-{round}/{target}/video_pairs.parquet"] if CFG["pairs"]["video"] else [],
    output:
        pairs="results/dpo/round-{round}/{target}/pairs.parquet",
        dataset=directory("results/dpo/round-{round}/{target}/dataset"),
        report="results/dpo/round-{round}/{target}/pairs.report.json",
    params:
        video=lambda w, input: ["--video-pairs", *input.video] if input.video else [],
        shuffle_seed=CFG["pairs"]["shuffle_seed"],
    log:
        "results/logs/build_pairs/round-{round}/{target}.log",
    benchmark:
        "results/benchmarks/build_pairs/round-{round}/{target}.tsv"
    priority: TRAINING_PATH
    threads: 1
    conda:
        "../../envs/core.yaml"
    shell:
        "python -m vpo.stages.build_pairs --refinements {input.refinements:q} {params.video:q} --template {input.template:q}"
        " --shuffle-seed {params.shuffle_seed:q} --pairs {output.pairs:q} --out-dir {output.dataset:q}"
        " --report {output.report:q} > {log:q} 2>&1"


rule train_dpo:
    """DPO of the round's starting checkpoint (SFT in round 1) on the round's pairs, with LLaMA-Factory;
    the frozen reference is SFT or that starting checkpoint (`rounds.reference`)."""
    input:
        dataset="results/dpo/round-{round}/{target}/dataset",
        model=lambda w: rounds.checkpoint(int(w.round) - 1, w.target),
        reference=lambda w: rounds.reference(CFG, int(w.round), w.target),
    output:
        model=directory("results/models/dpo/round-{round}/{target}"),
        report="results/models/dpo/round-{round}/{target}.report.json",
    params:
        train=as_json(CFG["train_dpo"]),
        seed=CFG["seed"],
    log:
        "results/logs/train_dpo/round-{round}/{target}.log",
    benchmark:
        "results/benchmarks/train_dpo/round-{round}/{target}.tsv"
    priority: TRAINING_PATH
    threads: res("train_dpo", "threads", 2)
    resources:
        mem_mb=res("train_dpo", "mem_mb", 8000),
        runtime=res("train_dpo", "runtime", 120),
        gpu=gpus("train_dpo"),
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m vpo.stages.train --stage dpo --model {input.model:q} --ref-model {input.reference:q}"
        " --dataset-dir {input.dataset:q} --dataset vpo_dpo --train {params.train:q} --seed {params.seed:q}"
        " --threads {threads:q} --out {output.model:q} --report {output.report:q} > {log:q} 2>&1"
