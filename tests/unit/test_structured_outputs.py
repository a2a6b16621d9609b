"""Structured judge answers, refusals and finish reasons, without a server."""

from __future__ import annotations

import json

from vpo.core.ids import digest
from vpo.judge.ask import ask_until_parsed
from vpo.judge.parsing import answer_schema, parse_structured_refinement, parse_structured_verdict
from vpo.llm.base import Request, Response
from vpo.llm.cache import request_key
from vpo.llm.openai_backend import chat_body

GEN = {"temperature": 0.7, "top_p": 1.0, "max_new_tokens": 64}
CRITIQUE = {
    "principles": [{"principle": "Harmlessness", "satisfied": False, "reason": "It asks for gore."}],
    "safety_category": "violence",
    "reflection": "Too graphic.",
    "verdict": "No",
}


def test_structured_answers_parse_and_validate():
    assert parse_structured_verdict(json.dumps(CRITIQUE)) == "no"
    assert parse_structured_verdict(json.dumps({**CRITIQUE, "verdict": "Maybe"})) is None
    assert (
        parse_structured_verdict(json.dumps({k: v for k, v in CRITIQUE.items() if k != "reflection"})) is None
    )
    assert parse_structured_verdict("Final Judgement (Yes or No): Yes") is None  # prose is not JSON
    refined = {
        "reflection": " It broke\nrule 2. ",
        "broken_principles": ["Harmlessness"],
        "refined_prompt": '"A calm sea."',
    }
    assert parse_structured_refinement(json.dumps(refined)) == ("A calm sea.", "It broke rule 2.")
    assert parse_structured_refinement('{"refined_prompt": 3}') == (None, None)


def test_schema_goes_out_as_response_format_and_into_the_cache_key():
    plain = Request.build([{"role": "user", "content": "q"}], GEN, 1)
    structured = Request.build([{"role": "user", "content": "q"}], GEN, 1, answer_schema("critique"))
    # Free-text keys are what they were before structured outputs existed: existing caches stay valid.
    assert request_key("fp", plain) == digest("llm", "fp", plain.chat(), GEN, 1, length=64)
    assert request_key("fp", structured) != request_key("fp", plain)
    body = chat_body("gpt-x", structured)
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["strict"] is True
    assert body["response_format"]["json_schema"]["schema"]["required"] == [
        "principles",
        "safety_category",
        "reflection",
        "verdict",
    ]
    assert "response_format" not in chat_body("gpt-x", plain)


class Scripted:
    """An LLM whose answers are given per attempt; records how many requests each attempt made."""

    fingerprint = "scripted"

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def generate(self, requests, desc=""):
        self.calls.append(len(requests))
        return [self.answers.pop(0) for _ in requests]


def test_refusals_are_kept_and_not_retried_unparsed_answers_are():
    refusal = Response(text="", finish_reason="content_filter")
    prose = Response(text="no verdict here", finish_reason="stop")
    verdict = Response(text="Final Judgement (Yes or No): Yes", finish_reason="stop")
    llm = Scripted([refusal, prose, verdict])
    outcomes = ask_until_parsed(
        llm,
        [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]],
        ["a", "b"],
        GEN,
        0,
        "critique",
        lambda r: "yes" if r.text and "Yes" in r.text else None,
        max_retries=2,
    )
    assert [o.status for o in outcomes] == ["refused", "ok"]
    assert llm.calls == [2, 1]  # only the unparsed answer was asked again
    assert outcomes[1].attempts == 2
    assert Response(text="x", finish_reason="stop", refusal="I can't help with that.").refused
    assert not Response(text=None, finish_reason="content_filter", error="HTTP 500").refused


def test_the_critique_stage_reads_structured_answers_from_an_endpoint(tmp_path):
    from tests.fixtures.openai_fixture_server import FixtureServer
    from vpo.llm.cache import CachedLLM, ResponseCache
    from vpo.llm.openai_backend import OpenAIBackend
    from vpo.stages.critique import critique

    seen = []

    def answer(body: dict) -> dict:
        seen.append(body.get("response_format"))
        if "gore" in body["messages"][0]["content"]:
            return {"content": "", "finish_reason": "content_filter"}
        return {"content": json.dumps({**CRITIQUE, "verdict": "Yes"}), "finish_reason": "stop"}

    rows = [
        {
            "item_id": f"i{i}",
            "query_id": "q",
            "query": query,
            "sample_index": 0,
            "prompt": "p",
            "status": "ok",
        }
        for i, query in enumerate(["a cat", "gore everywhere"])
    ]
    with FixtureServer(answer=answer) as server:
        llm = CachedLLM(OpenAIBackend(server.url, "gpt-x", "openai|gpt-x"), ResponseCache(tmp_path))
        records = critique(rows, llm, "Judge {query}: {prompt}", GEN, 0, max_retries=2, structured=True)
    assert [(r["status"], r["verdict"], r["finish_reason"]) for r in records] == [
        ("ok", "yes", "stop"),
        ("refused", None, "content_filter"),
    ]
    assert len(seen) == 2 and all(f["json_schema"]["schema"]["required"][-1] == "verdict" for f in seen)
    assert llm.stats["refused"] == 1
