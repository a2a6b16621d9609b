"""A config written by a hostile (or careless) colleague: paths and folders named with `$(…)`, backticks,
`;`, `&`, `|`, quotes and spaces, and an API key pasted into it.

- Every rule's shell command of the whole DAG, as Snakemake formats it for this config, is run by bash
  with a `python` that only records its arguments: no injected command runs, and every hostile path
  reaches its stage as one argument, unchanged.
- The cheap stages run for real on those paths (curation, shards, the held-out set, a model built into
  a folder with such a name, and drafts from a local OpenAI-compatible endpoint that needs a key).
- The key, given the right way (the config names its variable), reaches the endpoint and no file the
  run writes; pasted into the config, it stops the run before any job, and no file holds it either.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.fixtures.openai_fixture_server import FixtureServer
from tests.workflow_run import copy_project
from vpo.core.io import read_records

pytestmark = pytest.mark.integration

# Each one would create a file named PWN<n> in the working directory if a shell ever ran it.
HOSTILE = {
    "queries_sft": "resources/queries/sft $(touch PWN1) `touch PWN2`; touch PWN3 & 'q'.txt",
    "queries_dpo": 'resources/queries/dpo "$(touch PWN4)" | touch PWN5 > x.txt',
    "eval_queries": "resources/queries/eval $(touch PWN6) && touch PWN7.txt",
    "draft_template": "resources/prompts/teacher $(touch PWN8).txt",
    "critique_template": "resources/prompts/critique `touch PWN9`.txt",
    "checklist": "resources/checklists/demo; touch PWN10 #.yaml",
    "t2v_model": "resources/models/tiny cogvideox $(touch PWN11)",
}
COPIED_FROM = {
    "queries_sft": "resources/queries/demo_sft.txt",
    "queries_dpo": "resources/queries/demo_dpo.txt",
    "eval_queries": "resources/queries/demo_eval.txt",
    "draft_template": "resources/prompts/teacher.txt",
    "critique_template": "resources/prompts/critique.txt",
    "checklist": "resources/checklists/demo.yaml",
}
KEY_VARIABLE = "VPO_TEST_PLANTED_KEY"
FAKE_PYTHON = """#!{python}
import json, sys
with open({log!r}, "a", encoding="utf-8") as out:
    out.write(json.dumps(sys.argv[1:]) + "\\n")
"""


def hostile_config(root: Path, base_url: str) -> dict:
    config = yaml.safe_load((root / "config/config.yaml").read_text())
    for name, source in COPIED_FROM.items():
        shutil.copy(root / source, root / HOSTILE[name])
    config["queries"] = {"sft": HOSTILE["queries_sft"], "dpo": HOSTILE["queries_dpo"]}
    config["eval"]["queries"] = HOSTILE["eval_queries"]
    config["draft"]["template"] = HOSTILE["draft_template"]
    config["critique"]["template"] = HOSTILE["critique_template"]
    config["reward"]["checklist"] = HOSTILE["checklist"]
    config["models"]["tiny-cogvideox"]["source"] = HOSTILE["t2v_model"]
    # The teacher behind an endpoint that needs a key; the config names the variable holding it.
    config["llms"]["teacher"] = {
        "backend": "openai",
        "base_url": base_url,
        "model": "gpt-fixture",
        "api_key_env": KEY_VARIABLE,
    }
    config["draft"]["llm"] = "teacher"
    return config


def run_snakemake(
    root: Path, *args: str, key: str, configfile: str = "config/hostile.yaml"
) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        KEY_VARIABLE: key,
    }
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", *args, "--configfile", configfile],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def shell_commands(dry_run: str) -> list[tuple[str, str, str]]:
    """(rule, log, shell command) of every job a `--dry-run --printshellcmds` lists."""
    jobs = []
    for block in re.split(r"^rule ", dry_run, flags=re.M)[1:]:
        command = re.search(r"^Shell command: (.*)$", block, re.M)
        if command and command.group(1) != "None":  # rule all has no command
            log = re.search(r"^\s+log: (.*)$", block, re.M)
            jobs.append((block.split(":", 1)[0], log.group(1), command.group(1)))
    return jobs


def files_holding(root: Path, needle: str, skip: set[Path]) -> list[str]:
    data = needle.encode()
    return [
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and p not in skip and data in p.read_bytes()
    ]


def injected(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("PWN*"))


@pytest.fixture(scope="module")
def endpoint():
    with FixtureServer() as server:
        yield server


@pytest.fixture(scope="module")
def project(tmp_path_factory, endpoint) -> tuple[Path, str]:
    # The project folder itself has a space and a command substitution in its name.
    root = tmp_path_factory.mktemp("hostile") / "vpo project $(touch PWN0)"
    root.mkdir()
    copy_project(root)
    config = hostile_config(root, endpoint.url)
    (root / "config/hostile.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root, "sk-planted" + secrets.token_urlsafe(24).replace("-", "x").replace("_", "y")


def test_every_rule_command_runs_no_injected_command(project, tmp_path):
    root, key = project
    dry = run_snakemake(root, "--dry-run", "--printshellcmds", "--forceall", key=key)
    assert dry.returncode == 0, dry.stderr[-3000:]
    blocks = shell_commands(dry.stdout + dry.stderr)
    rules = {rule for rule, _, _ in blocks}
    assert len(blocks) >= 40 and {"curate", "draft", "critique", "score_videos", "run_report"} <= rules
    fake_bin, argv_log = tmp_path / "bin", tmp_path / "argv.jsonl"
    fake_bin.mkdir()
    (fake_bin / "python").write_text(FAKE_PYTHON.format(python=sys.executable, log=str(argv_log)))
    (fake_bin / "python").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}"}
    for rule, log, command in blocks:
        (root / log).parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["bash", "-c", command], cwd=root, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{rule}: {command}\n{done.stderr}"
    assert injected(root) == []
    calls = [json.loads(line) for line in argv_log.read_text().splitlines()]
    assert len(calls) == len(blocks)
    arguments = {a.split("=", 1)[1] if a.startswith(("sft=", "dpo=")) else a for call in calls for a in call}
    for name, path in HOSTILE.items():
        if name == "t2v_model":  # reaches the build rule as --out, and the render jobs as --model
            assert path in arguments
            continue
        assert path in arguments, f"{name}: {path!r} never reached a stage as one argument"
    # Config values inside JSON arguments come through intact too.
    specs = [json.loads(a) for call in calls for a in call if a.startswith("{") and '"backend"' in a]
    assert any(s.get("base_url") for s in specs) and not any(key in json.dumps(s) for s in specs)


def test_cheap_stages_run_on_hostile_paths_and_the_key_stays_out_of_every_file(project, endpoint):
    root, key = project
    targets = [
        "results/queries/sft/shard-0.parquet",
        "results/queries/dpo/shard-0.parquet",
        "results/sft/drafts/shard-0.parquet",
        "results/eval/queries.parquet",
        HOSTILE["t2v_model"],
    ]
    run = run_snakemake(root, *targets, key=key)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert injected(root) == []
    report = json.loads((root / "results/queries/sft.report.json").read_text())
    assert report["provenance"]["params"]["input"] == HOSTILE["queries_sft"]
    drafts = read_records(root / "results/sft/drafts/shard-0.parquet")
    assert drafts and {d["status"] for d in drafts} == {"ok"}
    assert (root / HOSTILE["t2v_model"] / "model_index.json").is_file()
    assert endpoint.authorizations[f"Bearer {key}"] == len(drafts)  # the key did reach the endpoint
    assert files_holding(root, key, skip=set()) == []


def test_a_key_pasted_into_the_config_stops_the_run_and_is_written_nowhere(project):
    root, key = project
    config = yaml.safe_load((root / "config/hostile.yaml").read_text())
    config["llms"]["teacher"]["api_key_env"] = key  # the key where its variable's name belongs
    pasted = root / "config/pasted.yaml"
    pasted.write_text(yaml.safe_dump(config))
    run = run_snakemake(root, "results/sft/drafts/shard-1.parquet", key="", configfile="config/pasted.yaml")
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert "llms.teacher.api_key_env" in output and "Fix:" in output and "Job stats:" not in output
    assert key not in output
    assert files_holding(root, key, skip={pasted}) == []
