"""Per-stage figures for `vpo status`: job states, items, LLM requests (cache vs new) and unusable
answers from the reports of finished jobs, benchmark times and a rough time to finish, and the ledger's
spend against the budget.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vpo.core.layout import ledger_dir
from vpo.llm.ledger import read_ledger
from vpo.pages.jobs import STAGE_ORDER, load_jobs
from vpo.pages.stats import GOOD_STATUS, PROBLEM_KEYS, merge_counts
from vpo.tools.estimate import estimate
from vpo.tools.status_jobs import DagJob


def benchmark_seconds(path: Path) -> list[float]:
    """Wall seconds of a job from its benchmark file (column `s`, one row per repeat)."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or not lines[0].startswith("s\t"):
        return []
    seconds = []
    for line in lines[1:]:
        try:
            seconds.append(float(line.split("\t", 1)[0]))
        except ValueError:
            continue  # "NA" and the like
    return seconds


@dataclass
class StageStatus:
    stage: str
    jobs: int = 0
    done: int = 0
    running: int = 0
    queued: int = 0
    failed: int = 0
    todo: int = 0
    items: int | None = None  # items the finished jobs handled (records written)
    llm_requests: int = 0  # requests the finished jobs made, answered from the cache or anew
    llm_cached: int = 0
    llm_new: int = 0
    problems: dict[str, int] = field(default_factory=dict)  # unparsed, failed, refused ... items
    timed_jobs: int = 0
    mean_job_s: float | None = None
    eta_s: float | None = None


def _problems(counts: Mapping[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for status, n in (counts.get("by_status") or {}).items():
        if status not in GOOD_STATUS and n:
            out[status] = out.get(status, 0) + int(n)
    for key in PROBLEM_KEYS:
        if isinstance(counts.get(key), int | float) and counts[key]:
            out[key] = out.get(key, 0) + int(counts[key])
    return out


def _items(counts: Mapping[str, Any]) -> int | None:
    for key in ("items", "prompts", "videos", "pairs", "examples", "kept"):
        if isinstance(counts.get(key), int):
            return counts[key]
    return None


def stage_table(jobs: Sequence[DagJob], root: Path) -> list[StageStatus]:
    """Job states, report figures and timing per stage, in pipeline order."""
    order = {name: i for i, name in enumerate(STAGE_ORDER)}
    first_seen: dict[str, int] = {}
    stages: dict[str, StageStatus] = {}
    durations: dict[str, list[float]] = {}
    for i, job in enumerate(jobs):
        first_seen.setdefault(job.stage, i)
        row = stages.setdefault(job.stage, StageStatus(job.stage))
        row.jobs += 1
        setattr(row, job.state, getattr(row, job.state) + 1)
        if job.benchmark:
            durations.setdefault(job.stage, []).extend(benchmark_seconds(root / job.benchmark))
    # Only finished jobs: the report of a job that must run again describes an older run.
    report_stage = {
        str(root / o): j.stage
        for j in jobs
        if j.state == "done"
        for o in j.outputs
        if o.endswith("report.json")
    }
    for report in load_jobs(p for p in report_stage if Path(p).is_file()):
        row = stages[report_stage[str(report.record.path)]]
        counts = report.record.data.get("counts") or {}
        items = _items(counts)
        if items is not None:
            row.items = (row.items or 0) + items
        llm = report.record.data.get("llm") or {}
        row.llm_requests += int(llm.get("requests", 0))
        row.llm_cached += int(llm.get("cache_hits", 0))
        row.llm_new += int(llm.get("cache_misses", 0))
        problems = _problems(counts)
        if llm.get("failed"):
            problems["llm_failed"] = problems.get("llm_failed", 0) + int(llm["failed"])
        merge_counts(row.problems, problems)
    for name, row in stages.items():
        seconds = durations.get(name) or []
        row.timed_jobs = len(seconds)
        row.mean_job_s = sum(seconds) / len(seconds) if seconds else None
    return sorted(stages.values(), key=lambda r: (order.get(r.stage, len(order)), first_seen[r.stage]))


def add_eta(stages: Sequence[StageStatus]) -> dict[str, Any]:
    """A rough time to finish: per stage, mean duration of its finished jobs × jobs left, divided by
    the jobs it runs at once now (or, for a stage not running, by the jobs the run runs at once now)."""
    in_flight = sum(s.running for s in stages)
    work_s = 0.0
    untimed = []
    for s in stages:
        left = s.jobs - s.done
        if not left:
            s.eta_s = 0.0
            continue
        if s.mean_job_s is None:
            untimed.append(s.stage)
            continue
        # A running job is assumed half done.
        job_s = s.mean_job_s * (left - s.running / 2)
        s.eta_s = job_s / max(1, s.running or in_flight)
        work_s += job_s
    return {
        "eta_s": work_s / max(1, in_flight) if work_s else (0.0 if not untimed else None),
        "jobs_running_now": in_flight,
        "untimed_stages": untimed,
    }


def spending(root: Path, cache_dir: str, config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ledger's total and per stage, the budget, and what `vpo estimate` expects the config to cost."""
    ledger = ledger_dir(root / cache_dir)
    entries = read_ledger(ledger) if ledger.is_dir() else []
    per_stage: dict[str, dict[str, float]] = {}
    for e in entries:
        row = per_stage.setdefault(e["stage"], {"answers": 0, "cost_usd": 0.0})
        row["answers"] += 1
        row["cost_usd"] += e["cost_usd"]
    out: dict[str, Any] = {
        "ledger": str(ledger.relative_to(root)) if ledger.is_dir() else None,
        "entries": entries,
        "spent_usd": round(sum(e["cost_usd"] for e in entries), 6),
        "by_stage": per_stage,
        "budget_usd": config.get("budget_usd") if config else None,
        "estimate_usd": None,
    }
    if config:
        cwd = os.getcwd()  # the config's query files and templates are relative to the project
        try:
            os.chdir(root)
            lines = estimate(dict(config))
        except (OSError, KeyError, ValueError) as exc:
            out["estimate_error"] = f"{type(exc).__name__}: {exc}"
        else:
            out["estimate_usd"] = {
                "first_attempts": round(sum(line.cost(False) or 0.0 for line in lines), 4),
                "worst_case": round(sum(line.cost(True) or 0.0 for line in lines), 4),
            }
        finally:
            os.chdir(cwd)
    return out
