"""`vpo rewrite`: turn short video queries into detailed prompts with a trained VPO policy.

Uses the policy's inference template (from the VPO README) as the single user turn and the method's
inference decoding (temperature 0.7, top_p 1.0; 1024 new tokens in-process, 2048 is the vLLM setting).
Works with a checkpoint in-process (transformers, batched) or with any OpenAI-compatible endpoint
(e.g. `vllm serve` of a released VPO checkpoint) through --base-url. Answers are cached item by item
under --cache-dir, so an interrupted batch resumes where it stopped. The evaluation's rewrite jobs
call the same `rewrite_queries`, so `vpo rewrite` reproduces their prompts.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from vpo.core.ids import derive_seed, normalize_text, query_id
from vpo.core.layout import CACHE_DIR, PROMPTS_DIR
from vpo.core.queries import read_raw_queries
from vpo.core.stage import setup_logging
from vpo.core.templates import conversation, load_template
from vpo.judge.parsing import rewrite_status
from vpo.llm import Request, open_llm

DEFAULT_TEMPLATE = PROMPTS_DIR / "policy_inference.txt"


def rewrite_queries(
    llm,
    queries: list[dict[str, Any]],
    template: str,
    generation: dict[str, Any],
    root_seed: int,
    desc: str = "rewrite",
) -> list[dict[str, Any]]:
    """One rewrite per query ({query_id, query}): the prompt and its status.

    status: ok; empty (no text); refused (a content filter, or an answer that opens like a refusal,
    e.g. "I'm sorry, I can't": kept as such, with the raw text); failed (no answer after all retries).
    """
    seeds = [derive_seed(root_seed, "rewrite", q["query_id"]) for q in queries]
    requests = [
        Request.build(conversation(template, query=q["query"]), generation, seed)
        for q, seed in zip(queries, seeds, strict=True)
    ]
    responses = llm.generate(requests, desc=desc) if requests else []
    records = []
    for query, seed, response in zip(queries, seeds, responses, strict=True):
        status, prompt = rewrite_status(response)
        records.append(
            {
                "query_id": query["query_id"],
                "query": query["query"],
                "prompt": prompt,
                "status": status,
                "raw": response.text,
                "finish_reason": response.finish_reason,
                "seed": seed,
                "model_fingerprint": llm.fingerprint,
                "prompt_tokens": response.prompt_tokens,
                "completion_tokens": response.completion_tokens,
                "error": response.error,
            }
        )
    return records


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vpo rewrite", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("query", nargs="?", help="one query (or use --file)")
    p.add_argument("--file", help="queries to rewrite (.txt one per line, .json list, .jsonl)")
    p.add_argument("--out", help="write JSON lines {query, prompt, status, ...} here (default: stdout)")
    p.add_argument(
        "--model",
        default=None,
        help="checkpoint folder or hub id (in-process), or the name an endpoint serves (--base-url); "
        "default: the last round's DPO checkpoint of this run, when it has one target",
    )
    p.add_argument(
        "--base-url", help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 of `vllm serve`"
    )
    p.add_argument("--api-key-env", help="environment variable holding the endpoint's API key")
    p.add_argument("--template", default=str(DEFAULT_TEMPLATE), help="policy template (default: the VPO one)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument(
        "--max-new-tokens", type=int, default=None, help="default 1024 in-process, 2048 with --base-url"
    )
    p.add_argument("--seed", type=int, default=0, help="root seed; each query's seed derives from it")
    p.add_argument("--batch-size", type=int, default=16, help="sequences generated together (in-process)")
    p.add_argument("--max-concurrency", type=int, default=None, help="requests in flight (endpoint)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--cache-dir", default=CACHE_DIR, help="answers are cached here (resume)")
    return p


def last_checkpoint(models: Path = Path("results/models/dpo")) -> str:
    """The DPO checkpoint of the run's last round (results/models/dpo/round-<r>/<target>), if one target."""
    folders = [p for p in models.glob("round-*/*") if p.is_dir() and p.parent.name[6:].isdigit()]
    if not folders:
        raise SystemExit(f"no DPO checkpoint under {models}: run the workflow first, or pass --model")
    last = max(int(p.parent.name[6:]) for p in folders)
    newest = sorted(str(p) for p in folders if int(p.parent.name[6:]) == last)
    if len(newest) > 1:
        listed = ", ".join(newest)
        raise SystemExit(f"round {last} has a checkpoint per target ({listed}): pass one as --model")
    return newest[0]


def llm_spec_from_args(args: argparse.Namespace) -> dict[str, Any]:
    if args.base_url and args.model is None:
        raise SystemExit("--base-url needs --model: the name the endpoint serves")
    args.model = args.model or last_checkpoint()
    if args.base_url:
        spec = {
            "backend": "openai",
            "base_url": args.base_url,
            "model": args.model,
            "api_key_env": args.api_key_env,
        }
        if args.max_concurrency:
            spec["max_concurrency"] = args.max_concurrency
        return spec
    if not Path(args.model).exists() and args.model.startswith(("results/", "resources/", ".", "/")):
        raise SystemExit(f"model folder {args.model} not found: run the workflow first, or pass --model")
    return {
        "backend": "hf",
        "model_path": args.model,
        "batch_size": args.batch_size,
        "device": args.device,
        "dtype": args.dtype,
    }


def main(argv: list[str] | None = None) -> None:
    setup_logging(logging.WARNING, "%(levelname)s %(name)s: %(message)s")  # a user-facing CLI: quiet
    args = make_parser().parse_args(argv)
    if bool(args.query) == bool(args.file):
        raise SystemExit("give exactly one of a query argument or --file")
    raw = [(1, args.query)] if args.query else read_raw_queries(args.file)
    queries, skipped = [], 0
    for _, text in raw:
        text = normalize_text(text)
        if text:
            queries.append({"query_id": query_id(text), "query": text})
        else:
            skipped += 1
    if skipped:
        logging.warning("%d empty lines of %s skipped", skipped, args.file)
    template = load_template(args.template)
    max_new = args.max_new_tokens or (2048 if args.base_url else 1024)
    generation = {"temperature": args.temperature, "top_p": args.top_p, "max_new_tokens": max_new}
    with open_llm(llm_spec_from_args(args), args.cache_dir, stage="rewrite") as llm:
        records = rewrite_queries(llm, queries, template, generation, args.seed)
    if args.query and not args.out:
        record = records[0]
        if record["prompt"] is None:
            raise SystemExit(f"no prompt: {record['status']} {record['error'] or record['raw'] or ''}")
        print(record["prompt"])
        return
    sink = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115
    for record in records:
        print(json.dumps(record, ensure_ascii=False), file=sink)
    if args.out:
        sink.close()
        counts = Counter(r["status"] for r in records)
        print(f"{len(records)} queries rewritten into {args.out}: {dict(counts)}", file=sys.stderr)


if __name__ == "__main__":
    main()
