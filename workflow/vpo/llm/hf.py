"""In-process transformers backend: left-padded batches, one seeded random stream per request.

Batched `generate` normally draws every row's sample from one global RNG, so a request's answer would
depend on which other requests share its batch (and a resumed run would differ from an uninterrupted
one). `SeededRowSampler` instead samples each row with its own generator seeded from the request, and
hands greedy search a one-hot choice; the answer then depends only on the request itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Sequence
from itertools import groupby

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from vpo.core.devices import resolve_device
from vpo.llm.base import Request, Response, ResultCallback

log = logging.getLogger(__name__)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class SeededRowSampler(LogitsProcessor):
    """Temperature + top-p sampling with a private generator per batch row."""

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float, device: torch.device):
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        self.temperature = temperature
        self.top_p = top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            probs = self._nucleus(probs)
        choice = torch.cat(
            [torch.multinomial(probs[row], 1, generator=gen) for row, gen in enumerate(self.generators)]
        )
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(scores.shape[0]), choice] = 0.0
        return out

    def _nucleus(self, probs: torch.Tensor) -> torch.Tensor:
        """`probs` with everything outside the top-p nucleus set to zero (the token crossing top_p kept).

        The nucleus is read off the `k` most likely tokens, k doubling until every row's nucleus ends
        inside them, which gives what sorting the whole vocabulary gives (up to the order of exactly equal
        probabilities, which no sort fixes) at a fraction of its cost; a nucleus wider than an eighth of
        the vocabulary (a nearly flat distribution) is read off the full sort."""
        vocabulary = probs.shape[-1]
        k = min(64, vocabulary)
        while k <= vocabulary // 8:
            top, order = probs.topk(k, dim=-1)
            before = top.cumsum(dim=-1) - top  # mass of the more likely tokens
            if bool((before[:, -1] > self.top_p).all()):
                break
            k *= 2
        else:
            top, order = probs.sort(dim=-1, descending=True)
            before = top.cumsum(dim=-1) - top
        top[before > self.top_p] = 0.0
        return torch.zeros_like(probs).scatter(-1, order, top)


class StopOnStrings(StoppingCriteria):
    """Finishes each row whose newest tokens spell one of the stop strings (any tokenizer: it reads the
    decoded text of the last few tokens, where transformers' own `stop_strings` needs a BPE vocabulary)."""

    def __init__(self, tokenizer, stop: Sequence[str], prompt_length: int):
        self.tokenizer = tokenizer
        self.stop = list(stop)
        self.prompt_length = prompt_length
        self.window = max(len(s) for s in stop) + 1  # every token spells at least one character

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        start = max(self.prompt_length, input_ids.shape[1] - self.window)
        tails = self.tokenizer.batch_decode(input_ids[:, start:], skip_special_tokens=False)
        return torch.tensor([any(s in tail for s in self.stop) for tail in tails], device=input_ids.device)


def shared_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """Tokens every row starts with, leaving each row at least one token of its own to feed `generate`."""
    if len(rows) < 2:
        return 0
    limit = min(len(row) for row in rows) - 1
    length = 0
    while length < limit and all(row[length] == rows[0][length] for row in rows):
        length += 1
    return length


def pad_after_prefix(
    rows: Sequence[Sequence[int]], shared: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """[shared prefix][padding][row's own tokens]; with shared = 0 this is plain left padding.

    Padding in the middle is masked out and position ids follow the mask, so every row is encoded
    exactly as if it were alone and unpadded.
    """
    width = max(len(row) for row in rows) - shared
    ids, mask = [], []
    for row in rows:
        own = list(row[shared:])
        gap = width - len(own)
        ids.append(list(row[:shared]) + [pad_id] * gap + own)
        mask.append([1] * shared + [0] * gap + [1] * len(own))
    return torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long)


def reuse_freed_memory() -> bool:
    """Stop glibc from returning every large tensor's memory to the OS (CPU generation only).

    The key/value cache grows by one token per step, so each step allocates a slightly larger block
    than the one it frees; above glibc's dynamic mmap threshold every such block is a fresh mmap whose
    pages are faulted in and zeroed again. Raising the threshold to its maximum (32 MiB on 64-bit) and
    never trimming keeps those blocks in the heap (measured on 2 cores: a refine batch of 11 rows,
    96 sampled tokens, went from 59-67 s to 35 s).
    """
    libc_name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(libc_name) if libc_name else None
    if libc is None or not hasattr(libc, "mallopt"):
        log.info("no glibc mallopt here; CPU decoding keeps the allocator's defaults")
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(
        libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024) and libc.mallopt(m_trim_threshold, 2**31 - 1)
    )


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the earliest stop string (excluded, as OpenAI-compatible servers return it), and
    whether one was found."""
    ends = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[: min(ends)], True) if ends else (text, False)


class HFBackend:
    def __init__(
        self,
        model_path: str,
        fingerprint: str,
        batch_size: int = 16,
        dtype: str = "float32",
        device: str = "auto",
        revision: str | None = None,
        min_shared_prefix: int = 64,
        device_key: str = "device",
    ):
        self.fingerprint = fingerprint
        self.batch_size = batch_size
        self.min_shared_prefix = min_shared_prefix
        self.device = resolve_device(device, device_key)  # device_key: the config key, for the error
        if self.device.type == "cpu":
            reuse_freed_memory()
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, revision=revision, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_path, revision=revision, dtype=_DTYPES[dtype])
        self.model.to(self.device).eval()
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(
            eos if isinstance(eos, list) else [eos if eos is not None else self.tokenizer.eos_token_id]
        )
        log.info("hf backend: %s on %s (%s), batch %d", model_path, self.device, dtype, batch_size)

    def generate(self, requests: Sequence[Request], on_result: ResultCallback) -> None:
        # Batches hold requests with equal decoding settings, similar lengths first (less padding).
        def decoding(i: int) -> tuple[float, float, int, tuple[str, ...]]:
            r = requests[i]
            return r.temperature, r.top_p, r.max_new_tokens, r.stop

        order = sorted(range(len(requests)), key=lambda i: (decoding(i), len(str(requests[i].messages))))
        for _, group in groupby(order, key=decoding):
            indices = list(group)
            for start in range(0, len(indices), self.batch_size):
                batch = indices[start : start + self.batch_size]
                for i, response in zip(
                    batch, self._generate_batch([requests[i] for i in batch]), strict=True
                ):
                    on_result(i, response)

    @torch.inference_mode()
    def _generate_batch(self, batch: Sequence[Request]) -> list[Response]:
        texts = [
            self.tokenizer.apply_chat_template(r.chat(), tokenize=False, add_generation_prompt=True)
            for r in batch
        ]
        rows = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        shared = shared_prefix_length(rows)
        if shared < self.min_shared_prefix:
            shared = 0
        input_ids, attention_mask = pad_after_prefix(rows, shared, self.tokenizer.pad_token_id)
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        extra = {}
        if shared:
            # Few-shot prompts share a long head: encode it once and reuse its keys/values for every row.
            cache = self.model(input_ids[:1, :shared], use_cache=True).past_key_values
            cache.batch_repeat_interleave(len(rows))
            extra["past_key_values"] = cache
        first = batch[0]
        config = self.model.generation_config.__class__.from_dict(
            {
                **self.model.generation_config.to_dict(),
                "do_sample": False,
                "temperature": None,
                "top_p": None,
                "top_k": None,
                "max_new_tokens": first.max_new_tokens,
                "pad_token_id": self.tokenizer.pad_token_id,
            }
        )
        processors = LogitsProcessorList()
        if first.temperature > 0:
            processors.append(
                SeededRowSampler([r.seed for r in batch], first.temperature, first.top_p, self.device)
            )
        out = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=config,
            logits_processor=processors,
            stopping_criteria=StoppingCriteriaList(
                [StopOnStrings(self.tokenizer, first.stop, input_ids.shape[1])] if first.stop else []
            ),
            **extra,
        )
        new_tokens = out[:, input_ids.shape[1] :]
        prompt_lengths = [len(row) for row in rows]
        responses = []
        for row, tokens in enumerate(new_tokens.tolist()):
            stop = next((k for k, t in enumerate(tokens) if t in self.eos_ids), None)
            kept = tokens if stop is None else tokens[:stop]
            text, stopped = self._decode(kept, first.stop)
            responses.append(
                Response(
                    text=text.strip(),
                    finish_reason="stop" if stop is not None or stopped else "length",
                    prompt_tokens=int(prompt_lengths[row]),
                    completion_tokens=len(kept) + (stop is not None),
                )
            )
        return responses

    def _decode(self, tokens: list[int], stop: tuple[str, ...]) -> tuple[str, bool]:
        """The answer's text, cut at the first stop string (which may be a special token such as
        `<|eot_id|>`, so the cut comes before special tokens are dropped), and whether it was cut."""
        if not stop:
            return self.tokenizer.decode(tokens, skip_special_tokens=True), False
        text, stopped = cut_at_stop(self.tokenizer.decode(tokens, skip_special_tokens=False), stop)
        for special in self.tokenizer.all_special_tokens:
            text = text.replace(special, "")
        return text, stopped

    def close(self) -> None:
        del self.model
