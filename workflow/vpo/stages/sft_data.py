"""Stage `sft_data`: the SFT target is the teacher's draft if the judge said Yes, else its refinement.

Queries without a usable target are kept in the examples table with the reason and counted.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from typing import Any

from vpo.core.io import read_many, write_records
from vpo.core.stage import job_report, setup_logging
from vpo.core.templates import load_template
from vpo.training.dataset import policy_messages, write_dataset

log = logging.getLogger(__name__)

DATASET_NAME = "vpo_sft"


def sft_examples(critiques: list[dict[str, Any]], refinements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    refined = {r["item_id"]: r for r in refinements}
    examples = []
    for c in sorted(critiques, key=lambda c: (c["query_id"], c["sample_index"])):
        target, source = None, None
        if c["status"] == "skipped":
            status = "draft_failed"
        elif c["status"] != "ok":
            status = f"critique_{c['status']}"
        elif c["verdict"] == "yes":
            target, source, status = c["prompt"], "draft", "included"
        else:
            r = refined.get(c["item_id"])
            if r is None:
                raise ValueError(
                    f"no refinement record for item {c['item_id']} judged No (inputs out of sync)"
                )
            if r["status"] == "ok":
                target, source, status = r["refined_prompt"], "refinement", "included"
            else:
                status = f"refinement_{r['status']}"
        examples.append(
            {
                "query_id": c["query_id"],
                "query": c["query"],
                "target": target,
                "target_source": source,
                "status": status,
            }
        )
    return examples


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vpo.stages.sft_data", description=__doc__)
    p.add_argument("--critiques", nargs="+", required=True)
    p.add_argument("--refinements", nargs="+", required=True)
    p.add_argument("--template", required=True, help="policy inference template (the user turn)")
    p.add_argument("--out-dir", required=True, help="LLaMA-Factory dataset folder")
    p.add_argument("--examples", required=True, help="per-query outcome table (Parquet)")
    p.add_argument("--report", required=True)
    return p


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    args = make_parser().parse_args(argv)
    report = job_report("sft_data", args)
    report.add_inputs([*args.critiques, *args.refinements, args.template])
    examples = sft_examples(read_many(args.critiques), read_many(args.refinements))
    write_records(args.examples, examples, "sft_example")
    template = load_template(args.template)
    rows = [
        {"messages": [*policy_messages(template, e["query"]), {"role": "assistant", "content": e["target"]}]}
        for e in examples
        if e["status"] == "included"
    ]
    report.counts = {
        "queries": len(examples),
        "examples": len(rows),
        "by_status": dict(Counter(e["status"] for e in examples)),
        "by_source": dict(Counter(e["target_source"] for e in examples if e["target_source"])),
    }
    report.write(args.report)
    if not rows:
        raise SystemExit(
            f"the SFT dataset is empty: {report.counts['by_status']}. See {args.examples}; the "
            "teacher or judge produced nothing usable (check their logs and templates)."
        )
    write_dataset(args.out_dir, DATASET_NAME, rows, ranking=False)
    log.info("sft dataset: %s", report.counts)


if __name__ == "__main__":
    main()
