from vpo.llm.base import Request
from vpo.llm.hf import HFBackend

GEN = {"temperature": 0.9, "top_p": 0.9, "max_new_tokens": 12}


def run(backend, requests):
    out = [None] * len(requests)
    backend.generate(requests, lambda i, r: out.__setitem__(i, r))
    return out


def req(text, seed, **gen):
    return Request.build([{"role": "user", "content": text}], {**GEN, **gen}, seed)


def test_a_request_answers_the_same_alone_or_in_any_batch(tiny_lm):
    backend = HFBackend(str(tiny_lm), "hf|tiny", batch_size=8, device="cpu")
    target = req("a red cat at sunset", seed=11)
    alone = run(backend, [target])[0]
    others = [req("the dog " * (i + 1), seed=i) for i in range(5)]
    batched = run(backend, [*others[:3], target, *others[3:]])[3]
    assert alone.text == batched.text
    assert alone.completion_tokens > 0 and alone.finish_reason in ("stop", "length")
    different_seed = run(backend, [req("a red cat at sunset", seed=12)])[0]
    assert different_seed.text != alone.text  # sampling really is seeded per request


def test_greedy_and_mixed_decoding_settings(tiny_lm):
    backend = HFBackend(str(tiny_lm), "hf|tiny", batch_size=4, device="cpu")
    greedy = [req("a cat", seed=s, temperature=0.0) for s in (1, 2)]
    mixed = run(backend, [*greedy, req("a cat", seed=1, max_new_tokens=3)])
    assert mixed[0].text == mixed[1].text  # greedy ignores the seed
    assert mixed[2].completion_tokens <= 3
