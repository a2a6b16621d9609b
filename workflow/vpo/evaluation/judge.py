"""Stage `eval_judge`: the judge critiques one method's prompts for the held-out queries.

Its answer must end with a safety line (`Safety (Safe or Unsafe): ...`) and the verdict line
(`Final Judgement (Yes or No): ...`); with `structured_output`, the critique schema's `safety_category`
and `verdict` take their place. An answer missing either is asked again with a new seed, then kept as
`unparsed` and counted, never read as safe or aligned. Prompts a method did not give are `skipped`.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from typing import Any

from vpo.core.ids import digest
from vpo.core.io import read_records, write_records
from vpo.core.stage import finish, job_report, llm_job, setup
from vpo.core.templates import judge_conversation
from vpo.judge.ask import add_judge_arguments, ask_until_parsed, judge_with_args, not_asked
from vpo.judge.parsing import answer_schema, parse_safety, parse_structured_safety, parse_verdict
from vpo.llm import Response

log = logging.getLogger(__name__)


def parse_text(response: Response) -> tuple[str, str] | None:
    """(verdict, safe|unsafe) when both lines are there, else None."""
    verdict, safety = parse_verdict(response.text), parse_safety(response.text)
    return (verdict, safety) if verdict and safety else None


def parse_structured(response: Response) -> tuple[str, str] | None:
    parsed = parse_structured_safety(response.text)
    if parsed is None:
        return None
    verdict, category = parsed
    return verdict, "safe" if category in ("none", "safe") else category


def judge(
    prompts: list[dict[str, Any]],
    llm,
    template: str,
    generation: dict[str, Any],
    root_seed: int,
    max_retries: int,
    structured: bool = False,
) -> list[dict[str, Any]]:
    todo = [p for p in prompts if p["status"] == "ok"]
    # Seeds follow what is judged, not which method wrote it: two methods that wrote the same prompt
    # for a query get the same answer (and one cached request).
    outcomes = ask_until_parsed(
        llm,
        [judge_conversation(template, p["query"], p["prompt"]) for p in todo],
        [digest("eval_judge", p["query_id"], p["prompt"]) for p in todo],
        generation,
        root_seed,
        "eval_judge",
        parse_structured if structured else parse_text,
        max_retries,
        answer_schema("critique") if structured else None,
    )
    by_id = {p["item_id"]: o for p, o in zip(todo, outcomes, strict=True)}
    records = []
    for p in prompts:
        base = {k: p[k] for k in ("method", "item_id", "query_id", "subset", "prompt")}
        outcome = by_id.get(p["item_id"])
        base["model_fingerprint"] = llm.fingerprint
        if outcome is None:
            answer = not_asked("critique", f"prompt status {p['status']}")
            records.append({**base, "verdict": None, "unsafe": None, "safety_category": None, **answer})
            continue
        verdict, category = outcome.parsed if outcome.parsed else (None, None)
        unsafe = None if category is None else category != "safe"
        answer = outcome.fields("critique")
        records.append({**base, "verdict": verdict, "unsafe": unsafe, "safety_category": category, **answer})
    return records


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vpo.evaluation.judge", description=__doc__)
    add_judge_arguments(p, "prompts", "eval_judgement")
    return p


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    setup(args.threads)
    report = job_report("eval_judge", args, [args.prompts, args.template])
    prompts = read_records(args.prompts)
    method = prompts[0]["method"] if prompts else "none"
    with llm_job(report, args, f"eval_judge_{method}") as llm:
        records = judge_with_args(judge, prompts, llm, args, args.template)
    write_records(args.out, records, "eval_judgement")
    counts = {
        "items": len(records),
        "by_status": dict(Counter(r["status"] for r in records)),
        "by_verdict": dict(Counter(str(r["verdict"]) for r in records if r["status"] == "ok")),
        "unsafe": sum(bool(r["unsafe"]) for r in records),
    }
    finish(report, args.report, counts, log)


if __name__ == "__main__":
    main()
