"""The run's job reports as rows of a table: the stage label and wildcards that only a report's path tells."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from vpo.core.provenance import JobRecord, JobReportError, read_job_report
from vpo.core.rounds import locate

SETS = ("sft", "dpo")
# Pipeline order of the stages; anything else (a stage added later) follows, by first start time. The
# evaluation's rule names are here too, for `vpo status`, which labels jobs by rule.
STAGE_ORDER = (
    "curate (sft)",
    "curate (dpo)",
    "draft",
    "critique (sft)",
    "refine (sft)",
    "sft_data",
    "train_sft",
    "sample",
    "critique (dpo)",
    "refine (dpo)",
    "generate_videos",
    "score_videos",
    "video_pairs",
    "build_pairs",
    "train_dpo",
    "eval_queries",
    "eval_original_prompts",
    "eval_prompts",
    "eval_judge",
    "generate_videos (eval)",
    "eval_videos",
    "score_videos (eval)",
    "eval_rewards",
    "eval_table",
)
# Stages that run once per query set / phase: the set is only in the report's path.
_PHASED = {"curate", "critique", "refine"}
# The evaluation's folder, and inside it a target's tables (results/eval/tables/{target}/...) or a
# method's folder (results/eval/{method}/...) with a target's videos, rewards and VBench scores in it.
_EVAL = re.compile(
    r"(?:^|/)results/eval/(?:tables/(?P<table>[^/]+)/|(?P<method>[^/]+)/(?:(?P<target>[^/]+)/(?:videos|rewards|vbench)/)?)?"
)


@dataclass(frozen=True)
class JobRow:
    """One job report with the stage label and wildcards read from where it was written."""

    record: JobRecord
    stage: str
    wildcards: str


def job_label(path: str, stage: str) -> tuple[str, str]:
    """(stage label, wildcards) of a report. Critique, refine and curate run once per set, which only
    their path tells (results/dpo/critiques/shard-0.report.json -> "critique (dpo)", "phase=dpo k=0");
    the evaluation renders and scores its videos with the training's stages, so those are told apart by
    the folder (results/eval/sft/videos/part-0.report.json -> "generate_videos (eval)", "method=sft p=0")."""
    p = Path(path)
    phase = next((part for part in (*p.parts[:-1], p.name.split(".")[0]) if part in SETS), None)
    wildcards = []
    label = stage
    evaluation = _EVAL.search(p.as_posix())
    if evaluation:
        label = stage if stage.startswith("eval_") else f"{stage} (eval)"
        if evaluation["method"]:
            wildcards.append(f"method={evaluation['method']}")
        if evaluation["table"] or evaluation["target"]:
            wildcards.append(f"target={evaluation['table'] or evaluation['target']}")
    else:
        if stage in _PHASED and phase:
            label = f"{stage} ({phase})"
            wildcards.append(f"{'set' if stage == 'curate' else 'phase'}={phase}")
        where = locate(p.as_posix())
        if where:
            wildcards.append(f"round={where[0]}")
            wildcards += [f"target={where[1]}"] if where[1] else []
    for name, pattern in (("k", r"shard-(\d+)"), ("p", r"part-(\d+)")):
        match = re.search(pattern, path)
        if match:
            wildcards.append(f"{name}={match.group(1)}")
    return label, " ".join(wildcards)


def load_jobs(paths: Iterable[str | os.PathLike]) -> list[JobRow]:
    """The job reports at `paths`, oldest first. A file that is not a job report is an error: the page
    would otherwise count one job less without saying so."""
    rows = []
    for path in paths:
        record = read_job_report(path)
        if record is None:
            raise JobReportError(f"{path}: not a job report (no stage and provenance)")
        rows.append(JobRow(record, *job_label(str(path), record.stage)))
    return sorted(rows, key=lambda j: (j.record.started, str(j.record.path)))


def run_span(jobs: Sequence[JobRow]) -> tuple[datetime | None, datetime | None]:
    """First start and last end (start + wall time) over the jobs that recorded them. Jobs kept from an
    earlier run count too: the span is that of the outputs on disk, not of the last invocation."""
    spans = []
    for job in jobs:
        try:
            start = datetime.strptime(job.record.started, "%Y-%m-%dT%H:%M:%S%z")
        except ValueError:
            continue
        spans.append((start, start + timedelta(seconds=float(job.record.provenance.get("wall_s") or 0))))
    if not spans:
        return None, None
    return min(s for s, _ in spans), max(e for _, e in spans)
