"""VisionReward-Video (THUDM) as a checklist scorer (its release files: vpo.reward.visionreward_release).

The model is CogVLM2-Video (Llama-3-8B with a visual expert and an EVA2-CLIP vision tower) loaded with
`trust_remote_code`; its code needs transformers 4.42.x, so this backend runs in its own conda env
(envs/reward-visionreward.yaml). torch and transformers are imported inside methods only, so this module
(the checklist conversion and the CLI) also imports under the project's transformers 5.6.

How the release asks one question (THUDM/VisionReward, inference-video.py):
- the video is a uint8 tensor (C, T, H, W) of one frame per second, at most 24;
- `model.build_conversation_input_ids(tokenizer, query=question, images=[video], history=[],
  template_version="chat")` turns it into `input_ids`, `token_type_ids`, `attention_mask` and
  `images` (the frames resized, cropped and normalized by the remote code itself). The ids are
  BOS, the video's tokens (per frame a run of vision placeholders and the frame's time index), then
  "Question: {question} Answer:";
- greedy `generate` (pad id 128002), of which only the first new token is read as the answer.

What this scorer does differently, and why:
- one vision encode per video: the release re-reads and re-encodes the video for every question. Here
  the vision tower runs once (`encode_images`, the hook the remote forward calls on its first step) and
  its features are handed to every row of every batch (`reuse_vision_features`);
- questions are batched (left-padded, `batch_size` per forward). The language model still reads the
  video tokens once per question: CogVLM2's remote `prepare_inputs_for_generation` keeps only the last
  token once a key/value cache exists, so a shared prefix cache cannot be fed multi-token questions
  without reimplementing its private cache and position-id handling;
- the conversation builder runs once with the video; the other questions reuse its video tokens
  (`split_video_prefix`, checked against a text-only build, else every question is built in full);
- the raw answer text is kept and labelled by `normalize_answer`, so anything but a clear yes/no is
  `invalid`. The release compared the decoded token with the string "yes" and counted everything else,
  including "Yes", as a no;
- questions go in as the checklist has them, stripped. The release read its question file with
  `readlines()`, so all its questions but the last carried a trailing newline into the prompt.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vpo.core.devices import resolve_device
from vpo.reward.base import Answer, normalize_answer

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

MAX_FRAMES = 24  # the model saw at most 24 frames (one per second) in training
PAD_TOKEN_ID = 128002  # the release's pad id: a reserved Llama-3 token, also the vision placeholder
LANGUAGE_TOKEN_TYPE = 0
VISION_TOKEN_TYPE = 1
# Spellings the first answer token may take; only one-token spellings are used for p_yes.
_YES_VARIANTS = ("yes", "Yes", " yes", " Yes")
_NO_VARIANTS = ("no", "No", " no", " No")


def frames_to_video(frames: np.ndarray) -> torch.Tensor:
    """Sampled frames uint8 (F, H, W, 3) as the uint8 (3, F, H, W) tensor the conversation builder takes.

    That is the release's decord output permuted to channels first. Values stay 0-255: the remote
    builder divides by 255, normalizes with CLIP's mean/std, resizes and crops to 224 by itself.
    """
    import torch

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (F, H, W, 3), got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    if not 1 <= len(frames) <= MAX_FRAMES:
        raise ValueError(
            f"{len(frames)} frames: VisionReward-Video takes 1 to {MAX_FRAMES} (one per second); "
            "sample them first (vpo.reward.frames.sample_frames)"
        )
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).contiguous()


@dataclass(frozen=True)
class VideoPrefix:
    """BOS and the video's tokens, shared by every question about one video."""

    ids: tuple[int, ...]
    types: tuple[int, ...]

    def join(self, text_ids: Sequence[int], text_types: Sequence[int]) -> tuple[list[int], list[int]]:
        """A question's full row from its text-only build (BOS + question tokens)."""
        if not text_ids or text_ids[0] != self.ids[0]:
            raise ValueError("a text-only build must start with the same BOS token")
        return [*self.ids, *text_ids[1:]], [*self.types, *text_types[1:]]


def split_video_prefix(
    with_video: tuple[Sequence[int], Sequence[int]], text_only_ids: Sequence[int]
) -> VideoPrefix | None:
    """The video prefix of one question's build: (ids, types) built with the video, ids built without.

    Holds when the video build is BOS + video tokens + the text-only build's tokens after BOS, all of
    them language tokens. None when the builds do not line up that way (then build every question in full).
    """
    ids_v, types_v = list(with_video[0]), list(with_video[1])
    ids_t = list(text_only_ids)
    tail = len(ids_t) - 1
    if tail < 1 or len(ids_v) <= len(ids_t) or ids_v[0] != ids_t[0] or len(ids_v) != len(types_v):
        return None
    if ids_v[-tail:] != ids_t[1:] or any(t != LANGUAGE_TOKEN_TYPE for t in types_v[-tail:]):
        return None
    if VISION_TOKEN_TYPE not in types_v[:-tail]:
        return None
    return VideoPrefix(tuple(ids_v[:-tail]), tuple(types_v[:-tail]))


def left_pad(
    rows: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, token_type_ids, attention_mask) of left-padded rows; pads are masked language tokens.

    Left padding moves a row's positions by a constant, which rotary attention does not see; the last
    real token of every row is then the last column, where `generate` continues.
    """
    import torch

    width = max(len(ids) for ids, _ in rows)
    ids = [[pad_id] * (width - len(r)) + list(r) for r, _ in rows]
    types = [[LANGUAGE_TOKEN_TYPE] * (width - len(t)) + list(t) for _, t in rows]
    mask = [[0] * (width - len(r)) + [1] * len(r) for r, _ in rows]
    return (
        torch.tensor(ids, dtype=torch.long),
        torch.tensor(types, dtype=torch.long),
        torch.tensor(mask, dtype=torch.long),
    )


@contextmanager
def reuse_vision_features(inner: Any, features: torch.Tensor) -> Iterator[dict[str, int]]:
    """While active, `inner.encode_images(images)` returns `features` once per batch row, encoding nothing.

    `features` is the vision tower's output for one video (`encode_images([[pixels]])`). The remote
    forward flattens what encode_images returns over its first two dims and writes it, in row-major
    order, into the vision positions of the batch; every row holds the same video, so B copies of the
    one-video block stacked on dim 0 are exactly what B separate encodes would give. Yields a counter
    of calls, so a caller can tell whether the remote code used the hook at all.
    """
    calls = {"n": 0}

    def encode_images(images: Sequence[Any]) -> torch.Tensor:
        calls["n"] += 1
        return features.repeat(len(images), *([1] * (features.dim() - 1)))

    shadowed = "encode_images" in vars(inner)
    previous = vars(inner).get("encode_images")
    inner.encode_images = encode_images  # an instance attribute shadows the class's method
    try:
        yield calls
    finally:
        if shadowed:
            inner.encode_images = previous
        else:
            del inner.encode_images


def first_token_p_yes(logits: torch.Tensor, yes_ids: Sequence[int], no_ids: Sequence[int]) -> float | None:
    """P(yes) from the first answer step's logits (V,): softmax over the best yes and best no spelling."""
    import torch

    if not yes_ids or not no_ids:
        return None
    logits = logits.float()
    return float(torch.sigmoid(logits[list(yes_ids)].max() - logits[list(no_ids)].max()))


def _row(built: dict[str, Any]) -> tuple[list[int], list[int]]:
    """(ids, token types) of one conversation build, as lists."""
    return built["input_ids"].tolist(), built["token_type_ids"].tolist()


# -- the scorer ----------------------------------------------------------------------------------------


class VisionRewardVideo:
    """VisionReward-Video answering checklist questions about one video's sampled frames.

    Greedy decoding of `max_new_tokens` tokens per question (the release reads only the first); the
    label is that text normalized. `p_yes` is the two-way softmax of the first step's best yes and no
    spellings. The model loads on the first `answer` call.
    """

    def __init__(
        self,
        model_path: str = "THUDM/VisionReward-Video",
        *,
        revision: str | None = None,
        dtype: str = "bfloat16",
        device: str = "auto",
        batch_size: int = 8,
        max_new_tokens: int = 2,
    ):
        from vpo.core.fingerprints import fingerprint as weights_fingerprint

        if batch_size < 1 or max_new_tokens < 1:
            raise ValueError("batch_size and max_new_tokens must be at least 1")
        if dtype not in ("bfloat16", "float16", "float32"):
            raise ValueError(f"dtype must be bfloat16, float16 or float32, not {dtype!r}")
        self.model_path = model_path
        self.revision = revision
        self.dtype = dtype
        self.device = device
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        # Same form as its entry in vpo.reward.factory.REWARD_BACKENDS: backend | answer mode | weights.
        self.fingerprint = f"visionreward|generate|{weights_fingerprint(model_path, revision)}"
        self._model: Any = None
        self._tokenizer: Any = None
        self._torch_device: Any = None
        self._torch_dtype: Any = None
        self._yes_ids: list[int] = []
        self._no_ids: list[int] = []

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> VisionRewardVideo:
        """From the resolved `reward` section (vpo.reward.factory.REWARD_BACKENDS)."""
        return cls(
            spec["model_path"],
            revision=spec.get("revision"),
            dtype=spec["dtype"],
            device=spec["device"],
            batch_size=spec["batch_size"],
        )

    # -- loading -------------------------------------------------------------------------------------

    def _load(self) -> None:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
        if (major, minor) >= (4, 45):
            raise RuntimeError(
                "VisionReward-Video's remote code needs transformers 4.42.x, found "
                f"{transformers.__version__}. Fix: run the reward stage in envs/reward-visionreward.yaml."
            )
        if (major, minor) != (4, 42):
            log.warning(
                "VisionReward-Video was released for transformers 4.42.x, found %s", transformers.__version__
            )
        self._torch_device = resolve_device(self.device, "reward.device")
        if self._torch_device.type == "cpu":
            log.warning("VisionReward-Video on CPU: expect minutes per question")
        self._torch_dtype = getattr(torch, self.dtype)
        self._tokenizer = AutoTokenizer.from_pretrained(
            self.model_path, revision=self.revision, trust_remote_code=True
        )
        model = AutoModelForCausalLM.from_pretrained(
            self.model_path, revision=self.revision, torch_dtype=self._torch_dtype, trust_remote_code=True
        )
        self._model = model.eval().to(self._torch_device)
        self._find_answer_tokens()
        log.info(
            "visionreward scorer: %s on %s (%s, batch %d)",
            self.model_path,
            self._torch_device,
            self.dtype,
            self.batch_size,
        )

    def _find_answer_tokens(self) -> None:
        def one_token(variants: tuple[str, ...]) -> list[int]:
            ids: list[int] = []
            for text in variants:
                encoded = self._tokenizer.encode(text, add_special_tokens=False)
                if len(encoded) == 1 and encoded[0] not in ids:
                    ids.append(encoded[0])
            return ids

        self._yes_ids, self._no_ids = one_token(_YES_VARIANTS), one_token(_NO_VARIANTS)

    @property
    def _pad_id(self) -> int:
        pad = getattr(self._tokenizer, "pad_token_id", None)
        return PAD_TOKEN_ID if pad is None else int(pad)

    # -- conversation ----------------------------------------------------------------------------------

    def _build(self, question: str, video: torch.Tensor | None) -> dict[str, Any]:
        return self._model.build_conversation_input_ids(
            tokenizer=self._tokenizer,
            query=question,
            images=None if video is None else [video],
            history=[],
            template_version="chat",
        )

    def build_rows(
        self, video: torch.Tensor, questions: Sequence[str]
    ) -> tuple[list[tuple[list[int], list[int]]], torch.Tensor]:
        """(ids, token types) per question and the preprocessed pixels, building with the video once."""
        first = self._build(questions[0], video)
        pixels = first["images"][0]
        rows = [_row(first)]
        prefix = None
        try:
            prefix = split_video_prefix(rows[0], _row(self._build(questions[0], None))[0])
        except Exception as exc:  # the remote builder may insist on an image; build in full then
            log.debug("text-only build failed: %s", exc)
        for question in questions[1:]:
            if prefix is not None:
                rows.append(prefix.join(*_row(self._build(question, None))))
            else:
                rows.append(_row(self._build(question, video)))
        if prefix is None:
            log.warning("video tokens not reusable across questions; building every question with the video")
        return rows, pixels

    # -- answering -------------------------------------------------------------------------------------

    def answer(self, frames: np.ndarray, questions: list[str]) -> list[Answer]:
        """Answer every question about one video (frames already sampled: one per second, at most 24)."""
        import torch

        if not questions:
            return []
        video = frames_to_video(frames)
        if self._model is None:
            self._load()
        with torch.no_grad():
            rows, pixels = self.build_rows(video, questions)
            pixels = pixels.to(device=self._torch_device, dtype=self._torch_dtype)
            inner = getattr(self._model, "model", None)
            if inner is None or not callable(getattr(inner, "encode_images", None)):
                log.warning("remote model has no model.encode_images; the video is encoded once per question")
                return self._answer_rows(rows, pixels, batch_size=1)
            features = inner.encode_images([[pixels]])
            with reuse_vision_features(inner, features) as calls:
                answers = self._answer_rows(rows, pixels, batch_size=self.batch_size)
            if calls["n"] == 0:
                log.warning("the remote forward never called encode_images: the video was re-encoded per row")
            return answers

    def _answer_rows(
        self, rows: list[tuple[list[int], list[int]]], pixels: torch.Tensor, batch_size: int
    ) -> list[Answer]:
        # Rows of similar length share a batch, so little compute goes to padding.
        order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
        answers: list[Answer | None] = [None] * len(rows)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            for index, answer in zip(batch, self._generate([rows[i] for i in batch], pixels), strict=True):
                answers[index] = answer
        if any(a is None for a in answers):
            raise RuntimeError("a question was left unanswered")
        return answers  # type: ignore[return-value]

    def _generate(self, rows: list[tuple[list[int], list[int]]], pixels: torch.Tensor) -> list[Answer]:
        input_ids, token_type_ids, attention_mask = (
            t.to(self._torch_device) for t in left_pad(rows, self._pad_id)
        )
        out = self._model.generate(
            input_ids=input_ids,
            token_type_ids=token_type_ids,
            attention_mask=attention_mask,
            images=[[pixels] for _ in rows],
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=self._pad_id,
            output_logits=True,
            return_dict_in_generate=True,
        )
        new_tokens = out.sequences[:, input_ids.shape[1] :]
        first_step = out.logits[0] if getattr(out, "logits", None) else out.scores[0]
        answers = []
        for row, tokens in enumerate(new_tokens):
            raw = self._tokenizer.decode(tokens.tolist(), skip_special_tokens=True)
            p_yes = first_token_p_yes(first_step[row], self._yes_ids, self._no_ids)
            answers.append(Answer(raw=raw, label=normalize_answer(raw), p_yes=p_yes))
        return answers
