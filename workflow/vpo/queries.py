"""Reading raw query files (.txt, .json, .jsonl) with the line each query came from."""

from __future__ import annotations

import json
from pathlib import Path


class QueryFileError(ValueError):
    """A raw query file that cannot be read; the message names the file, the line and the fix."""


def read_raw_queries(path: str | Path) -> list[tuple[int, str]]:
    """(1-based line or list position, raw text) for every entry, empty ones included."""
    path = Path(path)
    suffix = path.suffix
    text = _decode(path)
    if suffix == ".txt":
        return [(n, line) for n, line in enumerate(text.splitlines(), start=1)]
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise QueryFileError(
                f"{path}:{exc.lineno}: not valid JSON ({exc.msg}). Fix: the file must hold "
                "a JSON list of strings."
            ) from None
        if not isinstance(data, list):
            raise QueryFileError(f"{path}: expected a JSON list of strings, got {type(data).__name__}.")
        rows = []
        for n, item in enumerate(data, start=1):
            if not isinstance(item, str):
                raise QueryFileError(
                    f"{path}: entry {n} is {type(item).__name__}, not a string. Fix: make "
                    "every entry a string."
                )
            rows.append((n, item))
        return rows
    if suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                rows.append((n, ""))
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise QueryFileError(f"{path}:{n}: not valid JSON ({exc.msg}).") from None
            if isinstance(item, dict):
                item = item.get("query")
            if not isinstance(item, str):
                raise QueryFileError(
                    f"{path}:{n}: expected a string or an object with a string 'query' field."
                )
            rows.append((n, item))
        return rows
    raise QueryFileError(f"{path}: unsupported extension {suffix!r}. Fix: use .txt, .json or .jsonl.")


def _decode(path: Path) -> str:
    """The file as text; a byte that is not UTF-8 is reported with its line and a re-encoding hint."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")  # a byte-order mark, as some editors write it, is not query text
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise QueryFileError(
            f"{path}:{line}: byte {data[exc.start]:#04x} is not UTF-8 ({exc.reason}). Fix: re-encode the "
            f"file as UTF-8, e.g. `iconv -f latin1 -t utf-8 {path} > fixed{path.suffix}` (latin1 is a "
            "guess: use the encoding the file was written in)."
        ) from None


def count_raw_queries(path: str | Path) -> int:
    return len(read_raw_queries(path))
