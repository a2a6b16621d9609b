"""Benchmark: the sample stage's engines on this machine, same queries × K, through the stage's own code.

Every method runs `vpo.stages.sample.generate` (the `sample` stage's function) behind `vpo.llm.open_llm`,
exactly as a job does, with a fresh item cache, on the SmolLM2-135M-Instruct folder the workflow builds:

- hf (baseline): the in-process transformers backend, all candidates in batches of `--batch-size`;
- transformers serve: `backend: openai, serve: transformers`, a local server started for the job;
- vLLM eager: `serve: vllm` with `--enforce-eager` (no compile step at start-up), K candidates of a
  query in one request (`n = K`);
- vLLM compiled: `serve: vllm` with the engine's defaults (torch.compile at start-up).

Columns: start = entering `open_llm` (server up and healthy; for hf, loading the weights), sample =
`generate` over all candidates, tok/s = completion tokens / sample seconds, total = start + sample;
the ratios are the method's tok/s over hf's and hf's total over the method's (> 1 = faster than hf).
The vLLM rows need the vLLM environment (`scripts/setup.sh --vllm`; `--vllm-python` or
VPO_VLLM_PYTHON); they are skipped without it. Queries: the demo DPO queries, or with `--queries N`
the first N of the paper's released DPO set when ../shared/data/vpo/ is present. Run from the root:

    .venv/bin/python bench/bench_sampling.py [--queries 8] [--k 4] [--max-new-tokens 80]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vpo.core.ids import query_id  # noqa: E402
from vpo.core.run_options import RUN_OPTIONS_ENV  # noqa: E402
from vpo.core.templates import load_template  # noqa: E402
from vpo.llm import open_llm  # noqa: E402
from vpo.stages.sample import generate  # noqa: E402

log = logging.getLogger("bench_sampling")
RELEASE_DPO = REPO.parent / "shared/data/vpo/dpo_prompts.json"


@dataclass
class Row:
    method: str
    start_s: float
    sample_s: float
    tokens: int
    ok: int
    candidates: int

    @property
    def rate(self) -> float:
        return self.tokens / self.sample_s

    @property
    def total_s(self) -> float:
        return self.start_s + self.sample_s


def load_queries(count: int | None) -> list[dict]:
    if count is not None and RELEASE_DPO.exists():
        texts = json.loads(RELEASE_DPO.read_text())[:count]
    else:
        lines = (REPO / "resources/queries/demo_dpo.txt").read_text().splitlines()
        texts = [line.strip() for line in lines if line.strip()][: count or None]
    return [{"query_id": query_id(t), "query": t} for t in texts]


def measure(method: str, spec: dict, queries: list[dict], args: argparse.Namespace, workdir: Path) -> Row:
    cache = Path(tempfile.mkdtemp(dir=workdir, prefix="cache-"))
    template = load_template(REPO / "resources/prompts/policy_inference.txt")
    generation = {"temperature": 0.9, "top_p": 0.9, "max_new_tokens": args.max_new_tokens}
    with contextlib.ExitStack() as stack:
        t0 = time.perf_counter()
        llm = stack.enter_context(open_llm(spec, str(cache), str(cache / "server.log"), stage="sample"))
        t1 = time.perf_counter()
        records = generate(queries, llm, template, generation, args.k, 0, "sample")
        t2 = time.perf_counter()
    ok = sum(r["status"] == "ok" for r in records)
    return Row(method, t1 - t0, t2 - t1, llm.stats["completion_tokens"], ok, len(records))


def table(rows: list[Row]) -> str:
    base = rows[0]
    lines = [
        "| method | start s | sample s | completion tok | tok/s | total s | tok/s vs hf | total vs hf |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.method} | {row.start_s:.1f} | {row.sample_s:.1f} | {row.tokens} | {row.rate:.1f} "
            f"| {row.total_s:.1f} | {row.rate / base.rate:.2f}x | {base.total_s / row.total_s:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--queries", type=int, default=None, help="query count (default: the demo's 8)")
    parser.add_argument("--k", type=int, default=4, help="candidates per query (the paper's K = 4)")
    parser.add_argument("--max-new-tokens", type=int, default=80)
    parser.add_argument("--batch-size", type=int, default=32, help="hf batch size")
    parser.add_argument("--model", type=Path, default=None, help="SmolLM2 folder (default: build one)")
    parser.add_argument(
        "--vllm-python",
        default=os.environ.get("VPO_VLLM_PYTHON") or str(REPO / ".venv-vllm/bin/python"),
        help="Python of the vLLM environment",
    )
    parser.add_argument("--skip", nargs="*", default=[], help="methods to leave out (e.g. transformers)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="bench-sampling-") as tmp:
        workdir = Path(tmp)
        model = args.model
        if model is None:
            from vpo.models.build import main as build

            model = workdir / "smollm2-135m-instruct"
            build(["smollm2-gguf", "--out", str(model)])
        os.environ[RUN_OPTIONS_ENV] = json.dumps({"vllm_python": args.vllm_python})
        vllm = {"dtype": "float32", "max_model_len": 2048}
        served = {"backend": "openai", "model_path": str(model), "device": "cpu"}
        methods = {
            "hf": {"backend": "hf", "model_path": str(model), "batch_size": args.batch_size, "device": "cpu"},
            "transformers": {**served, "serve": "transformers"},
            "vllm-eager": {**served, "serve": "vllm", "vllm": {**vllm, "extra_args": ["--enforce-eager"]}},
            "vllm-compiled": {**served, "serve": "vllm", "vllm": vllm},
        }
        if not Path(args.vllm_python).exists():
            print(f"no vLLM environment at {args.vllm_python}: vLLM rows skipped", file=sys.stderr)
            args.skip += ["vllm-eager", "vllm-compiled"]
        queries = load_queries(args.queries)
        print(
            f"{len(queries)} queries x K={args.k}, max_new_tokens {args.max_new_tokens}, T 0.9, top_p 0.9; "
            f"{os.cpu_count()} CPUs",
            file=sys.stderr,
        )
        rows = []
        for name, spec in methods.items():
            if name in args.skip:
                continue
            print(f"running {name} ...", file=sys.stderr)
            rows.append(measure(name, spec, queries, args, workdir))
    print(table(rows))
    failed = [row.method for row in rows if row.ok != row.candidates]
    if failed:
        print(f"not every candidate came back ok: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
