"""OpenAI Batch API backend (batch mode): half the price of online calls, answers within a window.

A submission is journaled under `<cache>/batches/` before anything is paid for and updated at every
step (input uploaded, batch created, batch finished), so a job killed while it waits — a preempted
Slurm job, a lost session — resumes polling the same batch on its next run instead of paying again.
Each line's `custom_id` is the request's item-cache key: results map back without guesswork, and a
line that failed or never ran (an expired batch) is resubmitted, up to `max_resubmits` rounds; after
that it is returned failed (kept, counted, asked again by the next run, like an online failure).
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import openai

from vpo.core.io import atomic_write_bytes
from vpo.llm.base import Request, Response, ResultCallback
from vpo.llm.cache import request_key
from vpo.llm.ledger import Ledger
from vpo.llm.openai_backend import OVER_BUDGET, MalformedResponse, chat_body, client_args, to_response

log = logging.getLogger(__name__)

TERMINAL = {"completed", "failed", "expired", "cancelled"}
_POLL_ERRORS = (
    openai.APIConnectionError,
    openai.APITimeoutError,
    openai.RateLimitError,
    openai.InternalServerError,
)


class Journal:
    """One submission's durable state: which requests, which uploaded file, which batch, how it ended."""

    def __init__(self, path: Path, data: dict[str, Any]):
        self.path, self.data = path, data

    @classmethod
    def load_open(cls, root: Path, fingerprint: str) -> list[Journal]:
        journals = []
        for path in sorted(root.glob("*.json")):
            data = json.loads(path.read_text(encoding="utf-8"))
            if data["fingerprint"] == fingerprint and data["state"] != "done":
                journals.append(cls(path, data))
        return journals

    def save(self, **changes: Any) -> None:
        self.data.update(changes)
        atomic_write_bytes(self.path, json.dumps(self.data, indent=1).encode("utf-8"))


class BatchBackend:
    """Sends requests as Batch API jobs; `generate` returns when every request has an answer or failed."""

    def __init__(
        self,
        base_url: str,
        model: str,
        fingerprint: str,
        journal_dir: str | os.PathLike,
        api_key_env: str | None = None,
        timeout_s: float = 300.0,
        poll_s: float = 30.0,
        poll_max_s: float = 600.0,
        completion_window: str = "24h",
        max_requests_per_batch: int = 50_000,
        max_resubmits: int = 2,
        gate: Ledger | None = None,
    ):
        self.model = model
        self.fingerprint = fingerprint
        self.journal_dir = Path(journal_dir)
        self.poll_s, self.poll_max_s = poll_s, poll_max_s
        self.completion_window = completion_window
        self.max_requests_per_batch = max_requests_per_batch
        self.max_resubmits = max_resubmits
        self.gate = gate
        self.client = openai.OpenAI(**client_args(base_url, api_key_env, timeout_s))
        self.stats = {"batches_submitted": 0, "batches_resumed": 0, "lines_resubmitted": 0, "lines_failed": 0}

    def generate(self, requests: Sequence[Request], on_result: ResultCallback) -> None:
        by_key: dict[str, list[int]] = defaultdict(list)
        for i, request in enumerate(requests):
            by_key[request_key(self.fingerprint, request)].append(i)
        first = {key: requests[indices[0]] for key, indices in by_key.items()}
        errors: dict[str, str] = {}

        def deliver(key: str, response: Response) -> None:
            for i in by_key.pop(key, []):
                on_result(i, response)

        # Batches a killed run left behind come first: their answers are already paid for.
        for journal in Journal.load_open(self.journal_dir, self.fingerprint):
            if by_key.keys() & set(journal.data["custom_ids"]):
                self.stats["batches_resumed"] += 1
                log.info(
                    "resuming batch submission %s (%s)",
                    journal.data["submission"],
                    journal.data.get("batch_id"),
                )
                errors.update(self._finish(journal, first, deliver))

        for round_ in range(self.max_resubmits + 1):
            todo = [key for key in by_key if key in first]
            if not todo:
                break
            if round_:
                self.stats["lines_resubmitted"] += len(todo)
                log.warning("resubmitting %d failed lines (round %d)", len(todo), round_)
            admitted = []
            for key in todo:
                if self.gate is None or self.gate.admit(first[key]):
                    admitted.append(key)
                else:
                    deliver(key, Response(text=None, finish_reason=None, error=OVER_BUDGET))
            journals = [
                self._submit(admitted[s : s + self.max_requests_per_batch], first, round_)
                for s in range(0, len(admitted), self.max_requests_per_batch)
            ]
            for journal in journals:
                errors.update(self._finish(journal, first, deliver))

        for key in list(by_key):
            self.stats["lines_failed"] += 1
            deliver(key, Response(text=None, finish_reason=None, error=errors.get(key, "no batch answer")))

    def _submit(self, keys: list[str], requests: dict[str, Request], round_: int) -> Journal:
        submission = uuid.uuid4().hex
        journal = Journal(
            self.journal_dir / f"{submission}.json",
            {
                "submission": submission,
                "fingerprint": self.fingerprint,
                "model": self.model,
                "round": round_,
                "custom_ids": keys,
                "state": "uploading",
                "created": time.time(),
            },
        )
        journal.save()
        self._create(journal, requests)
        self.stats["batches_submitted"] += 1
        return journal

    def _create(self, journal: Journal, requests: dict[str, Request]) -> None:
        """Upload the input file and create the batch, recording each id as soon as it exists."""
        if journal.data.get("input_file_id") is None:
            lines = [
                json.dumps(
                    {
                        "custom_id": key,
                        "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": chat_body(self.model, requests[key]),
                    }
                )
                for key in journal.data["custom_ids"]
            ]
            upload = self.client.files.create(
                file=(f"{journal.data['submission']}.jsonl", ("\n".join(lines) + "\n").encode("utf-8")),
                purpose="batch",
            )
            journal.save(input_file_id=upload.id)
        batch = self.client.batches.create(
            input_file_id=journal.data["input_file_id"],
            endpoint="/v1/chat/completions",
            completion_window=self.completion_window,
            metadata={"vpo_submission": journal.data["submission"]},
        )
        journal.save(batch_id=batch.id, state="submitted", status=batch.status)
        log.info("batch %s submitted: %d requests", batch.id, len(journal.data["custom_ids"]))

    def _adopt(self, journal: Journal, requests: dict[str, Request]) -> None:
        """A run killed between upload and create: find the batch by its metadata, else create it."""
        for batch in self.client.batches.list(limit=100):
            if (batch.metadata or {}).get("vpo_submission") == journal.data["submission"]:
                journal.save(batch_id=batch.id, state="submitted", status=batch.status)
                return
        missing = [key for key in journal.data["custom_ids"] if key not in requests]
        if missing:  # the requests changed since: this submission cannot be rebuilt, start afresh
            journal.save(state="done", status="abandoned")
            return
        self._create(journal, requests)

    def _finish(self, journal: Journal, requests: dict[str, Request], deliver) -> dict[str, str]:
        """Wait for a batch to end, deliver its answers; returns the errors of the lines without one."""
        if journal.data.get("batch_id") is None:
            self._adopt(journal, requests)
            if journal.data.get("batch_id") is None:
                return {}
        batch = self._wait(journal.data["batch_id"])
        answers, errors = {}, {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                for line in self.client.files.content(file_id).text.splitlines():
                    if line.strip():
                        key, response, error = _read_line(json.loads(line))
                        if response is not None:
                            answers[key] = response
                        else:
                            errors[key] = error
        if batch.status == "failed":
            reasons = "; ".join(e.message or "" for e in (batch.errors.data if batch.errors else []) if e)
            errors.update(
                {key: f"batch failed: {reasons or 'no reason given'}" for key in journal.data["custom_ids"]}
            )
        for key in journal.data["custom_ids"]:
            if key in answers:
                deliver(key, answers[key])
            elif key not in errors:
                errors[key] = f"batch {batch.status}: no answer for this line"
        journal.save(
            state="done",
            status=batch.status,
            finished=time.time(),
            request_counts=batch.request_counts.model_dump() if batch.request_counts else None,
            answered=len(answers),
        )
        return errors

    def _wait(self, batch_id: str):
        delay, failures = self.poll_s, 0
        while True:
            try:
                batch = self.client.batches.retrieve(batch_id)
                failures = 0
            except _POLL_ERRORS as exc:
                failures += 1
                if failures > 10:
                    raise RuntimeError(f"cannot reach the Batch API to poll {batch_id}: {exc}") from exc
                batch = None
            if batch is not None and batch.status in TERMINAL:
                log.info("batch %s %s: %s", batch_id, batch.status, batch.request_counts)
                return batch
            time.sleep(delay)
            delay = min(self.poll_max_s, delay * 1.5)

    def close(self) -> None:
        self.client.close()


def _read_line(line: dict[str, Any]) -> tuple[str, Response | None, str | None]:
    """One output- or error-file line: (custom_id, answer or None, error or None)."""
    key = line.get("custom_id", "")
    reply = line.get("response") or {}
    if line.get("error"):
        return key, None, f"{line['error'].get('code')}: {line['error'].get('message')}"
    if reply.get("status_code") != 200:
        return key, None, f"HTTP {reply.get('status_code')}: {json.dumps(reply.get('body'))[:300]}"
    try:
        response = to_response(reply["body"])
    except MalformedResponse as exc:
        return key, None, str(exc)
    response.attempts = 0
    return key, response, None
