"""Hub models: provisioning repo@revision into the hub cache from the local hub fixture (no network), the
manifest, no second download, clear errors, offline loading, fingerprints, and the provision rules."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.fixtures.hub_fixture_server import FixtureHub
from tests.workflow_run import copy_project, jobs_by_rule, run_snakemake
from vpo.core.fingerprints import fingerprint
from vpo.core.provenance import JobReport
from vpo.models.provision import (
    HUB_CACHE_ENV,
    ProvisionError,
    main,
    manifest_of_snapshot,
    manifest_path,
    offline_hub_env,
    provision,
    snapshot_path,
)
from vpo.tools.audit import Auditor, Run

REPO_ID = "vpo-test/tiny-model"


@pytest.fixture(autouse=True)
def _hub_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    # The sha256 memo of vpo.models.build stays in this test's folder; the hub client is online (the fixture).
    monkeypatch.setenv("VPO_CACHE_DIR", str(tmp_path / "vpo-cache"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    """A few small files shaped like a checkpoint (no real model: only the bytes matter here)."""
    folder = tmp_path / "source"
    (folder / "tokenizer").mkdir(parents=True)
    (folder / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 400)
    (folder / "tokenizer" / "tokenizer.json").write_text('{"version": "1.0"}')
    (folder / "README.md").write_text("a tiny test repo\n")
    return folder


@pytest.fixture
def hub(model_folder: Path, monkeypatch: pytest.MonkeyPatch):
    with FixtureHub({REPO_ID: model_folder}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_paths_follow_the_hub_cache_layout(tmp_path: Path):
    revision = "a" * 40
    folder = snapshot_path(tmp_path, "org/name", revision)
    assert folder == tmp_path / "models--org--name" / "snapshots" / revision
    assert manifest_of_snapshot(folder) == manifest_path(tmp_path, "org/name", revision)
    assert manifest_of_snapshot(tmp_path / "some" / "model") is None


def test_provision_writes_the_manifest_with_every_files_sha256(hub: FixtureHub, model_folder: Path, tmp_path):
    cache, revision = tmp_path / "hub", hub.commits[REPO_ID]
    manifest = provision(REPO_ID, revision, cache)

    folder = snapshot_path(cache, REPO_ID, revision)
    assert manifest["repo"] == REPO_ID and manifest["revision"] == revision
    assert manifest["snapshot"] == str(folder)
    expected = {
        p.relative_to(model_folder).as_posix(): (p.stat().st_size, sha256(p))
        for p in model_folder.rglob("*")
        if p.is_file()
    }
    assert {f["path"]: (f["size"], f["sha256"]) for f in manifest["files"]} == expected
    assert manifest["total_bytes"] == sum(size for size, _ in expected.values())
    written = json.loads(manifest_path(cache, REPO_ID, revision).read_text())
    assert written["files"] == manifest["files"]
    assert all((folder / name).read_bytes() == (model_folder / name).read_bytes() for name in expected)
    assert set(hub.downloads) == {(REPO_ID, name) for name in expected}
    assert max(hub.downloads.values()) == 1


def test_a_second_provisioning_sends_no_request(hub: FixtureHub, tmp_path: Path):
    cache, revision = tmp_path / "hub", hub.commits[REPO_ID]
    first = provision(REPO_ID, revision, cache)
    requests = sum(hub.requests.values())
    second = provision(REPO_ID, revision, cache, manifest=tmp_path / "again.json")
    assert sum(hub.requests.values()) == requests  # not even a listing: the cache says it is complete
    assert second["files"] == first["files"]


def test_an_interrupted_snapshot_is_completed_with_only_the_missing_file(hub: FixtureHub, tmp_path: Path):
    cache, revision = tmp_path / "hub", hub.commits[REPO_ID]
    provision(REPO_ID, revision, cache)
    link = snapshot_path(cache, REPO_ID, revision) / "config.json"
    link.resolve().unlink()  # as a download cut short leaves it: neither the blob nor the link
    link.unlink()
    before = hub.downloads.copy()
    provision(REPO_ID, revision, cache)
    assert hub.downloads - before == {(REPO_ID, "config.json"): 1}
    assert link.read_text() == '{"architectures": ["LlamaForCausalLM"]}'


def test_a_wrong_revision_fails_with_the_fix(hub: FixtureHub, tmp_path: Path):
    with pytest.raises(
        ProvisionError,
        match=r"has no commit, branch or tag 0{40} in vpo-test/tiny-model\. Fix: .*hf models info",
    ):
        provision(REPO_ID, "0" * 40, tmp_path / "hub")
    requests = sum(hub.requests.values())
    with pytest.raises(ProvisionError, match=r"revision '0000000' .* short SHA is ambiguous"):
        provision(REPO_ID, "0000000", tmp_path / "hub")
    with pytest.raises(ProvisionError, match=r"no model repo vpo-test/missing"):
        provision("vpo-test/missing", hub.commits[REPO_ID], tmp_path / "hub")
    assert sum(hub.requests.values()) == requests + 1  # the short SHA was refused before any request


def test_a_branch_is_resolved_once_recorded_and_kept(hub: FixtureHub, model_folder: Path, tmp_path: Path):
    """An unpinned revision: the manifest records the commit it resolved to, the folder jobs get is known
    beforehand, and a second provisioning keeps that download without asking the hub."""
    cache, commit = tmp_path / "hub", hub.commits[REPO_ID]
    manifest = provision(REPO_ID, "main", cache)
    assert manifest["revision"] == "main" and manifest["commit"] == commit and manifest["pinned"] is False
    folder = snapshot_path(cache, REPO_ID, "main")
    assert folder.resolve() == snapshot_path(cache, REPO_ID, commit).resolve()
    assert (folder / "config.json").read_bytes() == (model_folder / "config.json").read_bytes()
    assert manifest_of_snapshot(folder) == manifest_path(cache, REPO_ID, "main")
    assert fingerprint(str(folder)).startswith(f"hub:{REPO_ID}@{commit}|dir:")
    requests = sum(hub.requests.values())
    assert provision(REPO_ID, "main", cache)["commit"] == commit
    assert sum(hub.requests.values()) == requests


def test_a_gated_repo_needs_hf_token_which_is_written_nowhere(model_folder, tmp_path, monkeypatch):
    token = "hf_" + "testtoken" * 3
    with FixtureHub({REPO_ID: model_folder}, token=token) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        with pytest.raises(ProvisionError, match=r"gated and HF_TOKEN is not set.*export HF_TOKEN="):
            provision(REPO_ID, hub.commits[REPO_ID], tmp_path / "hub")
        monkeypatch.setenv("HF_TOKEN", token)
        provision(REPO_ID, hub.commits[REPO_ID], tmp_path / "hub")
        assert hub.authorizations[f"Bearer {token}"] >= 1
    for file in (tmp_path / "hub").rglob("*"):
        if file.is_file():
            assert token.encode() not in file.read_bytes(), file


def test_jobs_load_the_snapshot_offline_from_the_configured_cache(hub: FixtureHub, tmp_path: Path):
    cache, revision = tmp_path / "hub", hub.commits[REPO_ID]
    provision(REPO_ID, revision, cache)
    env = offline_hub_env({**os.environ, HUB_CACHE_ENV: str(cache), "HF_ENDPOINT": "http://127.0.0.1:9"})
    assert env["HF_HUB_OFFLINE"] == "1" and env["HF_HUB_CACHE"] == str(cache.resolve())
    code = (
        "import sys; from huggingface_hub import hf_hub_download, snapshot_download\n"
        f"print(snapshot_download({REPO_ID!r}, revision={revision!r}))\n"
        f"print(hf_hub_download({REPO_ID!r}, 'tokenizer/tokenizer.json', revision={revision!r}))\n"
    )
    requests = sum(hub.requests.values())
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    folder = snapshot_path(cache.resolve(), REPO_ID, revision)
    assert out.stdout.split() == [str(folder), str(folder / "tokenizer" / "tokenizer.json")]
    assert sum(hub.requests.values()) == requests


def test_the_fingerprint_names_repo_and_commit_and_the_report_lists_the_files(
    hub: FixtureHub, model_folder: Path, tmp_path: Path
):
    cache, revision = tmp_path / "hub", hub.commits[REPO_ID]
    manifest = provision(REPO_ID, revision, cache)
    folder = snapshot_path(cache, REPO_ID, revision)
    plain = fingerprint(str(model_folder))  # the same files as a local folder
    assert fingerprint(str(folder)) == f"hub:{REPO_ID}@{revision}|{plain}"

    results = tmp_path / "results"
    (results / "out.txt").parent.mkdir()
    (results / "out.txt").write_text("made with the hub model\n")
    report = JobReport("test")
    report.add_models([str(folder)])
    report.write(results / "out.report.json")
    provenance = json.loads((results / "out.report.json").read_text())["provenance"]
    assert provenance["models"][str(folder)].startswith(f"hub:{REPO_ID}@{revision}|dir:")
    origin = provenance["hub_models"][str(folder)]
    assert origin["repo"] == REPO_ID and origin["revision"] == revision
    assert origin["files_sha256"] == {f["path"]: f["sha256"] for f in manifest["files"]}
    # `vpo audit <file>` shows where the model came from and each of its files' sha256.
    lineage = Auditor(Run(results)).file(results / "out.txt").to_json()
    model = next(c for c in lineage["children"] if c["kind"] == "model")
    assert model["fields"]["repo"] == REPO_ID and model["fields"]["revision"] == revision
    assert {c["label"]: c["fields"]["sha256"] for c in model["children"]} == origin["files_sha256"]

    (folder / "model.safetensors").resolve().write_bytes(b"truncated")
    with pytest.raises(
        ProvisionError, match=r"model\.safetensors is 9 bytes, not 102400.*Fix: delete the manifest"
    ):
        fingerprint(str(folder))


def test_the_command_line_writes_the_manifest_where_asked(hub: FixtureHub, tmp_path: Path):
    out = tmp_path / "manifest.json"
    main(["--repo", REPO_ID, "--revision", hub.commits[REPO_ID], "--cache-dir", str(tmp_path / "hub"),
          "--manifest", str(out)])  # fmt: skip
    assert json.loads(out.read_text())["revision"] == hub.commits[REPO_ID]
    with pytest.raises(SystemExit, match=r"provision vpo-test/tiny-model: revision 'abc1234'"):
        main(["--repo", REPO_ID, "--revision", "abc1234", "--cache-dir", str(tmp_path / "hub")])


def test_the_fixture_serves_model_info_and_listings_to_the_hub_client(hub: FixtureHub):
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.url, token=False)
    info = api.model_info(REPO_ID, revision="main")
    assert info.sha == hub.commits[REPO_ID]
    assert sorted(s.rfilename for s in info.siblings) == hub.files(REPO_ID)
    top = {entry.path for entry in api.list_repo_tree(REPO_ID, revision=info.sha)}
    assert top == {"README.md", "config.json", "model.safetensors", "tokenizer"}


def test_a_dry_run_provisions_each_hub_model_in_a_local_rule_before_its_stages(tmp_path: Path):
    """The T2V model and the policy come from the hub: one local provision rule each, whose manifest the
    stages wait for, and the stages get the snapshot folder as their model."""
    copy_project(tmp_path)
    t2v_rev, policy_rev = "1" * 40, "2" * 40
    overrides = {
        "hub_cache": "shared/hub",
        "models": {
            "tiny-cogvideox": {"source": "vpo-test/tiny-cogvideox", "revision": t2v_rev, "build": None},
            "smollm2-135m": {"source": "vpo-test/smollm2", "revision": policy_rev, "build": None},
        },
    }
    (tmp_path / "hub.yaml").write_text(yaml.safe_dump(overrides))
    # A dry run does not say which jobs are local: the wrapper prints the set Workflow.is_local reads.
    (tmp_path / "Wrapper.smk").write_text(
        "include: 'Snakefile'\nprint('LOCAL_RULES=' + json.dumps(sorted(workflow._localrules)))\n"
    )
    run = run_snakemake(
        tmp_path,
        "all",
        "-n",
        "-p",
        "--snakefile",
        "Wrapper.smk",
        "--configfile",
        "config/config.yaml",
        "hub.yaml",
    )
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-3000:]
    local = json.loads(next(x for x in log.splitlines() if x.startswith("LOCAL_RULES=")).split("=", 1)[1])
    assert {"provision_tiny_cogvideox", "provision_smollm2_135m"} <= set(local)
    jobs = jobs_by_rule(log)
    assert jobs["provision_tiny_cogvideox"] == 1 and jobs["provision_smollm2_135m"] == 1
    assert "build_tiny_cogvideox" not in jobs and "build_smollm2_135m" not in jobs
    t2v_manifest = f"shared/hub/models--vpo-test--tiny-cogvideox/vpo-manifests/{t2v_rev}.json"
    policy_manifest = f"shared/hub/models--vpo-test--smollm2/vpo-manifests/{policy_rev}.json"
    policy_snapshot = f"shared/hub/models--vpo-test--smollm2/snapshots/{policy_rev}"
    t2v_snapshot = f"shared/hub/models--vpo-test--tiny-cogvideox/snapshots/{t2v_rev}"
    blocks = log.split("\n\n")
    videos = next(b for b in blocks if "rule generate_videos:" in b)
    assert f"input: results/dpo/round-1/candidates/shard-0.parquet, {t2v_manifest}" in videos
    assert f"--model {t2v_snapshot}" in videos
    train = next(b for b in blocks if "rule train_sft:" in b)
    assert policy_manifest in train and f"--model {policy_snapshot}" in train
    assert not (tmp_path / "shared").exists()


def test_model_servers_and_training_read_the_configured_hub_cache(monkeypatch, tmp_path: Path):
    import vpo.llm.server as server
    import vpo.stages.train as train

    (tmp_path / "health").write_text("ok")
    seen = tmp_path / "env.json"
    # A stand-in server: records the environment it got, answers the health probe.
    script = (
        "import functools, http.server, json, os, sys\n"
        "keys = ('HF_HUB_CACHE', 'HF_HUB_OFFLINE')\n"
        f"json.dump({{k: os.environ.get(k) for k in keys}}, open({str(seen)!r}, 'w'))\n"
        "handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[2])\n"
        "http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), handler).serve_forever()\n"
    )
    command = [sys.executable, "-c", script]
    monkeypatch.setattr(
        server, "server_command", lambda kind, model, port, **_: [*command, str(port), str(tmp_path)]
    )
    monkeypatch.setenv(HUB_CACHE_ENV, "hub")
    monkeypatch.chdir(tmp_path)
    with server.local_server("vllm", "m"):
        pass
    assert json.loads(seen.read_text()) == {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}

    calls = []
    monkeypatch.setattr(train.subprocess, "run", lambda argv, check, env: calls.append(env))
    train.run_cli("train", tmp_path / "args.yaml", threads=None)
    assert calls[0]["HF_HUB_CACHE"] == str(tmp_path / "hub") and calls[0]["HF_HUB_OFFLINE"] == "1"

    monkeypatch.delenv(HUB_CACHE_ENV)  # no hub model configured: an empty cache, not the user's own
    with server.local_server("vllm", "m"):
        pass
    assert "vpo-hub-" in json.loads(seen.read_text())["HF_HUB_CACHE"]


def test_provisioning_offline_says_to_unset_hf_hub_offline(hub: FixtureHub, tmp_path: Path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ProvisionError, match=r"HF_HUB_OFFLINE is set.*Fix: unset HF_HUB_OFFLINE"):
        provision(REPO_ID, hub.commits[REPO_ID], tmp_path / "hub")
