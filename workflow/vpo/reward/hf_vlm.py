"""Any transformers video VLM as a checklist scorer: the video is encoded once, the questions batched on top.

Every question's prompt is the same chat-template head and video tokens followed by the question and the
template's tail. `HFVideoVLM.answer` runs the model once on that shared prefix (vision tower included),
keeps its key/value cache, and then runs the question suffixes in batches on copies of the cache, reading
each row's next-token logits at its last real token. `HFVideoVLM.reference_answer` is the naive path (one
full forward per question, video included); both give the same answers, which the tests check.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from vpo.core.devices import resolve_device
from vpo.core.fingerprints import fingerprint as weights_fingerprint
from vpo.reward.base import Answer, normalize_answer

log = logging.getLogger(__name__)

AnswerMode = Literal["constrained", "free"]
ANSWER_MODES = ("constrained", "free")
_DTYPES: dict[str, Any] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "auto": "auto",
}
# Spellings of the answer words a chat model may start with; only those that are one token count.
_YES_VARIANTS = ("yes", "Yes", " yes", " Yes")
_NO_VARIANTS = ("no", "No", " no", " No")
_PLACEHOLDER = "VPOQUESTIONPLACEHOLDER"


def single_token_ids(tokenizer, variants: tuple[str, ...]) -> list[int]:
    """Ids of the variants that the tokenizer encodes as exactly one token (deduplicated, in order)."""
    ids: list[int] = []
    for text in variants:
        encoded = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(encoded) == 1 and encoded[0] not in ids:
            ids.append(encoded[0])
    return ids


@dataclass(frozen=True)
class PromptSplit:
    """A rendered prompt is `head + question + tail`; `head` ends where the question text starts."""

    head: str
    tail: str

    def render(self, question: str) -> str:
        return self.head + question + self.tail


def split_prompt(rendered: str, placeholder: str = _PLACEHOLDER) -> PromptSplit:
    """Split a prompt rendered with `placeholder` as the question around that placeholder."""
    if rendered.count(placeholder) != 1:
        raise ValueError("the chat template must render the question text exactly once")
    head, tail = rendered.split(placeholder)
    return PromptSplit(head, tail)


def pad_right(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and their mask: real tokens first, so positions need no per-row shift."""
    width = max(len(row) for row in rows)
    ids = torch.tensor([row + [pad_id] * (width - len(row)) for row in rows], dtype=torch.long)
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows], dtype=torch.long)
    return ids, mask


class HFVideoVLM:
    """A transformers image-text-to-text model that takes video frames, answering yes/no questions.

    `answer_mode`:
    - `constrained`: the answer is whichever of the "yes" and "no" tokens has the larger first-token
      logit (best spelling per side); p_yes is the softmax over those two.
    - `free`: the greedy first token over the whole vocabulary, normalized (anything but a yes/no word
      is `invalid`); p_yes is still the two-way softmax.
    """

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "float32",
        device: str = "auto",
        batch_size: int = 16,
        answer_mode: AnswerMode = "constrained",
        revision: str | None = None,
    ):
        if answer_mode not in ANSWER_MODES:
            raise ValueError(f"answer_mode must be one of {ANSWER_MODES}, not {answer_mode!r}")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.answer_mode = answer_mode
        self.batch_size = batch_size
        self.fingerprint = f"hf-vlm|{answer_mode}|{weights_fingerprint(model_path, revision)}"
        self.device = resolve_device(device, "reward.device")
        self.processor = AutoProcessor.from_pretrained(model_path, revision=revision)
        self.tokenizer = self.processor.tokenizer
        self.model = AutoModelForImageTextToText.from_pretrained(
            model_path, revision=revision, dtype=_DTYPES[dtype]
        )
        self.model.to(self.device).eval()
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id or 0
        self.yes_ids = single_token_ids(self.tokenizer, _YES_VARIANTS)
        self.no_ids = single_token_ids(self.tokenizer, _NO_VARIANTS)
        if not (self.yes_ids and self.no_ids):
            raise ValueError(f"{model_path}: no single-token spelling of 'yes' and 'no' in the vocabulary")
        self.split = split_prompt(self.render(_PLACEHOLDER))
        video_token = getattr(self.processor, "video_token", None)
        if video_token and video_token not in self.split.head:
            raise ValueError(f"{model_path}: the chat template puts the video after the question")
        self.head_ids = self._text_ids([self.split.head])[0]
        log.info(
            "hf-vlm scorer: %s on %s (%s, %s, batch %d)",
            model_path,
            self.device,
            dtype,
            answer_mode,
            batch_size,
        )

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> HFVideoVLM:
        """From the resolved `reward` section (vpo.reward.factory.REWARD_BACKENDS)."""
        return cls(
            spec["model_path"],
            dtype=spec["dtype"],
            device=spec["device"],
            batch_size=spec["batch_size"],
            answer_mode=spec["answer_mode"],
            revision=spec.get("revision"),
        )

    # -- prompts -------------------------------------------------------------------------------------

    def render(self, question: str) -> str:
        """The chat prompt (video, then the question) ending in the assistant's generation prompt."""
        conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
        return self.processor.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)

    def _text_ids(self, texts: list[str]) -> list[list[int]]:
        # The template writes its own special tokens; the video placeholder stays one unexpanded token.
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def suffix_ids(self, questions: list[str]) -> list[list[int] | None]:
        """Each question's tokens after the shared head, or None where tokenizing the whole prompt does
        not start with the head's tokens (a merge across the split); those questions take the naive path.
        """
        n = len(self.head_ids)
        full = self._text_ids([self.split.render(q) for q in questions])
        return [ids[n:] if ids[:n] == self.head_ids and len(ids) > n else None for ids in full]

    def prepare_frames(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (F, H, W, 3), the last frame repeated up to a multiple of the model's temporal patch."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
            raise ValueError(f"frames must be (F, H, W, 3) with F >= 1, got shape {frames.shape}")
        if frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8, got {frames.dtype}")
        video_processor = getattr(self.processor, "video_processor", None)
        temporal = int(getattr(video_processor, "temporal_patch_size", 1) or 1)
        if missing := -len(frames) % temporal:
            frames = np.concatenate([frames, np.repeat(frames[-1:], missing, axis=0)])
        return frames

    def _model_inputs(self, text: str, frames: np.ndarray) -> dict[str, torch.Tensor]:
        inputs = self.processor(text=[text], videos=[frames], add_special_tokens=False, return_tensors="pt")
        dtype = self.model.dtype
        return {
            key: value.to(self.device, dtype=dtype if value.is_floating_point() else None)
            for key, value in inputs.items()
        }

    # -- answers -------------------------------------------------------------------------------------

    def decide(self, logits: torch.Tensor) -> Answer:
        """One answer from the next-token logits (V,) after the generation prompt."""
        logits = logits.float()
        yes = logits[self.yes_ids].max()
        no = logits[self.no_ids].max()
        p_yes = float(torch.sigmoid(yes - no))  # = softmax over (yes, no)
        if self.answer_mode == "constrained":
            raw = "yes" if yes >= no else "no"
            return Answer(raw=raw, label=raw, p_yes=p_yes)
        token = int(logits.argmax())
        raw = self.tokenizer.decode([token], skip_special_tokens=False).strip()
        return Answer(raw=raw, label=normalize_answer(raw), p_yes=p_yes)

    @torch.inference_mode()
    def answer(self, frames: np.ndarray, questions: list[str]) -> list[Answer]:
        """Answer every question about one video, encoding the video once."""
        if not questions:
            return []
        frames = self.prepare_frames(frames)
        suffixes = self.suffix_ids(questions)
        answers: list[Answer | None] = [None] * len(questions)
        fast = [i for i, ids in enumerate(suffixes) if ids is not None]
        if fast:
            prefix = self._model_inputs(self.split.head, frames)
            out = self.model(**prefix, use_cache=True)
            prefix_len = prefix["input_ids"].shape[1]
            rope_deltas = getattr(out, "rope_deltas", None)
            # Similar lengths share a batch, so little compute goes to padding.
            fast.sort(key=lambda i: len(suffixes[i]))
            for start in range(0, len(fast), self.batch_size):
                batch = fast[start : start + self.batch_size]
                rows = [suffixes[i] for i in batch]
                logits = self._suffix_logits(out.past_key_values, prefix_len, rope_deltas, rows)
                for i, row_logits in zip(batch, logits, strict=True):
                    answers[i] = self.decide(row_logits)
        for i, ids in enumerate(suffixes):
            if ids is None:
                log.warning("question %d does not tokenize apart from the prompt head; answering it alone", i)
                answers[i] = self._reference(frames, questions[i])
        return answers  # type: ignore[return-value]

    def _suffix_logits(
        self, prefix_cache, prefix_len: int, rope_deltas: torch.Tensor | None, rows: list[list[int]]
    ) -> torch.Tensor:
        """Next-token logits (B, V) at each row's last token, the rows running on the shared prefix."""
        ids, suffix_mask = pad_right(rows, self.pad_id)
        batch, width = ids.shape
        cache = copy.deepcopy(prefix_cache)  # the forward appends to the cache; the prefix must stay clean
        cache.batch_repeat_interleave(batch)
        mask = torch.cat([torch.ones(batch, prefix_len, dtype=torch.long), suffix_mask], dim=1)
        # Text after the video continues the prefix's positions; multimodal-RoPE models shift them by
        # the prefix's rope delta (its visual tokens use fewer positions than tokens), as in generation.
        shift = int(rope_deltas.reshape(-1)[0]) if rope_deltas is not None else 0
        positions = torch.arange(prefix_len + shift, prefix_len + shift + width).expand(batch, width)
        last = [len(row) - 1 for row in rows]
        keep = sorted(set(last))
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=torch.tensor(keep, device=self.device),
        )
        column = torch.tensor([keep.index(k) for k in last], device=self.device)
        return out.logits[torch.arange(batch, device=self.device), column]

    def _reference(self, frames: np.ndarray, question: str) -> Answer:
        inputs = self._model_inputs(self.split.render(question), frames)
        logits = self.model(**inputs, use_cache=False, logits_to_keep=1).logits
        return self.decide(logits[0, -1])

    @torch.inference_mode()
    def reference_answer(self, frames: np.ndarray, question: str) -> Answer:
        """The naive path: one full forward of video + question, no cache reuse (for tests and benchmarks)."""
        return self._reference(self.prepare_frames(frames), question)
