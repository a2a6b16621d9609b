"""Stage 1: curate raw queries — normalize, filter by rules, remove exact and near duplicates.

Near duplicates: Jaccard overlap of word n-gram sets ≥ threshold, found with MinHash + LSH banding
(candidate pairs are then checked exactly), so curation stays near-linear at 10^4-10^5 queries.
The earlier query in file order is kept. Every dropped query is written out with its reason.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
from collections import Counter, defaultdict
from typing import Any

import numpy as np

from vpo.core.ids import normalize_text, query_id, strip_control_chars
from vpo.core.io import write_records
from vpo.core.queries import WORD, CurationRules, content_part, read_raw_queries, rule_violation
from vpo.core.stage import job_report, setup_logging

log = logging.getLogger(__name__)

_PERMUTATIONS, _BANDS = 64, 16


def shingles(text: str, n: int) -> set[str]:
    words = WORD.findall(text.lower())
    if len(words) <= n:
        return {" ".join(words)}
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


_rng = np.random.default_rng(20250326)
_MULT = _rng.integers(1, 2**63, size=_PERMUTATIONS, dtype=np.uint64) | np.uint64(1)
_XOR = _rng.integers(0, 2**63, size=_PERMUTATIONS, dtype=np.uint64)


def minhash(items: set[str]) -> np.ndarray:
    hashes = np.array(
        [int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") for s in items],
        dtype=np.uint64,
    )
    with np.errstate(over="ignore"):
        mixed = (hashes[:, None] ^ _XOR[None, :]) * _MULT[None, :]
    return mixed.min(axis=0)


def band_keys(items: set[str]) -> list[tuple[int, bytes]]:
    """LSH bucket keys of a shingle set: texts that share one are candidate near duplicates."""
    signature = minhash(items)
    rows = _PERMUTATIONS // _BANDS
    return [(b, signature[b * rows : (b + 1) * rows].tobytes()) for b in range(_BANDS)]


def find_near_duplicates(texts: list[str], threshold: float, n: int) -> dict[int, int]:
    """Map index → index of the earlier kept text it near-duplicates (Jaccard ≥ threshold)."""
    sets = [shingles(t, n) for t in texts]
    buckets: dict[tuple[int, bytes], list[int]] = defaultdict(list)
    duplicate_of: dict[int, int] = {}
    for i, items in enumerate(sets):
        keys = band_keys(items)
        candidates = sorted({j for key in keys for j in buckets.get(key, ())})
        match = next((j for j in candidates if jaccard(items, sets[j]) >= threshold), None)
        if match is not None:
            duplicate_of[i] = match
            continue
        for key in keys:  # only kept texts enter the index: duplicates point at a kept original
            buckets[key].append(i)
    return duplicate_of


def near_matches(texts: list[str], reference: list[str], threshold: float, n: int) -> dict[int, int]:
    """Map index in `texts` → index of a `reference` text it near-duplicates (Jaccard ≥ threshold)."""
    ref_sets = [shingles(t, n) for t in reference]
    buckets: dict[tuple[int, bytes], list[int]] = defaultdict(list)
    for j, items in enumerate(ref_sets):
        for key in band_keys(items):
            buckets[key].append(j)
    matches: dict[int, int] = {}
    for i, text in enumerate(texts):
        items = shingles(text, n)
        candidates = sorted({j for key in band_keys(items) for j in buckets.get(key, ())})
        match = next((j for j in candidates if jaccard(items, ref_sets[j]) >= threshold), None)
        if match is not None:
            matches[i] = match
    return matches


def with_control_chars(raw: list[tuple[int, str]]) -> int:
    """How many raw queries carry control characters (normalization strips them)."""
    return sum(strip_control_chars(text) != text for _, text in raw)


def curate(
    raw: list[tuple[int, str]], rules: CurationRules, set_name: str, source: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    kept: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    seen: dict[str, int] = {}

    def drop(line: int, text: str, reason: str, duplicate_of: int | None = None) -> None:
        dropped.append(
            {
                "query": text,
                "set": set_name,
                "source_file": source,
                "source_line": line,
                "reason": reason,
                "duplicate_of": duplicate_of,
            }
        )

    for line, raw_text in raw:
        text = normalize_text(raw_text)
        reason = rule_violation(text, rules)
        if reason:
            drop(line, text, reason)
            continue
        qid = query_id(text)
        if qid in seen:
            drop(line, text, "exact_duplicate", seen[qid])
            continue
        seen[qid] = line
        kept.append(
            {"query_id": qid, "query": text, "set": set_name, "source_file": source, "source_line": line}
        )
    if rules.near_duplicate_jaccard < 1.0:
        near = find_near_duplicates(
            [content_part(r["query"]) for r in kept], rules.near_duplicate_jaccard, rules.shingle_words
        )
        for i, j in sorted(near.items()):
            drop(kept[i]["source_line"], kept[i]["query"], "near_duplicate", kept[j]["source_line"])
        kept = [r for i, r in enumerate(kept) if i not in near]
    if rules.max_queries is not None and len(kept) > rules.max_queries:
        for r in kept[rules.max_queries :]:
            drop(r["source_line"], r["query"], "over_max_queries")
        kept = kept[: rules.max_queries]
    dropped.sort(key=lambda r: r["source_line"])
    return kept, dropped


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vpo.stages.curate", description=__doc__)
    p.add_argument("--input", required=True, help="raw query file (.txt, .json, .jsonl)")
    p.add_argument("--set", required=True, choices=["sft", "dpo"], dest="set_name")
    p.add_argument("--min-words", type=int, required=True)
    p.add_argument("--max-words", type=int, required=True)
    p.add_argument("--max-special-char-ratio", type=float, required=True)
    p.add_argument("--near-duplicate-jaccard", type=float, required=True)
    p.add_argument("--shingle-words", type=int, required=True)
    p.add_argument("--max-queries", type=int, default=None)
    p.add_argument("--out", required=True, help="curated queries (Parquet)")
    p.add_argument("--dropped", required=True, help="dropped queries with reasons (Parquet)")
    p.add_argument("--report", required=True, help="job report (JSON)")
    return p


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    args = make_parser().parse_args(argv)
    rules = CurationRules(
        args.min_words,
        args.max_words,
        args.max_special_char_ratio,
        args.near_duplicate_jaccard,
        args.shingle_words,
        args.max_queries,
    )
    report = job_report("curate", args)
    report.add_inputs([args.input])
    raw = read_raw_queries(args.input)
    kept, dropped = curate(raw, rules, args.set_name, args.input)
    write_records(args.out, kept, "query")
    write_records(args.dropped, dropped, "dropped_query")
    report.counts = {
        "raw": len(raw),
        "control_chars_stripped": with_control_chars(raw),
        "kept": len(kept),
        "dropped": len(dropped),
        "dropped_by_reason": dict(Counter(r["reason"] for r in dropped)),
    }
    report.write(args.report)
    log.info(
        "%s: kept %d of %d queries; dropped %s",
        args.set_name,
        len(kept),
        len(raw),
        report.counts["dropped_by_reason"],
    )
    if not kept:
        raise SystemExit(
            f"curation kept no query of {args.input}: see {args.dropped} for the reasons, "
            "and loosen the curation.* keys"
        )


def shard_count(n_queries: int, queries_per_shard: int) -> int:
    return max(1, math.ceil(n_queries / queries_per_shard))


if __name__ == "__main__":
    main()
