"""config/paper.yaml on a real one-node Slurm cluster through snakemake-executor-plugin-slurm, in a
temporary copy of the project, layered with tests/slurm/paper_cpu.yaml (model sources, addresses and
sizes only): the hub models are provisioned from a local hub fixture by local rules, the policy samples
through a vLLM server its job starts, teacher and judge (`gpt-4o`, batch mode) are asked through the
OpenAI fixture's Batch API with a vLLM-served model answering behind it, from local rules. Checked from
Slurm's own records: which jobs ran on the cluster (and in which partition) and which ran locally; a
video job cancelled mid-render is retried and renders only the videos it had not finished.

Skipped where Slurm is not installed (see .ci/run). With `-s` the sbatch lines, job records, wall times
and retry counts are printed; they are also written to `slurm-evidence.txt` in the temporary project."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
import yaml

from tests.workflow_run import copy_project, jobs_by_rule
from vpo.core.io import read_records

from .cluster import Cluster, rule_of
from .paper import PaperServices, paper_services, require_vllm, stand_in_models, write_overrides

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
PROFILE = "profiles/slurm-ci"
# The rules the CI profile sends to the `gpu` partition (those that take a GPU when the config has
# use_gpus and runs their model on the node); every other rule goes to `cpu`.
GPU_RULES = frozenset(
    {"sample", "draft", "critique", "refine", "train_sft", "train_dpo", "generate_videos", "score_videos"}
    | {"eval_prompts", "eval_judge", "eval_videos", "eval_rewards", "eval_vbench"}
)
# paper.yaml renders for one target, named after its t2v model; one preference round.
TARGET = "cogvideox-2b"
MANIFEST = f"results/dpo/round-1/{TARGET}/videos/shard-0/part-0.parquet"
# Slower than the default's 4 steps in batches of 4, so that the cancel lands while the job renders.
SLOW_T2V = "t2v={num_inference_steps: 60, batch_size: 1}"  # 12 rendered all 16 in 2 s here
RUN_TIMEOUT_S = 40 * 60

T = TypeVar("T")


# Jobs that run where Snakemake runs (the login node of a real cluster): provisioning and the stages whose
# LLM is the remote gpt-4o endpoint, the few-shot rewrites of the evaluation among them (they need the
# network); the bookkeeping rules, seconds of work with no model; the target.
NETWORK_RULES = {"draft", "critique", "refine", "eval_judge", "eval_prompts_local"} | {
    f"provision_{name}" for name in ("llama3_8b_instruct", "cogvideox_2b", "visionreward_video")
}
BOOKKEEPING_RULES = {"curate", "shard_sft", "shard_dpo", "sft_data", "build_pairs", "video_pairs"} | {
    "video_report", "eval_queries", "eval_original_prompts", "eval_table", "run_report", "all"
}  # fmt: skip
LOCAL_RULES = NETWORK_RULES | BOOKKEEPING_RULES


@dataclass
class SlurmRun:
    """The paper-shaped run, once through Slurm; shared by the tests of this module."""

    root: Path
    wall_s: float
    log: str
    jobs: list[dict[str, str]]  # `scontrol show job` records of this run's jobs
    services: PaperServices

    @property
    def evidence(self) -> Path:
        return self.root / "slurm-evidence.txt"


def snakemake_command(*targets: str, config: tuple[str, ...] = (), verbose: bool = False) -> list[str]:
    """The documented cluster command on config/paper.yaml; the venv's interpreter so that the same one
    runs the jobs."""
    command = [sys.executable, "-m", "snakemake", *targets, "--profile", PROFILE]  # profiles/default too
    command += ["--configfile", "config/paper.yaml", "config/paper_cpu.yaml"]  # (takes every word after)
    return [*command, *["--verbose"] * verbose, *(["--config", *config] if config else [])]


def new_jobs(cluster: Cluster, before: set[str]) -> list[dict[str, str]]:
    return [job for job in cluster.jobs() if job["JobId"] not in before]


def gpu_request(job: dict[str, str]) -> str:
    """What the job asked for in GPUs (`--gpus` lands in TresPerJob, `--gres` in TresPerNode)."""
    fields = ("TresPerJob", "TresPerNode", "TresPerTask", "TresPerSocket")
    return ",".join(job[f] for f in fields if "gpu" in job.get(f, ""))


def sbatch_line(log: str, rule: str) -> str:
    """The plugin's `sbatch call:` debug line for a rule, without the long --wrap payload."""
    for line in log.splitlines():
        if line.startswith("sbatch call:") and f"--comment rule_{rule}" in line:
            return line.split(" --wrap=", 1)[0]
    raise AssertionError(f"no sbatch call for rule {rule} in the log")


def record_line(job: dict[str, str]) -> str:
    keys = ("JobId", "JobState", "Partition", "Comment", "TresPerJob", "TresPerNode", "NumCPUs", "TRES")
    return "scontrol: " + " ".join(f"{k}={job[k]}" for k in keys if k in job)


def report_evidence(run: SlurmRun, *lines: str) -> None:
    """Print (visible with -s) and keep in the temp project, for the PR notes."""
    with run.evidence.open("a") as out:
        for line in lines:
            print(line)
            out.write(line + "\n")


def wait_for(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def slurm_run(
    slurm_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[SlurmRun]:
    require_vllm()
    root = tmp_path_factory.mktemp("vpo-slurm")
    copy_project(root)
    models = stand_in_models(request.getfixturevalue("built_models"))
    with paper_services(models, root) as services:
        write_overrides(root, services)
        before = {job["JobId"] for job in slurm_cluster.jobs()}
        start = time.monotonic()
        done = subprocess.run(
            snakemake_command(verbose=True),
            cwd=root,
            env=services.env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
        wall_s = time.monotonic() - start
        log = done.stdout + done.stderr
        (root / "slurm-run.log").write_text(log)
        assert done.returncode == 0, (
            f"{log[-6000:]}\n{slurm_cluster.logs()}\n(full log: {root}/slurm-run.log)"
        )
        yield SlurmRun(root, wall_s, log, new_jobs(slurm_cluster, before), services)


def test_ci_profile_sends_the_gpu_rules_to_the_gpu_partition():
    """The profile's list of GPU rules is the one the tests check Slurm against (no cluster needed)."""
    profile = yaml.safe_load((REPO / PROFILE / "config.v8+.yaml").read_text())
    assert profile["default-resources"]["slurm_partition"] == "cpu"
    assert {rule: r["slurm_partition"] for rule, r in profile["set-resources"].items()} == dict.fromkeys(
        GPU_RULES, "gpu"
    )


def local_jobs(log: str) -> Counter:
    """Jobs Snakemake ran itself (`localrule NAME:` in its log) rather than submitting them."""
    return Counter(line.split()[1].rstrip(":") for line in log.splitlines() if line.startswith("localrule "))


def test_paper_run_on_slurm(slurm_run: SlurmRun):
    results = slurm_run.root / "results"
    assert (results / f"models/dpo/round-1/{TARGET}").is_dir()
    assert read_records(results / f"dpo/round-1/{TARGET}/pairs.parquet")
    assert (results / f"eval/tables/{TARGET}/table.csv").is_file()
    planned = jobs_by_rule(slurm_run.log)
    completed = Counter(rule_of(job) for job in slurm_run.jobs if job["JobState"] == "COMPLETED")
    local = local_jobs(slurm_run.log)
    # Every planned job ran, once: on the cluster, or locally when it needs the network (or nothing).
    assert completed + local == planned, (planned, completed, local)
    assert set(local) == LOCAL_RULES, local
    assert not set(completed) & LOCAL_RULES
    assert set(completed) >= {"sample", "train_sft", "train_dpo", "generate_videos", "score_videos"}
    assert set(completed) >= {"eval_videos", "eval_rewards", "eval_vbench"}
    for method in ("original", "fewshot"):  # VBench scored the demo suite's two prompts, 5 videos each
        scores = json.loads((results / f"eval/{method}/{TARGET}/vbench/temporal_flickering.json").read_text())
        assert (scores["prompts"], scores["videos_scored"]) == (2, 10), scores
    tables = results / f"eval/tables/{TARGET}"
    assert (tables / "table_a.md").is_file() and (tables / "table_c.md").is_file()
    report_evidence(
        slurm_run,
        f"paper-shaped run on Slurm: {sum(planned.values())} jobs in {slurm_run.wall_s:.0f} s",
        "through Slurm: " + ", ".join(f"{rule} {n}" for rule, n in sorted(completed.items())),
        "locally: " + ", ".join(f"{rule} {n}" for rule, n in sorted(local.items())),
    )
    # Each stage report names the Slurm job that wrote it; those of local jobs name none.
    job_ids = {job["JobId"] for job in slurm_run.jobs if job["JobState"] == "COMPLETED"}
    provenance = {p: json.loads(p.read_text()).get("provenance", {}) for p in results.rglob("*.report.json")}
    written_by = {p: prov["slurm_job_id"] for p, prov in provenance.items() if "slurm_job_id" in prov}
    on_slurm = {job for job in written_by.values() if job is not None}
    assert len(on_slurm) >= 5 and on_slurm <= job_ids, (written_by, job_ids)
    assert written_by[results / "sft/drafts/shard-0.report.json"] is None  # a local rule


def test_teacher_and_judge_answered_through_the_batch_api_by_a_model(slurm_run: SlurmRun):
    openai = slurm_run.services.openai
    assert openai.batches and all(b["status"] == "completed" for b in openai.batches.values())
    lines = sum(b["request_counts"]["completed"] for b in openai.batches.values())
    assert lines == sum(openai.completions.values()) > 0  # every answer came through a batch
    results = slurm_run.root / "results"
    for stage in ("sft/drafts", "sft/critiques", "dpo/round-1/critiques"):
        reports = [json.loads(p.read_text()) for p in results.glob(f"{stage}/*.report.json")]
        assert reports, stage
    report_evidence(slurm_run, f"Batch API: {len(openai.batches)} batches, {lines} lines answered by vLLM")


def test_hub_models_were_provisioned_once_and_pinned(slurm_run: SlurmRun):
    hub = slurm_run.services.hub
    manifests = sorted((slurm_run.root / "resources/hub").glob("models--*/vpo-manifests/*.json"))
    assert len(manifests) == 3
    for path in manifests:
        manifest = json.loads(path.read_text())
        assert manifest["revision"] == hub.commits[manifest["repo"]]
        assert manifest["files"] and all(len(f["sha256"]) == 64 for f in manifest["files"])
    assert hub.downloads and max(hub.downloads.values()) == 1, hub.downloads  # each file fetched once


def test_policy_sampled_through_vllm_on_the_cluster(slurm_run: SlurmRun):
    server_logs = list((slurm_run.root / "results/logs/sample").rglob("*.server"))
    assert server_logs and all("POST /v1/chat/completions" in p.read_text() for p in server_logs)


def test_rules_go_to_their_partition_and_ask_no_gpu_on_a_cpu_run(slurm_run: SlurmRun):
    for job in slurm_run.jobs:
        rule, gpus = rule_of(job), gpu_request(job)
        assert job["Partition"] == ("gpu" if rule in GPU_RULES else "cpu"), record_line(job)
        assert not gpus, record_line(job)  # paper_cpu.yaml: use_gpus false
    by_rule = {rule_of(job): job for job in slurm_run.jobs}
    report_evidence(
        slurm_run,
        sbatch_line(slurm_run.log, "generate_videos"),
        record_line(by_rule["generate_videos"]),
        sbatch_line(slurm_run.log, "sample"),
        record_line(by_rule["sample"]),
    )


def running_job(cluster: Cluster, rule: str) -> str | None:
    running = (job for job in cluster.jobs() if job["JobState"] == "RUNNING")
    return next((job["JobId"] for job in running if rule_of(job) == rule), None)


def cancel_mid_render(cluster: Cluster, cache: Path, videos: int) -> tuple[str, int]:
    """Wait until the running video job has written a quarter of its videos, then scancel it.

    Returns the job id and how many videos were finished when it was cancelled."""
    job_id = wait_for(lambda: running_job(cluster, "generate_videos"), 300, "a RUNNING generate_videos job")
    wait_for(lambda: len(list(cache.glob("*/*.json"))) >= max(2, videos // 4), 300, "the first videos")
    finished = len(list(cache.glob("*/*.json")))  # the sidecar is written after its mp4
    assert finished < videos, f"all {videos} videos rendered before the cancel: make SLOW_T2V slower"
    subprocess.run(["scancel", job_id], check=True)
    return job_id, finished


def test_cancelled_video_job_is_retried_from_the_cache(slurm_run: SlurmRun, slurm_cluster: Cluster):
    root = slurm_run.root
    report = root / MANIFEST.replace(".parquet", ".report.json")
    videos = json.loads(report.read_text())["counts"]["videos"]
    (root / MANIFEST).unlink()
    report.unlink()
    cache = root / "results/state/videos"
    shutil.rmtree(cache)
    before = {job["JobId"] for job in slurm_cluster.jobs()}
    log = root / "slurm-cancel.log"
    start = time.monotonic()
    with log.open("w") as out:
        command = snakemake_command(MANIFEST, config=(SLOW_T2V,))
        proc = subprocess.Popen(
            command, cwd=root, env=slurm_run.services.env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            cancelled, finished = cancel_mid_render(slurm_cluster, cache, videos)
            returncode = proc.wait(timeout=RUN_TIMEOUT_S)
        finally:
            if proc.poll() is None:  # Snakemake cancels its Slurm jobs on SIGTERM
                proc.terminate()
                proc.wait(timeout=60)
    wall_s = time.monotonic() - start
    assert returncode == 0, log.read_text()[-6000:]
    written = json.loads(report.read_text())
    counts, writer = written["counts"], written["provenance"]["slurm_job_id"]
    jobs = [job for job in new_jobs(slurm_cluster, before) if rule_of(job) == "generate_videos"]
    states = {job["JobId"]: job["JobState"] for job in jobs}
    report_evidence(
        slurm_run,
        f"cancel/retry: {wall_s:.0f} s; Slurm jobs {states}; {finished} of {videos} videos finished at the "
        f"cancel; report (written by job {writer}): {counts}",
    )
    assert states[cancelled] == "CANCELLED" and sorted(states.values()) == ["CANCELLED", "COMPLETED"]
    assert states[writer] == "COMPLETED"
    # The kept per-job Slurm log says why the first job ended; Snakemake then retried it.
    # (the plugin names the folder after the job's wildcards: round, target, shard, part)
    kept = root / f".snakemake/slurm_logs/rule_generate_videos/1_{TARGET}_0_0/{cancelled}.log"
    assert f"JOB {cancelled} ON {slurm_cluster.host} CANCELLED" in kept.read_text()
    assert "Trying to restart job" in log.read_text()
    assert counts["videos"] == videos == counts["rendered"] + counts["cache_hits"]
    # The videos finished before the cancel were cache hits; only the rest was rendered again.
    assert counts["cache_hits"] >= finished > 0 and counts["rendered"] > 0
