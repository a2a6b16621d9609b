"""Run report: one self-contained page on what a finished run did, and the plots shown on it.

Reads only what the jobs left behind (their `*.report.json`, the Parquet records, LLaMA-Factory's
trainer logs) and the config, so it takes seconds and can be rebuilt at any time. The page inlines its
SVG plots, so it reads the same inside `snakemake --report` ("Run summary") and as a single file; the
plots are also written beside it ("Plots" in the Snakemake report). This module reads the arguments and
puts the pieces together: jobs (job table), stats (per stage), records and plots, summary (the page).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from markupsafe import Markup, escape

from vpo.core.io import atomic_write_bytes, read_records
from vpo.core.provenance import log_placement
from vpo.core.run_options import from_env as run_options_from_env
from vpo.core.run_options import with_run_options
from vpo.core.secrets import scrub, secret_env_values
from vpo.core.stage import setup_logging
from vpo.pages.jobs import load_jobs
from vpo.pages.plots import (
    PLOT_CAPTIONS,
    inline_svg,
    plot_loss_curves,
    plot_pairs_by_source,
    plot_prompt_lengths,
    plot_query_lengths,
    plot_rounds,
    save_svg,
)
from vpo.pages.records import (
    column_lengths,
    loss_points,
    raw_query_lengths,
    read_trainer_log,
    round_feedback,
    word_count,
)
from vpo.pages.resources import rule_usage
from vpo.pages.summary import RunData, render_summary

log = logging.getLogger(__name__)


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
        for name in dict.fromkeys([*raw, *curated])
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
    train_reports = {
        j.stage.removeprefix("train_"): j.record.data for j in jobs if j.stage.startswith("train_")
    }
    for name, model_dir in _named_paths(args.trainer_logs).items():
        rows = read_trainer_log(model_dir)
        if rows is None and train_reports.get(name) and train_reports[name].get("loss_curve"):
            # The job report keeps a copy of the log, for a model folder that was moved or pruned.
            rows = [r for r in train_reports[name]["loss_curve"] if r.get("loss") is not None]
        losses[name] = loss_points(rows) if rows else None
        if rows is None:
            notes[name] = (
                f"{name.upper()}: no trainer_log.jsonl in {model_dir} (nor a loss curve in its job report): "
                "the loss curve is not shown."
            )
        elif not rows:
            notes[name] = f"{name.upper()}: the trainer log of {model_dir} has no step with a loss."
    convention = (config.get("pairs") or {}).get("score_convention", "vpo_sum")
    pass_rates, round_rewards = round_feedback(
        args.round_feedback, list(config.get("targets") or {}), convention
    )
    reward_svg = inline_svg(Path(args.reward_plot).read_text(encoding="utf-8")) if args.reward_plot else None
    video_pages = [os.path.relpath(page, Path(args.page).parent) for page in args.video_page]
    return RunData(
        jobs=jobs,
        config=config,
        run_options=options,
        query_lengths=query_lengths,
        prompt_lengths=prompt_lengths,
        pairs=[record for path in args.pairs for record in read_records(path)],
        losses=losses,
        loss_notes=notes,
        video_pages=video_pages,
        reward_svg=reward_svg,
        usage=rule_usage(args.rule_usage) if args.rule_usage else [],
        round_pass_rates=pass_rates,
        round_rewards=round_rewards,
    )


def write_plots(data: RunData, paths: Mapping[str, str]) -> dict[str, Markup]:
    """Write every plot to its path; the inline markup of each, by name."""
    video_on = bool((data.config.get("pairs") or {}).get("video"))
    figures = {
        "query_lengths": lambda: plot_query_lengths(data.query_lengths),
        "prompt_lengths": lambda: plot_prompt_lengths(data.prompt_lengths),
        "pairs_by_source": lambda: plot_pairs_by_source(data.pairs, video_on),
        "loss_curves": lambda: plot_loss_curves(data.losses),
        "rounds": lambda: plot_rounds(
            data.round_pass_rates,
            data.round_rewards,
            (data.config.get("pairs") or {}).get("score_convention", ""),
        ),
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
    p.add_argument("--pairs", nargs="*", default=[], help="DPO pair records of every round and target")
    p.add_argument(
        "--round-feedback", nargs="*", default=[],
        help="the DPO rounds' critique and reward records (results/dpo/round-<r>/...)",
    )  # fmt: skip
    p.add_argument(
        "--trainer-logs", nargs="*", default=[], metavar="STAGE=DIR", help="training output folders"
    )
    p.add_argument(
        "--reward-plot", default=None, help="reward histogram SVG of round 1's (first target's) video page"
    )
    p.add_argument(
        "--video-page",
        nargs="*",
        default=[],
        help="the video pages (one per round and target), linked from the summary",
    )
    p.add_argument(
        "--rule-usage",
        type=json.loads,
        default=None,
        help="per rule: benchmark and job-report path patterns and mem_mb (JSON, from report.smk)",
    )
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
    secrets = secret_env_values(os.environ, with_run_options(args.config_json, options))
    # scrub also looks for html.escape's form of each value; the templates escape quotes as markupsafe does.
    secrets |= {f"{name} (markupsafe)": str(escape(value)) for name, value in secrets.items()}
    page = scrub(page, secrets)
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
