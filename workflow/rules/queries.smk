rule curate:
    """Normalize, filter and de-duplicate one raw query set; dropped queries are kept with reasons."""
    localrule: True
    input:
        lambda w: CFG["queries"][w.set],
    output:
        queries="results/queries/{set}.parquet",
        dropped="results/queries/{set}.dropped.parquet",
        report="results/queries/{set}.report.json",
    params:
        c=CFG["curation"],
        max_queries=(
            ["--max-queries", CFG["curation"]["max_queries"]] if CFG["curation"]["max_queries"] else []
        ),
    log:
        "results/logs/curate/{set}.log",
    benchmark:
        "results/benchmarks/curate/{set}.tsv"
    wildcard_constraints:
        set="sft|dpo",
    threads: 1
    conda:
        "../../envs/core.yaml"
    shell:
        "python -m vpo.stages.curate --input {input:q} --set {wildcards.set:q} --min-words {params.c[min_words]:q}"
        " --max-words {params.c[max_words]:q} --max-special-char-ratio {params.c[max_special_char_ratio]:q}"
        " --near-duplicate-jaccard {params.c[near_duplicate_jaccard]:q}"
        " --shingle-words {params.c[shingle_words]:q} {params.max_queries:q}"
        " --out {output.queries:q} --dropped {output.dropped:q} --report {output.report:q} > {log:q} 2>&1"


# One shard rule per set: the shard count is known at DAG build time (from the raw file), and a
# rule's output list cannot depend on a wildcard.
for _set in ("sft", "dpo"):

    rule:
        name:
            f"shard_{_set}"
        localrule: True
        input:
            f"results/queries/{_set}.parquet",
        output:
            shards(_set, f"results/queries/{_set}/shard-{{k}}.parquet"),
        log:
            f"results/logs/shard/{_set}.log",
        benchmark:
            f"results/benchmarks/shard/{_set}.tsv"
        threads: 1
        conda:
            "../../envs/core.yaml"
        shell:
            "python -m vpo.stages.shard --input {input:q} --out {output:q} > {log:q} 2>&1"
