"""Record builders for the unit tests: complete records of a type, checked against its JSON Schema, so that
no test feeds a stage a record the pipeline could never have written."""

from __future__ import annotations

from typing import Any

from vpo.core.schemas import validate_records

# Neutral values of the fields a test does not care about.
_COMMON = {"query": "a query", "sample_index": 0, "seed": 0, "model_fingerprint": "test", "error": None}
DEFAULTS: dict[str, dict[str, Any]] = {
    "generation": {
        **_COMMON,
        "prompt": "a prompt",
        "status": "ok",
        "raw": "a prompt",
        "finish_reason": "stop",
    },
    "critique": {
        **_COMMON,
        "prompt": "a prompt",
        "verdict": None,
        "status": "ok",
        "attempts": 1,
        "critique": "Final Judgement (Yes or No): Yes",
        "finish_reason": "stop",
    },
    "refinement": {
        **_COMMON,
        "prompt": "a prompt",
        "refined_prompt": None,
        "reflection": None,
        "status": "ok",
        "attempts": 1,
        "raw": "[[start]]a refined prompt[[end]]",
        "finish_reason": "stop",
    },
    "pair": {
        "query": "a query",
        "chosen": "a",
        "rejected": "b",
        "source": "text",
        "chosen_kind": "refinement",
        "score_margin": None,
        "score_convention": None,
        "chosen_video_id": None,
        "rejected_video_id": None,
    },
    "reward": {
        "query": "a query",
        "prompt": "a prompt",
        "sample_index": 0,
        "video_index": 0,
        "video_path": "results/state/videos/aa/aa.mp4",
        "video_sha256": "0" * 64,
        "checklist": "golden",
        "scorer_fingerprint": "test",
    },
}


def record(record_type: str, **fields: Any) -> dict[str, Any]:
    """A `record_type` record: `fields` over neutral defaults, valid by its schema (else RecordError)."""
    row = {**DEFAULTS[record_type], **fields}
    validate_records([row], record_type, where=f"a test's {record_type} record")
    return row
