"""Raw query files (.txt, .json, .jsonl) read with the line each query came from; the curation's filter
rules, and the exact overlap of held-out and training files (checked when the config is read)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from vpo.core.ids import normalize_text, query_id

FLAG = re.compile(r"(?:^|\s)-[A-Za-z]+\b")
WORD = re.compile(r"[^\W_]+", re.UNICODE)


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


@dataclass(frozen=True)
class CurationRules:
    min_words: int
    max_words: int
    max_special_char_ratio: float
    near_duplicate_jaccard: float
    shingle_words: int
    max_queries: int | None = None


def content_part(text: str) -> str:
    """The query without its trailing `-flag value` constraints (Midjourney/Pika style)."""
    match = FLAG.search(text)
    return text[: match.start()] if match else text


def special_char_ratio(text: str) -> float:
    chars = [c for c in text if not c.isspace()]
    if not chars:
        return 1.0
    return sum(not c.isalnum() for c in chars) / len(chars)


def rule_violation(text: str, rules: CurationRules) -> str | None:
    """The first filter rule `text` breaks, or None."""
    if not text:
        return "empty"
    content = content_part(text)
    if special_char_ratio(content) > rules.max_special_char_ratio:
        return "special_chars"
    words = len(WORD.findall(content))
    if words < rules.min_words:
        return "too_short"
    if words > rules.max_words:
        return "too_long"
    return None


@dataclass(frozen=True)
class Overlap:
    query: str
    subset: str
    source_file: str
    source_line: int
    reason: str  # in_training_set | near_training_query
    match_file: str
    match_line: int
    match_query: str

    def describe(self) -> str:
        kind = "is also" if self.reason == "in_training_set" else "is a near duplicate of"
        return (
            f"{self.source_file}:{self.source_line}: held-out query {self.query!r} {kind} training query "
            f"{self.match_query!r} ({self.match_file}:{self.match_line})"
        )


def exact_overlaps(held_out: dict[str, str | None], training: dict[str, str]) -> list[Overlap]:
    """Held-out entries whose normalized text is a training entry (raw files, before curation)."""
    seen: dict[str, tuple[str, int, str]] = {}
    for path in training.values():
        for line, text in read_raw_queries(path):
            text = normalize_text(text)
            if text:
                seen.setdefault(query_id(text), (path, line, text))
    overlaps = []
    for subset, path in held_out.items():
        if path is None:
            continue
        for line, text in read_raw_queries(path):
            text = normalize_text(text)
            match = seen.get(query_id(text)) if text else None
            if match:
                overlaps.append(Overlap(text, subset, path, line, "in_training_set", *match))
    return overlaps
