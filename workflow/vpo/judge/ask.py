"""Ask the judge until its answer parses: each retry uses a new seed; what never parses is kept as such."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from vpo.core.ids import derive_seed
from vpo.core.stage import add_llm_arguments
from vpo.core.templates import load_template
from vpo.llm import Request, Response

T = TypeVar("T")


@dataclass
class Outcome(Generic[T]):
    response: Response
    parsed: T | None
    attempts: int
    seed: int

    @property
    def status(self) -> str:
        if not self.response.ok:
            return "failed"
        if self.parsed is None and self.response.refused:
            return "refused"
        return "ok" if self.parsed is not None else "unparsed"

    def fields(self, text_key: str) -> dict[str, Any]:
        """What every judge record keeps of the answer: its status, tries, raw text (as `text_key`),
        finish reason, seed and error."""
        return {
            "status": self.status,
            "attempts": self.attempts,
            text_key: self.response.text,
            "finish_reason": self.response.finish_reason,
            "seed": self.seed,
            "error": self.response.error,
        }


def not_asked(text_key: str, reason: str) -> dict[str, Any]:
    """`Outcome.fields` of an item the judge was not asked about (its input had no prompt)."""
    return {
        "status": "skipped",
        "attempts": 0,
        text_key: None,
        "finish_reason": None,
        "seed": 0,
        "error": reason,
    }


def add_judge_arguments(parser: argparse.ArgumentParser, records: str, out: str) -> None:
    """The judge stages' command line: the records to judge, the retry budget, the output, the LLM."""
    parser.add_argument(f"--{records}", required=True, help=f"{records} records to judge (Parquet)")
    parser.add_argument("--max-parse-retries", type=int, required=True, help="new tries of unparsed answers")
    parser.add_argument("--out", required=True, help=f"{out} records (Parquet)")
    add_llm_arguments(parser)


def ask_until_parsed(
    llm,
    messages: Sequence[list[dict[str, str]]],
    item_ids: Sequence[str],
    generation: dict[str, Any],
    root_seed: int,
    role: str,
    parse: Callable[[Response], T | None],
    max_retries: int,
    response_schema: dict[str, Any] | None = None,
) -> list[Outcome[T]]:
    """Attempt a = 0..max_retries for the items still unparsed; failed requests are not retried here
    (they are not cached either, so the next run of the stage retries them), and neither are refusals
    (the judge's answer, recorded as such). `response_schema` asks for a structured answer."""
    outcomes: list[Outcome[T] | None] = [None] * len(messages)
    pending = list(range(len(messages)))
    for attempt in range(max_retries + 1):
        if not pending:
            break
        seeds = {i: derive_seed(root_seed, role, item_ids[i], attempt) for i in pending}
        requests = [Request.build(messages[i], generation, seeds[i], response_schema) for i in pending]
        responses = llm.generate(requests, desc=f"{role} attempt {attempt + 1}")
        still = []
        for i, response in zip(pending, responses, strict=True):
            parsed = parse(response) if response.ok else None
            outcomes[i] = Outcome(response, parsed, attempt + 1, seeds[i])
            if response.ok and parsed is None and not response.refused:
                still.append(i)
        pending = still
    return [o for o in outcomes if o is not None]


def judge_with_args(
    judge: Callable[..., list[dict[str, Any]]], items: list[dict[str, Any]], llm, args, *templates: str
):
    """`judge(items, llm, *templates read, generation, seed, retries, structured=...)` with the judge
    stages' command-line arguments (`add_judge_arguments`)."""
    loaded = [load_template(t) for t in templates]
    structured = args.llm.get("structured_output", False)
    return judge(
        items, llm, *loaded, args.generation, args.seed, args.max_parse_retries, structured=structured
    )
