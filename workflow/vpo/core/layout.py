"""Where things are: the repository's own folders, and the item cache and durable state under results/."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
WORKFLOW_DIR = REPO_ROOT / "workflow"
SCHEMA_DIR = WORKFLOW_DIR / "schemas"
PROMPTS_DIR = REPO_ROOT / "resources" / "prompts"

# results/cache holds what a re-run can recompute (LLM answers, weight checksums, rate-limit buckets):
# deleting it costs model calls. results/state, beside it, holds what cannot be recomputed for free: the
# rendered videos the records point to, the cost ledger (spend against the budget) and the Batch API
# journals (batches paid for and not yet collected).
CACHE_DIR = "results/cache"


def state_dir(cache_dir: str | os.PathLike = CACHE_DIR) -> Path:
    """The durable state beside an item cache: results/state for results/cache."""
    return Path(cache_dir).parent / "state"


def videos_dir(cache_dir: str | os.PathLike = CACHE_DIR) -> Path:
    return _durable(cache_dir, "videos")


def ledger_dir(cache_dir: str | os.PathLike = CACHE_DIR) -> Path:
    return _durable(cache_dir, "ledger")


def batches_dir(cache_dir: str | os.PathLike = CACHE_DIR) -> Path:
    return _durable(cache_dir, "batches")


def _durable(cache_dir: str | os.PathLike, name: str) -> Path:
    """`state/<name>`, moved there first from `cache/<name>` where an earlier version kept it. The old
    videos folder becomes a link to the new one, so that records written before still find their mp4s."""
    new, old = state_dir(cache_dir) / name, Path(cache_dir) / name
    if old.is_dir() and not old.is_symlink() and not new.exists():
        new.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):  # a job started at the same moment moved it first
            os.rename(old, new)
        if name == "videos":
            with contextlib.suppress(FileExistsError):  # ... or linked it first
                os.symlink(os.path.relpath(new, old.parent), old)
    return new


# The record files of a finished run under results/ that audit joins, by record type (the rules write them;
# an integration test checks this table against a real run).
RECORD_FILES: dict[str, tuple[str, ...]] = {
    "query": ("queries/sft.parquet", "queries/dpo.parquet"),
    # A round's text level: round 1's under dpo/round-1/, later rounds' under dpo/round-<r>/<target>/.
    "generation": ("sft/drafts/shard-*.parquet", "dpo/round-*/candidates/shard-*.parquet",
                   "dpo/round-*/*/candidates/shard-*.parquet"),
    "critique": ("sft/critiques/shard-*.parquet", "dpo/round-*/critiques/shard-*.parquet",
                 "dpo/round-*/*/critiques/shard-*.parquet"),
    "refinement": ("sft/refinements/shard-*.parquet", "dpo/round-*/refinements/shard-*.parquet",
                   "dpo/round-*/*/refinements/shard-*.parquet"),
    "video": ("dpo/round-*/*/videos/shard-*/part-*.parquet",),
    "reward": ("dpo/round-*/*/rewards/shard-*/part-*.parquet",),
    # Video pairs a text pair superseded are artifacts too; the DPO data's own copy comes last.
    "pair": ("dpo/round-*/*/video_pairs.parquet", "dpo/round-*/*/pairs.parquet"),
    "sft_example": ("sft/examples.parquet",),
}  # fmt: skip
