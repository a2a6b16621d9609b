"""`vpo slurm-profile`: write a Slurm profile for this workflow and one config, where a bare
`snakemake --profile slurm` finds it (~/.config/snakemake/slurm by default).

    vpo slurm-profile --partition cpu --gpu-partition gpu --account lab --gpu-model a100 \\
        --configfile config/paper.yaml
    snakemake --profile slurm --configfile config/paper.yaml -n

Only the rules that ask for GPUs under that config go to the GPU partition (a remote-endpoint judge asks
for none); the video and reward rules are submitted as Slurm array jobs.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from vpo.config import scheduling
from vpo.config.validate import ConfigError, validate_config

# Names that end up in sbatch arguments (the plugin builds a shell command line from them).
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
PARTITIONS = re.compile(rf"{NAME.pattern}(,{NAME.pattern})*")  # sbatch -p takes a comma-separated list
GPU_MODEL = re.compile(r"[A-Za-z0-9_.]+")  # what the plugin accepts for gpu_model
# One job per video part: many jobs with the same request, the case Slurm array jobs are made for.
ARRAY_RULES = ("generate_videos", "score_videos", "eval_videos", "eval_rewards")
PROFILE_FILE = "config.v8+.yaml"


def default_out() -> Path:
    """Where Snakemake looks up a bare `--profile slurm` (after ./slurm): its user config folder."""
    from platformdirs import user_config_dir

    return Path(user_config_dir("snakemake", "snakemake")) / "slurm"


def check_name(option: str, value: str | None, pattern: re.Pattern[str]) -> str | None:
    if value is not None and not pattern.fullmatch(value):
        raise SystemExit(
            f"vpo slurm-profile: {option} {value!r} has characters a Slurm name cannot have here "
            f"(allowed: {pattern.pattern}). Fix: give the name as `sinfo -s` / `sshare -U` / "
            '`sinfo -o "%P %G"` print it.'
        )
    return value


def sacct_works() -> bool:
    """Whether `sacct` answers: the binary also exists where accounting is off, and then fails."""
    if shutil.which("sacct") is None:
        return False
    probe = ["sacct", "-X", "--noheader", "--starttime", "now", "--format=JobIdRaw"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=20, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def gpu_resources(use: bool | tuple[str, tuple[str, ...]], cpu: str, gpu: str | None, model: str | None):
    """set-resources of one GPU rule: the GPU partition, and the GPU model where every job takes a GPU."""
    if use is True:
        return {k: v for k, v in (("slurm_partition", gpu), ("gpu_model", model)) if v}
    if gpu is None:
        return {}  # only some jobs take a GPU, and all go to the default partition anyway
    # Only the jobs with these wildcard values take a GPU: a Python expression Snakemake evaluates per
    # job. No gpu_model here: the plugin would turn it into `--gpus=<model>:0` for the others.
    wildcard, values = use
    chosen = f"{json.dumps(gpu)} if wildcards.{wildcard} in {json.dumps(list(values))} else {json.dumps(cpu)}"
    return {"slurm_partition": chosen}


def profile(cfg: dict[str, Any], args: argparse.Namespace, status_command: str) -> dict[str, Any]:
    gpu_rules = scheduling.gpu_rules(cfg)
    present = set(ARRAY_RULES[:2] if cfg["pairs"]["video"] else ()) | (
        set(ARRAY_RULES[2:]) if cfg.get("eval", {}).get("enabled", False) else set()
    )
    defaults: dict[str, Any] = {"slurm_partition": args.partition}
    if args.account:
        defaults["slurm_account"] = args.account
    # The small rules (curation, sharding, pairs, reports) set no size: these, grown with the attempt.
    defaults |= {"mem_mb": f"{args.mem_mb} * attempt", "runtime": f"{args.runtime} * attempt"}
    sets = {
        rule: res
        for rule, use in sorted(gpu_rules.items())
        if (res := gpu_resources(use, args.partition, args.gpu_partition, args.gpu_model))
    }
    settings: dict[str, Any] = {
        "executor": "slurm",
        "jobs": args.jobs,
        "retries": args.retries,
        "keep-going": True,
        "latency-wait": 60,
        "printshellcmds": True,
        "slurm-status-command": status_command,
        "slurm-requeue": True,
        "slurm-efficiency-report": status_command == "sacct",
    }
    if args.array_jobs and present:
        settings["slurm-array-jobs"] = ",".join(r for r in ARRAY_RULES if r in present)
    settings["default-resources"] = defaults
    if sets:
        settings["set-resources"] = sets
    return settings


COMMENTS = {
    "executor": "snakemake-executor-plugin-slurm submits every non-local job with sbatch",
    "jobs": "jobs submitted at once; keep it above the video parts that get ready together (see below)",
    "retries": "a failed job is resubmitted this often, with attempt x its mem_mb and runtime",
    "keep-going": "independent branches go on when one job fails for good",
    "latency-wait": "seconds to wait for outputs to appear on the shared file system",
    "printshellcmds": "the command of each job in the log",
    "slurm-status-command": "how job states are read: sacct needs slurmdbd; squeue otherwise",
    "slurm-requeue": "Slurm re-queues jobs hit by preemption or a node failure",
    "slurm-efficiency-report": "CSV of used vs requested CPU and memory per job (needs sacct)",
    "slurm-array-jobs": "one sbatch --array per batch of ready jobs of these rules (same request each)",
    "default-resources": "every job; the stages' sizes come from the config (<stage>.resources)",
    "set-resources": "the rules that ask for GPUs under this config (gpu=N -> sbatch --gpus)",
}


def render(settings: dict[str, Any], header: str) -> str:
    lines = [header]
    for key, value in settings.items():
        lines.append(f"# {COMMENTS[key]}")
        if key == "slurm-array-jobs":
            lines.append(
                "# Plugin 2.8.0: the tasks of an array share the first job's request (a retried job sent "
                "with first\n# tries gets theirs), and a batch smaller than the rule's other ready jobs is "
                "never submitted\n# (snakemake-executor-plugin-slurm#473): `jobs` must stay above the parts "
                "ready at once, or\n# delete this line (or regenerate with --no-array-jobs)."
            )
        lines.append(yaml.safe_dump({key: value}, sort_keys=False, width=200).rstrip())
    return "\n".join(lines) + "\n"


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vpo slurm-profile",
        description="Write a Slurm profile for a config: GPU rules (under that config) to the GPU "
        "partition, array jobs for the video and reward parts, retries with more memory and time.",
    )
    parser.add_argument("--partition", required=True, help="partition of every job (sbatch -p)")
    parser.add_argument("--gpu-partition", help="partition of the GPU jobs (default: --partition)")
    parser.add_argument("--account", help="account of every job (sbatch -A); default: none given")
    parser.add_argument("--gpu-model", help="GPU type of the GPU jobs (sbatch --gpus=<model>:N); a gres Type")
    parser.add_argument("--configfile", default="config/config.yaml", help="the config the runs use")
    parser.add_argument("--out", type=Path, help="profile folder (default: where --profile slurm is found)")
    parser.add_argument("--force", action="store_true", help="replace an existing profile")
    parser.add_argument("--jobs", type=int, default=500, help="Slurm jobs submitted at once (default 500)")
    parser.add_argument("--retries", type=int, default=2, help="resubmissions of a failed job (default 2)")
    parser.add_argument("--mem-mb", type=int, default=2000, help="memory of rules without a size (MB)")
    parser.add_argument("--runtime", type=int, default=30, help="minutes of rules without a size")
    parser.add_argument(
        "--status-command", choices=("sacct", "squeue"), help="default: sacct if it answers here, else squeue"
    )
    parser.add_argument("--no-array-jobs", dest="array_jobs", action="store_false", help="one sbatch per job")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    check_name("--partition", args.partition, PARTITIONS)
    check_name("--gpu-partition", args.gpu_partition, PARTITIONS)
    check_name("--account", args.account, NAME)
    check_name("--gpu-model", args.gpu_model, GPU_MODEL)
    for option, value in (("--jobs", args.jobs), ("--mem-mb", args.mem_mb), ("--runtime", args.runtime)):
        if value < 1:
            raise SystemExit(f"vpo slurm-profile: {option} {value}: must be at least 1")
    if args.retries < 0:
        raise SystemExit(f"vpo slurm-profile: --retries {args.retries}: must be 0 or more")
    try:
        raw = yaml.safe_load(Path(args.configfile).read_text(encoding="utf-8")) or {}
        # Files (query sets, models) may be put in place later; Snakemake checks them before any job.
        cfg = validate_config(raw, source=args.configfile, check_files=False)
    except (OSError, yaml.YAMLError, ConfigError) as exc:
        raise SystemExit(f"vpo slurm-profile: {exc}") from None
    out = args.out or default_out()
    target = out / PROFILE_FILE
    if target.exists() and not args.force:
        raise SystemExit(f"vpo slurm-profile: {target} exists. Fix: --force to replace it, or --out DIR.")
    status_command = args.status_command or ("sacct" if sacct_works() else "squeue")
    settings = profile(cfg, args, status_command)
    configfile = shlex.quote(args.configfile)
    given = shlex.join(sys.argv[1:] if argv is None else argv)
    header = "\n".join(
        line.replace("\n", " ")  # a path with a newline must not end the comment
        for line in (
            f"# Slurm profile of the VPO workflow for {configfile}, written by `vpo slurm-profile {given}`.",
            "# Regenerate it (--force) when the config changes use_gpus or which stages run a local model.",
            f"#   snakemake --profile slurm --configfile {configfile} -n   (slurm: this folder's name)",
            "# The venv and the project folder must be on a file system the compute nodes share.",
        )
    )
    out.mkdir(parents=True, exist_ok=True)
    target.write_text(render(settings, header), encoding="utf-8")
    n_gpu = len(settings.get("set-resources", {}))
    print(f"wrote {target}: {n_gpu} GPU rule(s) routed, job status via {status_command}")


if __name__ == "__main__":
    main()
