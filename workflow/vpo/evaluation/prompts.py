"""Stage `eval_prompts`: one method's prompts for the held-out queries.

`original` passes each query through unchanged (the baseline of the win rates); every other method
rewrites it with an LLM through `vpo.tools.rewrite.rewrite_queries`, the code behind `vpo rewrite`. Each
record carries the request's token counts and, where the model has a price, its cost.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from typing import Any

from vpo.config.resolve import is_remote
from vpo.core.ids import digest
from vpo.core.io import read_records, write_records
from vpo.core.stage import add_runtime_arguments, finish, job_report, llm_job, setup
from vpo.core.templates import load_template
from vpo.llm.ledger import costs_from_env
from vpo.tools.rewrite import rewrite_queries

log = logging.getLogger(__name__)


def original_prompts(queries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "query_id": q["query_id"],
            "query": q["query"],
            "prompt": q["query"],
            "status": "ok",
            "raw": None,
            "finish_reason": None,
            "seed": 0,
            "model_fingerprint": "original",
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "error": None,
        }
        for q in queries
    ]


def with_method(
    method: str, queries: list[dict[str, Any]], rewrites: list[dict[str, Any]], price=None
) -> list[dict[str, Any]]:
    """Rewrites as eval_prompt records: method, item id, subset and cost added."""
    records = []
    for query, r in zip(queries, rewrites, strict=True):
        cost = price.cost(r["prompt_tokens"], r["completion_tokens"]) if price else None
        records.append(
            {
                "method": method,
                "item_id": digest("eval", method, query["query_id"]),
                "subset": query["subset"],
                "sample_index": 0,
                **r,
                "cost_usd": cost,
            }
        )
    return records


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vpo.evaluation.prompts", description=__doc__)
    p.add_argument("--method", required=True, help="method name (original = the query itself)")
    p.add_argument("--queries", required=True, help="held-out queries (Parquet)")
    p.add_argument(
        "--llm", type=json.loads, default=None, help="resolved LLM spec as JSON (not for original)"
    )
    p.add_argument("--generation", type=json.loads, default=None, help="decoding parameters as JSON")
    p.add_argument("--template", default=None, help="prompt template file")
    p.add_argument("--seed", type=int, required=True, help="root seed")
    p.add_argument("--out", required=True, help="eval_prompt records (Parquet)")
    add_runtime_arguments(p)
    return p


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    setup(args.threads)
    report = job_report("eval_prompts", args, [args.queries, args.template])
    queries = read_records(args.queries)
    if args.method == "original":
        rewrites = original_prompts(queries)
        price = None
    else:
        if args.llm is None or args.template is None or args.generation is None:
            raise SystemExit(f"method {args.method}: --llm, --template and --generation are required")
        price = costs_from_env()[0].get(args.llm["model"]) if is_remote(args.llm) else None
        with llm_job(report, args, f"eval_{args.method}") as llm:
            template = load_template(args.template)
            rewrites = rewrite_queries(llm, queries, template, args.generation, args.seed, desc=args.method)
    records = with_method(args.method, queries, rewrites, price)
    write_records(args.out, records, "eval_prompt")
    counts = {
        "queries": len(queries),
        "by_status": dict(Counter(r["status"] for r in records)),
        "by_subset_status": {
            subset: dict(Counter(r["status"] for r in records if r["subset"] == subset))
            for subset in sorted({r["subset"] for r in records})
        },
    }
    finish(report, args.report, counts, log)


if __name__ == "__main__":
    main()
