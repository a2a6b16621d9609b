"""The run summary page: what `templates/summary.html.j2` shows, worked out from the gathered run data.

Every function here returns plain values (text and numbers); the template decides the markup and
escapes them. Only the plots arrive as markup (`markupsafe.Markup`, the SVG matplotlib wrote)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import yaml
from markupsafe import Markup

from vpo.core.run_options import with_run_options
from vpo.core.secrets import redact
from vpo.pages.jobs import SETS, JobRow, run_span
from vpo.pages.plots import PLOT_CAPTIONS
from vpo.pages.resources import RuleUsage
from vpo.pages.stats import GOOD_STATUS, IN_OUT_KEYS, PROBLEM_KEYS, StageStats, in_out, stage_stats
from vpo.pages.templating import ratio, render, usd


@dataclass
class RunData:
    """Everything the page shows, gathered from the run's files (see `run_report.gather`)."""

    jobs: list[JobRow]
    config: dict[str, Any]
    run_options: dict[str, Any]
    query_lengths: dict[str, dict[str, list[int]]]
    prompt_lengths: dict[str, dict[str, list[int]]]
    pairs: list[dict[str, Any]]
    losses: dict[str, list[tuple[float, float]] | None]
    loss_notes: dict[str, str]
    video_pages: list[str] = dataclasses.field(default_factory=list)  # one per round and target
    reward_svg: Markup | None = None
    usage: list[RuleUsage] = dataclasses.field(default_factory=list)  # time and memory per rule
    # Per target, per round: the judge's pass rate of the round's candidates and their videos' mean reward.
    round_pass_rates: dict[str, dict[int, float | None]] = dataclasses.field(default_factory=dict)
    round_rewards: dict[str, dict[int, float | None]] = dataclasses.field(default_factory=dict)


class Card(NamedTuple):
    title: str
    big: str
    sub: str = ""


class Chip(NamedTuple):
    """One count of a stage; `items` holds the entries of a nested count (e.g. by_status), else None."""

    key: str
    value: Any = None
    bad: bool = False
    items: list[Chip] | None = None


def chips(counts: Mapping[str, Any], skip: Iterable[str] = ()) -> list[Chip]:
    """A stage's counts, each marked bad where it is a problem that is not zero."""
    out = []
    for key, value in counts.items():
        if key in skip:
            continue
        if isinstance(value, Mapping):
            statuses = key.startswith(("by_status", "candidates_without"))
            items = [Chip(k, v, bool(statuses and k not in GOOD_STATUS and v)) for k, v in value.items()]
            out.append(Chip(key, items=items))
        else:
            out.append(Chip(key, value, bool(key in PROBLEM_KEYS and value)))
    return out


def headline(data: RunData, by_stage: Mapping[str, StageStats]) -> list[Card]:
    cards = []
    for name in SETS:
        curate = by_stage.get(f"curate ({name})")
        if curate:
            raw, kept = curate.counts.get("raw") or 0, curate.counts.get("kept") or 0
            cards.append(Card(f"{name.upper()} queries kept", f"{kept:,} / {raw:,}", ratio(kept, raw)))
    sft = by_stage.get("sft_data")
    if sft:
        source = sft.counts.get("by_source") or {}
        sub = f"{source.get('draft', 0)} drafts judged Yes, {source.get('refinement', 0)} refinements"
        cards.append(Card("SFT examples", f"{sft.counts.get('examples', 0):,}", sub))
    by_source = {s: sum(1 for p in data.pairs if p.get("source") == s) for s in ("text", "video")}
    cards.append(
        Card("DPO pairs", f"{len(data.pairs):,}", f"text {by_source['text']}, video {by_source['video']}")
    )
    llm = [s.llm for s in by_stage.values() if s.llm]
    if llm:
        requests = sum(x.get("requests", 0) for x in llm)
        hits = sum(x.get("cache_hits", 0) for x in llm)
        tokens = sum(x.get("prompt_tokens", 0) + x.get("completion_tokens", 0) for x in llm)
        cards.append(
            Card("LLM requests", f"{requests:,}", f"{ratio(hits, requests)} from cache, {tokens:,} tokens")
        )
    costs = [s.cost_usd for s in by_stage.values() if s.cost_usd is not None]
    cards.append(
        Card("Cost", usd(sum(costs)), "from the job ledgers")
        if costs
        else Card("Cost", "—", "no priced model in this run")
    )
    for name, points in data.losses.items():
        if points:
            loss = f"{points[0][1]:.3g} → {points[-1][1]:.3g}"
            cards.append(Card(f"{name.upper()} loss", loss, f"{len(points)} logged steps"))
    wall = sum(float(j.record.provenance.get("wall_s") or 0) for j in data.jobs)
    cards.append(Card("Jobs", f"{len(data.jobs)}", f"{wall / 60:,.1f} min of job wall time"))
    measured = [u for u in data.usage if u.share is not None]
    if measured:
        top = max(measured, key=lambda u: u.share or 0)
        over = sum(u.over for u in measured)
        sub = f"{top.rule}: {top.peak_rss_mb:,.0f} of {top.mem_mb:,} MB"
        sub += f"; {over} rules over their request" if over else ""
        cards.append(Card("Peak memory / mem_mb", f"{top.share:.0%}", sub))
    return cards


def usage_rows(usage: Sequence[RuleUsage]) -> list[dict[str, Any]]:
    """The time and memory table: one row per rule, the over-budget ones flagged."""
    return [
        {
            "cells": (
                u.rule,
                u.jobs,
                round(u.wall_s_total, 1),
                round(u.wall_s_max, 1),
                round(u.peak_rss_mb) if u.peak_rss_mb is not None else None,
                u.mem_mb if u.mem_mb is not None else "default",
                f"{u.share:.0%}" if u.share is not None else None,
            ),
            "over": u.over,
        }
        for u in usage
    ]


def run_facts(jobs: Sequence[JobRow]) -> dict[str, Any]:
    """Code versions, hosts, span of the run, and the package versions the jobs recorded."""
    provenance = [j.record.provenance for j in jobs]
    codes = list(dict.fromkeys((p.get("code") or {}).get("commit") for p in provenance if p.get("code")))
    dirty = any((p.get("code") or {}).get("dirty") for p in provenance)
    hosts = list(dict.fromkeys(p["host"] for p in provenance if p.get("host")))
    slurm = sum(1 for p in provenance if p.get("slurm_job_id"))
    start, end = run_span(jobs)
    versions: dict[str, list[str]] = {}
    for p in provenance:
        for package, version in (p.get("versions") or {}).items():
            if version not in versions.setdefault(package, []):
                versions[package].append(version)
    rows = [
        ("code version (git commit)", ", ".join(str(c) for c in codes) or "unknown"),
        ("uncommitted changes", "yes (some job ran on a dirty tree)" if dirty else "no"),
        ("hosts", ", ".join(hosts) or "unknown"),
        ("Slurm jobs", f"{slurm} of {len(jobs)}" if slurm else "none (local run)"),
        ("first job started", start.isoformat(sep=" ") if start else "—"),
        ("last job ended", end.isoformat(sep=" ", timespec="seconds") if end else "—"),
        ("elapsed", str(end - start).split(".")[0] if start and end else "—"),
        ("job reports", len(jobs)),
    ]
    return {"rows": rows, "code_versions": len(codes), "versions": versions}


def stage_rows(stats: Sequence[StageStats]) -> list[dict[str, Any]]:
    rows = []
    for s in stats:
        meaning, n_in, n_out = in_out(s)
        skip = IN_OUT_KEYS if meaning else ()
        rows.append(
            {
                "stage": s.stage,
                "jobs": s.jobs,
                "meaning": meaning,
                "n_in": n_in,
                "n_out": n_out,
                "chips": chips(s.counts, skip),
                "wall_s": round(s.wall_s, 1),
            }
        )
    return rows


def curation_table(stats: Sequence[StageStats]) -> dict[str, Any] | None:
    """Queries dropped per reason (rows) and query set (columns); None when no curation ran."""
    curate = [s for s in stats if s.stage.startswith("curate")]
    if not curate:
        return None
    dropped = [s.counts.get("dropped_by_reason") or {} for s in curate]
    reasons = list(dict.fromkeys(r for by_reason in dropped for r in by_reason))
    rows = [(reason, *(by_reason.get(reason, 0) for by_reason in dropped)) for reason in reasons]
    rows.append(("total dropped", *(s.counts.get("dropped", 0) for s in curate)))
    rows.append(("kept", *(s.counts.get("kept", 0) for s in curate)))
    return {"header": ("reason", *(s.stage for s in curate)), "rows": rows}


def llm_rows(stats: Sequence[StageStats]) -> list[dict[str, Any]]:
    rows = []
    for s in stats:
        if not s.llm:
            continue
        x = s.llm
        requests = x.get("requests", 0)
        numbers = [
            requests,
            x.get("cache_hits", 0),
            x.get("cache_misses", 0),
            ratio(x.get("cache_hits", 0), requests),
            *(x.get(k, 0) for k in ("failed", "refused", "truncated", "retries")),
            x.get("prompt_tokens", 0),
            x.get("completion_tokens", 0),
            usd(s.cost_usd) if s.cost_usd is not None else None,
        ]
        rows.append({"stage": s.stage, "numbers": numbers, "fingerprints": s.fingerprints})
    return rows


def training_rows(data: RunData, by_stage: Mapping[str, StageStats]) -> list[tuple[Any, ...]]:
    rows = []
    for name, points in data.losses.items():
        stage = by_stage.get(f"train_{name}")
        counts = stage.counts if stage else {}
        losses = [v for _, v in points or []]
        first, last, lowest = (losses[0], losses[-1], min(losses)) if losses else (None, None, None)
        trainer = (counts.get("train_loss"), counts.get("train_runtime"))
        rows.append((name.upper(), len(losses), first, last, lowest, *trainer))
    return rows


def video_facts(data: RunData, by_stage: Mapping[str, StageStats]) -> dict[str, Any] | None:
    """What the video-level feedback did; None when it is off."""
    if not (data.config.get("pairs") or {}).get("video"):
        return None
    facts = []
    videos, rewards, pairs = (by_stage.get(s) for s in ("generate_videos", "score_videos", "video_pairs"))
    if videos:
        c = videos.counts
        facts.append(f"{c.get('videos', 0):,} videos rendered for {c.get('candidates', 0):,} candidates")
    if rewards:
        facts.append(f"{rewards.counts.get('answers_invalid', 0):,} invalid checklist answers")
    if pairs:
        c = pairs.counts
        facts.append(
            f"{c.get('pairs', 0):,} video-level pairs for {c.get('queries', 0):,} queries "
            f"({c.get('queries_without_pair', 0):,} without a clear winner)"
        )
    return {"facts": facts, "pages": data.video_pages, "reward_svg": data.reward_svg}


def provenance_row(job: JobRow) -> dict[str, Any]:
    p = job.record.provenance
    code = p.get("code") or {}
    commit = (code.get("commit") or "")[:10] + (" (dirty)" if code.get("dirty") else "")
    return {
        "stage": job.stage,
        "wildcards": job.wildcards,
        "path": str(job.record.path),
        "host": p.get("host"),
        "slurm_job": p.get("slurm_job_id"),
        "started": p.get("started"),
        "wall_s": p.get("wall_s"),
        "inputs": len(p.get("inputs_sha256") or {}),
        # The models a job loaded (recorded by newer job reports): source -> fingerprint.
        "models": p.get("models") or {},
        "code": commit or None,
    }


def render_summary(data: RunData, plots: Mapping[str, Markup | None]) -> str:
    """The summary page as one HTML string (plots given as inline SVG markup, by name)."""
    stats = stage_stats(data.jobs)
    by_stage = {s.stage: s for s in stats}
    config = redact(with_run_options(data.config, data.run_options))
    return render(
        "summary.html.j2",
        cards=headline(data, by_stage),
        run=run_facts(data.jobs),
        stages=stage_rows(stats),
        curation=curation_table(stats),
        llm=llm_rows(stats),
        priced=any(s.cost_usd is not None for s in stats if s.llm),
        plots=[{"name": n, "svg": plots.get(n), "caption": c} for n, c in PLOT_CAPTIONS.items()],
        training=training_rows(data, by_stage),
        loss_notes=list(data.loss_notes.values()),
        video=video_facts(data, by_stage),
        jobs=[provenance_row(job) for job in data.jobs],
        usage=usage_rows(data.usage),
        config=yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=100),
        run_options=bool(data.run_options),
    )
