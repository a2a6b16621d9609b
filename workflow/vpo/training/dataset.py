"""Datasets in LLaMA-Factory's sharegpt format (OpenAI-style role/content tags) + dataset_info.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vpo.core.io import atomic_write_bytes, write_json
from vpo.core.templates import conversation

_TAGS = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
    "system_tag": "system",
}


def policy_messages(template: str, query: str) -> list[dict[str, str]]:
    """The policy's user turn: the inference template applied to the query (no system prompt)."""
    return conversation(template, query=query)


def write_dataset(out_dir: str | Path, name: str, rows: list[dict[str, Any]], ranking: bool) -> None:
    out = Path(out_dir)
    columns = (
        {"messages": "messages", "chosen": "chosen", "rejected": "rejected"}
        if ranking
        else {"messages": "messages"}
    )
    info = {
        name: {
            "file_name": f"{name}.json",
            "formatting": "sharegpt",
            "ranking": ranking,
            "columns": columns,
            "tags": _TAGS,
        }
    }
    atomic_write_bytes(out / f"{name}.json", json.dumps(rows, ensure_ascii=False, indent=1).encode("utf-8"))
    write_json(out / "dataset_info.json", info)
