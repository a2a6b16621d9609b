"""The human-readable `vpo status`: a table per stage, failed jobs with their logs, spend, ETA, sources."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vpo.tools.estimate import format_spending


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes = round(seconds / 60)
    if minutes < 1:
        return f"{seconds:.0f}s"
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return (f"{days}d " if days else "") + (f"{hours}h " if hours or days else "") + f"{minutes}m"


def _usd(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def format_status(status: Mapping[str, Any]) -> str:
    out = [f"VPO run status at {status['time']} ({', '.join(status['configfiles'])})", ""]
    header = ("stage", "jobs", "done", "running", "queued", "failed", "to do", "items", "LLM asked",
              "cached", "new", "no usable answer", "mean job", "ETA")  # fmt: skip
    rows = []
    for s in status["stages"]:
        problems = ", ".join(f"{k} {v}" for k, v in sorted(s["problems"].items())) or ""
        rows.append(
            [s["stage"], s["jobs"], s["done"], s["running"], s["queued"], s["failed"], s["todo"],
             "" if s["items"] is None else s["items"], s["llm_requests"] or "", s["llm_cached"] or "",
             s["llm_new"] or "", problems, duration(s["mean_job_s"]) if s["mean_job_s"] is not None else "",
             duration(s["eta_s"]) if s["eta_s"] else ""]
        )  # fmt: skip
    t = status["totals"]
    rows.append(["total", t["jobs"], t["done"], t["running"], t["queued"], t["failed"], t["todo"]] + [""] * 7)
    if status["stages"]:
        cells = [[str(c) for c in r] for r in [header, *rows]]
        widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
        numeric = set(range(1, 11)) | {12, 13}
        for r in cells:
            out.append("  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in
                                 enumerate(zip(r, widths, strict=True))).rstrip())  # fmt: skip
        out.append(
            "items, LLM asked/cached/new and no usable answer: from the job reports of finished jobs; "
            "cached = answered from the item cache (no new call)."
        )
    else:
        out.append("no jobs: the DAG was not built (see sources)")
    failed = status["failed_jobs"]
    if failed:
        out += ["", f"failed jobs ({len(failed)}; last attempt ended with an error):"]
        for f in failed[:20]:
            wildcards = " ".join(f"{k}={v}" for k, v in f["wildcards"].items())
            logs = ", ".join(f["log"]) or "-"
            out.append(f"  {f['stage']} {wildcards}: log {logs}; Slurm log {f['slurm_log'] or '-'}")
        if len(failed) > 20:
            out.append(f"  ... and {len(failed) - 20} more (--json lists all)")
    spend = status["spending"]
    budget = spend["budget_usd"]
    share = f" ({100 * spend['spent_usd'] / budget:.1f}%)" if budget else ""
    out += [
        "",
        f"LLM spend so far (ledger): {spend['spent_usd']:,.4f} USD of budget_usd {_usd(budget)}{share}",
    ]
    if spend.get("estimate_usd"):
        est = spend["estimate_usd"]
        out.append(
            f"`vpo estimate` for this config: {_usd(est['first_attempts'])} USD first attempts, "
            f"{_usd(est['worst_case'])} USD worst case"
        )
    elif spend.get("estimate_error"):
        out.append(f"`vpo estimate` failed: {spend['estimate_error']}")
    if status["ledger_entries"]:
        out += ["", format_spending(status["ledger_entries"])]
    eta = status["eta"]
    out.append("")
    if t["jobs"] and t["done"] == t["jobs"]:
        out.append("ETA: nothing left to do")
    elif status["stages"]:
        text = duration(eta["eta_s"]) if eta["eta_s"] is not None else "unknown (no finished job to time)"
        out.append(
            f"ETA (an estimate): {text} — mean benchmark time of finished jobs × jobs left, divided by the "
            f"{eta['jobs_running_now']} jobs running now; dependencies and queue waits are not modelled"
        )
        if eta["untimed_stages"]:
            out.append(f"  not included (no finished job timed yet): {', '.join(eta['untimed_stages'])}")
    out += ["", "sources:"]
    out += [f"  {k}: {v}" for k, v in status["sources"].items()]
    out += [f"note: {n}" for n in status["notes"]]
    return "\n".join(out) + "\n"
