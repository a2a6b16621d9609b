"""The video page: each query's candidates side by side, the pair's winner and loser marked, text
escaped; its reward histogram is the same file on every rebuild."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from vpo.pages.plots import plot_rewards, save_svg
from vpo.pages.video_report import render_page


def reward(tmp_path: Path, query: str, video: str, sample: int, score: float) -> dict[str, Any]:
    path = tmp_path / f"{video}.mp4"
    path.write_bytes(f"mp4 of {video}".encode())
    return {
        "query_id": f"q-{query}",
        "query": query,
        "video_id": video,
        "video_path": str(path),
        "sample_index": sample,
        "video_index": 0,
        "prompt": f"{query} <b>take {sample}</b>",
        "labels": ["yes", "no", "invalid"],
        "question_ids": ["q1", "q2", "q3"],
        "score_vpo_sum": score,
        "score_visionreward_mean": score / 3,
        "invalid_count": 1,
    }


def test_page_marks_pairs_and_escapes_text(tmp_path):
    rewards = [
        reward(tmp_path, "a cat", "v1", 1, 0.25),
        reward(tmp_path, "a cat", "v0", 0, 2.0),
        reward(tmp_path, "a dog", "v2", 0, 1.0),
    ]
    pairs = [{"chosen_video_id": "v0", "rejected_video_id": "v1"}]
    page = render_page(rewards, pairs, max_queries=1, convention="vpo_sum")
    assert "1 of 2 queries; 1 video-level pairs" in page and "Question order: q1, q2, q3" in page
    assert "<h3>a cat</h3>" in page and "a dog" not in page  # bounded by max_queries
    # In sampling order, winner then loser; the prompt is text, not markup.
    assert page.index("class='cand win'") < page.index("class='cand lose'")
    assert "a cat &lt;b&gt;take 0&lt;/b&gt;" in page and "<b>take" not in page
    assert "<b>2.000</b> <span class='marks'>✔✘?</span>" in page
    assert base64.b64encode(b"mp4 of v0").decode("ascii") in page


def test_reward_histogram_is_identical_across_rebuilds(tmp_path):
    rewards = [reward(tmp_path, "a cat", f"v{i}", i, float(i)) for i in range(5)]
    first, second = tmp_path / "first.svg", tmp_path / "second.svg"
    save_svg(plot_rewards(rewards), first, salt="reward_distribution")
    save_svg(plot_rewards(rewards), second, salt="reward_distribution")
    assert first.read_bytes() == second.read_bytes()
    assert "Reward of 5 candidate videos (5 with invalid answers)" in first.read_text()
