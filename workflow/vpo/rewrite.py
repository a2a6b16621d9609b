"""`vpo rewrite`: turn short video queries into detailed prompts with a trained VPO policy.

Uses the policy's inference template (from the VPO README) as the single user turn and the method's
inference decoding (temperature 0.7, top_p 1.0; 1024 new tokens with HF, 2048 with vLLM). Works with
a local checkpoint in-process, or with any OpenAI-compatible endpoint (e.g. `vllm serve` of a released
VPO checkpoint) through --base-url.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from vpo.ids import derive_seed, normalize_query
from vpo.llm import Request, open_llm
from vpo.parsing import clean_prompt
from vpo.prompts import conversation, load_template
from vpo.queries import read_raw_queries

DEFAULT_TEMPLATE = Path(__file__).resolve().parents[2] / "resources" / "prompts" / "policy_inference.txt"


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vpo rewrite", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("query", nargs="?", help="one query (or use --file)")
    p.add_argument("--file", help="queries to rewrite (.txt one per line, .json list, .jsonl)")
    p.add_argument("--out", help="write JSON lines {query, prompt, status} here (default: stdout)")
    p.add_argument(
        "--model",
        default="results/models/dpo",
        help="checkpoint folder or hub id (hf backend), "
        "or the model name the endpoint serves (with --base-url)",
    )
    p.add_argument("--base-url", help="OpenAI-compatible endpoint; omit to run the model in-process")
    p.add_argument("--api-key-env", help="environment variable holding the endpoint's API key")
    p.add_argument("--template", default=str(DEFAULT_TEMPLATE))
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--cache-dir", default="results/cache")
    return p


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = make_parser().parse_args(argv)
    if bool(args.query) == bool(args.file):
        raise SystemExit("give exactly one of a query argument or --file")
    queries = [args.query] if args.query else [q for _, q in read_raw_queries(args.file)]
    queries = [normalize_query(q) for q in queries]
    if args.base_url:
        spec = {
            "backend": "openai",
            "base_url": args.base_url,
            "model": args.model,
            "api_key_env": args.api_key_env,
        }
    else:
        if not Path(args.model).exists() and args.model.startswith(("results/", "resources/", ".", "/")):
            raise SystemExit(f"model folder {args.model} not found: run the workflow first, or pass --model")
        spec = {
            "backend": "hf",
            "model_path": args.model,
            "batch_size": args.batch_size,
            "device": args.device,
        }
    template = load_template(args.template)
    generation = {"temperature": args.temperature, "top_p": args.top_p, "max_new_tokens": args.max_new_tokens}
    with open_llm(spec, args.cache_dir, stage="rewrite") as llm:
        requests = [
            Request.build(conversation(template, query=q), generation, derive_seed(args.seed, "rewrite", q))
            for q in queries
        ]
        responses = llm.generate(requests, desc="rewrite")
    sink = open(args.out, "w", encoding="utf-8") if args.out else None  # noqa: SIM115
    for query, response in zip(queries, responses, strict=True):
        prompt = clean_prompt(response.text) if response.ok else None
        status = "failed" if not response.ok else ("ok" if prompt else "empty")
        if args.query and not args.out:
            if prompt is None:
                raise SystemExit(f"no prompt: {status} {response.error or ''}")
            print(prompt)
            continue
        line = json.dumps(
            {"query": query, "prompt": prompt, "status": status, "error": response.error}, ensure_ascii=False
        )
        print(line, file=sink or sys.stdout)
    if sink:
        sink.close()


if __name__ == "__main__":
    main()
