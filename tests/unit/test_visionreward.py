"""VisionReward-Video backend without the model: checklist conversion, model inputs, batching, answers.

The real model (CogVLM2-Video remote code, transformers 4.42) is not available here; `FakeRemoteModel`
mimics the parts of its interface the scorer uses: `build_conversation_input_ids` (BOS, per frame a run
of vision tokens and the frame's time index, then "Question: ... Answer:"), `model.encode_images`, and a
`generate` that, like the remote forward, writes the encoded features into the vision positions.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
import urllib.error

import numpy as np
import pytest
import torch

from vpo.reward import visionreward as vr
from vpo.reward import visionreward_release as release
from vpo.reward.base import normalize_answer
from vpo.reward.checklist import load_checklist

TOKENS_PER_FRAME = 3
BOS, EOS, PAD = 1, 2, 0


# -- fakes ---------------------------------------------------------------------------------------------


class FakeTokenizer:
    """Word-level tokenizer with a growing vocabulary; leading spaces do not make a new token."""

    pad_token_id = PAD

    def __init__(self):
        self.vocab: dict[str, int] = {}

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [self.vocab.setdefault(word, 10 + len(self.vocab)) for word in text.split()]

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        # Special ids (BOS, EOS, PAD, vision placeholders) are outside the vocabulary and decode to nothing.
        words = {v: k for k, v in self.vocab.items()}
        return " ".join(words[i] for i in ids if i in words)


class FakeInner:
    def __init__(self):
        self.encoded_videos = 0

    def encode_images(self, images):
        # One (T, tokens, dim) block for the first row's frames, like the remote video model.
        self.encoded_videos += len(images)
        pixels = images[0][0]
        return pixels.mean(dim=(2, 3)).unsqueeze(1).repeat(1, TOKENS_PER_FRAME, 1)


class FakeRemoteModel:
    vocab_size = 64

    def __init__(self, tokenizer: FakeTokenizer, text_only_works: bool = True):
        self.model = FakeInner()
        self.tokenizer = tokenizer
        self.text_only_works = text_only_works
        self.video_builds = 0
        self.batches: list[int] = []

    def build_conversation_input_ids(
        self, tokenizer, query, images=None, history=None, template_version=None
    ):
        assert template_version == "chat" and history == []
        ids, kinds, pixels = [BOS], [vr.LANGUAGE_TOKEN_TYPE], []
        if images:
            (video,) = images
            assert video.dtype == torch.uint8 and video.dim() == 4 and video.shape[0] == 3
            self.video_builds += 1
            for second in range(video.shape[1]):
                time_ids = tokenizer.encode(str(second))
                ids += [vr.PAD_TOKEN_ID] * TOKENS_PER_FRAME + time_ids
                kinds += [vr.VISION_TOKEN_TYPE] * TOKENS_PER_FRAME + [vr.LANGUAGE_TOKEN_TYPE] * len(time_ids)
            pixels = [(video.float() / 255).transpose(0, 1)]  # (T, C, H, W), as the remote transform
        elif not self.text_only_works:
            raise ValueError("an image is required")
        text = tokenizer.encode(f"Question: {query} Answer:")
        ids += text
        kinds += [vr.LANGUAGE_TOKEN_TYPE] * len(text)
        return {
            "input_ids": torch.tensor(ids),
            "token_type_ids": torch.tensor(kinds),
            "attention_mask": torch.ones(len(ids), dtype=torch.long),
            "images": pixels,
        }

    def generate(self, input_ids, token_type_ids, attention_mask, images, max_new_tokens, **kwargs):
        assert kwargs["do_sample"] is False and kwargs["return_dict_in_generate"]
        self.batches.append(len(input_ids))
        features = self.model.encode_images(images)
        vision = token_type_ids == vr.VISION_TOKEN_TYPE
        # The remote forward: flatten the features and write them into the vision positions, row-major.
        assert features.reshape(-1, features.shape[-1]).shape[0] == int(vision.sum())
        for row in attention_mask:  # left padding: no real token after a pad
            assert row.tolist() == sorted(row.tolist())
        words = [
            self.answer_for(self.tokenizer.decode(row.tolist(), skip_special_tokens=True))
            for row in input_ids
        ]
        new = torch.tensor([[self.tokenizer.encode(w)[0], EOS][:max_new_tokens] for w in words])
        logits = torch.full((len(words), self.vocab_size), -5.0)
        logits[torch.arange(len(words)), new[:, 0]] = 5.0
        return types.SimpleNamespace(sequences=torch.cat([input_ids, new], dim=1), logits=(logits,))

    @staticmethod
    def answer_for(text: str) -> str:
        return "Yes" if "cat" in text else "no" if "dog" in text else "maybe"


def fake_scorer(batch_size: int = 3, text_only_works: bool = True) -> vr.VisionRewardVideo:
    scorer = vr.VisionRewardVideo("THUDM/VisionReward-Video", batch_size=batch_size)
    tokenizer = FakeTokenizer()
    for word in ("Yes", "yes", "no", "No", "maybe"):  # fixed ids below the fake vocabulary size
        tokenizer.encode(word)
    scorer._tokenizer = tokenizer
    scorer._model = FakeRemoteModel(tokenizer, text_only_works)
    scorer._torch_device, scorer._torch_dtype = torch.device("cpu"), torch.float32
    scorer._find_answer_tokens()
    return scorer


def synthetic_frames(count: int = 7, height: int = 6, width: int = 8) -> np.ndarray:
    return (np.arange(count * height * width * 3) % 256).astype(np.uint8).reshape(count, height, width, 3)


QUESTIONS = [
    "Does the video show a cat?",
    "Is the dog here?",
    "Is it sharp?",
    "Is there a small cat in the long and winding scene at night?",
    "A dog?",
    "Is the lighting beautiful?",
    "cat",
]


# -- weights and checklists ------------------------------------------------------------------------------


def test_vpo_weights_facts():
    assert len(release.VPO_WEIGHTS) == 64
    assert sum(1 for w in release.VPO_WEIGHTS if w != 0) == 29
    assert sum(release.VPO_WEIGHTS) == pytest.approx(6.2771726, abs=1e-6)
    assert all(w >= 0 for w in release.VPO_WEIGHTS)


def write_release_file(path, lines, trailing="\n\n"):
    path.write_text("\n".join(lines) + trailing, encoding="utf-8")
    return path


def test_checklist_from_a_release_question_file(tmp_path):
    lines = [
        'Does the video meet all the requirements stated in the text "[[prompt]]"?',
        "Is the image quality stable?",
        "  Are the details refined?  ",
    ]
    source = write_release_file(tmp_path / "qa.txt", lines)
    checklist = release.checklist_from_release(source, [0.5, 0.0, 1.25], name="demo")
    assert checklist == {
        "name": "demo",
        "questions": [
            {
                "id": "q01",
                "text": 'Does the video meet all the requirements stated in the text "{query}"?',
                "weight": 0.5,
            },
            {"id": "q02", "text": "Is the image quality stable?", "weight": 0.0},
            {"id": "q03", "text": "Are the details refined?", "weight": 1.25},
        ],
    }
    out = tmp_path / "checklist.yaml"
    out.write_text(release.checklist_yaml(checklist, source), encoding="utf-8")
    loaded = load_checklist(out)
    assert [q.uses_query for q in loaded.questions] == [True, False, False]
    assert loaded.render("a red cat")[0].endswith('text "a red cat"?')
    assert loaded.scores(["yes", "yes", "no"])["vpo_sum"] == 0.5
    assert out.read_text().startswith("# VisionReward-Video checklist converted from qa.txt (sha256 ")


def test_default_weights_are_vpos_for_the_64_question_file(tmp_path):
    lines = ['Is "[[prompt]]" shown?'] * 4 + [f"Question number {i}?" for i in range(5, 65)]
    checklist = release.checklist_from_release(write_release_file(tmp_path / "qa64.txt", lines, trailing=""))
    assert [q["weight"] for q in checklist["questions"]] == list(release.VPO_WEIGHTS)
    assert [q["id"] for q in checklist["questions"]][:2] == ["q01", "q02"]
    assert checklist["questions"][-1]["id"] == "q64" and checklist["name"] == "visionreward-video"
    assert sum("{query}" in q["text"] for q in checklist["questions"]) == 4
    short = write_release_file(tmp_path / "select.txt", ["Is it sharp?"] * 29)
    with pytest.raises(ValueError, match=r"weight\.json"):
        release.checklist_from_release(short)


@pytest.mark.parametrize(
    ("lines", "weights", "message"),
    [
        (["Is it sharp?", "", "Is it stable?"], [1.0, 1.0], "line 2 is blank"),
        (["Is it sharp?", "Is it stable?"], [1.0], "2 questions but 1 weights"),
        (["Is it sharp?"], [-0.5], "finite and >= 0"),
        ([], None, "no questions"),
    ],
)
def test_bad_release_files_are_refused(tmp_path, lines, weights, message):
    source = write_release_file(tmp_path / "qa.txt", lines)
    with pytest.raises(ValueError, match=message):
        release.checklist_from_release(source, weights)


def test_cli_converts_question_and_weight_files(tmp_path):
    source = write_release_file(tmp_path / "qa_select.txt", ['Does it match "[[prompt]]"?', "Is it clear?"])
    (tmp_path / "weight.json").write_text(json.dumps([0.9, 0.1]))
    out = tmp_path / "out" / "visionreward-video.yaml"
    release.main(
        [
            "checklist",
            "--questions",
            str(source),
            "--weights",
            str(tmp_path / "weight.json"),
            "--out",
            str(out),
        ]
    )
    loaded = load_checklist(out)
    assert loaded.name == "visionreward-video" and loaded.weights == [0.9, 0.1]
    (tmp_path / "bad.json").write_text('{"w": 1}')
    with pytest.raises(SystemExit, match="JSON list of numbers"):
        release.main(
            [
                "checklist",
                "--questions",
                str(source),
                "--weights",
                str(tmp_path / "bad.json"),
                "--out",
                str(out),
            ]
        )


def test_fetch_without_network_names_the_urls_and_the_manual_way(tmp_path, monkeypatch):
    def offline(url, timeout):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(release.urllib.request, "urlopen", offline)
    with pytest.raises(SystemExit) as stop:
        release.main(["fetch", "--out", str(tmp_path)])
    message = str(stop.value)
    assert "https://raw.githubusercontent.com/THUDM/VisionReward/main/VisionReward_Video/" in message
    assert "VisionReward-Video/VisionReward_video_qa.txt" in message
    assert "clone https://github.com/THUDM/VisionReward" in message
    assert not list(tmp_path.iterdir())


# -- model inputs ---------------------------------------------------------------------------------------


def test_frames_become_the_builders_channels_first_uint8_video():
    frames = synthetic_frames(5, 6, 7)
    frames[0, 0, 0] = [0, 128, 255]
    video = vr.frames_to_video(frames)
    assert video.shape == (3, 5, 6, 7) and video.dtype == torch.uint8 and video.is_contiguous()
    # Not normalized here: the remote builder divides by 255 and applies CLIP's mean/std itself.
    assert video[:, 0, 0, 0].tolist() == [0, 128, 255]
    assert np.array_equal(video.permute(1, 2, 3, 0).numpy(), frames)


@pytest.mark.parametrize(
    "frames",
    [
        synthetic_frames(25),
        synthetic_frames(0),
        synthetic_frames(3).astype(np.float32),
        synthetic_frames(3)[..., :2],
        synthetic_frames(3)[0],
    ],
)
def test_frames_outside_the_models_range_are_refused(frames):
    with pytest.raises(ValueError):
        vr.frames_to_video(frames)


def test_video_prefix_is_split_off_and_joined_to_other_questions():
    tokenizer, model = FakeTokenizer(), FakeRemoteModel(FakeTokenizer())
    video = vr.frames_to_video(synthetic_frames(2))
    with_video = vr._row(model.build_conversation_input_ids(tokenizer, "Is it a cat?", [video], [], "chat"))
    text_only = vr._row(model.build_conversation_input_ids(tokenizer, "Is it a cat?", None, [], "chat"))
    prefix = vr.split_video_prefix(with_video, text_only[0])
    assert prefix is not None
    assert prefix.types.count(vr.VISION_TOKEN_TYPE) == 2 * TOKENS_PER_FRAME
    assert prefix.join(*text_only) == with_video
    other = "Is the dog asleep?"
    full = vr._row(model.build_conversation_input_ids(tokenizer, other, [video], [], "chat"))
    assert (
        prefix.join(*vr._row(model.build_conversation_input_ids(tokenizer, other, None, [], "chat"))) == full
    )
    # Builds that do not line up give no prefix.
    assert vr.split_video_prefix(with_video, [BOS, *tokenizer.encode("something else")]) is None
    assert vr.split_video_prefix(text_only, text_only[0]) is None
    with pytest.raises(ValueError):
        prefix.join([EOS, 5], [0, 0])


def test_left_padding_masks_pads_as_language_tokens():
    ids, kinds, mask = vr.left_pad([([1, 7, 8], [0, 1, 0]), ([1, 9], [0, 0])], pad_id=0)
    assert ids.tolist() == [[1, 7, 8], [0, 1, 9]]
    assert kinds.tolist() == [[0, 1, 0], [0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [0, 1, 1]]
    assert ids.dtype == kinds.dtype == mask.dtype == torch.long


def test_reused_vision_features_equal_separate_encodes_and_the_method_comes_back():
    inner = FakeInner()
    pixels = torch.rand(4, 3, 5, 5)
    once = inner.encode_images([[pixels]])
    separate = torch.cat([inner.encode_images([[pixels]]) for _ in range(3)]).reshape(-1, once.shape[-1])
    with vr.reuse_vision_features(inner, once) as calls:
        reused = inner.encode_images([[pixels]] * 3)
    assert torch.equal(reused.reshape(-1, once.shape[-1]), separate)
    assert calls["n"] == 1 and inner.encode_images.__func__ is FakeInner.encode_images
    assert "encode_images" not in vars(inner)


# -- answers --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "label"),
    [("Yes", "yes"), (" yes", "yes"), ("No.", "no"), ("no, it", "no"), ("maybe", "invalid"), ("", "invalid")],
)
def test_raw_answers_are_labelled_without_guessing(raw, label):
    assert normalize_answer(raw) == label


def test_p_yes_is_the_two_way_softmax_of_the_best_spellings():
    logits = torch.tensor([0.0, 2.0, 1.0, -1.0, 3.0])
    assert vr.first_token_p_yes(logits, [1, 2], [3, 4]) == pytest.approx(
        float(torch.sigmoid(torch.tensor(-1.0)))
    )
    assert vr.first_token_p_yes(logits, [], [3]) is None


def test_answers_encode_the_video_once_and_keep_question_order():
    scorer = fake_scorer(batch_size=3)
    assert scorer.fingerprint == "visionreward|generate|hub:THUDM/VisionReward-Video@default"
    answers = scorer.answer(synthetic_frames(7), QUESTIONS)
    model = scorer._model
    assert model.model.encoded_videos == 1  # the vision tower ran once for 7 questions
    assert model.video_builds == 1  # and the builder preprocessed the video once
    assert model.batches == [3, 3, 1]
    assert [a.raw for a in answers] == ["Yes", "no", "maybe", "Yes", "no", "maybe", "Yes"]
    assert [a.label for a in answers] == ["yes", "no", "invalid", "yes", "no", "invalid", "yes"]
    assert answers[0].p_yes > 0.99 and answers[1].p_yes < 0.01
    one_by_one = fake_scorer(batch_size=1).answer(synthetic_frames(7), QUESTIONS)
    assert one_by_one == answers


def test_builder_without_text_only_mode_falls_back_to_full_builds():
    scorer = fake_scorer(batch_size=4, text_only_works=False)
    answers = scorer.answer(synthetic_frames(3), QUESTIONS[:5])
    assert scorer._model.video_builds == 5 and scorer._model.model.encoded_videos == 1
    assert [a.label for a in answers] == ["yes", "no", "invalid", "yes", "no"]


def test_no_questions_need_no_model():
    scorer = vr.VisionRewardVideo()
    assert scorer.answer(synthetic_frames(2), []) == []
    assert scorer._model is None


def test_transformers_5_is_refused_before_loading(monkeypatch):
    fake = types.ModuleType("transformers")
    fake.__version__ = "5.6.0"
    fake.AutoModelForCausalLM = fake.AutoTokenizer = None
    monkeypatch.setitem(sys.modules, "transformers", fake)
    with pytest.raises(RuntimeError, match=r"4\.42.*reward-visionreward\.yaml"):
        vr.VisionRewardVideo().answer(synthetic_frames(2), ["Is it a cat?"])


def test_importing_the_module_imports_no_torch():
    code = (
        "import sys, vpo.reward.visionreward; print('torch' in sys.modules or 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
