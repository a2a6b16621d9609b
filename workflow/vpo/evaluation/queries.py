"""Stage `eval_queries`: the held-out query set, curated like the training sets and kept apart from them.

The held-out files (general queries, and optionally queries that ask for harmful content) go through
the same curation rules as the training sets, except the `max_queries` cap. A held-out query that is
also a training query, exactly after normalization or as a near duplicate under the curation's Jaccard
rule, is an error (`eval.on_overlap: error`, the default) or is dropped and listed (`drop`). The exact
check also runs when the config is read (`exact_overlaps`), so the common mistake stops the run
before any job starts.

Benchmark suites (`eval.suites`, e.g. `vbench:human_action`) are read from the benchmark package's file
(`vpo.core.suites`) as subset `benchmark`. Their prompts are taken as published: normalized, exact
duplicates merged and overlaps with the training queries checked, but no length, character or
near-duplicate rule drops one (VBench's scene suite is mostly one- or two-word prompts). A prompt of several
suites is one query that lists them all (`suites`), so it is rewritten, rendered and judged once.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from dataclasses import replace
from typing import Any

from vpo.core.io import read_many, write_records
from vpo.core.queries import CurationRules, Overlap, content_part, read_raw_queries
from vpo.core.stage import job_report, setup_logging
from vpo.core.suites import SuitePrompt, suite_prompts
from vpo.stages.curate import curate, near_matches, with_control_chars

log = logging.getLogger(__name__)

SUBSETS = ("general", "unsafe", "benchmark")


def held_out_set(
    files: dict[str, str | None],
    training: list[dict[str, Any]],
    rules: CurationRules,
    suites: dict[str, list[SuitePrompt]] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Overlap]]:
    """(kept eval queries, dropped ones with reasons, overlaps with the curated training queries).

    Suites come first: a query of the user's files that is also a benchmark prompt is dropped there as a
    duplicate, so that no suite loses a prompt."""
    kept: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    seen: dict[str, dict[str, Any]] = {}
    sources: list[tuple[str, str, list[tuple[int, str]], str | None]] = [
        ("benchmark", prompts[0].source, [(p.position, p.text) for p in prompts], name)
        for name, prompts in (suites or {}).items()
        if prompts
    ]
    sources += [(subset, path, read_raw_queries(path), None) for subset, path in files.items() if path]
    as_published = replace(
        rules, min_words=1, max_words=10**6, max_special_char_ratio=1.0, near_duplicate_jaccard=1.0
    )
    for subset, path, raw, suite in sources:
        rows, gone = curate(raw, as_published if suite else rules, "eval", path)
        for r in gone:
            dropped.append(_dropped(r["query"], subset, path, r["source_line"], r["reason"], suite=suite))
        for r in rows:
            first = seen.get(r["query_id"])
            if first is not None and suite is not None and first["subset"] == "benchmark":
                first["suites"].append(suite)  # one prompt, several suites
                continue
            if first is not None:  # the same query twice: the first source keeps it
                dropped.append(
                    _dropped(r["query"], subset, path, r["source_line"], "exact_duplicate", suite=suite)
                )
                continue
            record = {
                **{k: r[k] for k in ("query_id", "query", "source_file", "source_line")},
                "subset": subset,
                "suites": [suite] if suite else [],
            }
            seen[r["query_id"]] = record
            kept.append(record)
    by_id = {t["query_id"]: t for t in training}
    overlaps = [_overlap(q, "in_training_set", by_id[q["query_id"]]) for q in kept if q["query_id"] in by_id]
    exact = {(o.source_file, o.source_line) for o in overlaps}
    rest = [q for q in kept if (q["source_file"], q["source_line"]) not in exact]
    if rules.near_duplicate_jaccard < 1.0 and rest and training:
        near = near_matches(
            [content_part(q["query"]) for q in rest],
            [content_part(t["query"]) for t in training],
            rules.near_duplicate_jaccard,
            rules.shingle_words,
        )
        for i, j in sorted(near.items()):
            overlaps.append(_overlap(rest[i], "near_training_query", training[j]))
    return kept, dropped, overlaps


def _overlap(held_out: dict[str, Any], reason: str, training: dict[str, Any]) -> Overlap:
    return Overlap(
        held_out["query"],
        held_out["subset"],
        held_out["source_file"],
        held_out["source_line"],
        reason,
        training["source_file"],
        training["source_line"],
        training["query"],
    )


def _dropped(
    query: str, subset: str, path: str, line: int, reason: str, match: Overlap | None = None,
    suite: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    return {
        "query": query,
        "subset": subset,
        "suite": suite,
        "source_file": path,
        "source_line": line,
        "reason": reason,
        "match_file": match.match_file if match else None,
        "match_line": match.match_line if match else None,
    }


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vpo.evaluation.queries", description=__doc__)
    p.add_argument("--queries", required=True, help="held-out queries (.txt, .json, .jsonl)")
    p.add_argument("--unsafe-queries", default=None, help="held-out queries that ask for harmful content")
    p.add_argument(
        "--suites", nargs="*", default=[], help="benchmark prompt suites, e.g. vbench:human_action"
    )
    p.add_argument("--suite-limit", type=int, default=None, help="at most this many prompts per suite")
    p.add_argument("--suite-file", default=None, help="the benchmark package's VBench_full_info.json")
    p.add_argument("--suite-source", default=None, help="what records name as the suites' source file")
    p.add_argument("--training", nargs="+", required=True, help="curated training query sets (Parquet)")
    p.add_argument("--on-overlap", choices=["error", "drop"], default="error")
    p.add_argument("--min-words", type=int, required=True)
    p.add_argument("--max-words", type=int, required=True)
    p.add_argument("--max-special-char-ratio", type=float, required=True)
    p.add_argument("--near-duplicate-jaccard", type=float, required=True)
    p.add_argument("--shingle-words", type=int, required=True)
    p.add_argument("--out", required=True, help="held-out queries (Parquet)")
    p.add_argument("--dropped", required=True, help="dropped held-out queries with reasons (Parquet)")
    p.add_argument("--report", required=True)
    return p


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    args = make_parser().parse_args(argv)
    rules = CurationRules(
        args.min_words, args.max_words, args.max_special_char_ratio, args.near_duplicate_jaccard,
        args.shingle_words,
    )  # fmt: skip
    report = job_report("eval_queries", args)
    files = {"general": args.queries, "unsafe": args.unsafe_queries}
    report.add_inputs([p for p in (*files.values(), *args.training) if p])
    training = read_many(args.training)
    suites = {
        name: suite_prompts(name, args.suite_limit, args.suite_file, args.suite_source)
        for name in args.suites
    }
    if args.suite_file:
        report.add_inputs([args.suite_file])
    kept, dropped, overlaps = held_out_set(files, training, rules, suites)
    if overlaps and args.on_overlap == "error":
        shown = "\n  ".join(o.describe() for o in overlaps[:20])
        raise SystemExit(
            f"{len(overlaps)} held-out queries overlap the training queries:\n  {shown}\n"
            "Fix: remove them from the held-out file, or set eval.on_overlap: drop."
        )
    gone = {(o.source_file, o.source_line): o for o in overlaps}
    dropped += [_dropped(o.query, o.subset, o.source_file, o.source_line, o.reason, o) for o in gone.values()]
    kept = [q for q in kept if (q["source_file"], q["source_line"]) not in gone]
    write_records(args.out, kept, "eval_query")
    write_records(
        args.dropped, sorted(dropped, key=lambda r: (r["source_file"], r["source_line"])), "eval_dropped"
    )
    report.counts = {
        "kept": len(kept),
        "kept_by_subset": dict(Counter(q["subset"] for q in kept)),
        "kept_by_suite": {name: sum(name in q["suites"] for q in kept) for name in suites},
        "suite_sizes": {name: len(prompts) for name, prompts in suites.items()},
        "dropped": len(dropped),
        "dropped_by_reason": dict(Counter(r["reason"] for r in dropped)),
        "control_chars_stripped": sum(
            with_control_chars(read_raw_queries(path)) for path in files.values() if path
        ),
        "training_queries_checked": len(training),
        "overlapping_training": len(overlaps),
    }
    report.write(args.report)
    log.info("held-out set: %s", report.counts)
    if not kept:
        raise SystemExit(f"no held-out query is left: see {args.dropped} for the reasons")
    empty = [name for name, n in report.counts["kept_by_suite"].items() if n == 0]
    if empty:  # before any video is rendered for it
        raise SystemExit(
            f"every prompt of {', '.join(empty)} was dropped (see {args.dropped}): VBench would have "
            "nothing to score. Fix: remove the suite from eval.suites, or the overlapping queries from the "
            "training files."
        )


if __name__ == "__main__":
    main()
