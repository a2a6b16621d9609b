"""results/: the item cache (disposable) apart from the durable state, and the move from the old layout."""

from __future__ import annotations

import os

from vpo.core.layout import batches_dir, ledger_dir, state_dir, videos_dir


def test_durable_state_lies_beside_the_cache(tmp_path):
    cache = tmp_path / "results" / "cache"
    assert state_dir(cache) == tmp_path / "results" / "state"
    assert videos_dir(cache) == tmp_path / "results" / "state" / "videos"
    assert ledger_dir(cache).name == "ledger" and batches_dir(cache).name == "batches"
    assert not (tmp_path / "results").exists()  # asking creates nothing


def test_state_kept_in_the_cache_by_an_earlier_version_is_moved_not_lost(tmp_path):
    cache = tmp_path / "cache"
    (cache / "videos" / "ab").mkdir(parents=True)
    (cache / "videos" / "ab" / "ab12.mp4").write_bytes(b"mp4")
    (cache / "ledger").mkdir()
    (cache / "ledger" / "critique.jsonl").write_text('{"usd": 0.5}\n')
    assert (ledger_dir(cache) / "critique.jsonl").read_text() == '{"usd": 0.5}\n'
    assert not (cache / "ledger").exists()
    videos = videos_dir(cache)
    assert (videos / "ab" / "ab12.mp4").read_bytes() == b"mp4"
    # A record written before the move names the old path: it still opens, through a link.
    assert (cache / "videos").is_symlink() and (cache / "videos" / "ab" / "ab12.mp4").read_bytes() == b"mp4"
    assert os.readlink(cache / "videos") == os.path.join("..", "state", "videos")
    assert videos_dir(cache) == videos  # a second call finds the moved folder and changes nothing
