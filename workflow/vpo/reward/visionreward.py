"""VisionReward-Video (THUDM) as a checklist scorer, and its question files as our checklist YAML.

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

import argparse
import hashlib
import json
import logging
import math
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vpo.core.stage import setup_logging
from vpo.reward.base import Answer, normalize_answer

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

MAX_FRAMES = 24  # the model saw at most 24 frames (one per second) in training
PAD_TOKEN_ID = 128002  # the release's pad id: a reserved Llama-3 token, also the vision placeholder
LANGUAGE_TOKEN_TYPE = 0
VISION_TOKEN_TYPE = 1
RELEASE_PLACEHOLDER = "[[prompt]]"  # where the release's alignment questions take the text prompt
RELEASE_REPO = "THUDM/VisionReward"
# The question files' folder in the release: renamed from the hyphenated spelling at some point.
RELEASE_DIRS = ("VisionReward_Video", "VisionReward-Video")
RELEASE_FILES = (
    "VisionReward_video_qa.txt",  # the 64 questions VPO asks (VPO_WEIGHTS apply)
    "VisionReward_video_qa_select.txt",  # the 29 with a non-zero weight, in the same order
    "weight.json",  # those 29 weights: the non-zero entries of VPO_WEIGHTS
)
# Spellings the first answer token may take; only one-token spellings are used for p_yes.
_YES_VARIANTS = ("yes", "Yes", " yes", " Yes")
_NO_VARIANTS = ("no", "No", " no", " No")

# VPO's weights over the 64 questions of VisionReward_video_qa.txt (in file order; 29 non-zero).
VPO_WEIGHTS: tuple[float, ...] = (
    0.9543901856422174, 0.25239747290239256, 0.0, 1.141818673357406, 0.03495652038170829,
    0.025237463294006605, 0.0, 0.0, 0.0, 0.12600844108184325, 0.0, 0.0, 0.0, 0.03221505988621183,
    0.16286819641189937, 0.21673935360893115, 0.01970324496671629, 0.13604019362894557,
    0.09647134683834487, 0.15490927135496332, 0.1294164598219855, 0.09891696198970226,
    0.18839328668539077, 0.1844335421380767, 0.0, 0.0, 0.2635526157239052, 0.0, 0.0, 0.0, 0.0,
    0.11168980468489233, 0.0, 0.05173789659242723, 0.0, 0.02562797122879315, 0.0, 0.4389890596048526,
    0.0, 0.0, 0.0, 0.0, 0.0, 0.26857694964769424, 0.0, 0.0, 0.0, 0.0, 0.0, 0.42925171836383774, 0.0,
    0.00846154228462919, 0.12757277121689847, 0.05798205026065391, 0.0, 0.1446334304609205, 0.0, 0.0,
    0.0, 0.39418111694677266, 0.0, 0.0, 0.0, 0.0,
)  # fmt: skip


# -- checklist conversion ------------------------------------------------------------------------------


def read_release_questions(path: str | Path) -> list[str]:
    """The questions of a release question file: one per line, trailing blank lines ignored."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    questions = [line.strip() for line in lines]
    if not questions:
        raise ValueError(f"{path}: no questions")
    if "" in questions:
        # A blank line would shift every later question off its weight.
        raise ValueError(f"{path}: line {questions.index('') + 1} is blank; one question per line expected")
    return questions


def read_release_weights(path: str | Path) -> list[float]:
    """A release weight file (weight.json): a JSON list of numbers."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, list) or not all(
        isinstance(w, (int, float)) and not isinstance(w, bool) for w in data
    ):
        raise ValueError(f"{path}: expected a JSON list of numbers")
    return [float(w) for w in data]


def checklist_from_release(
    questions_path: str | Path, weights: Sequence[float] | None = None, name: str = "visionreward-video"
) -> dict[str, Any]:
    """Our checklist structure (`name`, `questions: [{id, text, weight}]`) from a release question file.

    The release's `[[prompt]]` becomes `{query}` (filled with the user's original query when scoring).
    Without `weights`, the file must be the 64-question one and gets VPO_WEIGHTS; the 29-question
    `VisionReward_video_qa_select.txt` goes with its `weight.json`. Ids are q01, q02, ... in file order.
    """
    questions = read_release_questions(questions_path)
    if weights is None:
        if len(questions) != len(VPO_WEIGHTS):
            raise ValueError(
                f"{questions_path}: {len(questions)} questions, but the default weights (VPO's) are for the "
                f"{len(VPO_WEIGHTS)} of VisionReward_video_qa.txt. Fix: pass that file, or pass the weights "
                "that go with this one (VisionReward_video_qa_select.txt goes with weight.json)."
            )
        weights = VPO_WEIGHTS
    if len(weights) != len(questions):
        raise ValueError(f"{questions_path}: {len(questions)} questions but {len(weights)} weights")
    for index, weight in enumerate(weights):
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"weight {index + 1} is {weight!r}; weights must be finite and >= 0")
    width = max(2, len(str(len(questions))))
    return {
        "name": name,
        "questions": [
            {
                "id": f"q{i:0{width}d}",
                "text": text.replace(RELEASE_PLACEHOLDER, "{query}"),
                "weight": float(w),
            }
            for i, (text, w) in enumerate(zip(questions, weights, strict=True), start=1)
        ],
    }


def checklist_yaml(checklist: dict[str, Any], source: str | Path) -> str:
    """The checklist as YAML, headed by where it came from (file name and SHA-256)."""
    import yaml

    digest = hashlib.sha256(Path(source).read_bytes()).hexdigest()
    header = (
        f"# VisionReward-Video checklist converted from {Path(source).name} (sha256 {digest}).\n"
        "# Made by `python -m vpo.reward.visionreward checklist`; {query} is the user's original query.\n"
    )
    return header + yaml.safe_dump(checklist, sort_keys=False, allow_unicode=True, width=1000)


# -- model inputs ----------------------------------------------------------------------------------------


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
        # Same form as the factory's LazyScorer: backend | answer mode | weights.
        self.fingerprint = f"visionreward|generate|{weights_fingerprint(model_path, revision)}"
        self._model: Any = None
        self._tokenizer: Any = None
        self._torch_device: Any = None
        self._torch_dtype: Any = None
        self._yes_ids: list[int] = []
        self._no_ids: list[int] = []

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
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":
            log.warning("VisionReward-Video on CPU: expect minutes per question")
        self._torch_device = torch.device(device)
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
            device,
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


# -- fetching the release's files ----------------------------------------------------------------------


def release_urls(name: str, repo: str = RELEASE_REPO, ref: str = "main") -> list[str]:
    """Raw GitHub URLs a release file may be at (the folder name changed once)."""
    return [f"https://raw.githubusercontent.com/{repo}/{ref}/{folder}/{name}" for folder in RELEASE_DIRS]


def fetch_release_files(out_dir: str | Path, repo: str = RELEASE_REPO, ref: str = "main") -> list[Path]:
    """Download the question and weight files of the VisionReward release into `out_dir`."""
    from vpo.core.io import atomic_write_bytes

    written = []
    for name in RELEASE_FILES:
        urls = release_urls(name, repo, ref)
        data, errors = None, []
        for url in urls:
            try:
                with urllib.request.urlopen(url, timeout=60) as response:
                    data = response.read()
                break
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                errors.append(f"{url}: {exc}")
        if data is None:
            raise SystemExit(
                f"could not download {name}:\n  " + "\n  ".join(errors) + "\n"
                f"Without network access: on a machine with it, clone https://github.com/{repo}, copy "
                f"{RELEASE_DIRS[0]}/{name} (older checkouts: {RELEASE_DIRS[1]}/) into {out_dir}, then run "
                "`python -m vpo.reward.visionreward checklist --questions ... --out ...`."
            )
        path = Path(out_dir) / name
        atomic_write_bytes(path, data)
        log.info("%s  sha256 %s", path, hashlib.sha256(data).hexdigest())
        written.append(path)
    return written


# -- command line --------------------------------------------------------------------------------------


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vpo.reward.visionreward",
        description="VisionReward-Video's question files: download them, or convert them to a checklist.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("checklist", help="convert a release question file to checklist YAML")
    convert.add_argument("--questions", required=True, help="VisionReward_video_qa.txt (64) or *_select.txt")
    convert.add_argument("--weights", help="JSON list of weights (default: VPO's, for the 64-question file)")
    convert.add_argument("--name", default="visionreward-video", help="checklist name")
    convert.add_argument("--out", required=True, help="checklist YAML to write")
    fetch = commands.add_parser("fetch", help="download the release's question and weight files")
    fetch.add_argument("--out", required=True, help="folder to write them to")
    fetch.add_argument("--repo", default=RELEASE_REPO, help="GitHub repository of the release")
    fetch.add_argument("--ref", default="main", help="branch, tag or commit")
    return parser


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    args = make_parser().parse_args(argv)
    if args.command == "fetch":
        paths = fetch_release_files(args.out, args.repo, args.ref)
        log.info("next: python -m vpo.reward.visionreward checklist --questions %s --out CHECKLIST", paths[0])
        return
    from vpo.core.io import atomic_write_bytes

    try:
        weights = read_release_weights(args.weights) if args.weights else None
        checklist = checklist_from_release(args.questions, weights, name=args.name)
    except (OSError, ValueError) as exc:
        raise SystemExit(str(exc)) from None
    atomic_write_bytes(args.out, checklist_yaml(checklist, args.questions).encode("utf-8"))
    aligned = sum("{query}" in q["text"] for q in checklist["questions"])
    log.info("wrote %s: %d questions, %d with {query}", args.out, len(checklist["questions"]), aligned)


if __name__ == "__main__":
    main()
