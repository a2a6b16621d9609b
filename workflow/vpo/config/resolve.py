"""What a config entry means to the jobs: the local folder of a model, the LLM spec a stage runs, the
policy checkpoint's, T2V and reward specs. The rules, `vpo estimate` and the Slurm profile all ask here.
Every spec leaves out the execution keys (vpo.core.run_options): it becomes a rule param."""

from __future__ import annotations

from typing import Any

from vpo.core.run_options import EXECUTION_KEYS, SECTION_KEYS


def is_remote(entry: dict[str, Any]) -> bool:
    """Whether an `llms` entry (or a resolved spec) calls an endpoint it does not start: `openai` with a
    `base_url`. Its model then runs elsewhere: the job needs no GPU and may need the network."""
    return entry["backend"] == "openai" and bool(entry.get("base_url"))


def runs_model_locally(cfg: dict[str, Any], llm: str) -> bool:
    """Whether the `llms` entry runs its model inside the job (then `llm_spec` gives it a model_path)."""
    entry = cfg["llms"][llm]
    return entry["model"] in cfg["models"] and not is_remote(entry)


def model_path(config: dict[str, Any], name: str) -> str:
    """The local folder every loader gets for `models.<name>`: the hub snapshot of a model with a
    revision (downloaded by rule provision_<name>), else `source` itself."""
    model = config["models"][name]
    if model["revision"] is None:
        return model["source"]
    from vpo.models.provision import snapshot_path

    return str(snapshot_path(config["hub_cache"], model["source"], model["revision"]))


def hub_manifest(config: dict[str, Any], name: str) -> str | None:
    """The manifest rule provision_<name> writes for a model with a revision, else None."""
    model = config["models"][name]
    if model["revision"] is None:
        return None
    from vpo.models.provision import manifest_path

    return str(manifest_path(config["hub_cache"], model["source"], model["revision"]))


def runs_locally(config: dict[str, Any], name: str) -> bool:
    """Whether the jobs calling `llms.<name>` run on the machine running Snakemake (`run_locally`;
    null = yes for a remote endpoint, which compute nodes often cannot reach)."""
    llm = config["llms"][name]
    return is_remote(llm) if llm["run_locally"] is None else bool(llm["run_locally"])


def llm_spec(config: dict[str, Any], name: str) -> dict[str, Any]:
    """The entry `llms.<name>` with its model resolved to a local folder (`model_path`), without its
    execution options (`vpo.core.run_options`): what decides the answers, hence the rules' params."""
    spec = {k: v for k, v in config["llms"][name].items() if k not in EXECUTION_KEYS}
    spec["name"] = name
    if runs_model_locally(config, name):
        spec["model_path"] = model_path(config, spec["model"])
        spec["revision"] = None  # a hub model is loaded from its snapshot folder, already pinned
    return spec


def checkpoint_spec(config: dict[str, Any], folder: str) -> dict[str, Any]:
    """How a policy checkpoint runs, when sampling and at evaluation: the `sample` backend settings. Its
    execution keys (batch size, concurrency) the job takes from the run options of `section`."""
    spec = {k: config["sample"][k] for k in ("backend", "serve", "vllm", "dtype", "device")}
    return {**spec, "model_path": folder, "section": "sample"}


def t2v_spec(config: dict[str, Any], target: str) -> dict[str, Any]:
    """A target's `t2v` settings as the render jobs take them: without scheduling keys, the model's name
    (the job gets its folder) and the execution keys (batch size, memory switches: from the run options)."""
    skip = ("resources", "items_per_job", "model", "gpu_seconds_per_video", *SECTION_KEYS["t2v"])
    return {k: v for k, v in config["targets"][target]["t2v"].items() if k not in skip}


def reward_spec(config: dict[str, Any], target: str) -> dict[str, Any]:
    """A target's `reward` settings with the model resolved to a local folder (`model_path`), without
    the execution keys (the batch size: from the run options)."""
    section = config["targets"][target]["reward"]
    skip = ("resources", "model", "checklist", "gpu_seconds_per_video", *SECTION_KEYS["reward"])
    spec = {k: v for k, v in section.items() if k not in skip}
    return {**spec, "model_path": model_path(config, section["model"]), "revision": None}
