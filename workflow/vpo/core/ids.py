"""Stable identifiers and seeds: every id is a hash of what defines the item, every seed of its id."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

_WS = re.compile(r"\s+")
# C0 and C1 control characters and DEL, except the whitespace ones (tab, newlines), which are collapsed.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]")


def digest(*parts: Any, length: int = 16) -> str:
    """Hex sha256 of a canonical JSON encoding of `parts`, cut to `length` characters."""
    payload = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:length]


def strip_control_chars(text: str) -> str:
    """`text` without control characters (NUL, escape, DEL ...), which no video prompt needs."""
    return _CONTROL.sub("", text)


def normalize_text(text: str) -> str:
    """A query or prompt without control characters, whitespace (newlines too) collapsed to single spaces:
    the form that is stored and hashed."""
    return _WS.sub(" ", strip_control_chars(text)).strip()


def query_id(text: str) -> str:
    """Id of a query: the same text (up to whitespace and case) always gets the same id."""
    return digest("query", normalize_text(text).lower())


def candidate_id(qid: str, policy_fingerprint: str, sample_index: int) -> str:
    """Id of the `sample_index`-th candidate prompt sampled for a query by one policy."""
    return digest("candidate", qid, policy_fingerprint, sample_index)


def derive_seed(root_seed: int, *parts: Any) -> int:
    """A 31-bit seed derived from the root seed and an item's identity (accepted by torch and APIs)."""
    return int(digest("seed", root_seed, *parts, length=8), 16) & 0x7FFFFFFF


def consecutive_seeds(root_seed: int, count: int, *parts: Any) -> range:
    """`count` consecutive 31-bit seeds s, s+1, … for the samples of one item. vLLM answers a request with
    `n = count` and seed s as `count` requests with these seeds, so sample i stays reproducible alone."""
    start = int(digest("seed", root_seed, *parts, length=8), 16) % (0x80000000 - count + 1)
    return range(start, start + count)


def shard_of(qid: str, n_shards: int) -> int:
    """Shard a query belongs to; depends only on its id, so other queries never move it."""
    return int(qid[:8], 16) % n_shards


def part_of(item_id: str, n_parts: int) -> int:
    """Which of a shard's `n_parts` jobs handles an item; stable, like `shard_of`, but on other bits."""
    return int(item_id[8:16], 16) % n_parts
