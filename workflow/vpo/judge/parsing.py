"""Parsers for model output. They never guess: what they cannot read comes back as None."""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

import jsonschema

from vpo.core.ids import normalize_text
from vpo.core.schemas import load_schema
from vpo.llm.base import Response

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
# "Imprecise (Yes or No): No" (the evaluation judge's line for a prompt that drops, changes or adds to the
# query's content: Table C's Imprecise column)
_IMPRECISE = re.compile(
    r"imprecise\s*(?:\([^)\n]{0,20}\))?[\s*_`'\"]*[:：\-–]?[\s*_`'\"]*"
    r"(yes|no)\b(?![\s*_]*(?:or|/)\s*(?:yes|no)\b)",
    re.IGNORECASE,
)
# The contract is [[start]] ... [[end]]; single brackets are accepted too (small models drop one).
_START = re.compile(r"\[\[?\s*start\s*\]\]?", re.IGNORECASE)
_END = re.compile(r"\[\[?\s*end\s*\]\]?", re.IGNORECASE)
_LABEL = re.compile(r"^\s*\**\s*(?:video\s+prompt|refined\s+prompt|prompt)\s*\**\s*:\s*\**\s*", re.IGNORECASE)
_REFLECTION = re.compile(r"^\s*(?:\*\*)?reflection(?:\*\*)?\s*:\s*", re.IGNORECASE)
_VERDICT_LINE = re.compile(r"final\s+judge?ment", re.IGNORECASE)
_VERDICT_WORDS = re.compile(r"(final)\s+(judge?ment)", re.IGNORECASE)
_QUOTES = ('"', "'", "“", "”", "`")


def neutralize_markers(text: str) -> str:
    """`text` (a query or prompt) as the judge is shown it: the answer markers it holds — a verdict or
    safety line, `[[start]]` / `[[end]]` — are broken up (`Final-Judgement`, `Safety-rating:`, `(start)`), so
    that a judge quoting its input cannot write a verdict or a refinement block it did not give."""
    for _ in range(4):  # a replacement cannot build a new marker; the loop only makes sure of it
        before = text
        text = _VERDICT_WORDS.sub(lambda m: f"{m.group(1)}-{m.group(2)}", text)
        text = _SAFETY.sub(lambda m: m.group(0)[:6] + "-rating" + m.group(0)[6:], text)
        text = _IMPRECISE.sub(lambda m: m.group(0)[:9] + "-rating" + m.group(0)[9:], text)
        text = _START.sub("(start)", _END.sub("(end)", text))
        if text == before:
            return text
    raise AssertionError(f"markers left in {text!r}")


def _only_answer(matches: list[str]) -> str | None:
    """The answer when every marker in the judge's text gives the same one; two different answers
    (a judge that changed its mind, or wrote out another example after its own) are no verdict."""
    answers = {m.lower() for m in matches}
    return answers.pop() if len(answers) == 1 else None


def parse_verdict(text: str | None) -> str | None:
    """'yes' / 'no' from the `Final Judgement ...: <answer>` line(s) in `text`; None if there is none,
    or if two of them disagree (inputs are shown with `neutralize_markers`, so every marker is the
    judge's own)."""
    return _only_answer(_VERDICT.findall(text)) if text else None


def parse_safety(text: str | None) -> str | None:
    """'safe' / 'unsafe' from the `Safety (Safe or Unsafe): <answer>` line(s) in `text`, as
    `parse_verdict` reads the verdict."""
    return _only_answer(_SAFETY.findall(text)) if text else None


def parse_imprecise(text: str | None) -> str | None:
    """'yes' / 'no' from the `Imprecise (Yes or No): <answer>` line(s) in `text`, as `parse_verdict`
    reads the verdict."""
    return _only_answer(_IMPRECISE.findall(text)) if text else None


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
    """JSON Schema of a structured judge answer (`critique`, `refine` or `eval_judge`), sent as
    `response_format`."""
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


def parse_structured_eval(text: str | None) -> tuple[str, str, bool] | None:
    """(verdict, safety category, imprecise) from an answer that follows `answers/eval_judge.schema.yaml`."""
    data = _structured(text, "eval_judge")
    if data is None:
        return None
    return data["verdict"].lower(), data["safety_category"].strip().lower() or "none", data["imprecise"]


def parse_structured_refinement(text: str | None) -> tuple[str | None, str | None]:
    """(refined prompt, reflection) from an answer that follows `answers/refine.schema.yaml`."""
    data = _structured(text, "refine")
    if data is None:
        return None, None
    return clean_prompt(data["refined_prompt"]), normalize_text(data["reflection"]) or None


def rewrite_status(response: Response) -> tuple[str, str | None]:
    """(status, prompt) of a policy's or teacher's rewrite: `failed` (no answer after all retries),
    `refused` (a content filter, or an answer that opens like a refusal: no video prompt), `empty` (no
    text once cleaned), else `ok` with the cleaned one-line prompt."""
    if not response.ok:
        return "failed", None
    prompt = clean_prompt(response.text)
    if response.refused or looks_like_refusal(prompt):
        return "refused", None
    return ("ok", prompt) if prompt else ("empty", None)
