"""The T2V stage on a second pipeline family, the tiny random-weight Wan: renders, seeds, identical builds."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.records import record
from vpo.core.fingerprints import fingerprint
from vpo.core.io import read_records, write_records
from vpo.reward.frames import read_video
from vpo.t2v.tiny_wan import MAX_TEXT_TOKENS

SETTINGS = {
    "backend": "diffusers",
    "pipeline": "WanPipeline",
    "dtype": "float32",
    "device": "cpu",
    "height": 32,  # Wan: multiples of 16 (VAE 8x, patch 2)
    "width": 32,
    "num_frames": 9,  # Wan: (num_frames - 1) % 4 == 0
    "fps": 8,
    "num_inference_steps": 2,
    "guidance_scale": 5.0,
    "use_dynamic_cfg": False,  # a CogVideoX switch: WanPipeline has no such argument
    "negative_prompt": "",
    "max_sequence_length": MAX_TEXT_TOKENS,
    "scheduler": None,
    "memory": {"cpu_offload": True, "vae_slicing": True, "vae_tiling": True},  # skipped without CUDA
    "videos_per_prompt": 1,
    "batch_size": 1,  # one prompt per forward: re-renders are compared bit for bit
}
LONG = " ".join(["a very long and winding description of a dog dancing in the rain"] * 40)


@pytest.fixture(scope="module")
def tiny_wan(tmp_path_factory):
    from vpo.t2v.tiny_wan import build_tiny_wan

    return build_tiny_wan(tmp_path_factory.mktemp("models") / "tiny-wan")


def candidate(index, prompt, status="ok"):
    return record(
        "generation",
        item_id=f"{index:04d}ddddeeeeffff",
        query_id="q0",
        query="a dog dancing",
        sample_index=index,
        prompt=prompt,
        status=status,
        raw=prompt,
    )


def run_stage(tmp_path, model, name, cache="first/cache"):
    from vpo.stages.generate_videos import main

    out, report = tmp_path / f"{name}.parquet", tmp_path / f"{name}.json"
    args = ["--candidates", str(tmp_path / "candidates.parquet"), "--model", str(model)]
    args += ["--t2v", json.dumps(SETTINGS), "--seed", "0", "--cache-dir", str(tmp_path / cache)]
    main([*args, "--out", str(out), "--report", str(report)])
    return read_records(out), json.loads(report.read_text())["counts"]


def file_hashes(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_wan_videos_render_decode_and_repeat_with_the_seed(tmp_path, tiny_wan):
    rows = [candidate(0, "a dog dancing in the rain"), candidate(1, LONG), candidate(2, None, "empty")]
    write_records(tmp_path / "candidates.parquet", rows, "generation")
    videos, counts = run_stage(tmp_path, tiny_wan, "first")
    assert counts["rendered"] == 2 and counts["cache_hits"] == 0
    assert counts["candidates_without_prompt"] == {"empty": 1}
    by_candidate = {v["candidate_id"]: v for v in videos}
    assert not by_candidate[rows[0]["item_id"]]["truncated"]
    long_video = by_candidate[rows[1]["item_id"]]
    assert long_video["truncated"] and long_video["prompt_tokens"] > MAX_TEXT_TOKENS
    decoded = []
    for video in videos:
        frames, fps = read_video(video["video_path"])
        assert frames.shape == (9, 32, 32, 3) and fps == pytest.approx(8)
        assert (video["num_frames"], video["height"], video["width"]) == (9, 32, 32)
        assert frames.std() > 0  # not a blank video
        decoded.append(frames)
    assert videos[0]["seed"] != videos[1]["seed"]
    assert videos[0]["video_sha256"] != videos[1]["video_sha256"]
    assert all(v["model_fingerprint"] == f"t2v|{fingerprint(str(tiny_wan))}" for v in videos)

    # a fresh cache (videos live in <cache>/../state) renders everything again: same seeds, same model,
    # CPU -> the same videos, bit for bit
    again, counts = run_stage(tmp_path, tiny_wan, "again", cache="second/cache")
    assert counts["rendered"] == 2 and counts["cache_hits"] == 0
    assert [v["video_sha256"] for v in again] == [v["video_sha256"] for v in videos]
    for video, frames in zip(again, decoded, strict=True):
        assert (read_video(video["video_path"])[0] == frames).all()


def test_two_wan_builds_are_byte_identical(tmp_path, tiny_wan):
    from vpo.models.build import main

    main(["tiny-wan", "--out", str(tmp_path / "again")])  # the workflow's recipe, a second build
    hashes = file_hashes(tmp_path / "again")
    assert hashes == file_hashes(tiny_wan)
    assert {"model_index.json", "scheduler/scheduler_config.json", "tokenizer/tokenizer.json"} <= set(hashes)
    assert fingerprint(str(tmp_path / "again")) == fingerprint(str(tiny_wan))
    # the trained vocabulary in canonical order: pieces that round to the same score cannot swap ids
    vocab = json.loads((tiny_wan / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"]
    assert [piece for piece, _ in vocab[:3]] == ["<pad>", "</s>", "<unk>"]
    assert vocab[3:] == sorted(vocab[3:], key=lambda item: (-item[1], item[0]))
    index = json.loads((tiny_wan / "model_index.json").read_text())
    assert index["_class_name"] == "WanPipeline"
    assert index["text_encoder"] == ["transformers", "UMT5EncoderModel"]
