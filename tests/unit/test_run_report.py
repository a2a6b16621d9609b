"""The run report on a small synthetic run: stage statistics, provenance rows, plots, missing loss logs,
and no secret on the page."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from vpo.core.ids import query_id
from vpo.core.io import write_records
from vpo.core.run_options import RUN_OPTIONS_ENV, run_options, with_run_options, without_run_options
from vpo.pages import run_report
from vpo.pages.jobs import job_label
from vpo.pages.plots import PLOT_CAPTIONS
from vpo.pages.records import loss_points, read_trainer_log
from vpo.pages.stats import merge_counts

FAKE_SECRET = "sk-test-0123456789abcdef-not-a-real-key"
KEY_ENV = "VPO_TEST_JUDGE_KEY"

CONFIG: dict[str, Any] = {
    "seed": 0,
    "queries": {"sft": "raw/sft.txt", "dpo": "raw/dpo.txt"},
    "llms": {
        "judge": {
            "backend": "openai",
            "base_url": "https://api.example.com/v1",
            "model": "gpt-4o",
            "api_key_env": KEY_ENV,
            "max_concurrency": 64,
        }
    },
    "prices": {"gpt-4o": {"input_per_mtok": 2.5, "output_per_mtok": 10.0, "batch_discount": 0.5}},
    "budget_usd": 25.0,
    "pairs": {"video": False, "margin": 0.5, "score_convention": "vpo_sum", "shuffle_seed": 0},
}


def query(text: str, set_name: str, line: int) -> dict[str, Any]:
    return {
        "query_id": query_id(text),
        "query": text,
        "set": set_name,
        "source_file": f"raw/{set_name}.txt",
        "source_line": line,
    }


def generation(text: str, index: int, prompt: str | None) -> dict[str, Any]:
    return {
        "item_id": f"{query_id(text)}-{index}",
        "query_id": query_id(text),
        "query": text,
        "sample_index": index,
        "prompt": prompt,
        "status": "ok" if prompt else "empty",
        "raw": prompt,
        "finish_reason": "stop",
        "seed": index,
        "model_fingerprint": "hf|dir:test",
        "error": None,
    }


def refinement(text: str, prompt: str, refined: str | None) -> dict[str, Any]:
    return {
        "item_id": f"{query_id(text)}-0",
        "query_id": query_id(text),
        "query": text,
        "sample_index": 0,
        "prompt": prompt,
        "refined_prompt": refined,
        "reflection": None,
        "status": "ok" if refined else "unparsed",
        "attempts": 1,
        "raw": refined,
        "finish_reason": "stop",
        "seed": 0,
        "model_fingerprint": "openai|gpt-4o",
        "error": None,
    }


def pair(text: str, source: str) -> dict[str, Any]:
    return {
        "pair_id": f"{source}-{query_id(text)}",
        "query_id": query_id(text),
        "query": text,
        "chosen": "a long detailed prompt",
        "rejected": "a short prompt",
        "source": source,
        "chosen_id": f"{query_id(text)}-0",
        "chosen_kind": "refinement" if source == "text" else "candidate",
        "rejected_id": f"{query_id(text)}-1",
        "score_margin": None if source == "text" else 1.5,
        "score_convention": None if source == "text" else "vpo_sum",
        "chosen_video_id": None if source == "text" else "v0",
        "rejected_video_id": None if source == "text" else "v1",
    }


def job_report(
    path: Path,
    stage: str,
    counts: dict[str, Any],
    llm: dict[str, Any] | None = None,
    host: str = "node-a17",
    slurm: str | None = "987654",
    started: str = "2026-01-02T03:04:05+0000",
    wall_s: float = 12.5,
    inputs: int = 2,
    extra: dict[str, Any] | None = None,
) -> str:
    """A job report in vpo.core.provenance.JobReport's format."""
    data: dict[str, Any] = {"stage": stage, "counts": counts, **(extra or {})}
    if llm is not None:
        data["llm"] = llm
    data["provenance"] = {
        "inputs_sha256": {f"in-{i}": "0" * 64 for i in range(inputs)},
        "models": {"results/models/sft": "dir:0123456789abcdef"} if stage == "train_dpo" else {},
        "params": {"note": f"a job that saw {FAKE_SECRET} by mistake"},
        "run_options": {},
        "code": {"commit": "abcdef0123456789abcdef0123456789abcdef01", "dirty": False},
        "versions": {"python": "3.11.7", "polars": "2.1.0", "transformers": "5.6.0"},
        "host": host,
        "slurm_job_id": slurm,
        "argv": ["x"],
        "started": started,
        "wall_s": wall_s,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return str(path)


SFT_TEXTS = ["a cat on a sofa", "a dog running on the beach at sunset", "rain over a neon city street"]
DPO_TEXTS = ["a chef flipping pancakes", "an astronaut riding a horse on the moon"]


def make_run(root: Path, with_loss: bool = True) -> list[str]:
    """A finished run's files under `root`; returns the CLI arguments of the report job."""
    raw = root / "raw"
    raw.mkdir(parents=True)
    (raw / "sft.txt").write_text("\n".join([*SFT_TEXTS, "", "ab", SFT_TEXTS[0]]) + "\n")
    (raw / "dpo.txt").write_text("\n".join([*DPO_TEXTS, "!!! ### $$$"]) + "\n")
    res = root / "results"
    write_records(
        res / "queries/sft.parquet", [query(t, "sft", i + 1) for i, t in enumerate(SFT_TEXTS)], "query"
    )
    write_records(
        res / "queries/dpo.parquet", [query(t, "dpo", i + 1) for i, t in enumerate(DPO_TEXTS)], "query"
    )
    drafts = [generation(t, 0, f"{t}, cinematic lighting, slow pan") for t in SFT_TEXTS]
    write_records(res / "sft/drafts/shard-0.parquet", drafts, "generation")
    refined = [
        refinement(SFT_TEXTS[0], drafts[0]["prompt"], "a fluffy cat naps on a velvet sofa, warm light")
    ]
    refined.append(refinement(SFT_TEXTS[1], drafts[1]["prompt"], None))
    write_records(res / "sft/refinements/shard-0.parquet", refined, "refinement")
    candidates = [
        generation(t, i, f"{t} in {i + 2} words" if i == 0 else None) for t in DPO_TEXTS for i in (0, 1)
    ]
    write_records(res / "dpo/candidates/shard-0.parquet", candidates, "generation")
    write_records(
        res / "dpo/refinements/shard-0.parquet",
        [refinement(DPO_TEXTS[0], "p", "a chef flips golden pancakes in a busy diner kitchen")],
        "refinement",
    )
    write_records(
        res / "dpo/pairs.parquet", [pair(DPO_TEXTS[0], "text"), pair(DPO_TEXTS[1], "video")], "pair"
    )

    judge = {
        "fingerprint": "openai|gpt-4o",
        "requests": 37,
        "cache_hits": 29,
        "cache_misses": 8,
        "failed": 1,
        "truncated": 0,
        "refused": 2,
        "prompt_tokens": 61728,
        "completion_tokens": 4321,
        "retries": 3,
        "usage": {"cost_usd": 0.0123, "priced": True, "mode": "online", "over_budget": False},
    }
    reports = [
        job_report(
            res / "queries/sft.report.json",
            "curate",
            {
                "raw": 6,
                "kept": 3,
                "dropped": 3,
                "dropped_by_reason": {"empty": 1, "too_short": 1, "exact_duplicate": 1},
            },
        ),
        job_report(
            res / "queries/dpo.report.json",
            "curate",
            {"raw": 3, "kept": 2, "dropped": 1, "dropped_by_reason": {"special_chars": 1}},
        ),
        job_report(
            res / "sft/drafts/shard-0.report.json",
            "draft",
            {"queries": 3, "prompts": 3, "by_status": {"ok": 3}},
            llm={**judge, "usage": None},
        ),
        job_report(
            res / "sft/critiques/shard-0.report.json",
            "critique",
            {"items": 3, "by_status": {"ok": 2, "unparsed": 1}, "by_verdict": {"no": 2}, "retried": 1},
            llm=judge,
        ),
        job_report(
            res / "dpo/critiques/shard-0.report.json",
            "critique",
            {
                "items": 4,
                "by_status": {"ok": 2, "skipped": 2},
                "by_verdict": {"no": 1, "yes": 1},
                "retried": 0,
            },
            llm=judge,
            host="node-b02",
            slurm=None,
        ),
        job_report(
            res / "sft/refinements/shard-0.report.json",
            "refine",
            {"judged_no": 2, "by_status": {"ok": 1, "unparsed": 1}, "retried": 1},
        ),
        job_report(res / "models/sft.report.json", "train_sft", {"train_loss": 2.5, "train_runtime": 4.2}),
        job_report(
            res / "dpo/pairs.report.json", "build_pairs", {"text_pairs": 1, "video_pairs_in": 1, "pairs": 2}
        ),
    ]
    sft_dir, dpo_dir = res / "models/sft", res / "models/dpo"
    sft_dir.mkdir(parents=True)
    (dpo_dir / "adapter").mkdir(parents=True)  # LoRA: LLaMA-Factory logs into the adapter folder
    if with_loss:
        log = [
            {"current_steps": s, "total_steps": 4, "loss": 2.9 - 0.2 * s, "lr": 1e-5} for s in (1, 2, 3, 4)
        ]
        (sft_dir / "trainer_log.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in log) + '{"current_st'
        )
        dpo_log = [{"current_steps": s, "loss": 0.693 - 0.01 * s} for s in (1, 2)]
        (dpo_dir / "adapter/trainer_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in dpo_log))
    out = root / "results/report"
    args = ["--reports", *reports, "--config-json", json.dumps(without_run_options(CONFIG))]
    args += ["--raw-queries", f"sft={raw / 'sft.txt'}", f"dpo={raw / 'dpo.txt'}"]
    args += ["--queries", str(res / "queries/sft.parquet"), str(res / "queries/dpo.parquet")]
    args += ["--drafts", str(res / "sft/drafts/shard-0.parquet")]
    args += ["--sft-refinements", str(res / "sft/refinements/shard-0.parquet")]
    args += ["--candidates", str(res / "dpo/candidates/shard-0.parquet")]
    args += ["--dpo-refinements", str(res / "dpo/refinements/shard-0.parquet")]
    args += ["--pairs", str(res / "dpo/pairs.parquet"), "--trainer-logs", f"sft={sft_dir}", f"dpo={dpo_dir}"]
    args += ["--page", str(out / "summary.html")]
    for name in PLOT_CAPTIONS:
        args += [f"--plot-{name.replace('_', '-')}", str(out / f"{name}.svg")]
    return args


@pytest.fixture
def finished_run(tmp_path, monkeypatch) -> Path:
    """The report job run on a synthetic run, with the workflow's environment (run options, a key)."""
    monkeypatch.setenv(RUN_OPTIONS_ENV, json.dumps(run_options(CONFIG)))
    monkeypatch.setenv(KEY_ENV, FAKE_SECRET)
    run_report.main(make_run(tmp_path))
    return tmp_path / "results/report"


def cells(page: str) -> list[str]:
    return re.findall(r"<td[^>]*>(.*?)</td>", page)


def test_page_shows_stage_statistics(finished_run):
    page = (finished_run / "summary.html").read_text()
    table = cells(page)
    # LLM statistics per stage (the critique of each phase is its own stage)
    assert "critique (sft)" in table and "critique (dpo)" in table and "draft" in table
    assert "61,728" in table and "4,321" in table  # prompt and completion tokens of one job
    assert "29" in table and "78%" in table  # cache hits, hit rate 29/37
    assert "$0.0123" in table  # the cost of a job with a ledger entry
    assert "$0.0246" in page  # headline: 2 judge jobs at 0.0123; the draft recorded no usage
    # items in/out and the status counts, problems highlighted
    assert "raw queries → kept" in table and "queries → usable drafts" in table
    assert "<span class='warn'>unparsed 1</span>" in page
    assert "<span class='warn'>skipped 2</span>" in page
    # curation's drop reasons, per set
    drop = page[page.index("why queries were dropped") :]
    for reason in ("empty", "too_short", "exact_duplicate", "special_chars"):
        assert f"<td>{reason}</td>" in drop
    assert "3 / 6" in page and "2 / 3" in page  # kept / raw headline per set
    assert "text 1, video 1" in page  # pairs by source


def test_page_has_one_provenance_row_per_job(finished_run):
    page = (finished_run / "summary.html").read_text()
    provenance = page[page.index("<h2>Provenance</h2>") :]
    rows = re.findall(r"<tr><td>.*?</tr>", provenance.split("</details>")[0])
    assert len(rows) == 8
    assert "node-a17" in provenance and "node-b02" in provenance and "987654" in provenance
    assert "phase=dpo k=0" in provenance and "set=sft" in provenance
    assert "results/dpo/critiques/shard-0.report.json" in provenance
    assert "abcdef0123" in provenance and "2026-01-02T03:04:05+0000" in provenance
    assert "<td>polars</td><td>2.1.0</td>" in page  # package versions from the reports


def test_key_is_named_never_shown(finished_run):
    page = (finished_run / "summary.html").read_text()
    assert f"api_key_env: {KEY_ENV}" in page  # the name, from the run options the job received
    assert "max_concurrency: 64" in page and "budget_usd: 25.0" in page
    assert FAKE_SECRET not in page  # not even where a job report carried it by mistake
    for svg in finished_run.glob("*.svg"):
        assert FAKE_SECRET not in svg.read_text()


def test_every_plot_is_written_and_inlined(finished_run):
    page = (finished_run / "summary.html").read_text()
    for name in PLOT_CAPTIONS:
        svg = (finished_run / f"{name}.svg").read_text()
        assert len(svg) > 1000 and "<svg" in svg
        assert f"<figure id='{name}'><svg" in page
    assert "no loss logged" not in (finished_run / "loss_curves.svg").read_text()
    assert "Query length before and after curation" in (finished_run / "query_lengths.svg").read_text()
    assert "<?xml" not in page  # inlined without the files' prolog


def test_missing_loss_logs_give_a_note(tmp_path):
    args = make_run(tmp_path, with_loss=False)
    run_report.main(args)
    page = (tmp_path / "results/report/summary.html").read_text()
    assert "SFT: no trainer_log.jsonl" in page and "DPO: no trainer_log.jsonl" in page
    assert "no loss logged" in (tmp_path / "results/report/loss_curves.svg").read_text()


def test_loss_falls_back_to_the_job_report_copy(tmp_path):
    report = tmp_path / "train.report.json"
    job_report(report, "train_dpo", {}, extra={"loss_curve": [{"current_steps": 1, "loss": 0.69}]})
    args = make_run(tmp_path / "run", with_loss=False)
    args[args.index("--reports") + 1 : args.index("--reports") + 1] = [str(report)]
    run_report.main(args)
    page = (tmp_path / "run/results/report/summary.html").read_text()
    assert "DPO: no trainer_log.jsonl" not in page and "SFT: no trainer_log.jsonl" in page
    # the model a job loaded, with its fingerprint (provenance.models)
    assert "<code title='dir:0123456789abcdef'>results/models/sft</code>" in page


def test_trainer_log_reader_skips_steps_without_loss_and_a_torn_line(tmp_path):
    (tmp_path / "trainer_log.jsonl").write_text(
        '{"current_steps": 1, "loss": 1.5}\n{"current_steps": 2, "total_steps": 2}\n{"current_steps": 3, "lo'
    )
    rows = read_trainer_log(tmp_path)
    assert loss_points(rows) == [(1.0, 1.5)]
    assert read_trainer_log(tmp_path / "missing") is None


def test_run_options_leave_params_and_come_back_for_display():
    params = without_run_options(CONFIG)
    assert "prices" not in params and "budget_usd" not in params
    assert "api_key_env" not in params["llms"]["judge"] and params["llms"]["judge"]["model"] == "gpt-4o"
    assert with_run_options(params, run_options(CONFIG)) == {
        **CONFIG,
        "llms": {"judge": CONFIG["llms"]["judge"]},
    }


def test_job_labels_and_count_merging():
    assert job_label("results/dpo/critiques/shard-3.report.json", "critique") == (
        "critique (dpo)",
        "phase=dpo k=3",
    )
    assert job_label("results/queries/sft.report.json", "curate") == ("curate (sft)", "set=sft")
    assert job_label("results/dpo/rewards/shard-0/part-2.report.json", "score_videos") == (
        "score_videos",
        "k=0 p=2",
    )
    total = merge_counts({}, {"n": 1, "by_status": {"ok": 2}, "flag": False})
    merge_counts(total, {"n": 2, "by_status": {"ok": 1, "failed": 1}, "flag": True})
    assert total == {"n": 3, "by_status": {"ok": 3, "failed": 1}, "flag": True}


def test_evaluation_jobs_are_rows_and_stages_of_their_own(tmp_path):
    args = make_run(tmp_path)
    res = tmp_path / "results/eval"
    evaluation = [
        job_report(res / "queries.report.json", "eval_queries", {"raw": 4, "kept": 3}),
        job_report(res / "dpo/prompts.report.json", "eval_prompts", {"queries": 3, "by_status": {"ok": 3}}),
        job_report(res / "dpo/judgements.report.json", "eval_judge", {"items": 3, "by_status": {"ok": 3}}),
        # The evaluation renders and scores with the training's stages.
        job_report(res / "dpo/videos/part-0.report.json", "generate_videos", {"candidates": 3, "videos": 6}),
        job_report(res / "dpo/rewards/part-0.report.json", "score_videos", {"videos": 6}),
        job_report(res / "table.report.json", "eval_table", {"methods": 2, "queries": 3}),
    ]
    args[args.index("--reports") + 1 : args.index("--reports") + 1] = evaluation
    run_report.main(args)
    page = (tmp_path / "results/report/summary.html").read_text()
    provenance = page[page.index("<h2>Provenance</h2>") :].split("</details>")[0]
    rows = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td>", provenance)
    assert len(rows) == 8 + len(evaluation)
    assert {
        ("eval_queries", ""),
        ("eval_prompts", "method=dpo"),
        ("eval_judge", "method=dpo"),
        ("generate_videos (eval)", "method=dpo p=0"),
        ("score_videos (eval)", "method=dpo p=0"),
        ("eval_table", ""),
    } <= set(rows)
    # Per-stage statistics: after the training stages, and not merged into the training's video stages.
    items = cells(page[page.index("<h3>Items</h3>") : page.index("<h3>Curation")])
    stages = [cell for cell in items if re.fullmatch(r"[a-z_]+( \([a-z]+\))?", cell)]
    assert stages[-7:] == [
        "build_pairs",
        "eval_queries",
        "eval_prompts",
        "eval_judge",
        "generate_videos (eval)",
        "score_videos (eval)",
        "eval_table",
    ]
    assert "generate_videos" not in stages and "candidates → videos" in items


def job_reports_of_the_dag(*config: str) -> tuple[set[str], set[str]]:
    """(every job report the DAG's jobs write, the job reports rule run_report reads), from a dry run."""
    command = [sys.executable, "-m", "snakemake", "all", "-n", "-F", "--nolock", "--cores", "1"]
    command += [
        "--directory",
        str(REPO),
        "--workflow-profile",
        "none",
        *(["--config", *config] if config else []),
    ]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    written: set[str] = set()
    read: set[str] = set()
    rule = None
    for line in run.stdout.splitlines():
        if match := re.match(r"(?:local)?rule (\w+):", line):
            rule = match.group(1)
        elif match := re.match(r"\s+(input|output): (.*)", line):
            reports = {p for p in match.group(2).split(", ") if p.endswith("report.json")}
            if match.group(1) == "output":
                written |= reports
            elif rule == "run_report":
                read |= reports
    return written, read


@pytest.mark.slow
@pytest.mark.parametrize(
    "config",
    [(), ("pairs={video: false}", "eval={enabled: false}")],
    ids=["default", "no-video-no-eval"],
)
def test_run_report_reads_every_job_report_the_run_writes(config):
    written, read = job_reports_of_the_dag(*config)
    assert read == written
    assert any("/eval/" in path for path in written) == (not config)
