# One build rule per `models` entry that names a recipe: the workflow makes those folders itself,
# once, with no model hub (SmolLM2 from a PyPI-shipped GGUF, tiny random-weight T2V and reward models).
BUILD_ENVS = {"smollm2-gguf": "llm", "tiny-cogvideox": "t2v", "tiny-vlm": "reward"}

for _name, _model in CFG["models"].items():
    if not _model["build"]:
        continue

    rule:
        name:
            f"build_{safe_name(_name)}"
        output:
            directory(_model["source"]),
        params:
            recipe=_model["build"],
        log:
            f"results/logs/build_model/{_name}.log",
        benchmark:
            f"results/benchmarks/build_model/{_name}.tsv"
        threads: 2
        resources:
            mem_mb=3000,
            runtime=20,
        conda:
            f"../../envs/{BUILD_ENVS[_model['build']]}.yaml"
        shell:
            "python -m vpo.models {params.recipe:q} --out {output:q} > {log:q} 2>&1"
