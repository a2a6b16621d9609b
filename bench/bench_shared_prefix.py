"""Benchmark: the hf backend's shared-prefix reuse on the judge's few-shot critique prompts.

Runs the same batch of critique requests with the SmolLM2-135M-Instruct checkpoint the workflow
builds, once with the few-shot head encoded once per batch (ours) and once with every row encoded in
full (the baseline: plain left-padded `generate`), in the same process, and prints a table.

    python bench/bench_shared_prefix.py [--model resources/models/smollm2-135m-instruct] [--n 16]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from vpo.core.queries import read_raw_queries
from vpo.core.templates import conversation, load_template
from vpo.llm.base import Request
from vpo.llm.hf import HFBackend

REPO = Path(__file__).resolve().parents[1]


def critique_requests(n: int, max_new_tokens: int) -> list[Request]:
    template = load_template(REPO / "resources/prompts/critique.txt")
    queries = [q for _, q in read_raw_queries(REPO / "resources/queries/demo_sft.txt")][:n]
    generation = {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": max_new_tokens}
    return [
        Request.build(
            conversation(template, query=q, prompt=f"A cinematic shot of {q}, soft light."), generation, i
        )
        for i, q in enumerate(queries)
    ]


def timed(backend: HFBackend, requests: list[Request]) -> tuple[float, list[str]]:
    texts: list[str] = [""] * len(requests)
    start = time.perf_counter()
    backend.generate(requests, lambda i, r: texts.__setitem__(i, r.text))
    return time.perf_counter() - start, texts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=str(REPO / "resources/models/smollm2-135m-instruct"))
    parser.add_argument("--n", type=int, default=16, help="requests in the batch")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if not Path(args.model).exists():
        raise SystemExit(f"{args.model} not found: build it with `snakemake build_smollm2` first")
    torch.set_num_threads(args.threads)
    requests = critique_requests(args.n, args.max_new_tokens)
    ours = HFBackend(args.model, "bench", batch_size=args.n, device="cpu")
    baseline = HFBackend(args.model, "bench", batch_size=args.n, device="cpu", min_shared_prefix=10**9)
    # Warm both up on the exact workload first: the first pass over new tensor shapes is slower, and
    # whichever variant ran first would pay for it. Then alternate, best of `--repeats`.
    timed(baseline, requests), timed(ours, requests)
    t_base, t_ours = float("inf"), float("inf")
    for _ in range(args.repeats):
        elapsed, base_texts = timed(baseline, requests)
        t_base = min(t_base, elapsed)
        elapsed, our_texts = timed(ours, requests)
        t_ours = min(t_ours, elapsed)
    same = sum(a == b for a, b in zip(our_texts, base_texts, strict=True))
    print(
        f"{len(requests)} critique requests, greedy, {args.max_new_tokens} new tokens, {args.threads} threads"
    )
    print("| variant | wall s | ratio |\n| --- | --- | --- |")
    print(f"| baseline: full prompt per row | {t_base:.1f} | 1.00 |")
    print(f"| ours: shared few-shot prefix encoded once | {t_ours:.1f} | {t_base / t_ours:.2f}x faster |")
    print(f"identical greedy answers: {same}/{len(requests)}")


if __name__ == "__main__":
    main()
