"""Shared command-line plumbing of the LLM stages (arguments, logging, torch threads)."""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Any

from vpo.models.provision import offline_hub_env


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
    parser.add_argument("--cache-dir", default="results/cache", help="item cache root")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--server-log", default=None, help="log file of a model server the job starts")
    parser.add_argument("--report", required=True, help="job report (JSON)")


def setup(threads: int | None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Offline, against the configured hub cache (vpo.models.provision downloaded the models beforehand).
    os.environ.update(offline_hub_env())
    if threads:
        import torch

        torch.set_num_threads(threads)


def public_params(args: argparse.Namespace) -> dict[str, Any]:
    """Arguments as recorded in the report (no secrets are ever passed as arguments)."""
    return {k: v for k, v in vars(args).items() if k != "report"}
