# One build rule per `models` entry that names a recipe: the workflow makes those folders itself,
# once, with no model hub (SmolLM2 from a PyPI-shipped GGUF, tiny random-weight T2V and reward models).
BUILD_ENVS = {"smollm2-gguf": "llm", "tiny-cogvideox": "t2v", "tiny-wan": "t2v", "tiny-vlm": "reward"}

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
        # One thread: a build is mostly file reading and writing, and the other core builds the next model.
        threads: 1
        # Built first: a build left for later takes a core just when training needs both.
        priority: TRAINING_PATH
        resources:
            mem_mb=3000,
            runtime=20,
        conda:
            f"../../envs/{BUILD_ENVS[_model['build']]}.yaml"
        shell:
            "python -m vpo.models.build {params.recipe:q} --out {output:q} > {log:q} 2>&1"


# One provision rule per hub model (`models` entries with a revision): download repo@revision once into
# `hub_cache` and write its manifest, the DAG input of every stage that loads it. Local rules: they run
# where the workflow was started, which has network; the compute nodes then only read the cache.
if workflow.is_main_process:  # once per run, not again in every job's log
    for _warning in unpinned_models(CFG):
        logger.warning(f"Warning: {_warning}")

_PROVISIONED = set()
for _name, _model in CFG["models"].items():
    _manifest = hub_manifest(CFG, _name)
    if _manifest is None or _manifest in _PROVISIONED:
        continue  # two names for one repo@revision share a download
    _PROVISIONED.add(_manifest)

    rule:
        name:
            f"provision_{safe_name(_name)}"
        localrule: True
        output:
            _manifest,
        params:
            repo=_model["source"],
            revision=_model["revision"],
            cache=CFG["hub_cache"],
        log:
            f"results/logs/provision/{_name}.log",
        benchmark:
            f"results/benchmarks/provision/{_name}.tsv"
        threads: 1
        conda:
            "../../envs/llm.yaml"
        shell:
            "python -m vpo.models.provision --repo {params.repo:q} --revision {params.revision:q}"
            " --cache-dir {params.cache:q} --manifest {output:q} > {log:q} 2>&1"
