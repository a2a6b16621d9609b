"""Cost ledger, budget cap, client-side pacing and the pre-run estimate."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import yaml

from tests.conftest import REPO
from vpo.config.resolve import llm_spec
from vpo.config.validate import validate_config
from vpo.core.queries import read_raw_queries
from vpo.core.run_options import RUN_OPTIONS_ENV, run_options, with_execution_options
from vpo.llm.base import Request, Response
from vpo.llm.cache import CachedLLM, ResponseCache
from vpo.llm.ledger import BudgetExceeded, Ledger, Price, read_ledger, spent_usd
from vpo.llm.ratelimit import RateLimiter
from vpo.tools.estimate import estimate, format_spending, format_table

PRICE = Price(input_per_mtok=2.5, output_per_mtok=10.0)


def request(i: int, max_new_tokens: int = 100) -> Request:
    return Request.build(
        [{"role": "user", "content": "x" * 400}],
        {"temperature": 0.7, "top_p": 1.0, "max_new_tokens": max_new_tokens},
        i,
    )


class Answering:
    """A backend answering every request with 100 prompt + 50 completion tokens; counts what it got."""

    fingerprint = "openai|priced"

    def __init__(self, gate: Ledger):
        self.gate = gate
        self.sent = 0

    def generate(self, requests, on_result):
        for i, r in enumerate(requests):
            if not self.gate.admit(r):
                on_result(i, Response(text=None, finish_reason=None, error="not sent: budget_usd reached"))
                continue
            self.sent += 1
            on_result(i, Response(text="ok", finish_reason="stop", prompt_tokens=100, completion_tokens=50))

    def close(self):
        pass


def test_price_and_batch_discount():
    assert PRICE.cost(1_000_000, 0) == pytest.approx(2.5)
    assert PRICE.cost(0, 1_000_000, batch=True) == pytest.approx(5.0)


def test_ledger_charges_every_fresh_answer_and_the_budget_stops_before_it_is_crossed(tmp_path):
    # Worst case per request: (400/4 + 1) prompt tokens at 2.5 + 100 completion tokens at 10 = 0.0012525 USD;
    # actual: 100 * 2.5e-6 + 50 * 10e-6 = 0.00075 USD. A budget of 0.004 fits 3 worst cases, then actuals
    # free room for a 4th and 5th reservation.
    ledger = Ledger(tmp_path / "ledger", "critique", "gpt-x", PRICE, budget_usd=0.004)
    backend = Answering(ledger)
    llm = CachedLLM(backend, ResponseCache(tmp_path / "cache"), ledger)
    with pytest.raises(BudgetExceeded, match=r"budget_usd = 0\.004 reached"):
        llm.generate([request(i) for i in range(10)])
    spent = spent_usd(tmp_path / "ledger")
    assert backend.sent == ledger.totals["answers"] == len(read_ledger(tmp_path / "ledger"))
    assert 0 < backend.sent < 10 and spent <= 0.004
    assert spent == pytest.approx(backend.sent * 0.00075)
    assert {e["stage"] for e in read_ledger(tmp_path / "ledger")} == {"critique"}

    # The answers are cached: a re-run with a larger budget pays only for the rest.
    ledger2 = Ledger(tmp_path / "ledger", "critique", "gpt-x", PRICE, budget_usd=1.0)
    assert ledger2.spent_before == pytest.approx(spent)
    backend2 = Answering(ledger2)
    CachedLLM(backend2, ResponseCache(tmp_path / "cache"), ledger2).generate([request(i) for i in range(10)])
    assert backend2.sent == 10 - backend.sent
    assert spent_usd(tmp_path / "ledger") == pytest.approx(10 * 0.00075)


def test_a_torn_last_ledger_line_is_skipped(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"cost_usd": 0.5}) + "\n" + '{"cost_us')
    assert spent_usd(tmp_path) == 0.5


def test_rate_limiter_paces_requests_per_minute():
    async def run() -> float:
        limiter = RateLimiter(requests_per_minute=600)  # 10/s, a burst of 600 allowed at start
        limiter._buckets[0][0].level = 0  # start empty to measure the steady rate
        start = time.monotonic()
        for _ in range(5):
            await limiter.acquire(1)
        return time.monotonic() - start

    assert 0.4 <= asyncio.run(run()) < 1.5


def test_rate_limiter_pause_holds_every_request():
    async def run() -> float:
        limiter = RateLimiter()
        limiter.pause(0.3)
        start = time.monotonic()
        await asyncio.gather(limiter.acquire(10), limiter.acquire(10))
        return time.monotonic() - start

    assert asyncio.run(run()) >= 0.29


def test_execution_options_travel_outside_params(monkeypatch):
    config = {
        "llms": {
            "judge": {
                "backend": "openai",
                "model": "gpt-x",
                "base_url": "http://x",
                "max_concurrency": 3,
                "mode": "batch",
            }
        },
        "prices": {"gpt-x": {"input_per_mtok": 1, "output_per_mtok": 2}},
        "budget_usd": 5,
    }
    monkeypatch.setenv(RUN_OPTIONS_ENV, json.dumps(run_options(config)))
    spec = with_execution_options({"name": "judge", "backend": "openai", "model": "gpt-x"})
    assert spec["max_concurrency"] == 3 and spec["mode"] == "batch"


@pytest.fixture
def default_config(monkeypatch) -> dict:
    monkeypatch.chdir(REPO)
    return yaml.safe_load((REPO / "config/config.yaml").read_text())


def test_llm_spec_leaves_execution_options_out_of_params(default_config):
    raw = default_config
    raw["llms"]["smollm2"]["max_concurrency"] = 7
    spec = llm_spec(validate_config(raw), "smollm2")
    assert "max_concurrency" not in spec and "batch_size" not in spec and spec["name"] == "smollm2"
    assert spec["model_path"] and spec["backend"] == "hf"


def test_estimate_counts_requests_and_prices_remote_models(default_config):
    raw = default_config
    raw["llms"]["judge"] = {"backend": "openai", "model": "gpt-x", "base_url": "http://127.0.0.1:9/v1"}
    raw["critique"]["llm"] = raw["refine"]["llm"] = "judge"
    raw["prices"] = {"gpt-x": {"input_per_mtok": 2.5, "output_per_mtok": 10.0}}
    raw["budget_usd"] = 0.01
    config = validate_config(raw)
    lines = {(line.stage, line.phase): line for line in estimate(config)}
    n_sft = len(read_raw_queries(config["queries"]["sft"]))
    assert lines[("draft", "sft")].requests == n_sft and lines[("draft", "sft")].cost(True) is None
    critique = lines[("critique", "dpo round 1")]
    assert critique.attempts == critique.requests * (1 + config["critique"]["max_parse_retries"])
    assert critique.cost(True) > critique.cost(False) > 0
    table = format_table(list(lines.values()), 0.01, 0.0)
    assert "gpt-x" in table and "the worst case exceeds budget_usd" in table
    # The evaluation: the few-shot rewriter and the judge go to the judge's endpoint, the judge once
    # per method (original, fewshot, sft, dpo) and held-out query or benchmark prompt.
    n_eval = sum(len(read_raw_queries(config["eval"][k])) for k in ("queries", "unsafe_queries"))
    n_eval += len(config["eval"]["suites"]) * config["eval"]["suite_limit"]  # the benchmark prompts
    assert (
        lines[("eval_fewshot", "eval")].requests == n_eval
        and lines[("eval_fewshot", "eval")].model == "gpt-x"
    )
    assert (
        lines[("eval_judge", "eval")].requests == 4 * n_eval and lines[("eval_judge", "eval")].cost(True) > 0
    )


def test_spending_is_summed_per_stage_model_and_mode():
    entries = [
        {
            "stage": "critique",
            "model": "gpt-x",
            "mode": "batch",
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "cost_usd": 0.25,
        },
        {
            "stage": "critique",
            "model": "gpt-x",
            "mode": "batch",
            "prompt_tokens": 30,
            "completion_tokens": 5,
            "cost_usd": 0.5,
        },
        {
            "stage": "refine",
            "model": "gpt-x",
            "mode": "online",
            "prompt_tokens": 1,
            "completion_tokens": 1,
            "cost_usd": 1.0,
        },
    ]
    table = format_spending(entries).splitlines()
    assert table[2] == "critique | gpt-x | batch | 2 | 40 | 10 | 0.7500"
    assert table[3] == "refine | gpt-x | online | 1 | 1 | 1 | 1.0000"
