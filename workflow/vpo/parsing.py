"""Parsers for model output. They never guess: what they cannot read comes back as None."""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

import jsonschema

from vpo.schemas import load_schema

_WS = re.compile(r"\s+")
# "Final Judgement (Yes or No): Yes", "**Final judgment:** no", "FINAL JUDGEMENT - Yes." ...
_VERDICT = re.compile(
    r"final\s+judge?ment\s*(?:\([^)\n]{0,20}\))?[\s*_`'\"]*[:：\-–]?[\s*_`'\"]*"
    r"(yes|no)\b(?![\s*_]*(?:or|/)\s*(?:yes|no)\b)",
    re.IGNORECASE,
)
# "Safety (Safe or Unsafe): Unsafe", "**Safety:** safe" ... (the evaluation judge's extra line)
_SAFETY = re.compile(
    r"safety\s*(?:\([^)\n]{0,20}\))?[\s*_`'\"]*[:：\-–]?[\s*_`'\"]*"
    r"(safe|unsafe)\b(?![\s*_]*(?:or|/)\s*(?:safe|unsafe)\b)",
    re.IGNORECASE,
)
# The contract is [[start]] ... [[end]]; single brackets are accepted too (small models drop one).
_START = re.compile(r"\[\[?\s*start\s*\]\]?", re.IGNORECASE)
_END = re.compile(r"\[\[?\s*end\s*\]\]?", re.IGNORECASE)
_LABEL = re.compile(r"^\s*\**\s*(?:video\s+prompt|refined\s+prompt|prompt)\s*\**\s*:\s*\**\s*", re.IGNORECASE)
_REFLECTION = re.compile(r"^\s*(?:\*\*)?reflection(?:\*\*)?\s*:\s*", re.IGNORECASE)
_VERDICT_LINE = re.compile(r"final\s+judge?ment", re.IGNORECASE)
_QUOTES = ('"', "'", "“", "”", "`")


def normalize_text(text: str) -> str:
    """Collapse all whitespace, newlines included, into single spaces."""
    return _WS.sub(" ", text).strip()


def parse_verdict(text: str | None) -> str | None:
    """'yes' / 'no' from the last `Final Judgement ...: <answer>` in `text`, else None."""
    if not text:
        return None
    matches = _VERDICT.findall(text)
    return matches[-1].lower() if matches else None


def parse_safety(text: str | None) -> str | None:
    """'safe' / 'unsafe' from the last `Safety (Safe or Unsafe): <answer>` line in `text`, else None."""
    if not text:
        return None
    matches = _SAFETY.findall(text)
    return matches[-1].lower() if matches else None


def parse_refinement(text: str | None, truncated: bool = False) -> tuple[str | None, str | None]:
    """(refined prompt, reflection) from a `[[start]] ... [[end]]` answer; the prompt is None if absent.

    The last block wins. A block whose `[[end]]` is missing is accepted only if the model stopped on
    its own (it was not cut by the token limit), since then nothing of the prompt is missing.
    """
    if not text:
        return None, None
    starts = list(_START.finditer(text))
    if not starts:
        return None, None
    start = starts[-1]
    end = _END.search(text, start.end())
    if end is None and truncated:
        return None, None
    body = text[start.end() : end.start() if end else len(text)]
    if end is None:  # the model stopped without [[end]]: a verdict line it appended is not prompt text
        body = _VERDICT_LINE.split(body)[0]
    prompt = clean_prompt(body)
    reflection = normalize_text(_REFLECTION.sub("", text[: start.start()])) or None
    return prompt, reflection


def clean_prompt(text: str | None) -> str | None:
    """A generated prompt as one line: label such as 'Prompt:' and wrapping quotes removed; None if empty."""
    if text is None:
        return None
    cleaned = normalize_text(_LABEL.sub("", text.strip()))
    if len(cleaned) >= 2 and cleaned[0] in _QUOTES and cleaned[-1] in _QUOTES:
        cleaned = cleaned[1:-1].strip()
    return cleaned or None


# How chat models open a refusal; a rewrite that starts like this is no video prompt.
_REFUSAL = re.compile(
    r"^\W*(?:i\s*(?:'|’)?\s*m\s+sorry|i\s+am\s+sorry|sorry\b|i\s+(?:can\s*(?:'|’)?\s*t|cannot|can\s+not|"
    r"won\s*(?:'|’)?\s*t|will\s+not|must\s+decline)\b|i\s*(?:'|’)?\s*m\s+(?:unable|not\s+able)|"
    r"i\s+am\s+(?:unable|not\s+able)|as\s+an\s+ai\b|unfortunately,?\s+i\b)",
    re.IGNORECASE,
)


def looks_like_refusal(text: str | None) -> bool:
    """Whether a rewrite opens the way chat models decline ("I'm sorry", "I can't", "As an AI" ...)."""
    return bool(text and _REFUSAL.match(text))


@cache
def answer_schema(name: str) -> dict[str, Any]:
    """JSON Schema of a structured judge answer (`critique` or `refine`), sent as `response_format`."""
    schema = load_schema(f"answers/{name}.schema.yaml")
    return {k: v for k, v in schema.items() if k not in ("title", "description")}


def _structured(text: str | None, name: str) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        data = json.loads(text)
        jsonschema.validate(data, answer_schema(name))
    except (json.JSONDecodeError, jsonschema.ValidationError):
        return (
            None  # servers that ignore response_format answer in prose: unparsed, as with the text contract
        )
    return data


def parse_structured_verdict(text: str | None) -> str | None:
    """'yes' / 'no' from a critique answer that follows `answers/critique.schema.yaml`, else None."""
    data = _structured(text, "critique")
    return data["verdict"].lower() if data else None


def parse_structured_safety(text: str | None) -> tuple[str, str] | None:
    """(verdict, safety category) from a critique answer that follows `answers/critique.schema.yaml`."""
    data = _structured(text, "critique")
    return (data["verdict"].lower(), data["safety_category"].strip().lower() or "none") if data else None


def parse_structured_refinement(text: str | None) -> tuple[str | None, str | None]:
    """(refined prompt, reflection) from an answer that follows `answers/refine.schema.yaml`."""
    data = _structured(text, "refine")
    if data is None:
        return None, None
    return clean_prompt(data["refined_prompt"]), normalize_text(data["reflection"]) or None
