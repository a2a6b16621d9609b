"""The default DAG on a real one-node Slurm cluster through snakemake-executor-plugin-slurm, in a
temporary copy of the project: it finishes, GPU-capable rules are submitted to the `gpu` partition with a
GPU request and all others to `cpu` without one (read from Slurm's own job records), and a video job
cancelled mid-render is retried and renders only the videos it had not finished.

Skipped where Slurm is not installed (see .ci/run). With `-s` the sbatch lines, job records, wall times
and retry counts are printed; they are also written to `slurm-evidence.txt` in the temporary project."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
import yaml

from tests.workflow_run import copy_project, jobs_by_rule
from vpo.io import read_records

from .cluster import Cluster, rule_of

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
PROFILE = "profiles/slurm-ci"
# Rules that get gpu=1 under `--config use_gpus=true` (draft/critique/refine because the default runs
# their LLM locally); every other rule must reach Slurm without a GPU request.
GPU_RULES = frozenset(
    {"sample", "draft", "critique", "refine", "train_sft", "train_dpo", "generate_videos", "score_videos"}
    | {"eval_prompts", "eval_judge", "eval_videos", "eval_rewards"}
)
MANIFEST = "results/dpo/videos/shard-0/part-0.parquet"
# Slower than the default's 4 steps in batches of 4, so that the cancel lands while the job renders.
SLOW_T2V = "t2v={num_inference_steps: 12, batch_size: 1}"
RUN_TIMEOUT_S = 40 * 60

T = TypeVar("T")


@dataclass
class SlurmRun:
    """The default DAG, run once through Slurm; shared by the tests of this module."""

    root: Path
    wall_s: float
    log: str
    jobs: list[dict[str, str]]  # `scontrol show job` records of this run's jobs
    seeded: bool  # started from the item caches of the session's local default run

    @property
    def evidence(self) -> Path:
        return self.root / "slurm-evidence.txt"


def snakemake_command(*targets: str, config: tuple[str, ...] = (), verbose: bool = False) -> list[str]:
    """The documented cluster command; the venv's interpreter so that the same one runs the jobs.

    `--workflow-profile none`: profiles/default would otherwise be merged on top and its
    `default-resources` would replace the cluster profile's (dropping `slurm_partition`)."""
    command = [sys.executable, "-m", "snakemake", "--profile", PROFILE, "--workflow-profile", "none"]
    return [*command, *["--verbose"] * verbose, *targets, "--config", "use_gpus=true", *config]


def job_env() -> dict[str, str]:
    """sbatch --export=ALL hands this PATH to the jobs, whose shell commands call `python`."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


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
) -> SlurmRun:
    root = tmp_path_factory.mktemp("vpo-slurm")
    copy_project(root)
    seeded = any("default_run" in item.fixturenames for item in request.session.items)
    if seeded:
        # The session runs the default DAG locally as well: start from its item caches, so that every
        # job still runs as a Slurm job but answers its model calls, videos and rewards from them
        # instead of computing the same ones again (the cancel test below clears its videos' cache).
        shutil.copytree(request.getfixturevalue("default_run") / "results/cache", root / "results/cache")
    before = {job["JobId"] for job in slurm_cluster.jobs()}
    start = time.monotonic()
    done = subprocess.run(
        snakemake_command(verbose=True),
        cwd=root,
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    wall_s = time.monotonic() - start
    log = done.stdout + done.stderr
    (root / "slurm-run.log").write_text(log)
    assert done.returncode == 0, f"{log[-6000:]}\n{slurm_cluster.logs()}\n(full log: {root}/slurm-run.log)"
    return SlurmRun(root, wall_s, log, new_jobs(slurm_cluster, before), seeded)


def test_ci_profile_sends_the_gpu_rules_to_the_gpu_partition():
    """The profile's list of GPU rules is the one the tests check Slurm against (no cluster needed)."""
    profile = yaml.safe_load((REPO / PROFILE / "config.v8+.yaml").read_text())
    assert profile["default-resources"]["slurm_partition"] == "cpu"
    assert {rule: r["slurm_partition"] for rule, r in profile["set-resources"].items()} == dict.fromkeys(
        GPU_RULES, "gpu"
    )


def test_default_dag_runs_on_slurm(slurm_run: SlurmRun):
    results = slurm_run.root / "results"
    assert (results / "models/dpo").is_dir()
    assert read_records(results / "dpo/pairs.parquet")
    planned = jobs_by_rule(slurm_run.log)
    completed = Counter(rule_of(job) for job in slurm_run.jobs if job["JobState"] == "COMPLETED")
    # Every planned job ran as a Slurm job, except the target rule `all`, which has nothing to run, and
    # the run report, a local rule (it only reads what the jobs wrote).
    assert completed == planned - Counter(all=1, run_report=1), (planned, completed)
    assert set(completed) >= GPU_RULES
    # Each stage report names the Slurm job that wrote it.
    job_ids = {job["JobId"] for job in slurm_run.jobs if job["JobState"] == "COMPLETED"}
    provenance = [json.loads(p.read_text()).get("provenance", {}) for p in results.rglob("*.report.json")]
    written_by = [p["slurm_job_id"] for p in provenance if "slurm_job_id" in p]
    assert len(written_by) >= 10 and set(written_by) <= job_ids, (written_by, job_ids)
    report_evidence(slurm_run, f"default DAG on Slurm: {len(slurm_run.jobs)} jobs, {slurm_run.wall_s:.0f} s")


def test_models_built_on_the_cluster_answer_from_the_local_runs_caches(slurm_run: SlurmRun):
    """The built models are the same bytes wherever they are built (job environment, thread count), so
    their fingerprints, and with them the item-cache keys, match those of the local run."""
    if not slurm_run.seeded:
        pytest.skip("the session has no local default run to seed the caches from")
    results = slurm_run.root / "results"
    drafts = [json.loads(p.read_text())["llm"] for p in results.glob("sft/drafts/*.report.json")]
    assert drafts and all(d["cache_hits"] == d["requests"] > 0 for d in drafts), drafts
    videos = [json.loads(p.read_text())["counts"] for p in results.glob("eval/original/videos/*.report.json")]
    assert videos and all(v["cache_hits"] == v["videos"] > 0 for v in videos), videos


def test_gpu_rules_request_a_gpu_and_cpu_rules_do_not(slurm_run: SlurmRun):
    for job in slurm_run.jobs:
        rule, gpus = rule_of(job), gpu_request(job)
        if rule in GPU_RULES:
            assert job["Partition"] == "gpu" and gpus, record_line(job)
        else:
            assert job["Partition"] == "cpu" and not gpus, record_line(job)
    by_rule = {rule_of(job): job for job in slurm_run.jobs}
    report_evidence(
        slurm_run,
        sbatch_line(slurm_run.log, "generate_videos"),
        record_line(by_rule["generate_videos"]),
        sbatch_line(slurm_run.log, "video_pairs"),
        record_line(by_rule["video_pairs"]),
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
    cache = root / "results/cache/videos"
    shutil.rmtree(cache)
    before = {job["JobId"] for job in slurm_cluster.jobs()}
    log = root / "slurm-cancel.log"
    start = time.monotonic()
    with log.open("w") as out:
        command = snakemake_command(MANIFEST, config=(SLOW_T2V,))
        proc = subprocess.Popen(command, cwd=root, env=job_env(), stdout=out, stderr=subprocess.STDOUT)
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
    kept = root / f".snakemake/slurm_logs/rule_generate_videos/0_0/{cancelled}.log"
    assert f"JOB {cancelled} ON {slurm_cluster.host} CANCELLED" in kept.read_text()
    assert "Trying to restart job" in log.read_text()
    assert counts["videos"] == videos == counts["rendered"] + counts["cache_hits"]
    # The videos finished before the cancel were cache hits; only the rest was rendered again.
    assert counts["cache_hits"] >= finished > 0 and counts["rendered"] > 0
