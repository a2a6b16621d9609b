"""Cost ledger and budget cap: token usage of every paid answer, priced from the config's table.

Each job appends to its own JSONL file under `<cache>/ledger/`, so parallel jobs (or Slurm jobs on
different nodes) never write the same file; the run's total is the sum of all files. Before a request
is sent its worst case (estimated prompt tokens + `max_new_tokens`) is reserved against `budget_usd`;
a request that would not fit is not sent, and the stage stops with an error once what is in flight has
come back. Answers already received stay in the item cache, so raising the budget and re-running pays
only for what is missing. Jobs running at the same time see each other's spending when they start, not
while they run: keep a margin when many judge jobs run in parallel.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vpo.core.run_options import from_env
from vpo.llm.base import Request, Response
from vpo.llm.ratelimit import estimate_tokens


class BudgetExceeded(RuntimeError):
    pass


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens; `batch_discount` multiplies the price of Batch API answers."""

    input_per_mtok: float
    output_per_mtok: float
    batch_discount: float = 0.5

    def cost(self, prompt_tokens: int, completion_tokens: int, batch: bool = False) -> float:
        usd = (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) / 1e6
        return usd * (self.batch_discount if batch else 1.0)


def costs_from_env() -> tuple[dict[str, Price], float | None]:
    """The price table and budget the workflow passes to its jobs (empty/None when run by hand)."""
    data = from_env()
    prices = {name: Price(**entry) for name, entry in (data.get("prices") or {}).items()}
    return prices, data.get("budget_usd")


def spent_usd(root: str | os.PathLike) -> float:
    """Total cost recorded in a ledger folder (all jobs, all stages)."""
    return sum(entry["cost_usd"] for entry in read_ledger(root))


def read_ledger(root: str | os.PathLike) -> list[dict[str, Any]]:
    entries = []
    for path in sorted(Path(root).glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():  # a job killed mid-write leaves at most one partial last line
                try:
                    entries.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return entries


class Ledger:
    """Usage and cost of one job's answers, with the budget check the backends call before sending."""

    def __init__(
        self,
        root: str | os.PathLike,
        stage: str,
        model: str,
        price: Price | None = None,
        budget_usd: float | None = None,
        batch: bool = False,
    ):
        self.root = Path(root)
        self.stage, self.model, self.price = stage, model, price
        self.budget_usd, self.batch = budget_usd, batch
        self.path = self.root / f"{stage}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.jsonl"
        self.spent_before = spent_usd(self.root) if budget_usd is not None else 0.0
        self.totals = {"answers": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
        self.over_budget = 0  # requests not sent because they could exceed the budget
        self._reserved: Counter[Request] = Counter()
        self._reserved_usd = 0.0

    def _worst_case(self, request: Request) -> float:
        if self.price is None:
            return 0.0
        prompt = estimate_tokens(request.prompt_chars(), 0)
        return self.price.cost(prompt, request.max_new_tokens, self.batch)

    def admit(self, request: Request) -> bool:
        """Reserve the request's worst-case cost; False (and nothing reserved) when it does not fit."""
        if self.budget_usd is None or self.price is None:
            return True
        worst = self._worst_case(request)
        committed = self.spent_before + self.totals["cost_usd"] + self._reserved_usd
        if committed + worst > self.budget_usd:
            self.over_budget += 1
            return False
        self._reserved[request] += 1
        self._reserved_usd += worst
        return True

    def _release(self, request: Request) -> None:
        if self._reserved[request] > 0:
            self._reserved[request] -= 1
            self._reserved_usd -= self._worst_case(request)

    def settle(self, request: Request, response: Response) -> None:
        """Called once per answer that came back from the backend (not from the cache)."""
        self._release(request)
        if not response.ok:
            return
        cost = 0.0
        if self.price is not None:
            cost = self.price.cost(response.prompt_tokens, response.completion_tokens, self.batch)
        self.totals["answers"] += 1
        self.totals["prompt_tokens"] += response.prompt_tokens
        self.totals["completion_tokens"] += response.completion_tokens
        self.totals["cost_usd"] += cost
        entry = {
            "time": round(time.time(), 3),
            "stage": self.stage,
            "model": self.model,
            "mode": "batch" if self.batch else "online",
            "prompt_tokens": response.prompt_tokens,
            "completion_tokens": response.completion_tokens,
            "cost_usd": round(cost, 8),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")

    def check(self) -> None:
        """Raise once the stage's answers are in, if any request was held back by the budget."""
        if self.over_budget:
            raise BudgetExceeded(
                f"budget_usd = {self.budget_usd} reached: {self.over_budget} {self.stage} requests to "
                f"{self.model} were not sent (spent {self.spent_before + self.totals['cost_usd']:.4f} USD "
                f"so far, ledger in {self.root}). Answers received are cached; fix: raise budget_usd in "
                "the config (`vpo estimate` prints what the run may cost) and re-run."
            )

    def summary(self) -> dict[str, Any]:
        return {
            **self.totals,
            "cost_usd": round(self.totals["cost_usd"], 6),
            "priced": self.price is not None,
            "mode": "batch" if self.batch else "online",
            "over_budget": self.over_budget,
        }
