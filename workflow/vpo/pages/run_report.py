"""Run report: one self-contained page on what a finished run did, and the plots shown on it.

Reads only what the jobs left behind (their `*.report.json`, the Parquet records, LLaMA-Factory's
trainer logs) and the config, so it takes seconds and can be rebuilt at any time. The page inlines its
SVG plots, so it reads the same inside `snakemake --report` ("Run summary") and as a single file; the
plots are also written beside it ("Plots" in the Snakemake report).
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from vpo.core.io import atomic_write_bytes, read_records
from vpo.core.provenance import log_placement
from vpo.core.queries import read_raw_queries
from vpo.core.run_options import GLOBAL_KEYS
from vpo.core.run_options import from_env as run_options_from_env
from vpo.core.secrets import redact, scrub, secret_env_values
from vpo.core.stage import setup_logging

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

SETS = ("sft", "dpo")
# Pipeline order of the stages; anything else (a stage added later) follows, by first start time.
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
)
# Stages that run once per query set / phase: the set is only in the report's path.
_PHASED = {"curate", "critique", "refine"}
# Statuses that are not a problem; any other status with a count is highlighted.
GOOD_STATUS = {"ok", "included", "yes", "no"}
# Counters outside `by_status` that a reader should notice when they are not zero.
PROBLEM_KEYS = {
    "retried",
    "failed",
    "refused",
    "truncated",
    "truncated_prompts",
    "answers_invalid",
    "videos_with_invalid_answers",
    "queries_without_pair",
}
_STYLE = """
body { font-family: sans-serif; margin: 1em auto; max-width: 1200px; color: #222; }
h2 { border-bottom: 2px solid #4477aa; padding-bottom: 2px; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #eef2f7; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.cards { display: flex; flex-wrap: wrap; gap: 0.8em; }
.card { border: 1px solid #ccd; border-radius: 6px; padding: 0.5em 0.9em; min-width: 11em;
  background: #f8f9fb; }
.card .big { font-size: 1.5em; font-weight: bold; } .card .sub { font-size: 0.8em; color: #555; }
.warn { color: #b22; font-weight: bold; } .note { background: #fff7e0; border-left: 4px solid #e0a000;
  padding: 0.4em 0.8em; margin: 0.5em 0; } .muted { color: #777; }
figure { margin: 1em 0; } figure svg { max-width: 100%; height: auto; }
figcaption { font-size: 0.88em; color: #333; max-width: 900px; }
pre { background: #f4f4f4; padding: 0.6em; font-size: 0.82em; overflow-x: auto; }
code { font-size: 0.92em; }
"""


# ----------------------------------------------------------------------------------------- config


def with_run_options(config: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """The config as the run saw it: the rule's config (without run options) completed with the run
    options the job received."""
    merged = dict(config)
    if not options:
        return merged
    option_llms = options.get("llms") or {}
    merged["llms"] = {
        name: {**entry, **option_llms.get(name, {})} for name, entry in (config.get("llms") or {}).items()
    }
    merged.update({key: options[key] for key in GLOBAL_KEYS if key in options})
    return merged


# ------------------------------------------------------------------------------------ job reports


@dataclass(frozen=True)
class Job:
    """One job report, with the stage label and wildcards read from where it was written."""

    path: str
    stage: str
    wildcards: str
    data: dict[str, Any]

    @property
    def provenance(self) -> dict[str, Any]:
        return self.data.get("provenance") or {}

    @property
    def started(self) -> str:
        return self.provenance.get("started") or ""


def job_label(path: str, stage: str) -> tuple[str, str]:
    """(stage label, wildcards) of a report: critique, refine and curate run once per set, which only
    their path tells (e.g. results/dpo/critiques/shard-0.report.json -> "critique (dpo)", "phase=dpo k=0")."""
    p = Path(path)
    phase = next((part for part in (*p.parts[:-1], p.name.split(".")[0]) if part in SETS), None)
    wildcards = []
    label = stage
    if stage in _PHASED and phase:
        label = f"{stage} ({phase})"
        wildcards.append(f"{'set' if stage == 'curate' else 'phase'}={phase}")
    for name, pattern in (("k", r"shard-(\d+)"), ("p", r"part-(\d+)")):
        match = re.search(pattern, path)
        if match:
            wildcards.append(f"{name}={match.group(1)}")
    return label, " ".join(wildcards)


def load_jobs(paths: Iterable[str | os.PathLike]) -> list[Job]:
    jobs = []
    for path in paths:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        label, wildcards = job_label(str(path), data.get("stage", "?"))
        jobs.append(Job(str(path), label, wildcards, data))
    return sorted(jobs, key=lambda j: (j.started, j.path))


def merge_counts(total: dict[str, Any], counts: Mapping[str, Any]) -> dict[str, Any]:
    """Add one job's counts into the stage total: numbers add up, nested mappings merge, flags OR."""
    for key, value in counts.items():
        if isinstance(value, Mapping):
            merge_counts(total.setdefault(key, {}), value)
        elif isinstance(value, bool):
            total[key] = bool(total.get(key)) or value
        elif isinstance(value, int | float):
            total[key] = total.get(key, 0) + value
        elif value is not None and key not in total:
            total[key] = value
        elif value is not None and total[key] != value and str(value) not in str(total[key]):
            total[key] = f"{total[key]}, {value}"
    return total


@dataclass
class StageStats:
    stage: str
    jobs: int
    counts: dict[str, Any]
    llm: dict[str, Any] | None
    fingerprints: list[str]
    cost_usd: float | None
    wall_s: float


def stage_stats(jobs: Sequence[Job]) -> list[StageStats]:
    """Counts and LLM statistics summed over each stage's jobs, in pipeline order."""
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.stage, []).append(job)
    order = {name: i for i, name in enumerate(STAGE_ORDER)}
    names = sorted(groups, key=lambda s: (order.get(s, len(order)), min(j.started for j in groups[s])))
    stats = []
    for name in names:
        counts: dict[str, Any] = {}
        llm: dict[str, Any] | None = None
        fingerprints: list[str] = []
        cost: float | None = None
        for job in groups[name]:
            merge_counts(counts, job.data.get("counts") or {})
            entry = job.data.get("llm")
            if entry:
                llm = merge_counts(
                    llm if llm is not None else {}, {k: v for k, v in entry.items() if k != "fingerprint"}
                )
                if entry.get("fingerprint") and entry["fingerprint"] not in fingerprints:
                    fingerprints.append(entry["fingerprint"])
                usage = entry.get("usage") or {}
                if usage.get("cost_usd") is not None:
                    cost = (cost or 0.0) + float(usage["cost_usd"])
        wall = sum(float(j.provenance.get("wall_s") or 0) for j in groups[name])
        stats.append(StageStats(name, len(groups[name]), counts, llm, fingerprints, cost, wall))
    return stats


def _get(counts: Mapping[str, Any], dotted: str) -> Any:
    node: Any = counts
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


# What goes in and comes out of each stage: (meaning, count of items in, count of items out).
_IN_OUT: dict[str, tuple[str, Callable[[Mapping], Any], Callable[[Mapping], Any]]] = {
    "curate": ("raw queries → kept", lambda c: c.get("raw"), lambda c: c.get("kept")),
    "draft": ("queries → usable drafts", lambda c: c.get("queries"), lambda c: _get(c, "by_status.ok") or 0),
    "sample": (
        "queries → usable candidates",
        lambda c: c.get("queries"),
        lambda c: _get(c, "by_status.ok") or 0,
    ),
    "critique": ("prompts → verdicts", lambda c: c.get("items"), lambda c: _get(c, "by_status.ok") or 0),
    "refine": ("judged No → refined", lambda c: c.get("judged_no"), lambda c: _get(c, "by_status.ok") or 0),
    "sft_data": ("queries → SFT examples", lambda c: c.get("queries"), lambda c: c.get("examples")),
    "generate_videos": ("candidates → videos", lambda c: c.get("candidates"), lambda c: c.get("videos")),
    "score_videos": ("videos → scored", lambda c: c.get("videos"), lambda c: c.get("videos")),
    "video_pairs": ("queries → video pairs", lambda c: c.get("queries"), lambda c: c.get("pairs")),
    "build_pairs": (
        "text + video pairs → DPO pairs",
        lambda c: (c.get("text_pairs") or 0) + (c.get("video_pairs_in") or 0),
        lambda c: c.get("pairs"),
    ),
}
_IN_OUT_KEYS = {"raw", "kept", "queries", "items", "judged_no", "examples", "candidates", "pairs"}


def in_out(stats: StageStats) -> tuple[str, Any, Any]:
    spec = _IN_OUT.get(stats.stage.split(" ")[0])
    if spec is None:
        return "", None, None
    meaning, n_in, n_out = spec
    return meaning, n_in(stats.counts), n_out(stats.counts)


# --------------------------------------------------------------------------------------- records


def word_count(text: str | None) -> int:
    return len(text.split()) if text else 0


def raw_query_lengths(path: str | os.PathLike) -> list[int]:
    """Words per raw entry, empty entries included (as 0): what curation started from."""
    return [word_count(text) for _, text in read_raw_queries(path)]


def column_lengths(paths: Iterable[str | os.PathLike], column: str) -> list[int]:
    """Words per non-null value of a text column over some record files (prompts without status ok
    are null in every record type, so nulls are what a stage did not produce)."""
    import polars as pl

    lengths: list[int] = []
    for path in paths:
        values = pl.read_parquet(path, columns=[column])[column].to_list()
        lengths.extend(word_count(v) for v in values if v)
    return lengths


def read_trainer_log(model_dir: str | os.PathLike) -> list[dict[str, Any]] | None:
    """Logged training steps with a loss from LLaMA-Factory's trainer_log.jsonl (in the output folder,
    or its adapter/ subfolder for LoRA); None when there is no such file."""
    for path in (Path(model_dir) / "trainer_log.jsonl", Path(model_dir) / "adapter" / "trainer_log.jsonl"):
        if path.is_file():
            rows = []
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a killed run may leave a partial last line
                if isinstance(row, dict) and row.get("loss") is not None:
                    rows.append(row)
            return rows
    return None


def loss_points(rows: Sequence[Mapping[str, Any]]) -> list[tuple[float, float]]:
    points = []
    for i, row in enumerate(rows, start=1):
        step = row.get("current_steps", row.get("step", i))
        points.append((float(step), float(row["loss"])))
    return points


# ------------------------------------------------------------------------------------------ plots


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _median(values: Sequence[int]) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    mid = len(ordered) // 2
    return float(ordered[mid]) if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _histograms(ax: Any, series: Mapping[str, Sequence[int]], xlabel: str, colors: Sequence[str]) -> None:
    """Overlaid histograms on shared integer-aligned bins, n and median in the legend."""
    values = [v for vs in series.values() for v in vs]
    if not values:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="#777")
        ax.set_xlabel(xlabel)
        return
    top = max(values) + 1
    width = max(1, -(-top // 30))  # at most ~30 bins, each a whole number of words
    bins = list(range(0, top + width, width))
    for (label, vs), color in zip(series.items(), colors, strict=False):
        if not vs:
            continue
        text = f"{label} (n={len(vs)}, median {_median(vs):g})"
        ax.hist(vs, bins=bins, alpha=0.35, color=color)
        # An outline on top keeps a series visible where a later one covers it.
        ax.hist(vs, bins=bins, histtype="step", color=color, linewidth=1.6, label=text)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    _integer_axes(ax)
    ax.legend(fontsize=8)


def _integer_axes(ax: Any, y: bool = True) -> None:
    """Whole-number ticks: words, counts and steps have no fractions."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if y:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))


_COLORS = ("#777777", "#4477aa", "#ee6677", "#228833")


def plot_query_lengths(lengths: Mapping[str, Mapping[str, Sequence[int]]]) -> Figure:
    """One panel per query set: words per query in the raw file vs after curation."""
    plt = _pyplot()
    sets = list(lengths) or list(SETS)
    fig, axes = plt.subplots(1, len(sets), figsize=(4.6 * len(sets), 3.3), squeeze=False)
    for ax, name in zip(axes[0], sets, strict=True):
        _histograms(ax, lengths.get(name, {}), "words per query", _COLORS)
        ax.set_title(f"{name.upper()} queries")
    fig.suptitle("Query length before and after curation")
    fig.tight_layout()
    return fig


def plot_prompt_lengths(groups: Mapping[str, Mapping[str, Sequence[int]]]) -> Figure:
    """One panel per phase: words per prompt of what was generated vs what the judge rewrote."""
    plt = _pyplot()
    names = list(groups)
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(4.6 * max(1, len(names)), 3.3), squeeze=False)
    for ax, name in zip(axes[0], names, strict=False):
        _histograms(ax, groups[name], "words per prompt", _COLORS[1:])
        ax.set_title(name)
    fig.suptitle("Prompt length: generated vs refined by the judge")
    fig.tight_layout()
    return fig


def plot_pairs_by_source(pairs: Sequence[Mapping[str, Any]], video_enabled: bool) -> Figure:
    plt = _pyplot()
    sources = ("text", "video")
    counts = [sum(1 for p in pairs if p.get("source") == s) for s in sources]
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    bars = ax.bar(sources, counts, color=["#4477aa", "#ee6677"], width=0.6)
    ax.bar_label(bars, labels=[str(c) for c in counts])
    if not video_enabled:
        ax.text(1, max([*counts, 1]) * 0.1, "off", ha="center", color="#777")
    ax.set_ylabel("DPO pairs")
    ax.set_ylim(0, max([*counts, 1]) * 1.2)
    ax.set_title(f"{len(pairs)} preference pairs by source")
    fig.tight_layout()
    return fig


def plot_loss_curves(curves: Mapping[str, Sequence[tuple[float, float]] | None]) -> Figure:
    """One panel per training stage; a stage without a log says so in its panel."""
    plt = _pyplot()
    names = list(curves)
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(4.6 * max(1, len(names)), 3.1), squeeze=False)
    for ax, name in zip(axes[0], names, strict=False):
        points = curves[name]
        ax.set_title(f"{name.upper()} training loss")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        if not points:
            ax.text(
                0.5, 0.5, "no loss logged", ha="center", va="center", transform=ax.transAxes, color="#777"
            )
            continue
        ax.plot([s for s, _ in points], [v for _, v in points], marker="o", markersize=3, color="#4477aa")
        _integer_axes(ax, y=False)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def save_svg(fig: Figure, path: str | os.PathLike, salt: str) -> str:
    """Write the figure as SVG and return the markup to inline. A fixed salt per plot keeps the file
    identical across rebuilds and keeps element ids distinct between the plots inlined on one page."""
    import io

    import matplotlib

    buffer = io.StringIO()
    # Text stays text (searchable, small files) rather than glyph outlines.
    with matplotlib.rc_context({"svg.hashsalt": salt, "svg.fonttype": "none"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    _pyplot().close(fig)
    svg = buffer.getvalue()
    atomic_write_bytes(path, svg.encode("utf-8"))
    return inline_svg(svg)


def inline_svg(svg: str) -> str:
    """An SVG file's markup without its XML prolog and doctype, to place inside an HTML page."""
    start = svg.find("<svg")
    return svg[start:] if start >= 0 else ""


# ------------------------------------------------------------------------------------------- page


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return _e(value)


def _table(header: Sequence[str] | None, rows: Iterable[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    """An HTML table (no header row when `header` is None); cells are escaped unless given as `Markup`."""
    out = ["<table>"]
    if header is not None:
        out += ["<tr>", *(f"<th>{_e(h)}</th>" for h in header), "</tr>"]
    for row in rows:
        out.append("<tr>")
        for i, cell in enumerate(row):
            text = cell.html if isinstance(cell, Markup) else _num(cell)
            out.append(f"<td class='num'>{text}</td>" if i in numeric else f"<td>{text}</td>")
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


@dataclass(frozen=True)
class Markup:
    """Cell content that is already HTML."""

    html: str


def _chips(counts: Mapping[str, Any], skip: Iterable[str] = ()) -> Markup:
    """Counts as `key: value` items; a problem status or counter that is not zero stands out."""
    parts = []
    for key, value in counts.items():
        if key in skip:
            continue
        if isinstance(value, Mapping):
            inner = []
            for k, v in value.items():
                bad = key.startswith(("by_status", "candidates_without")) and k not in GOOD_STATUS and v
                item = f"{_e(k)} {_num(v)}"
                inner.append(f"<span class='warn'>{item}</span>" if bad else item)
            parts.append(f"{_e(key)}: " + (", ".join(inner) if inner else "<span class='muted'>none</span>"))
        else:
            item = f"{_e(key)}: {_num(value)}"
            parts.append(f"<span class='warn'>{item}</span>" if key in PROBLEM_KEYS and value else item)
    return Markup("<br>".join(parts))


def _card(title: str, big: str, sub: str = "") -> str:
    return (
        f"<div class='card'><div class='sub'>{_e(title)}</div><div class='big'>{_e(big)}</div>"
        f"<div class='sub'>{_e(sub)}</div></div>"
    )


def _usd(value: float) -> str:
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


def _ratio(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "—"


def _figure(svg: str | None, caption: str, name: str) -> str:
    if not svg:
        return f"<p class='note'>Plot {_e(name)} is missing.</p>"
    return f"<figure id='{_e(name)}'>{svg}<figcaption>{caption}</figcaption></figure>"


PLOT_CAPTIONS = {
    "query_lengths": (
        "Words per query in each raw query file (grey; empty entries count as 0) and in the curated set "
        "(blue). Curation drops empty, too short or too long, symbol-heavy and duplicate queries; the "
        "table of drop reasons above says how many of each."
    ),
    "prompt_lengths": (
        "Words per prompt. SFT: the teacher's drafts (with status ok) vs the judge's refinements of the "
        "drafts it judged No. DPO: the SFT policy's K sampled candidates vs the judge's refinements. "
        "Refinements are the chosen side of text-level pairs."
    ),
    "pairs_by_source": (
        "DPO preference pairs by source: text (judge refinement ≻ sampled prompt) and video (checklist-"
        "reward winner ≻ loser, only for queries without a text pair)."
    ),
    "loss_curves": (
        "Training loss per logged step, read from LLaMA-Factory's trainer_log.jsonl (train.logging_steps). "
        "DPO loss starts near ln 2 ≈ 0.693 for the sigmoid loss, where policy and reference agree."
    ),
}


@dataclass
class RunData:
    """Everything the page shows, gathered from the run's files (see `gather`)."""

    jobs: list[Job]
    config: dict[str, Any]
    run_options: dict[str, Any]
    query_lengths: dict[str, dict[str, list[int]]]
    prompt_lengths: dict[str, dict[str, list[int]]]
    pairs: list[dict[str, Any]]
    losses: dict[str, list[tuple[float, float]] | None]
    loss_notes: dict[str, str]
    video_page: str | None = None
    reward_svg: str | None = None


def render_summary(data: RunData, plots: Mapping[str, str | None]) -> str:
    """The summary page as one HTML string (plots given as inline SVG markup, by name)."""
    stats = stage_stats(data.jobs)
    by_stage = {s.stage: s for s in stats}
    video_on = bool((data.config.get("pairs") or {}).get("video"))
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>VPO run summary</title>",
        f"<style>{_STYLE}</style></head><body><h1>VPO run summary</h1>",
        _headline(data, by_stage),
        _run_section(data),
        _stage_section(stats),
        "<h2>Plots</h2>",
        *(_figure(plots.get(name), _e(caption), name) for name, caption in PLOT_CAPTIONS.items()),
        _training_section(data, by_stage),
        _video_section(data, by_stage, video_on),
        _provenance_section(data.jobs),
        _config_section(data),
        "</body></html>",
    ]
    return "".join(parts)


def _headline(data: RunData, by_stage: Mapping[str, StageStats]) -> str:
    cards = []
    for name in SETS:
        curate = by_stage.get(f"curate ({name})")
        if curate:
            raw, kept = curate.counts.get("raw") or 0, curate.counts.get("kept") or 0
            cards.append(_card(f"{name.upper()} queries kept", f"{kept:,} / {raw:,}", _ratio(kept, raw)))
    sft = by_stage.get("sft_data")
    if sft:
        source = sft.counts.get("by_source") or {}
        sub = f"{source.get('draft', 0)} drafts judged Yes, {source.get('refinement', 0)} refinements"
        cards.append(_card("SFT examples", f"{sft.counts.get('examples', 0):,}", sub))
    by_source = {s: sum(1 for p in data.pairs if p.get("source") == s) for s in ("text", "video")}
    cards.append(
        _card("DPO pairs", f"{len(data.pairs):,}", f"text {by_source['text']}, video {by_source['video']}")
    )
    llm = [s.llm for s in by_stage.values() if s.llm]
    if llm:
        requests = sum(x.get("requests", 0) for x in llm)
        hits = sum(x.get("cache_hits", 0) for x in llm)
        tokens = sum(x.get("prompt_tokens", 0) + x.get("completion_tokens", 0) for x in llm)
        cards.append(
            _card("LLM requests", f"{requests:,}", f"{_ratio(hits, requests)} from cache, {tokens:,} tokens")
        )
    costs = [s.cost_usd for s in by_stage.values() if s.cost_usd is not None]
    cards.append(
        _card("Cost", _usd(sum(costs)), "from the job ledgers")
        if costs
        else _card("Cost", "—", "no priced model in this run")
    )
    for name, points in data.losses.items():
        if points:
            cards.append(
                _card(
                    f"{name.upper()} loss",
                    f"{points[0][1]:.3g} → {points[-1][1]:.3g}",
                    f"{len(points)} logged steps",
                )
            )
    wall = sum(float(j.provenance.get("wall_s") or 0) for j in data.jobs)
    cards.append(_card("Jobs", f"{len(data.jobs)}", f"{wall / 60:,.1f} min of job wall time"))
    return f"<div class='cards'>{''.join(cards)}</div>"


def _distinct(values: Iterable[Any]) -> list[Any]:
    seen: list[Any] = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen


def run_span(jobs: Sequence[Job]) -> tuple[datetime | None, datetime | None]:
    """First start and last end (start + wall time) over the jobs that recorded them. Jobs kept from an
    earlier run count too: the span is that of the outputs on disk, not of the last invocation."""
    spans = []
    for job in jobs:
        try:
            start = datetime.strptime(job.started, "%Y-%m-%dT%H:%M:%S%z")
        except ValueError:
            continue
        spans.append((start, start + timedelta(seconds=float(job.provenance.get("wall_s") or 0))))
    if not spans:
        return None, None
    return min(s for s, _ in spans), max(e for _, e in spans)


def _run_section(data: RunData) -> str:
    jobs = data.jobs
    parts = ["<h2>Run summary</h2>"]
    codes = _distinct(
        (j.provenance.get("code") or {}).get("commit") for j in jobs if j.provenance.get("code")
    )
    dirty = any((j.provenance.get("code") or {}).get("dirty") for j in jobs)
    hosts = _distinct(j.provenance.get("host") for j in jobs if j.provenance.get("host"))
    slurm = [j for j in jobs if j.provenance.get("slurm_job_id")]
    start, end = run_span(jobs)
    rows = [
        ("code version (git commit)", ", ".join(str(c) for c in codes) or "unknown"),
        ("uncommitted changes", "yes (some job ran on a dirty tree)" if dirty else "no"),
        ("hosts", ", ".join(hosts) or "unknown"),
        ("Slurm jobs", f"{len(slurm)} of {len(jobs)}" if slurm else "none (local run)"),
        ("first job started", start.isoformat(sep=" ") if start else "—"),
        ("last job ended", end.isoformat(sep=" ", timespec="seconds") if end else "—"),
        ("elapsed", str(end - start).split(".")[0] if start and end else "—"),
        ("job reports", len(jobs)),
    ]
    parts.append(_table(None, rows))
    if len(codes) > 1:
        parts.append(
            f"<p class='note'>Jobs ran on {len(codes)} code versions (outputs kept from earlier runs).</p>"
        )
    versions: dict[str, list[str]] = {}
    for job in jobs:
        for package, version in (job.provenance.get("versions") or {}).items():
            versions.setdefault(package, [])
            if version not in versions[package]:
                versions[package].append(version)
    if versions:
        parts.append("<h3>Package versions</h3>")
        rows = [
            (
                package,
                Markup(
                    ", ".join(_e(v) for v in vs)
                    + (" <span class='warn'>(differ)</span>" if len(vs) > 1 else "")
                ),
            )
            for package, vs in versions.items()
        ]
        parts.append(_table(("package", "version(s) in the job reports"), rows))
    return "".join(parts)


def _stage_section(stats: Sequence[StageStats]) -> str:
    parts = ["<h2>Per-stage statistics</h2>", "<h3>Items</h3>"]
    rows = []
    for s in stats:
        meaning, n_in, n_out = in_out(s)
        skip = _IN_OUT_KEYS if meaning else ()
        rows.append((s.stage, s.jobs, meaning, n_in, n_out, _chips(s.counts, skip), round(s.wall_s, 1)))
    parts.append(
        _table(("stage", "jobs", "items", "in", "out", "counts", "wall s (sum)"), rows, numeric=(1, 3, 4, 6))
    )
    curate = [s for s in stats if s.stage.startswith("curate")]
    if curate:
        reasons = _distinct(r for s in curate for r in (s.counts.get("dropped_by_reason") or {}))
        rows = [
            (reason, *((s.counts.get("dropped_by_reason") or {}).get(reason, 0) for s in curate))
            for reason in reasons
        ]
        rows.append(("total dropped", *(s.counts.get("dropped", 0) for s in curate)))
        rows.append(("kept", *(s.counts.get("kept", 0) for s in curate)))
        parts.append("<h3>Curation: why queries were dropped</h3>")
        parts.append(_table(("reason", *(s.stage for s in curate)), rows, numeric=range(1, len(curate) + 1)))
    with_llm = [s for s in stats if s.llm]
    if with_llm:
        parts.append("<h3>LLM calls</h3>")
        rows = []
        for s in with_llm:
            x = s.llm or {}
            requests = x.get("requests", 0)
            rows.append(
                (
                    s.stage,
                    requests,
                    x.get("cache_hits", 0),
                    x.get("cache_misses", 0),
                    _ratio(x.get("cache_hits", 0), requests),
                    x.get("failed", 0),
                    x.get("refused", 0),
                    x.get("truncated", 0),
                    x.get("retries", 0),
                    x.get("prompt_tokens", 0),
                    x.get("completion_tokens", 0),
                    _usd(s.cost_usd) if s.cost_usd is not None else None,
                    Markup("<br>".join(f"<code>{_e(f)}</code>" for f in s.fingerprints)),
                )
            )
        header = (
            "stage",
            "requests",
            "cache hits",
            "misses",
            "hit rate",
            "failed",
            "refused",
            "truncated (length)",
            "retries",
            "prompt tokens",
            "completion tokens",
            "cost (USD)",
            "model fingerprint",
        )
        parts.append(_table(header, rows, numeric=range(1, 12)))
        if all(s.cost_usd is None for s in with_llm):
            parts.append(
                "<p class='muted'>No job recorded a cost: no model of this run is in <code>prices</code>.</p>"
            )
    return "".join(parts)


def _training_section(data: RunData, by_stage: Mapping[str, StageStats]) -> str:
    parts = ["<h2>Training</h2>"]
    rows = []
    for name, points in data.losses.items():
        counts = (by_stage.get(f"train_{name}") or StageStats("", 0, {}, None, [], None, 0)).counts
        losses = [v for _, v in points or []]
        rows.append(
            (
                name.upper(),
                len(losses),
                losses[0] if losses else None,
                losses[-1] if losses else None,
                min(losses) if losses else None,
                counts.get("train_loss"),
                counts.get("train_runtime"),
            )
        )
    parts.append(
        _table(
            (
                "stage",
                "logged steps",
                "first loss",
                "last loss",
                "lowest loss",
                "train_loss (mean)",
                "runtime s",
            ),
            rows,
            numeric=range(1, 7),
        )
    )
    parts.extend(f"<p class='note'>{_e(note)}</p>" for note in data.loss_notes.values())
    return "".join(parts)


def _video_section(data: RunData, by_stage: Mapping[str, StageStats], video_on: bool) -> str:
    parts = ["<h2>Video-level feedback</h2>"]
    if not video_on:
        parts.append(
            "<p class='muted'>Off in this run (<code>pairs.video: false</code>): text-level pairs only.</p>"
        )
        return "".join(parts)
    videos = by_stage.get("generate_videos")
    rewards = by_stage.get("score_videos")
    pairs = by_stage.get("video_pairs")
    facts = []
    if videos:
        facts.append(
            f"{videos.counts.get('videos', 0):,} videos rendered for "
            f"{videos.counts.get('candidates', 0):,} candidates"
        )
    if rewards:
        facts.append(f"{rewards.counts.get('answers_invalid', 0):,} invalid checklist answers")
    if pairs:
        facts.append(
            f"{pairs.counts.get('pairs', 0):,} video-level pairs for "
            f"{pairs.counts.get('queries', 0):,} queries "
            f"({pairs.counts.get('queries_without_pair', 0):,} without a clear winner)"
        )
    if facts:
        parts.append("<p>" + "; ".join(_e(f) for f in facts) + ".</p>")
    if data.video_page:
        parts.append(
            f"<p>Every query's candidate videos side by side: <a href='{_e(data.video_page)}'>"
            f"{_e(data.video_page)}</a> (category “Video-level feedback” in the Snakemake report).</p>"
        )
    if data.reward_svg:
        parts.append(
            f"<figure>{data.reward_svg}<figcaption>Reward of all rendered candidate videos under both score "
            "conventions (the plot of the video report).</figcaption></figure>"
        )
    return "".join(parts)


def _models(models: Mapping[str, str]) -> Markup:
    """The models a job loaded (recorded by newer job reports), the fingerprint shown on hover."""
    return Markup("<br>".join(f"<code title='{_e(fp)}'>{_e(source)}</code>" for source, fp in models.items()))


def _provenance_section(jobs: Sequence[Job]) -> str:
    rows = []
    for job in jobs:
        p = job.provenance
        code = p.get("code") or {}
        commit = (code.get("commit") or "")[:10] + (" (dirty)" if code.get("dirty") else "")
        rows.append(
            (
                job.stage,
                job.wildcards,
                Markup(f"<code>{_e(job.path)}</code>"),
                p.get("host"),
                p.get("slurm_job_id"),
                p.get("started"),
                p.get("wall_s"),
                len(p.get("inputs_sha256") or {}),
                _models(p.get("models") or {}),
                commit or None,
            )
        )
    header = (
        "stage",
        "wildcards",
        "job report",
        "host",
        "slurm job",
        "started",
        "wall s",
        "inputs",
        "models loaded",
        "code",
    )
    table = _table(header, rows, numeric=(6, 7))
    opened = " open" if len(jobs) <= 60 else ""
    return (
        "<h2>Provenance</h2><p>One row per job report (sha256 of every input, parameters and run options "
        f"are in the report file itself).</p><details{opened}><summary>{len(jobs)} jobs</summary>"
        f"{table}</details>"
    )


def _config_section(data: RunData) -> str:
    shown = redact(with_run_options(data.config, data.run_options))
    text = yaml.safe_dump(shown, sort_keys=False, allow_unicode=True, width=100)
    note = (
        ""
        if data.run_options
        else "<p class='muted'>Run options (pacing, retries, prices, budget) were not available to this "
        "job.</p>"
    )
    return (
        "<h2>Configuration</h2><p>The validated config with defaults filled in. Keys are only ever given by "
        "name (<code>api_key_env</code>): no key value is read or written.</p>"
        f"{note}<details open><summary>config</summary><pre>{_e(text)}</pre></details>"
    )


# ------------------------------------------------------------------------------------ assembling


def _named_paths(items: Sequence[str]) -> dict[str, str]:
    """`name=path` arguments as a mapping (e.g. sft=resources/queries/demo_sft.txt)."""
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"expected NAME=PATH, got {item!r}")
        out[name] = path
    return out


def gather(args: argparse.Namespace, config: dict[str, Any], options: dict[str, Any]) -> RunData:
    jobs = load_jobs(args.reports)
    curated: dict[str, list[int]] = {}
    for path in args.queries:
        for record in read_records(path):
            curated.setdefault(record["set"], []).append(word_count(record["query"]))
    raw = {name: raw_query_lengths(path) for name, path in _named_paths(args.raw_queries).items()}
    query_lengths = {
        name: {"raw": raw.get(name, []), "curated": curated.get(name, [])}
        for name in _distinct([*raw, *curated])
    }
    prompt_lengths = {
        "SFT": {
            "teacher drafts": column_lengths(args.drafts, "prompt"),
            "judge refinements": column_lengths(args.sft_refinements, "refined_prompt"),
        },
        "DPO": {
            "policy candidates": column_lengths(args.candidates, "prompt"),
            "judge refinements": column_lengths(args.dpo_refinements, "refined_prompt"),
        },
    }
    losses: dict[str, list[tuple[float, float]] | None] = {}
    notes: dict[str, str] = {}
    train_reports = {j.stage.removeprefix("train_"): j for j in jobs if j.stage.startswith("train_")}
    for name, model_dir in _named_paths(args.trainer_logs).items():
        rows = read_trainer_log(model_dir)
        if rows is None and train_reports.get(name) and train_reports[name].data.get("loss_curve"):
            # The job report keeps a copy of the log, for a model folder that was moved or pruned.
            rows = [r for r in train_reports[name].data["loss_curve"] if r.get("loss") is not None]
        losses[name] = loss_points(rows) if rows else None
        if rows is None:
            notes[name] = (
                f"{name.upper()}: no trainer_log.jsonl in {model_dir} (nor a loss curve in its job report): "
                "the loss curve is not shown."
            )
        elif not rows:
            notes[name] = f"{name.upper()}: the trainer log of {model_dir} has no step with a loss."
    reward_svg = inline_svg(Path(args.reward_plot).read_text(encoding="utf-8")) if args.reward_plot else None
    video_page = os.path.relpath(args.video_page, Path(args.page).parent) if args.video_page else None
    return RunData(
        jobs=jobs,
        config=config,
        run_options=options,
        query_lengths=query_lengths,
        prompt_lengths=prompt_lengths,
        pairs=read_records(args.pairs) if args.pairs else [],
        losses=losses,
        loss_notes=notes,
        video_page=video_page,
        reward_svg=reward_svg,
    )


def write_plots(data: RunData, paths: Mapping[str, str]) -> dict[str, str]:
    """Write every plot to its path; the inline markup of each, by name."""
    video_on = bool((data.config.get("pairs") or {}).get("video"))
    figures = {
        "query_lengths": lambda: plot_query_lengths(data.query_lengths),
        "prompt_lengths": lambda: plot_prompt_lengths(data.prompt_lengths),
        "pairs_by_source": lambda: plot_pairs_by_source(data.pairs, video_on),
        "loss_curves": lambda: plot_loss_curves(data.losses),
    }
    return {name: save_svg(make(), paths[name], salt=name) for name, make in figures.items() if name in paths}


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vpo.pages.run_report", description=__doc__)
    p.add_argument("--reports", nargs="+", required=True, help="job reports (*.report.json) to summarize")
    p.add_argument(
        "--config-json", type=json.loads, required=True, help="validated config (without run options)"
    )
    p.add_argument("--raw-queries", nargs="+", default=[], metavar="SET=PATH", help="raw query files by set")
    p.add_argument("--queries", nargs="+", default=[], help="curated query records")
    p.add_argument("--drafts", nargs="*", default=[], help="SFT draft records")
    p.add_argument("--sft-refinements", nargs="*", default=[])
    p.add_argument("--candidates", nargs="*", default=[], help="DPO candidate records")
    p.add_argument("--dpo-refinements", nargs="*", default=[])
    p.add_argument("--pairs", default=None, help="DPO pair records")
    p.add_argument(
        "--trainer-logs", nargs="*", default=[], metavar="STAGE=DIR", help="training output folders"
    )
    p.add_argument("--reward-plot", default=None, help="reward histogram SVG of the video report")
    p.add_argument("--video-page", default=None, help="the video report page, linked from the summary")
    p.add_argument("--page", required=True, help="summary HTML to write")
    for name in PLOT_CAPTIONS:
        p.add_argument(f"--plot-{name.replace('_', '-')}", required=True, help=f"{name} SVG to write")
    return p


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    log_placement("run_report")
    args = make_parser().parse_args(argv)
    options = run_options_from_env()
    data = gather(args, args.config_json, options)
    plots = write_plots(data, {name: getattr(args, f"plot_{name}") for name in PLOT_CAPTIONS})
    page = render_summary(data, plots)
    page = scrub(page, secret_env_values(os.environ, with_run_options(args.config_json, options)))
    atomic_write_bytes(args.page, page.encode("utf-8"))
    log.info(
        "run summary %s (%d bytes, %d job reports), plots %s",
        args.page,
        len(page),
        len(data.jobs),
        sorted(plots),
    )


if __name__ == "__main__":
    main()
