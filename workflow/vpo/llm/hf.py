"""In-process transformers backend: left-padded batches, one seeded random stream per request.

Batched `generate` normally draws every row's sample from one global RNG, so a request's answer would
depend on which other requests share its batch (and a resumed run would differ from an uninterrupted
one). `SeededRowSampler` instead samples each row with its own generator seeded from the request, and
hands greedy search a one-hot choice; the answer then depends only on the request itself.
"""

from __future__ import annotations

import contextvars
import ctypes
import ctypes.util
import logging
from collections.abc import Sequence
from itertools import groupby

import torch
from transformers import (
    AttentionInterface,
    AutoModelForCausalLM,
    AutoTokenizer,
    DynamicCache,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.cache_utils import DynamicLayer
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from vpo.core.devices import resolve_device
from vpo.llm.base import Request, Response, ResultCallback

log = logging.getLogger(__name__)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CPU_SDPA = "vpo_cpu_sdpa"


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


class SharedPrefixLayer(DynamicLayer):
    """One layer's cache: the keys/values of the prefix every row shares, held once (batch 1), and
    each row's own tokens after it. `cpu_sdpa_attention` attends to both."""

    def __init__(self, prefix_keys: torch.Tensor, prefix_values: torch.Tensor):
        super().__init__()
        self.prefix_keys, self.prefix_values = prefix_keys, prefix_values
        self.lazy_initialization(prefix_keys, prefix_values)

    def get_seq_length(self) -> int:
        own = self.keys.shape[-2] if self.keys.numel() else 0
        return self.prefix_keys.shape[-2] + own

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0


class SharedPrefixCache(DynamicCache):
    """A cache of `SharedPrefixLayer`s (see `shared_prefix_cache`)."""


def shared_prefix_cache(prefix: DynamicCache) -> SharedPrefixCache:
    """A cache that starts with `prefix` (one row) and keeps it once however many rows decode after it."""
    cache = SharedPrefixCache()
    cache.layers = [SharedPrefixLayer(layer.keys, layer.values) for layer in prefix.layers]
    return cache


# The shared-prefix cache of the `generate` call running in this context, for the attention function.
_SHARED_PREFIX: contextvars.ContextVar[SharedPrefixCache | None] = contextvars.ContextVar(
    "vpo_shared_prefix", default=None
)


def _attend_with_shared_prefix(
    layer: SharedPrefixLayer,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
) -> torch.Tensor:
    """Softmax attention over [shared prefix | row's own tokens], with the prefix broadcast over rows.

    query [B, H, q, D]; key/value: the rows' own tokens [B, G, L, D] (G key/value heads); the prefix
    [1, G, P, D]. The mask covers P + L columns. Returns [B, H, q, D].
    """
    batch, heads, q_len, dim = query.shape
    groups = key.shape[1]
    prefix_len, own_len = layer.prefix_keys.shape[-2], key.shape[-2]
    q = query.reshape(batch, groups, heads // groups, q_len, dim)
    # Prefix scores: one matmul per key/value head over every row's queries (no per-row copy).
    scores_prefix = torch.einsum("bgrqd,gpd->bgrqp", q, layer.prefix_keys[0]) * scaling
    scores_own = torch.einsum("bgrqd,bgld->bgrql", q, key) * scaling
    scores = torch.cat([scores_prefix, scores_own], dim=-1)
    if attention_mask is None:  # no padding: causal over the own tokens, the prefix fully visible
        causal = torch.ones(q_len, own_len, dtype=torch.bool, device=query.device).tril(own_len - q_len)
        keep = torch.cat([causal.new_ones(q_len, prefix_len), causal], dim=-1)
        scores = scores.masked_fill(~keep, float("-inf"))
    elif attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask[:, :, None, :, : prefix_len + own_len], float("-inf"))
    else:
        scores = scores + attention_mask[:, :, None, :, : prefix_len + own_len]
    probs = scores.softmax(dim=-1, dtype=torch.float32).to(value.dtype)
    out = torch.einsum("bgrqp,gpd->bgrqd", probs[..., :prefix_len], layer.prefix_values[0])
    out = out + torch.einsum("bgrql,bgld->bgrqd", probs[..., prefix_len:], value)
    return out.reshape(batch, heads, q_len, dim)


def cpu_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention for CPU decoding, with two savings.

    - The kernel broadcasts the shared key/value heads (`enable_gqa`) even when a padding mask is given.
      With a mask, transformers expands every layer's whole key/value cache to one copy per query head
      before each call (its fused GQA path needs a mask-free CUDA kernel), and batched decoding always
      has a mask (SmolLM2-135M, 16 critique rows of ~750 tokens: 38.6 s -> 28.3 s, the same tokens).
    - Inside a `generate` on a `shared_prefix_cache`, the prompt head every row shares (a judge's
      template of ~650 tokens) is held and read once instead of once per row.
    """
    cache = _SHARED_PREFIX.get()
    if cache is not None:
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        layer = cache.layers[module.layer_idx]
        out = _attend_with_shared_prefix(layer, query, key, value, attention_mask, scale)
        return out.transpose(1, 2).contiguous(), None
    causal = query.shape[2] > 1 and attention_mask is None and getattr(module, "is_causal", True)
    out = torch.nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=dropout,
        scale=scaling,
        is_causal=causal,
        enable_gqa=True,
    )
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(CPU_SDPA, cpu_sdpa_attention)
AttentionMaskInterface.register(CPU_SDPA, sdpa_mask)  # the same boolean masks as "sdpa"


def use_cpu_sdpa(model: torch.nn.Module) -> bool:
    """Switch a CPU model on SDPA to `cpu_sdpa_attention`; whether it did (other attention kinds and
    models without per-layer attention modules keep theirs)."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    model.set_attn_implementation(CPU_SDPA)
    return True


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
        cpu_attention: bool = True,
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
        # Whether cpu_sdpa_attention is installed (CPU, SDPA models): it can hold a shared head once.
        self.cpu_attention = self.device.type == "cpu" and cpu_attention and use_cpu_sdpa(self.model)
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
            # Held once and read by cpu_sdpa_attention, unless a layer is not a plain growing cache
            # (sliding-window layers drop old tokens, which the shared head must not lose).
            if self.cpu_attention and all(type(layer) is DynamicLayer for layer in cache.layers):
                cache = shared_prefix_cache(cache)
            else:
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
        held_once = isinstance(extra.get("past_key_values"), SharedPrefixCache)
        token = _SHARED_PREFIX.set(extra["past_key_values"] if held_once else None)
        try:
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
        finally:
            _SHARED_PREFIX.reset(token)
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
