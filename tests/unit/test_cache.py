from vpo.llm.base import Request, Response
from vpo.llm.cache import CachedLLM, ResponseCache, request_key

GEN = {"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 32}


def req(text="a cat", seed=1, **gen):
    return Request.build([{"role": "user", "content": text}], {**GEN, **gen}, seed)


def test_key_covers_model_messages_decoding_and_seed():
    base = request_key("hf|x", req())
    assert base == request_key("hf|x", req())
    variants = [
        request_key("hf|y", req()),
        request_key("hf|x", req("a dog")),
        request_key("hf|x", req(seed=2)),
        request_key("hf|x", req(temperature=0.5)),
        request_key("hf|x", req(top_p=1.0)),
        request_key("hf|x", req(max_new_tokens=64)),
    ]
    assert base not in variants
    assert len(set(variants)) == len(variants)


class CountingBackend:
    """Answers with the request's text reversed; fails the requests whose text contains 'fail'."""

    fingerprint = "test|counting"

    def __init__(self):
        self.sent: list[str] = []

    def generate(self, requests, on_result):
        for i, r in reversed(list(enumerate(requests))):  # out of order on purpose
            text = r.messages[-1][1]
            self.sent.append(text)
            if "fail" in text:
                on_result(i, Response(text=None, finish_reason=None, error="boom"))
            else:
                on_result(
                    i, Response(text=text[::-1], finish_reason="stop", prompt_tokens=3, completion_tokens=2)
                )

    def close(self):
        pass


def test_finished_requests_are_never_sent_twice_and_failures_are_retried(tmp_path):
    backend = CountingBackend()
    llm = CachedLLM(backend, ResponseCache(tmp_path))
    first = llm.generate([req("abc"), req("fail me"), req("xyz")])
    assert [r.text for r in first] == ["cba", None, "zyx"]
    assert llm.stats["failed"] == 1 and llm.stats["completion_tokens"] == 4
    second_llm = CachedLLM(backend, ResponseCache(tmp_path))  # a new job over the same cache
    second = second_llm.generate([req("abc"), req("fail me"), req("xyz"), req("new")])
    assert [r.text for r in second] == ["cba", None, "zyx", "wen"]
    assert [r.cached for r in second] == [True, False, True, False]
    assert backend.sent.count("abc") == 1 and backend.sent.count("fail me") == 2
    assert second_llm.stats["cache_hits"] == 2 and second_llm.stats["cache_misses"] == 2


def test_cache_files_are_complete_json(tmp_path):
    llm = CachedLLM(CountingBackend(), ResponseCache(tmp_path))
    llm.generate([req("abc")])
    files = list((tmp_path / "llm").rglob("*.json"))
    assert len(files) == 1
    assert not list((tmp_path / "llm").rglob("*.tmp"))
