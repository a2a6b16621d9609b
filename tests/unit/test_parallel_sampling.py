"""K candidates of a query in one request (`n = K`, as vLLM samples), each still its own cached item.

Against the local OpenAI fixture, which answers choice i of an `n`-request as the same request with
seed + i (vLLM's parallel sampling; the real engine is checked in tests/integration/test_vllm.py).
"""

from __future__ import annotations

import json

import pytest

from tests.fixtures.openai_fixture_server import FixtureServer
from vpo.core.ids import consecutive_seeds, query_id
from vpo.llm.base import Request
from vpo.llm.cache import CachedLLM, ResponseCache, request_key
from vpo.llm.openai_backend import OpenAIBackend, sibling_groups
from vpo.stages.sample import generate

TEMPLATE = "Rewrite the video query: {query}"
SAMPLING = {"temperature": 0.9, "top_p": 0.9, "max_new_tokens": 64}
QUERIES = [{"query_id": query_id(q), "query": q} for q in ("a cat at dawn", "a dog in rain", "a red kite")]


def request(text: str, seed: int, temperature: float = 0.9) -> Request:
    return Request.build([{"role": "user", "content": text}], {**SAMPLING, "temperature": temperature}, seed)


def test_sibling_groups_join_only_consecutive_seeds_of_one_request():
    requests = [request("a", 11), request("a", 10), request("b", 10), request("a", 13), request("a", 12)]
    requests += [request("a", 14, temperature=0.5), request("a", 20)]
    assert sibling_groups(requests) == [[1, 0, 4, 3], [6], [2], [5]]
    assert sibling_groups([request("a", 5), request("a", 5)]) == [[0], [1]]  # same seed twice: no group


def test_consecutive_seeds_stay_31_bit():
    seeds = consecutive_seeds(0, 4, "sample", "q1", "model")
    assert len(seeds) == 4 and seeds[-1] - seeds[0] == 3 and seeds[-1] <= 0x7FFFFFFF
    assert seeds == consecutive_seeds(0, 4, "sample", "q1", "model")
    assert seeds != consecutive_seeds(0, 4, "sample", "q2", "model")


def sampler(url: str, cache, parallel: bool) -> CachedLLM:
    return CachedLLM(OpenAIBackend(url, "policy", "vllm-serve|x", parallel_sampling=parallel), cache)


def test_one_request_per_query_gives_each_candidate_its_own_answer(tmp_path):
    with FixtureServer() as fixture:
        one_by_one = sampler(fixture.url, ResponseCache(tmp_path / "a"), False)
        single = generate(QUERIES, one_by_one, TEMPLATE, SAMPLING, 4, 0, "sample")
        asked_single = fixture.completions.total()
        llm = sampler(fixture.url, ResponseCache(tmp_path / "b"), True)
        grouped = generate(QUERIES, llm, TEMPLATE, SAMPLING, 4, 0, "sample")
        bodies = [json.loads(body) for body in fixture.completions if '"n":4' in body]
    assert asked_single == 12 and len(bodies) == 3  # one request per query instead of K
    assert all(body["return_token_ids"] for body in bodies)
    # Candidate i of the n = 4 request is exactly what its own request (seed s + i) answered.
    assert grouped == single
    assert len({r["prompt"] for r in grouped}) == 12
    assert llm.stats["cache_misses"] == 12 and llm.stats["requests"] == 12
    # Usage: the prompt counted once per request, completion tokens per candidate (token_ids).
    words = [len(r["raw"].split()) for r in grouped]
    assert llm.stats["completion_tokens"] == sum(words)
    assert llm.stats["prompt_tokens"] == sum(len(TEMPLATE.format(query=q["query"]).split()) for q in QUERIES)


def test_a_resumed_query_asks_only_its_missing_candidates(tmp_path):
    cache = ResponseCache(tmp_path)
    with FixtureServer() as fixture:
        llm = sampler(fixture.url, cache, True)
        full = generate(QUERIES[:1], llm, TEMPLATE, SAMPLING, 4, 0, "sample")
        # As if the job had died with candidates 1 and 3 unanswered.
        seeds = [r["seed"] for r in full]
        for record in (full[1], full[3]):
            key = request_key(
                llm.fingerprint, request(TEMPLATE.format(query=record["query"]), record["seed"])
            )
            cache._path(key).unlink()
        fixture.completions.clear()
        again = generate(QUERIES[:1], llm, TEMPLATE, SAMPLING, 4, 0, "sample")
        sent = sorted(json.loads(body)["seed"] for body in fixture.completions)
        ns = {json.loads(body).get("n") for body in fixture.completions}
    assert sent == [seeds[1], seeds[3]] and ns == {None}  # two single requests, the gap splits them
    assert again == full


def test_a_dead_server_fails_requests_at_once(tmp_path):
    with FixtureServer() as fixture:
        url = fixture.url
    backend = OpenAIBackend(
        url, "policy", "x", max_retries=5, backoff_base_s=30, give_up=lambda: "server gone"
    )
    llm = CachedLLM(backend, ResponseCache(tmp_path))
    [response] = llm.generate([request("a", 1)])
    assert not response.ok and response.error.startswith("server gone; last: APIConnectionError")
    assert response.attempts == 1 and backend.retries == 0 and llm.stats["failed"] == 1


def test_parallel_sampling_is_not_for_budgeted_endpoints(tmp_path):
    from vpo.llm.ledger import Ledger

    with pytest.raises(ValueError, match="local servers"):
        OpenAIBackend("http://x/v1", "m", "f", parallel_sampling=True, gate=Ledger(tmp_path, "s", "m"))
