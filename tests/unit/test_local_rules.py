"""Jobs of a remote API LLM are local rules (they run where Snakemake runs, which has network), unless
its `llms` entry says `run_locally: false`; a rule is local only if all the phases it serves are."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.workflow_run import jobs_by_rule
from vpo.config.resolve import runs_locally
from vpo.config.validate import ConfigError, validate_config

API = '{backend: openai, model: gpt-4o, base_url: "http://127.0.0.1:9/v1"%s}'
OURS = {"draft", "critique", "refine", "eval_judge", "eval_prompts_local"}


def dry_run(tmp_path: Path, *config: str) -> tuple[set[str], str]:
    """The local rules of the DAG built with these `--config` overrides, and the dry run's log.

    A dry run never says which jobs are local, so a wrapper Snakefile prints the set the `localrules`
    directive fills (the one `Workflow.is_local` reads) right after the workflow is parsed."""
    wrapper = tmp_path / "Snakefile"
    wrapper.write_text(
        f"include: {str(REPO / 'Snakefile')!r}\n"
        "print('LOCAL_RULES=' + json.dumps(sorted(workflow._localrules)))\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "all", "-n", "-F", "--nolock", "--cores", "1",
         "--snakefile", str(wrapper), "--directory", str(REPO), "--workflow-profile", "none",
         "--config", *config],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-3000:]
    line = next(line for line in log.splitlines() if line.startswith("LOCAL_RULES="))
    return set(json.loads(line.removeprefix("LOCAL_RULES="))), log


def judges(llm: str) -> list[str]:
    return [f"{stage}={{llm: {llm}}}" for stage in ("draft", "critique", "refine")]


@pytest.mark.slow
def test_remote_judge_jobs_run_locally_by_default(tmp_path):
    local, log = dry_run(tmp_path, f"llms={{api: {API % ''}}}", *judges("api"))
    assert local & OURS == OURS
    # The few-shot rewrite by the API is local; the checkpoints' rewrites stay on the cluster.
    jobs = jobs_by_rule(log)
    assert jobs["eval_prompts_local"] == 1 and jobs["eval_prompts"] == 2


@pytest.mark.slow
def test_a_phase_with_a_local_model_keeps_the_rule_on_the_cluster(tmp_path):
    # The DPO side's critiques by the local model: critique serves both phases, refine only the API.
    overrides = ["draft={llm: api}", "critique={llm: api, dpo_llm: smollm2}", "refine={llm: api}"]
    local, _ = dry_run(tmp_path, f"llms={{api: {API % ''}}}", *overrides)
    assert local & OURS == OURS - {"critique"}


@pytest.mark.slow
def test_run_locally_false_sends_remote_jobs_to_the_cluster(tmp_path):
    local, log = dry_run(tmp_path, f"llms={{api: {API % ', run_locally: false'}}}", *judges("api"))
    assert local & OURS == set()
    assert "eval_prompts_local" not in jobs_by_rule(log)


def test_run_locally_defaults_to_remote_endpoints_and_is_refused_for_a_model_the_job_runs():
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    api = {"backend": "openai", "model": "gpt-4o", "base_url": "https://api.openai.com/v1"}
    raw["llms"]["api"] = api
    config = validate_config(raw, check_files=False)
    assert runs_locally(config, "api") and not runs_locally(config, "smollm2")
    raw["llms"]["api"] = {**api, "run_locally": False}
    assert not runs_locally(validate_config(raw, check_files=False), "api")
    raw["llms"]["smollm2"]["run_locally"] = True
    with pytest.raises(ConfigError, match=r"llms\.smollm2\.run_locally.*Fix"):
        validate_config(raw, check_files=False)
