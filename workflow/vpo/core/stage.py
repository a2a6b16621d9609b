"""What every stage's command line shares: logging, the job report, and the LLM stages' arguments and
skeleton (open the LLM, run, record its report), so that a stage module holds only its own logic."""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from vpo.core.layout import CACHE_DIR
from vpo.core.provenance import JobReport

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: int = logging.INFO, fmt: str = LOG_FORMAT) -> None:
    logging.basicConfig(level=level, format=fmt)


def setup(threads: int | None = None) -> None:
    """Logging, offline hub access against the configured cache (vpo.models.provision downloaded the
    models beforehand), and torch's CPU threads."""
    from vpo.models.provision import offline_hub_env

    setup_logging()
    os.environ.update(offline_hub_env())
    if threads:
        import torch

        torch.set_num_threads(threads)


def job_report(stage: str, args: argparse.Namespace, inputs: Sequence[str | None] = ()) -> JobReport:
    """The job's report, recording its arguments (no secret is ever passed as one; the report path is
    left out) and the checksums of the input files among `inputs`."""
    report = JobReport(stage, {k: v for k, v in vars(args).items() if k != "report"})
    report.add_inputs([p for p in inputs if p])
    return report


def add_llm_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--llm",
        type=json.loads,
        required=True,
        help="resolved LLM spec as JSON (backend, model_path or model, backend options)",
    )
    parser.add_argument(
        "--generation",
        type=json.loads,
        required=True,
        help="decoding parameters as JSON (temperature, top_p, max_new_tokens)",
    )
    parser.add_argument("--template", required=True, help="prompt template file")
    parser.add_argument("--seed", type=int, required=True, help="root seed")
    add_runtime_arguments(parser)


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", default=CACHE_DIR, help="item cache root")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--server-log", default=None, help="log file of a model server the job starts")
    parser.add_argument("--report", required=True, help="job report (JSON)")


@contextmanager
def llm_job(report: JobReport, args: argparse.Namespace, stage: str) -> Iterator[Any]:
    """The LLM of `args.llm`, open for the job's work; its usage (requests, cache hits, cost) goes into
    the job report when the work is done."""
    from vpo.llm import open_llm

    report.add_models([args.llm.get("model_path")])
    with open_llm(args.llm, args.cache_dir, args.server_log, stage=stage) as llm:
        yield llm
        report.extra["llm"] = llm.report()


def finish(report: JobReport, path: str, counts: dict[str, Any], log: logging.Logger) -> None:
    report.counts = counts
    report.write(path)
    log.info("%s: %s", report.stage, counts)
