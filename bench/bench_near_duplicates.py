"""Benchmark: near-duplicate detection of `curate` (MinHash-LSH) against exact pairwise Jaccard.

Reads the released VPO queries from ../shared/data/vpo when present (or any JSON list / text file
given with --queries), takes the first --n of them, and runs both on the same texts in the same
process. Prints wall time, the ratio, and how many of the exact method's near duplicates LSH found
(MinHash can miss pairs close to the threshold; it never reports a pair below it).

    python bench/bench_near_duplicates.py [--queries FILE] [--n 3000] [--threshold 0.8] [--shingle 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vpo.core.ids import normalize_text
from vpo.core.queries import read_raw_queries
from vpo.stages.curate import content_part, find_near_duplicates, jaccard, shingles

REPO = Path(__file__).resolve().parents[1]
RELEASED = REPO.parent / "shared/data/vpo/sft_prompts.json"


def exact_near_duplicates(texts: list[str], threshold: float, n: int) -> dict[int, int]:
    """The baseline: every text against every kept earlier text, first match in file order."""
    sets = [shingles(t, n) for t in texts]
    kept: list[int] = []
    duplicate_of: dict[int, int] = {}
    for i, items in enumerate(sets):
        match = next((j for j in kept if jaccard(items, sets[j]) >= threshold), None)
        if match is None:
            kept.append(i)
        else:
            duplicate_of[i] = match
    return duplicate_of


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--queries", default=str(RELEASED))
    parser.add_argument("--n", type=int, default=3000, help="first N queries (the baseline is quadratic)")
    parser.add_argument("--threshold", type=float, default=0.8, help="paper.yaml's near_duplicate_jaccard")
    parser.add_argument("--shingle", type=int, default=3, help="paper.yaml's shingle_words")
    args = parser.parse_args()
    if not Path(args.queries).exists():
        raise SystemExit(f"{args.queries} not found: pass --queries with a JSON list or a text file")
    texts = [content_part(normalize_text(q)) for _, q in read_raw_queries(args.queries)][: args.n]

    start = time.perf_counter()
    exact = exact_near_duplicates(texts, args.threshold, args.shingle)
    t_exact = time.perf_counter() - start
    start = time.perf_counter()
    ours = find_near_duplicates(texts, args.threshold, args.shingle)
    t_ours = time.perf_counter() - start

    found = len(ours.keys() & exact.keys())
    below = [
        i
        for i, j in ours.items()
        if jaccard(shingles(texts[i], args.shingle), shingles(texts[j], args.shingle)) < args.threshold
    ]
    print(f"{len(texts)} queries, Jaccard >= {args.threshold} on word {args.shingle}-grams")
    print("| method | wall s | ratio | near duplicates |\n| --- | --- | --- | --- |")
    print(f"| baseline: exact pairwise | {t_exact:.2f} | 1.00 | {len(exact)} |")
    speedup = f"{t_exact / t_ours:.1f}x faster"
    print(f"| ours: MinHash-LSH (64 perms, 16 bands) | {t_ours:.2f} | {speedup} | {len(ours)} |")
    print(f"LSH found {found}/{len(exact)} of the exact duplicates; pairs below threshold: {len(below)}")


if __name__ == "__main__":
    main()
