import hashlib

import pytest

from tests.conftest import REPO
from vpo.core.templates import conversation, load_template, refine_conversation

# The policy's inference template is the one text taken as-is from the VPO README (the released
# checkpoints were trained on it); `{}` became `{query}`. Editors that strip trailing spaces break it.
POLICY_TEMPLATE_SHA256 = "8b5a6c8dd15bef9c9d42f1a4db2ee7417aaa6a4ec5030e6431f24a07ccc9e932"


def test_policy_template_is_byte_exact():
    data = (REPO / "resources/prompts/policy_inference.txt").read_bytes()
    assert hashlib.sha256(data).hexdigest() == POLICY_TEMPLATE_SHA256
    assert data.count(b"{query}") == 1


def test_plain_template_is_one_user_turn_and_braces_survive():
    assert conversation("Q: {query} {not_a_slot}", query="a {cat}") == [
        {"role": "user", "content": "Q: a {cat} {not_a_slot}"}
    ]


def test_conversation_template_turns():
    text = "### user\nexample {query}\n### assistant\nanswer\n### user\nreal {query}\n"
    turns = conversation(text, query="q")
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[-1]["content"] == "real q"


def test_conversation_must_end_with_user():
    with pytest.raises(ValueError, match="end with"):
        conversation("### user\nx\n### assistant\ny\n")


def test_refinement_continues_the_critique_conversation():
    critique = load_template(REPO / "resources/prompts/critique.txt")
    refine = load_template(REPO / "resources/prompts/refine.txt")
    turns = refine_conversation(critique, refine, "a cat", "A dog.", "Final Judgement (Yes or No): No")
    assert turns[-3]["content"].endswith("Query: a cat\nPrompt: A dog.")
    assert turns[-2] == {"role": "assistant", "content": "Final Judgement (Yes or No): No"}
    assert "[[start]]" in turns[-1]["content"]
