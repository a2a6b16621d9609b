"""Stage `refine`: the judge rewrites every prompt it judged No, in the same conversation.

The new prompt is read from `[[start]] ... [[end]]` and normalized to one line (multi-line answers
are kept, not dropped); answers without the block are retried with a new seed, then kept as `unparsed`.
A block that opens like a refusal ("I'm sorry, I can't ...") is kept as `refused`: never a chosen prompt.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from typing import Any

from vpo.core.io import read_records, write_records
from vpo.core.stage import finish, job_report, llm_job, setup
from vpo.core.templates import refine_conversation
from vpo.judge.ask import add_judge_arguments, ask_until_parsed, judge_with_args
from vpo.judge.parsing import answer_schema, looks_like_refusal, parse_refinement, parse_structured_refinement
from vpo.llm import Response

log = logging.getLogger(__name__)


def refine(
    critiques: list[dict[str, Any]],
    llm,
    critique_template: str,
    refine_template: str,
    generation: dict[str, Any],
    root_seed: int,
    max_retries: int,
    structured: bool = False,
) -> list[dict[str, Any]]:
    todo = [c for c in critiques if c["status"] == "ok" and c["verdict"] == "no"]
    conversations = [
        refine_conversation(critique_template, refine_template, c["query"], c["prompt"], c["critique"])
        for c in todo
    ]

    def parse(response: Response) -> tuple[str, str | None] | None:
        if structured:
            prompt, reflection = parse_structured_refinement(response.text)
        else:
            prompt, reflection = parse_refinement(response.text, response.truncated)
        return (prompt, reflection) if prompt else None

    outcomes = ask_until_parsed(
        llm,
        conversations,
        [c["item_id"] for c in todo],
        generation,
        root_seed,
        "refine",
        parse,
        max_retries,
        answer_schema("refine") if structured else None,
    )
    records = []
    for c, outcome in zip(todo, outcomes, strict=True):
        prompt, reflection = outcome.parsed or (None, None)
        status = outcome.status
        if prompt is not None and looks_like_refusal(prompt):
            prompt, status = None, "refused"  # a judge that declines to rewrite gives no chosen prompt
        records.append(
            {
                "item_id": c["item_id"],
                "query_id": c["query_id"],
                "query": c["query"],
                "sample_index": c["sample_index"],
                "prompt": c["prompt"],
                "refined_prompt": prompt,
                "reflection": reflection,
                **outcome.fields("raw"),
                "status": status,
                "model_fingerprint": llm.fingerprint,
            }
        )
    return records


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vpo.stages.refine", description=__doc__)
    p.add_argument("--critique-template", required=True, help="the template the critiques were asked with")
    add_judge_arguments(p, "critiques", "refinement")
    return p


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    setup(args.threads)
    report = job_report("refine", args, [args.critiques, args.critique_template, args.template])
    critiques = read_records(args.critiques)
    with llm_job(report, args, "refine") as llm:
        records = judge_with_args(refine, critiques, llm, args, args.critique_template, args.template)
    write_records(args.out, records, "refinement")
    counts = {
        "judged_no": len(records),
        "by_status": dict(Counter(r["status"] for r in records)),
        "retried": sum(r["attempts"] > 1 for r in records),
    }
    finish(report, args.report, counts, log)


if __name__ == "__main__":
    main()
