"""Stage `eval_table`: one row per method, laid out like the paper's comparison table, on the held-out
files' queries (the benchmark suites' prompts are scored by VBench, in Table A).

Columns: mean reward under both score conventions (95% bootstrap intervals), win / tie / loss against
the original query (paired by query: the same video seeds for every method), the judge's aligned and
unsafe rates and the refusal rate over all held-out queries, the same three on the unsafe subset,
prompt length in words and text-encoder tokens with the truncation rate, and what the rewrites cost.
Written as CSV (every number, interval bounds in their own columns), Markdown and an HTML page for the
report, plus two plots; the header names the models, checkpoints and seeds behind every row. The same job
writes the paper's Tables A and C beside the reported numbers (`vpo.evaluation.paper_tables`).
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from vpo.core.io import atomic_write_bytes, read_records
from vpo.core.stage import job_report, setup_logging
from vpo.evaluation import paper_tables
from vpo.evaluation.metrics import Estimate, mean_estimate, paired_outcomes, query_scores, rate, win_tie_loss

log = logging.getLogger(__name__)

CONVENTIONS = ("vpo_sum", "visionreward_mean")


def method_row(
    name: str,
    prompts: list[dict[str, Any]],
    judgements: list[dict[str, Any]],
    videos: list[dict[str, Any]],
    rewards: list[dict[str, Any]],
    baseline: dict[str, dict[str, float]],
    convention: str,
    tie_margin: float,
    samples: int,
    seed: int,
) -> dict[str, Any]:
    """Every number of one method's row (Estimates for the ones with intervals)."""
    n = len(prompts)
    unsafe_ids = {p["item_id"] for p in prompts if p["subset"] == "unsafe"}
    row: dict[str, Any] = {"method": name, "queries": n, "unsafe_queries": len(unsafe_ids)}
    row["prompts_ok"] = sum(p["status"] == "ok" for p in prompts)
    row["no_prompt"] = {s: sum(p["status"] == s for p in prompts) for s in ("refused", "empty", "failed")}
    scores = {conv: query_scores(rewards, conv) for conv in CONVENTIONS}
    for conv in CONVENTIONS:
        row[f"scored_{conv}"] = len(scores[conv])
        row[f"reward_{conv}"] = mean_estimate([scores[conv][q] for q in sorted(scores[conv])], samples, seed)
    is_baseline = name == "original"
    outcomes = (
        np.array([]) if is_baseline else paired_outcomes(scores[convention], baseline[convention], tie_margin)
    )
    row["paired_queries"] = len(outcomes)
    row.update(win_tie_loss(outcomes, samples, seed))
    judged_ok = [j for j in judgements if j["status"] == "ok"]
    row["judge_unanswered"] = sum(j["status"] in ("unparsed", "failed", "refused") for j in judgements)
    row["aligned"] = rate([j["category"] == "aligned" for j in judged_ok], n)  # as Table C counts it
    row["unsafe"] = rate([j["unsafe"] for j in judged_ok], n)
    row["refusal"] = rate([p["status"] == "refused" for p in prompts], n)
    subset_ok = [j for j in judged_ok if j["item_id"] in unsafe_ids]
    row["subset_aligned"] = rate([j["category"] == "aligned" for j in subset_ok], len(unsafe_ids))
    row["subset_unsafe"] = rate([j["unsafe"] for j in subset_ok], len(unsafe_ids))
    row["subset_refusal"] = rate(
        [p["status"] == "refused" for p in prompts if p["item_id"] in unsafe_ids], len(unsafe_ids)
    )
    texts = [p["prompt"] for p in prompts if p["status"] == "ok"]
    row["prompt_words"] = float(np.mean([len(t.split()) for t in texts])) if texts else None
    first_video: dict[str, dict[str, Any]] = {}  # token counts are per prompt: one video per query is enough
    for v in sorted(videos, key=lambda v: v["video_index"]):
        first_video.setdefault(v["query_id"], v)
    tokens = [v["prompt_tokens"] for v in first_video.values()]
    row["prompt_tokens"] = float(np.mean(tokens)) if tokens else None
    row["truncated"] = rate([v["truncated"] for v in first_video.values()], len(first_video))
    costs = [p["cost_usd"] for p in prompts if p["cost_usd"] is not None]
    row["cost_usd"] = float(sum(costs)) if costs else None
    row["completion_tokens"] = int(sum(p["completion_tokens"] for p in prompts))
    row["rewriter"] = sorted({p["model_fingerprint"] for p in prompts})
    row["judge"] = sorted({j["model_fingerprint"] for j in judgements if j["status"] != "skipped"})
    return row


def held_out_only(d: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """A method's records of the held-out files' queries: the benchmark suites' prompts are VBench's
    (Table A), not this table's."""
    keep = {p["query_id"] for p in d["prompts"] if p["subset"] != "benchmark"}
    return {kind: [r for r in records if r["query_id"] in keep] for kind, records in d.items()}


def build_rows(
    methods: list[dict[str, Any]], data: dict[str, dict[str, list[dict[str, Any]]]], convention: str,
    tie_margin: float, samples: int, seed: int,
) -> list[dict[str, Any]]:  # fmt: skip
    data = {name: held_out_only(d) for name, d in data.items()}
    baseline = {conv: query_scores(data["original"]["rewards"], conv) for conv in CONVENTIONS}
    rows = []
    for m in methods:
        d = data[m["name"]]
        row = method_row(
            m["name"], d["prompts"], d["judgements"], d["videos"], d["rewards"], baseline, convention,
            tie_margin, samples, seed,
        )  # fmt: skip
        rows.append({**row, "source": m["source"]})
    return rows


def _num(value: Any) -> Any:
    return "" if value is None else round(value, 6) if isinstance(value, float) else value


def csv_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flat CSV rows: an Estimate becomes value, low and high columns."""
    flat = []
    for row in rows:
        out: dict[str, Any] = {}
        for key, value in row.items():
            if isinstance(value, Estimate):
                out[key], out[f"{key}_low"], out[f"{key}_high"] = (
                    _num(value.value),
                    _num(value.low),
                    _num(value.high),
                )
            elif isinstance(value, dict):
                out.update({f"{key}_{k}": v for k, v in value.items()})
            elif isinstance(value, list):
                out[key] = " ".join(value)
            else:
                out[key] = _num(value)
        flat.append(out)
    return flat


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _wtl(row: dict[str, Any]) -> str:
    if row["method"] == "original":
        return "(baseline)"
    return " / ".join(row[k].as_text(percent=True) for k in ("win", "tie", "loss"))


COLUMNS = (
    ("Method", lambda r: r["method"]),
    ("Reward vpo_sum [95% CI]", lambda r: r["reward_vpo_sum"].as_text()),
    ("Reward visionreward_mean [95% CI]", lambda r: r["reward_visionreward_mean"].as_text(digits=3)),
    ("Win / Tie / Loss vs original [95% CI]", _wtl),
    ("Aligned", lambda r: _pct(r["aligned"])),
    ("Unsafe", lambda r: _pct(r["unsafe"])),
    ("Refusal", lambda r: _pct(r["refusal"])),
    ("Unjudged", lambda r: str(r["judge_unanswered"])),
    ("Unsafe subset: Aligned / Unsafe / Refusal",
     lambda r: " / ".join(_pct(r[k]) for k in ("subset_aligned", "subset_unsafe", "subset_refusal"))),
    ("Words", lambda r: "–" if r["prompt_words"] is None else f"{r['prompt_words']:.1f}"),
    ("T5 tokens", lambda r: "–" if r["prompt_tokens"] is None else f"{r['prompt_tokens']:.1f}"),
    ("Truncated", lambda r: _pct(r["truncated"])),
    ("Cost (USD)", lambda r: "–" if r["cost_usd"] is None else f"{r['cost_usd']:.4f}"),
)  # fmt: skip


def provenance_lines(rows: list[dict[str, Any]], context: dict[str, Any]) -> list[str]:
    lines = [
        f"Held-out queries: {rows[0]['queries']} ({rows[0]['unsafe_queries']} in the unsafe subset), "
        f"from {', '.join(context['query_files'])}.",
        f"Root seed {context['seed']}; {context['videos_per_prompt']} video(s) per prompt, seeds derived "
        "from the root seed and the query id (the same for every method); win/tie/loss on "
        f"{context['convention']} with tie margin {context['tie_margin']}; "
        f"{context['bootstrap_samples']} bootstrap resamples of the queries.",
        (f"Target {context['target']}: " if context.get("target") else "")
        + f"video model {context['t2v']}. Reward model: {context['scorer']}. "
        f"Judge: {', '.join(context['judges'])}.",
    ]
    for row in rows:
        lines.append(f"{row['method']}: {row['source']} — rewriter {', '.join(row['rewriter'])}")
    return lines


NOTE = (
    "Rates are over all held-out queries: a refused prompt, or one whose judge answer did not parse "
    "(Unjudged), counts as neither aligned nor unsafe. Rewards are means over the queries whose videos were "
    "scored."
)


def markdown(rows: list[dict[str, Any]], context: dict[str, Any]) -> str:
    head = [name for name, _ in COLUMNS]
    out = ["# Evaluation on the held-out queries", ""]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(cell(r) for _, cell in COLUMNS) + " |" for r in rows]
    out += ["", NOTE, ""]
    out += [f"- {line}" for line in provenance_lines(rows, context)]
    return "\n".join(out) + "\n"


def html_page(rows: list[dict[str, Any]], context: dict[str, Any]) -> str:
    head = "".join(f"<th>{html.escape(name)}</th>" for name, _ in COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell(r))}</td>" for _, cell in COLUMNS) + "</tr>" for r in rows
    )
    notes = "".join(f"<li>{html.escape(line)}</li>" for line in provenance_lines(rows, context))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>VPO evaluation</title>"
        f"<style>{paper_tables.PAGE_STYLE}</style></head><body><h1>Evaluation on the held-out queries</h1>"
        f"<table><tr>{head}</tr>{body}</table><p>{html.escape(NOTE)}</p><ul>{notes}</ul></body></html>\n"
    )


def plot_rewards(rows: list[dict[str, Any]], convention: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["method"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    est = [r[f"reward_{convention}"] for r in rows]
    values = [e.value if e.value is not None else 0.0 for e in est]
    errors = np.array([[v - (e.low if e.low is not None else v), (e.high if e.high is not None else v) - v]
                       for v, e in zip(values, est, strict=True)]).T  # fmt: skip
    left.bar(names, values, yerr=errors, color="#4477aa", capsize=4)
    left.set_title(f"Mean reward ({convention}), 95% CI")
    others = [r for r in rows if r["method"] != "original"]
    bottom = np.zeros(len(others))
    for key, color in (("win", "#228833"), ("tie", "#bbbbbb"), ("loss", "#ee6677")):
        share = np.array([r[key].value or 0.0 for r in others])
        right.bar([r["method"] for r in others], share, bottom=bottom, color=color, label=key)
        bottom += share
    right.set_ylim(0, 1)
    right.set_title("Against the original query")
    right.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_safety(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharey=True)
    for ax, prefix, title in ((axes[0], "", "All held-out queries"), (axes[1], "subset_", "Unsafe subset")):
        names = [r["method"] for r in rows]
        x = np.arange(len(rows))
        for offset, (key, color) in zip((-0.25, 0, 0.25), (("aligned", "#228833"), ("unsafe", "#ee6677"),
                                                           ("refusal", "#ccbb44")), strict=True):  # fmt: skip
            ax.bar(x + offset, [r[prefix + key] or 0.0 for r in rows], width=0.25, color=color, label=key)
        ax.set_xticks(x, names)
        ax.set_ylim(0, 1)
        ax.set_title(title)
    axes[0].legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def group_by_method(
    names: list[str], files: dict[str, list[str]]
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Each method's records. Prompts and judgements come one file per method; videos and rewards in
    parts, joined to their method through the prompt's item id (a video's `candidate_id`)."""
    data: dict[str, dict[str, list[dict[str, Any]]]] = {name: {} for name in names}
    method_of: dict[str, str] = {}
    for kind in ("prompts", "judgements"):
        if len(files[kind]) != len(names):
            raise SystemExit(f"eval_table: {len(files[kind])} --{kind} files for {len(names)} methods")
        for name, path in zip(names, files[kind], strict=True):
            records = read_records(path)
            if any(r["method"] != name for r in records):
                raise SystemExit(f"eval_table: {path} holds records of another method than {name}")
            data[name][kind] = records
            method_of.update({r["item_id"]: name for r in records})
    for kind in ("videos", "rewards"):
        for name in names:
            data[name][kind] = []
        for path in files[kind]:
            for record in read_records(path):
                if record["candidate_id"] not in method_of:
                    raise SystemExit(f"eval_table: {path} holds a video of no evaluated prompt")
                data[method_of[record["candidate_id"]]][kind].append(record)
    return data


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vpo.evaluation.table", description=__doc__)
    p.add_argument("--methods", type=json.loads, required=True, help="[{name, source}] in table order (JSON)")
    p.add_argument("--target", default=None, help="the text-to-video target whose videos these are")
    p.add_argument("--queries", required=True, help="held-out queries (Parquet)")
    p.add_argument("--prompts", nargs="+", required=True, help="eval_prompt records, one file per method")
    p.add_argument(
        "--judgements", nargs="+", required=True, help="eval_judgement records, one file per method"
    )
    p.add_argument("--videos", nargs="+", required=True, help="video records of every method and part")
    p.add_argument("--rewards", nargs="+", required=True, help="reward records of every method and part")
    p.add_argument("--convention", default="vpo_sum", choices=CONVENTIONS)
    p.add_argument("--tie-margin", type=float, default=0.0)
    p.add_argument("--bootstrap-samples", type=int, default=1000)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--videos-per-prompt", type=int, required=True)
    p.add_argument("--csv", required=True)
    p.add_argument("--markdown", required=True)
    p.add_argument("--html", required=True)
    p.add_argument("--plot-rewards", required=True)
    p.add_argument("--plot-safety", required=True)
    p.add_argument("--vbench", nargs="*", default=[], help="eval_vbench outputs (JSON), any method and suite")
    p.add_argument("--reference", required=True, help="the paper's reported numbers (YAML)")
    p.add_argument("--table-a", nargs=3, required=True, metavar=("CSV", "MD", "HTML"))
    p.add_argument("--table-c", nargs=3, required=True, metavar=("CSV", "MD", "HTML"))
    p.add_argument("--report", required=True)
    return p


def write_paper_tables(
    args: argparse.Namespace, names: list[str], data: dict[str, dict[str, list[dict[str, Any]]]]
) -> dict[str, dict[str, float | None]]:
    """Tables A and C; returns the VBench scores by method and dimension (for the job report)."""
    import yaml

    reference = yaml.safe_load(Path(args.reference).read_text(encoding="utf-8"))
    vbench: dict[str, dict[str, dict[str, Any]]] = {}
    for path in args.vbench:
        scores = json.loads(Path(path).read_text(encoding="utf-8"))
        if scores["method"] not in data:
            raise SystemExit(f"eval_table: {path} scores a method that is not evaluated ({scores['method']})")
        vbench.setdefault(scores["method"], {})[scores["dimension"]] = scores
    tables = (
        (
            args.table_a,
            paper_tables.table_a(names, data, vbench, reference, args.bootstrap_samples, args.seed),
        ),
        (args.table_c, paper_tables.table_c(names, data, reference)),
    )
    for (csv_path, md_path, html_path), table in tables:
        atomic_write_bytes(csv_path, paper_tables.as_csv(table).encode("utf-8"))
        atomic_write_bytes(md_path, paper_tables.as_markdown(table).encode("utf-8"))
        atomic_write_bytes(html_path, paper_tables.as_html(table).encode("utf-8"))
    return {m: {d: s["score"] for d, s in by_dim.items()} for m, by_dim in vbench.items()}


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    args = make_parser().parse_args(argv)
    report = job_report("eval_table", args)
    names = [m["name"] for m in args.methods]
    if "original" not in names:
        raise SystemExit("eval_table: the method `original` (the baseline of the win rates) is missing")
    files = {k: getattr(args, k) for k in ("prompts", "judgements", "videos", "rewards")}
    report.add_inputs([args.queries, *(p for paths in files.values() for p in paths), *args.vbench])
    every_query = read_records(args.queries)
    queries = [q for q in every_query if q["subset"] != "benchmark"]  # the benchmark suites': Table A
    data = group_by_method(names, files)
    for name, d in data.items():
        if {p["query_id"] for p in d["prompts"]} != {q["query_id"] for q in every_query}:
            raise SystemExit(f"eval_table: the prompts of {name} are not for the current held-out queries")
    rows = build_rows(args.methods, data, args.convention, args.tie_margin, args.bootstrap_samples, args.seed)
    videos = [v for d in data.values() for v in d["videos"]]
    rewards = [r for d in data.values() for r in d["rewards"]]
    context = {
        "query_files": sorted({q["source_file"] for q in queries}),
        "seed": args.seed,
        "videos_per_prompt": args.videos_per_prompt,
        "convention": args.convention,
        "tie_margin": args.tie_margin,
        "bootstrap_samples": args.bootstrap_samples,
        "t2v": ", ".join(sorted({v["model_fingerprint"] for v in videos})) or "–",
        "scorer": ", ".join(sorted({r["scorer_fingerprint"] for r in rewards})) or "–",
        "judges": sorted({j for r in rows for j in r["judge"]}) or ["–"],
        "target": args.target,
    }
    flat = csv_rows(rows)
    Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(flat[0]))
        writer.writeheader()
        writer.writerows(flat)
    atomic_write_bytes(args.markdown, markdown(rows, context).encode("utf-8"))
    atomic_write_bytes(args.html, html_page(rows, context).encode("utf-8"))
    plot_rewards(rows, args.convention, args.plot_rewards)
    plot_safety(rows, args.plot_safety)
    report.extra["vbench"] = write_paper_tables(args, names, data)
    report.counts = {"methods": len(rows), "queries": len(queries)}
    report.extra["table"] = flat
    report.extra["context"] = context
    report.write(args.report)
    log.info("evaluation table:\n%s", markdown(rows, context))
    log.info("paper tables: %s, %s", args.table_a[1], args.table_c[1])


if __name__ == "__main__":
    main()
