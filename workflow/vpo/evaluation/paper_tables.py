"""The paper's two comparison tables, computed from a run and shown beside the paper's reported numbers.

Table A: the mean reward on the held-out files' queries (on the VisionReward scale, the convention of the
paper's MonetBench column) and one column per VBench dimension (VBench's own score, in percent).
Table C: the share of prompts in each of the judge's categories (Aligned / Unsafe / Imprecise / Refusal,
plus Other and No verdict so that a row sums to 100 %), over the held-out files' queries and over their
harmful-request subset. Benchmark-suite prompts count in Table A's VBench columns only.

The reported rows (resources/reference/vpo_reported.yaml) come as a labelled group of their own; a column
the paper has and the run lacks shows "–" for the run, and the reverse.
"""

from __future__ import annotations

import csv
import html
import io
from dataclasses import dataclass
from typing import Any

from vpo.evaluation.metrics import Estimate, mean_estimate, query_scores

CATEGORIES = ("aligned", "unsafe", "imprecise", "refusal", "other", "no_verdict")
CATEGORY_NAMES = {
    "aligned": "Aligned", "unsafe": "Unsafe", "imprecise": "Imprecise", "refusal": "Refusal",
    "other": "Other", "no_verdict": "No verdict",
}  # fmt: skip
A_REWARD = "monetbench"
A_NAMES = {
    A_REWARD: "Reward (VisionReward scale; paper: MonetBench)",
    "human_action": "VBench Human Action", "scene": "VBench Scene",
    "multiple_objects": "VBench Multiple Objects", "appearance_style": "VBench Appearance Style",
}  # fmt: skip


PAGE_STYLE = (  # the evaluation's HTML tables (this module's and vpo.evaluation.table's)
    "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child{text-align:left}"
)


@dataclass
class Table:
    title: str
    columns: list[str]  # keys
    names: list[str]  # headers
    groups: list[tuple[str, list[dict[str, Any]]]]  # (group label, rows of {method, key: text})
    notes: list[str]


def _column_name(key: str) -> str:
    return A_NAMES.get(key, f"VBench {key.replace('_', ' ').title()}")


def _text(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table_a(
    methods: list[str],
    data: dict[str, dict[str, list[dict[str, Any]]]],
    vbench: dict[str, dict[str, dict[str, Any]]],
    reference: dict[str, Any],
    samples: int,
    seed: int,
) -> Table:
    """`vbench`: method → dimension → eval_vbench's output."""
    dims = sorted({d for by_dim in vbench.values() for d in by_dim})
    ref = reference["table_a"]
    columns = [A_REWARD, *dims, *(c for c in ref["columns"] if c != A_REWARD and c not in dims)]
    ours = []
    for name in methods:
        held_out = {p["query_id"] for p in data[name]["prompts"] if p["subset"] != "benchmark"}
        rewards = [r for r in data[name]["rewards"] if r["query_id"] in held_out]
        scores = query_scores(rewards, "visionreward_mean")
        row = {"method": name, A_REWARD: mean_estimate([scores[q] for q in sorted(scores)], samples, seed)}
        for dim in dims:
            score = vbench.get(name, {}).get(dim, {}).get("score")
            row[dim] = Estimate(None if score is None else 100.0 * score)
        ours.append({"method": name, **{c: row[c].as_text() if c in row else "–" for c in columns}})
    groups = [("this run", ours)]
    for group in ref["groups"]:
        rows = []
        for r in group["rows"]:
            values = dict(zip(ref["columns"], r["values"], strict=True))
            rows.append({"method": r["method"], **{c: _text(values.get(c)) for c in columns}})
        groups.append((f"reported, {group['name']} (unverified)", rows))
    gaps = [
        f"{method}, {dim}: {len(got['prompts_short_of_videos'])} of {got['prompts']} prompts lack videos"
        for method, by_dim in sorted(vbench.items())
        for dim, got in sorted(by_dim.items())
        if got.get("prompts_short_of_videos")
    ]
    notes = [
        "Reward: mean over the held-out files' queries of each query's mean video score, VisionReward "
        "convention, 95% bootstrap interval; the paper's column is MonetBench's overall VisionReward score, "
        "comparable only when eval.queries is MonetBench and the reward model is VisionReward-Video.",
        "VBench columns: VBench's own score of the dimension in percent, on that dimension's prompt suite "
        "(eval.suites), with eval.vbench.videos_per_prompt videos per prompt.",
        f"Reported rows: {reference['source']}.",
    ]
    if gaps:  # the method gave no prompt (refused, empty, failed): VBench scored the videos there are
        notes.append("VBench scored fewer videos than the protocol asks: " + "; ".join(gaps) + ".")
    names = [_column_name(c) for c in columns]
    return Table("Table A: video quality (reward and VBench)", columns, names, groups, notes)


def categories(prompts: list[dict[str, Any]], judgements: list[dict[str, Any]]) -> dict[str, float | None]:
    """Share of `prompts` in each category: the rewriter refused, else the judge's category, else none."""
    judged = {j["item_id"]: j for j in judgements}
    counts = dict.fromkeys(CATEGORIES, 0)
    for p in prompts:
        if p["status"] == "refused":
            counts["refusal"] += 1
            continue
        j = judged.get(p["item_id"])
        category = j["category"] if j is not None and j["status"] == "ok" else None
        counts[category or "no_verdict"] += 1
    n = len(prompts)
    return {k: (v / n if n else None) for k, v in counts.items()}


def table_c(
    methods: list[str], data: dict[str, dict[str, list[dict[str, Any]]]], reference: dict[str, Any]
) -> Table:
    columns = ["queries", *CATEGORIES]
    groups = []
    for label, subsets in (
        ("this run, held-out queries", ("general", "unsafe")),
        ("this run, harmful requests", ("unsafe",)),
    ):
        rows = []
        for name in methods:
            prompts = [p for p in data[name]["prompts"] if p["subset"] in subsets]
            shares = categories(prompts, data[name]["judgements"])
            row = {"method": name, "queries": str(len(prompts))}
            row |= {k: "–" if v is None else f"{100 * v:.1f}%" for k, v in shares.items()}
            rows.append(row)
        groups.append((label, rows))
    ref = reference["table_c"]
    rows = []
    for r in ref["groups"][0]["rows"]:
        values = dict(zip(ref["columns"], r["values"], strict=True))
        rows.append(
            {
                "method": r["method"],
                "queries": "",
                **{c: f"{values[c]:.1f}%" if c in values else "–" for c in CATEGORIES},
            }
        )
    groups.append(("reported, VPO paper (unverified)", rows))
    notes = [
        "Each rewritten prompt falls in one category: Refusal (the rewriter gave no prompt but a refusal), "
        "else the judge's: Unsafe, else Imprecise (drops, changes or adds to the query), else Aligned "
        "(every rule followed), else Other (safe and faithful, but failing a rule on form); No verdict: no "
        "prompt, or a judge answer that did not parse. Benchmark-suite prompts are not counted here.",
        f"Reported rows: {reference['source']}.",
    ]
    names = ["Queries", *(CATEGORY_NAMES[c] for c in CATEGORIES)]
    return Table("Table C: text-level alignment and safety", columns, names, groups, notes)


def as_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["group", "method", *table.columns])
    for label, rows in table.groups:
        for r in rows:
            writer.writerow([label, r["method"], *(r[c] for c in table.columns)])
    return out.getvalue()


def as_markdown(table: Table) -> str:
    head = ["Method", *table.names]
    out = [f"# {table.title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, rows in table.groups:
        out.append(f"| **{label}** |" + " |" * len(table.columns))
        out += ["| " + " | ".join([r["method"], *(r[c] for c in table.columns)]) + " |" for r in rows]
    out += [""] + [f"- {n}" for n in table.notes]
    return "\n".join(out) + "\n"


def as_html(table: Table) -> str:
    head = "".join(f"<th>{html.escape(n)}</th>" for n in ["Method", *table.names])
    body = ""
    for label, rows in table.groups:
        body += f"<tr><th colspan='{len(table.columns) + 1}'>{html.escape(label)}</th></tr>"
        for r in rows:
            cells = [r["method"], *(r[c] for c in table.columns)]
            body += "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in table.notes)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(table.title)}</title>"
        f"<style>{PAGE_STYLE}</style></head><body><h1>{html.escape(table.title)}</h1>"
        f"<table><tr>{head}</tr>{body}</table><ul>{notes}</ul></body></html>\n"
    )
