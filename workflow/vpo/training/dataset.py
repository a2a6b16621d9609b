"""Datasets in LLaMA-Factory's sharegpt format (OpenAI-style role/content tags) + dataset_info.json.

The data file is a JSON list with one row per line, written by polars for a frame of rows (the same
bytes as `json.dumps(row, ensure_ascii=False, separators=(",", ":"))` per row).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import polars as pl

from vpo.core.io import atomic_write_chunks, write_json
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


def policy_messages_column(template: str, query: pl.Expr) -> pl.Expr:
    """`policy_messages` for a column of queries: a list of {role, content} per row."""
    # The turns with the slot unfilled; filling `{query}` in one pass is joining the pieces around it.
    turns = conversation(template)
    return pl.concat_list(
        pl.struct(role=pl.lit(turn["role"]), content=_filled(turn["content"], query)) for turn in turns
    )


def _filled(body: str, query: pl.Expr) -> pl.Expr:
    pieces = body.split("{query}")
    parts: list[pl.Expr] = [pl.lit(pieces[0])]
    for piece in pieces[1:]:
        parts += [query, pl.lit(piece)]
    return pl.concat_str(parts)


def ranking_rows(template: str, pairs: pl.DataFrame) -> pl.DataFrame:
    """DPO rows from pair records: the policy's turn(s) for the query, the chosen and rejected answers."""
    return pairs.select(
        policy_messages_column(template, pl.col("query")).alias("messages"),
        pl.struct(role=pl.lit("assistant"), content="chosen").alias("chosen"),
        pl.struct(role=pl.lit("assistant"), content="rejected").alias("rejected"),
    )


def write_dataset(
    out_dir: str | Path, name: str, rows: list[dict[str, Any]] | pl.DataFrame, ranking: bool
) -> None:
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
    atomic_write_chunks(out / f"{name}.json", _json_list(rows))
    write_json(out / "dataset_info.json", info)


def _json_list(rows: list[dict[str, Any]] | pl.DataFrame) -> list[bytes | memoryview]:
    """The rows as a JSON list, one row a line, in chunks to write one after the other."""
    if len(rows) == 0:
        return [b"[]\n"]
    if isinstance(rows, pl.DataFrame):
        buffer = io.BytesIO()
        rows.write_ndjson(buffer)
        lines = buffer.getvalue()
    else:
        lines = "".join(
            json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in rows
        ).encode()
    # JSON strings hold no raw newline: each newline ends a row, and the last row takes no comma.
    return [b"[\n", memoryview(lines.replace(b"\n", b",\n"))[:-2], b"\n]\n"]
