rule build_smollm2:
    """Convert the SmolLM2-135M-Instruct GGUF shipped on PyPI into a safetensors folder (no hub)."""
    output:
        directory("resources/models/smollm2-135m-instruct"),
    log:
        "results/logs/build_smollm2.log",
    benchmark:
        "results/benchmarks/build_smollm2.tsv"
    threads: 2
    resources:
        mem_mb=3000,
        runtime=20,
    conda:
        "../../envs/core.yaml"
    shell:
        "python -m vpo.models smollm2-gguf --out {output} > {log} 2>&1"
