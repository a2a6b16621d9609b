from vpo.llm import hf
from vpo.llm.base import Request
from vpo.llm.hf import CPU_SDPA, HFBackend, pad_after_prefix, shared_prefix_length

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


def test_shared_prefix_and_padding_layout():
    rows = [[5, 6, 7, 8], [5, 6, 9], [5, 6, 7]]
    assert shared_prefix_length(rows) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # each row keeps one token of its own
    assert shared_prefix_length([[1, 2, 3]]) == 0
    ids, mask = pad_after_prefix(rows, 2, pad_id=0)
    assert ids.tolist() == [[5, 6, 7, 8], [5, 6, 0, 9], [5, 6, 0, 7]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 1], [1, 1, 0, 1]]
    ids, mask = pad_after_prefix(rows, 0, pad_id=0)
    assert ids.tolist()[1] == [0, 5, 6, 9] and mask.tolist()[1] == [0, 1, 1, 1]


def test_reusing_the_shared_prefix_changes_no_answer(tiny_lm):
    few_shot = " ".join(["the camera follows a red cat in the rain at night ."] * 12)
    requests = [
        req(f"{few_shot} query : {tail}", seed=i, **gen)
        for i, tail in enumerate(["a dog", "blue city light at sunset", "slow"])
        for gen in ({"temperature": 0.0}, {})
    ]
    reused = run(HFBackend(str(tiny_lm), "hf|tiny", batch_size=8, device="cpu"), requests)
    plain = run(
        HFBackend(str(tiny_lm), "hf|tiny", batch_size=8, device="cpu", min_shared_prefix=10**9), requests
    )
    assert [r.text for r in reused] == [r.text for r in plain]
    assert all(r.completion_tokens > 0 for r in reused)


def test_a_stop_string_ends_the_row_and_is_not_part_of_the_answer(tiny_lm):
    backend = HFBackend(str(tiny_lm), "hf|tiny", batch_size=4, device="cpu")
    free = run(backend, [req("a red cat at sunset", seed=3, temperature=0.0, max_new_tokens=20)])[0]
    words = free.text.split()
    assert len(words) >= 4, free.text
    stop_word = words[2]
    cut = free.text[: free.text.find(stop_word)].strip()
    stopped = run(
        backend, [req("a red cat at sunset", seed=3, temperature=0.0, max_new_tokens=20, stop=[stop_word])]
    )[0]
    assert stopped.text == cut and stopped.finish_reason == "stop"
    assert stopped.completion_tokens < free.completion_tokens  # generation ended there, not just the text
    # No stop strings: the request and its cache key are what they were before `stop` existed.
    assert "stop" not in req("x", 1).decoding() and req("x", 1, stop=["y"]).decoding()["stop"] == ["y"]


def test_cpu_attention_changes_no_answer(tiny_lm, monkeypatch):
    """The CPU attention (key/value heads broadcast, the shared prefix held once) gives the stock SDPA's
    tokens, with a shared prefix and padding after it, and without."""
    few_shot = " ".join(["the camera follows a red cat in the rain at night ."] * 6)
    requests = [
        req(f"{few_shot} query : {tail}", seed=i, **gen)
        for i, tail in enumerate(["a dog", "blue city light at sunset on the beach", "slow"])
        for gen in ({"temperature": 0.0}, {})
    ] + [req("the dog " * n, seed=n) for n in (1, 4)]
    grouped = HFBackend(str(tiny_lm), "hf|tiny", batch_size=8, device="cpu")
    stock = HFBackend(str(tiny_lm), "hf|tiny", batch_size=8, device="cpu", cpu_attention=False)
    assert grouped.model.config._attn_implementation == CPU_SDPA
    assert stock.model.config._attn_implementation == "sdpa"
    calls = []
    attend = hf._attend_with_shared_prefix
    monkeypatch.setattr(hf, "_attend_with_shared_prefix", lambda *a: calls.append(1) or attend(*a))
    answers = [r.text for r in run(grouped, requests)]
    assert calls, "the few-shot rows never decoded on the shared-prefix path"
    assert any(answers) and answers == [r.text for r in run(stock, requests)]
