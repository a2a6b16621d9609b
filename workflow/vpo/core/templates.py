"""Prompt templates: plain-text files rendered into chat messages.

A template is either plain text (one user turn) or a conversation whose turns start with a line
`### user`, `### assistant` or `### system`; example turns before the last one make it few-shot.
`{query}` and `{prompt}` are replaced; no other braces are interpreted.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from vpo.judge.parsing import neutralize_markers

Message = dict[str, str]

_TURN = re.compile(r"^###\s*(system|user|assistant)\s*$", re.MULTILINE)


def load_template(path: str | os.PathLike) -> str:
    return Path(path).read_text(encoding="utf-8")


def render(template: str, **values: str) -> str:
    """Fill every `{name}` slot in one pass: a value that itself holds `{prompt}` stays as written."""
    if not values:
        return template
    slot = re.compile("|".join(re.escape("{" + name + "}") for name in values))
    return slot.sub(lambda m: values[m.group(0)[1:-1]], template)


def conversation(template: str, **values: str) -> list[Message]:
    """The template's turns with slots filled; plain text becomes a single user turn."""
    pieces = _TURN.split(template)
    if len(pieces) == 1:
        return [{"role": "user", "content": render(template, **values)}]
    if pieces[0].strip():
        raise ValueError("text before the first '### <role>' line of a conversation template")
    turns = [
        {"role": role, "content": render(body.strip("\n"), **values)}
        for role, body in zip(pieces[1::2], pieces[2::2], strict=True)
    ]
    if turns[-1]["role"] != "user":
        raise ValueError("a conversation template must end with a '### user' turn")
    return turns


def judge_conversation(template: str, query: str, prompt: str) -> list[Message]:
    """The judge's view of a (query, prompt): answer markers inside either are neutralized, so that
    neither the user's text nor a sampled prompt can hand the judge a verdict to echo."""
    return conversation(template, query=neutralize_markers(query), prompt=neutralize_markers(prompt))


def refine_conversation(
    critique_template: str, refine_template: str, query: str, prompt: str, critique: str
) -> list[Message]:
    """The refinement is the second turn of the judge's critique conversation."""
    return [
        *judge_conversation(critique_template, query, prompt),
        {"role": "assistant", "content": critique},
        *judge_conversation(refine_template, query, prompt),
    ]
