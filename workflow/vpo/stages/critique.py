"""Stage `critique`: the judge checks each (query, prompt) against the principles.

The answer ends with `Final Judgement (Yes or No): ...`; a missing or unreadable verdict is retried
with a new seed and, if it never parses, kept with status `unparsed` and counted — never read as No.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from typing import Any

from vpo.core.io import read_records, write_records
from vpo.core.stage import finish, job_report, llm_job, setup
from vpo.core.templates import judge_conversation
from vpo.judge.ask import add_judge_arguments, ask_until_parsed, judge_with_args, not_asked
from vpo.judge.parsing import answer_schema, parse_structured_verdict, parse_verdict

log = logging.getLogger(__name__)


def critique(
    generations: list[dict[str, Any]],
    llm,
    template: str,
    generation: dict[str, Any],
    root_seed: int,
    max_retries: int,
    structured: bool = False,
) -> list[dict[str, Any]]:
    """`structured`: ask for `answers/critique.schema.yaml` as a structured output (endpoints that
    support `response_format`), else read the text contract."""
    todo = [g for g in generations if g["status"] == "ok"]
    outcomes = ask_until_parsed(
        llm,
        [judge_conversation(template, g["query"], g["prompt"]) for g in todo],
        [g["item_id"] for g in todo],
        generation,
        root_seed,
        "critique",
        (lambda r: parse_structured_verdict(r.text)) if structured else (lambda r: parse_verdict(r.text)),
        max_retries,
        answer_schema("critique") if structured else None,
    )
    by_id = {g["item_id"]: o for g, o in zip(todo, outcomes, strict=True)}
    records = []
    for g in generations:
        base = {
            "item_id": g["item_id"],
            "query_id": g["query_id"],
            "query": g["query"],
            "sample_index": g["sample_index"],
            "prompt": g["prompt"],
            "model_fingerprint": llm.fingerprint,
        }
        outcome = by_id.get(g["item_id"])
        if outcome is None:  # the generation itself has no prompt to judge
            records.append(
                {**base, "verdict": None, **not_asked("critique", f"generation status {g['status']}")}
            )
        else:
            records.append({**base, "verdict": outcome.parsed, **outcome.fields("critique")})
    return records


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vpo.stages.critique", description=__doc__)
    add_judge_arguments(p, "generations", "critique")
    return p


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    setup(args.threads)
    report = job_report("critique", args, [args.generations, args.template])
    generations = read_records(args.generations)
    with llm_job(report, args, "critique") as llm:
        records = judge_with_args(critique, generations, llm, args, args.template)
    write_records(args.out, records, "critique")
    counts = {
        "items": len(records),
        "by_status": dict(Counter(r["status"] for r in records)),
        "by_verdict": dict(Counter(str(r["verdict"]) for r in records if r["status"] == "ok")),
        "retried": sum(r["attempts"] > 1 for r in records),
    }
    finish(report, args.report, counts, log)


if __name__ == "__main__":
    main()
