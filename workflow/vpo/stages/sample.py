"""Stages `draft` and `sample`: K prompts per query from an LLM (the teacher, or the SFT policy).

Each prompt is one request with its own seed; the K seeds of a query are consecutive, derived from the
query and the model, so a vLLM server answers them in one request with `n = K` and each answer is still
reproducible and cached on its own. Empty, refused or failed answers are kept with their status
(`rewrite_status`, the same ladder as `vpo rewrite`).
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from typing import Any

from vpo.core.ids import candidate_id, consecutive_seeds
from vpo.core.io import read_records, write_records
from vpo.core.stage import add_llm_arguments, finish, job_report, llm_job, setup
from vpo.core.templates import conversation, load_template
from vpo.judge.parsing import rewrite_status
from vpo.llm import Request

log = logging.getLogger(__name__)


def generate(
    queries: list[dict[str, Any]],
    llm,
    template: str,
    generation: dict[str, Any],
    k: int,
    root_seed: int,
    role: str,
) -> list[dict[str, Any]]:
    items = []
    for query in queries:
        seeds = consecutive_seeds(root_seed, k, role, query["query_id"], llm.fingerprint)
        for index, seed in enumerate(seeds):
            items.append((query, index, candidate_id(query["query_id"], llm.fingerprint, index), seed))
    requests = [
        Request.build(conversation(template, query=q["query"]), generation, seed) for q, _, _, seed in items
    ]
    responses = llm.generate(requests, desc=role)
    records = []
    for (query, index, cid, seed), response in zip(items, responses, strict=True):
        status, prompt = rewrite_status(response)
        records.append(
            {
                "item_id": cid,
                "query_id": query["query_id"],
                "query": query["query"],
                "sample_index": index,
                "prompt": prompt,
                "status": status,
                "raw": response.text,
                "finish_reason": response.finish_reason,
                "seed": seed,
                "model_fingerprint": llm.fingerprint,
                "error": response.error,
            }
        )
    return records


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vpo.stages.sample", description=__doc__)
    p.add_argument("--role", required=True, choices=["draft", "sample"], help="seed namespace and log label")
    p.add_argument("--queries", required=True, help="query shard (Parquet)")
    p.add_argument("--k", type=int, default=1, help="prompts per query")
    p.add_argument("--out", required=True, help="generation records (Parquet)")
    add_llm_arguments(p)
    return p


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    setup(args.threads)
    report = job_report(args.role, args, [args.queries, args.template])
    queries = read_records(args.queries)
    with llm_job(report, args, args.role) as llm:
        template = load_template(args.template)
        records = (
            generate(queries, llm, template, args.generation, args.k, args.seed, args.role) if queries else []
        )
    write_records(args.out, records, "generation")
    counts = {
        "queries": len(queries),
        "prompts": len(records),
        "by_status": dict(Counter(r["status"] for r in records)),
    }
    finish(report, args.report, counts, log)


if __name__ == "__main__":
    main()
