"""The hf-vlm reward scorer on a tiny random Qwen2-VL: the cached-prefix fast path equals the naive path."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from vpo.reward.base import normalize_answer
from vpo.reward.frames import read_video, sample_frames, sample_indices

QUESTIONS = [
    "Is the video clear?",
    "Does the camera move smoothly throughout the whole clip, without any shaky motion or sudden jumps?",
    "a",
    "Are there any artifacts?",
    "Is the red cat on the left of the frame at the end of the video?",
    "yes or no",
    "Is it dark?",
]


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory) -> Path:
    from vpo.reward.tiny_vlm import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("models") / "tiny-vlm")


@pytest.fixture(scope="module")
def scorers(tiny_vlm, tmp_path_factory):
    """Constrained and free scorers with a batch smaller than the checklist, so suffixes span batches."""
    from vpo.reward.hf_vlm import HFVideoVLM

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VPO_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))  # weight-hash memos
        yield {
            mode: HFVideoVLM(str(tiny_vlm), device="cpu", batch_size=3, answer_mode=mode)
            for mode in ("constrained", "free")
        }


def video(seed: int, frames: int = 5, height: int = 32, width: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)


def assert_same_answers(answers, reference) -> None:
    """Same raw text and labels, P(yes) equal up to float noise (batch shapes change summation order)."""
    assert [(a.raw, a.label) for a in answers] == [(r.raw, r.label) for r in reference]
    assert np.allclose([a.p_yes for a in answers], [r.p_yes for r in reference], atol=1e-4, rtol=0)


def test_the_tiny_vlm_reloads_small_and_deterministic(tiny_vlm, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vpo.reward.tiny_vlm import build_tiny_vlm

    processor = AutoProcessor.from_pretrained(tiny_vlm)
    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm)
    assert processor.chat_template and processor.video_processor is not None
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    assert sum(f.stat().st_size for f in tiny_vlm.iterdir()) < 5_000_000
    again = build_tiny_vlm(tmp_path / "again")

    def sha(folder: Path, name: str) -> str:
        return hashlib.sha256((folder / name).read_bytes()).hexdigest()

    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert sha(again, name) == sha(tiny_vlm, name)


def test_prefix_and_suffix_tokens_make_the_full_prompt(scorers):
    scorer = scorers["constrained"]
    frames = scorer.prepare_frames(video(0))
    head = scorer._model_inputs(scorer.split.head, frames)["input_ids"][0].tolist()
    for question, suffix in zip(QUESTIONS, scorer.suffix_ids(QUESTIONS), strict=True):
        full = scorer._model_inputs(scorer.split.render(question), frames)["input_ids"][0].tolist()
        assert suffix is not None and head + suffix == full
    assert scorer.fingerprint.startswith("hf-vlm|constrained|dir:")
    assert scorers["free"].fingerprint.startswith("hf-vlm|free|dir:")


def test_constrained_answers_are_yes_or_no_and_match_the_naive_path(scorers):
    scorer = scorers["constrained"]
    frames = video(1)
    answers = scorer.answer(frames, QUESTIONS)
    assert len(answers) == len(QUESTIONS)
    assert all(a.label in ("yes", "no") and a.raw == a.label for a in answers)
    assert all(0.0 <= a.p_yes <= 1.0 and (a.p_yes >= 0.5) == (a.label == "yes") for a in answers)
    assert_same_answers(answers, [scorer.reference_answer(frames, q) for q in QUESTIONS])
    # A question's answer does not depend on the rest of the checklist or the batching.
    assert_same_answers(scorer.answer(frames, QUESTIONS[3:5]), answers[3:5])


def test_answers_depend_on_the_video(scorers):
    scorer = scorers["constrained"]
    first, second = (scorer.answer(video(seed), QUESTIONS) for seed in (2, 3))
    assert max(abs(a.p_yes - b.p_yes) for a, b in zip(first, second, strict=True)) > 1e-3


def test_any_frame_count_and_no_questions(scorers):
    scorer = scorers["constrained"]
    single = video(4, frames=1, height=20, width=20)
    assert scorer.prepare_frames(single).shape[0] == 2  # Qwen2-VL patches pairs of frames
    assert_same_answers(
        scorer.answer(single, ["Is it dark?"]), [scorer.reference_answer(single, "Is it dark?")]
    )
    assert scorer.answer(single, []) == []
    with pytest.raises(ValueError, match="uint8"):
        scorer.answer(single.astype(np.float32), ["Is it dark?"])


def test_free_mode_keeps_the_raw_token_and_marks_other_words_invalid(scorers):
    scorer = scorers["free"]
    frames = video(5)
    answers = scorer.answer(frames, QUESTIONS)
    assert all(isinstance(a.raw, str) and a.label in ("yes", "no", "invalid") for a in answers)
    assert all(a.label == normalize_answer(a.raw) for a in answers)
    assert_same_answers(answers, [scorer.reference_answer(frames, q) for q in QUESTIONS])


def test_a_question_that_merges_with_the_prompt_head_takes_the_naive_path(tiny_vlm, tmp_path, monkeypatch):
    from vpo.reward.hf_vlm import HFVideoVLM, PromptSplit

    monkeypatch.setenv("VPO_CACHE_DIR", str(tmp_path))
    scorer = HFVideoVLM(str(tiny_vlm), device="cpu", batch_size=2)
    # A head ending mid-word: "ye" + "s ..." tokenizes as the word "yes", not as the head's "ye".
    scorer.split = PromptSplit(scorer.split.head + "ye", scorer.split.tail)
    scorer.head_ids = scorer._text_ids([scorer.split.head])[0]
    questions = ["s, is it clear?", " Is it dark?", " a"]
    assert scorer.suffix_ids(questions)[0] is None
    frames = video(6)
    answers = scorer.answer(frames, questions)
    assert_same_answers(answers, [scorer.reference_answer(frames, q) for q in questions])


@pytest.mark.parametrize(
    ("raw", "label"),
    [
        ("Yes", "yes"),
        ("yes.", "yes"),
        (" NO ", "no"),
        ("**Yes**", "yes"),
        ("Yes, the video shows a cat.", "yes"),
        ("no.", "no"),
        ("Not sure", "invalid"),
        ("", "invalid"),
        (None, "invalid"),
        ("yesterday", "invalid"),
        ("The answer is yes", "invalid"),
    ],
)
def test_normalize_answer(raw, label):
    assert normalize_answer(raw) == label


def test_frame_sampling_takes_one_frame_per_second():
    assert sample_indices(9, fps=8) == [0, 8]
    assert sample_indices(3, fps=8) == [0]  # shorter than a second: still one frame
    assert sample_indices(240, fps=8, max_frames=24) == list(range(0, 192, 8))
    assert sample_indices(100, fps=24, per_second=2, max_frames=3) == [0, 12, 24]
    assert sample_indices(5, fps=0, max_frames=3) == [0, 2, 4]  # no frame rate: spread evenly
    frames = video(7, frames=17)
    assert np.array_equal(sample_frames(frames, 8), frames[[0, 8, 16]])


def test_read_video_round_trips_an_exported_mp4(tmp_path):
    from diffusers.utils import export_to_video

    frames = np.zeros((9, 32, 32, 3), dtype=np.float32)
    frames[:, :, :16] = 1.0  # left half white: survives lossy coding
    path = export_to_video(list(frames), str(tmp_path / "clip.mp4"), fps=8)
    decoded, fps = read_video(path)
    assert decoded.dtype == np.uint8 and decoded.shape == (9, 32, 32, 3)
    assert fps == pytest.approx(8.0)
    assert decoded[:, :, :12].mean() > 200 and decoded[:, :, 20:].mean() < 50
