"""What the run report reads besides the job reports: words per query and prompt, and training losses."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vpo.core.io import read_records
from vpo.core.queries import read_raw_queries


def word_count(text: str | None) -> int:
    return len(text.split()) if text else 0


def raw_query_lengths(path: str | os.PathLike) -> list[int]:
    """Words per raw entry, empty entries included (as 0): what curation started from."""
    return [word_count(text) for _, text in read_raw_queries(path)]


def column_lengths(paths: Iterable[str | os.PathLike], column: str) -> list[int]:
    """Words per non-null value of a text column over some record files (prompts without status ok
    are null in every record type, so nulls are what a stage did not produce)."""
    import polars as pl

    lengths: list[int] = []
    for path in paths:
        values = pl.read_parquet(path, columns=[column])[column].to_list()
        lengths.extend(word_count(v) for v in values if v)
    return lengths


def read_trainer_log(model_dir: str | os.PathLike) -> list[dict[str, Any]] | None:
    """Logged training steps with a loss from LLaMA-Factory's trainer_log.jsonl (in the output folder,
    or its adapter/ subfolder for LoRA); None when there is no such file."""
    for path in (Path(model_dir) / "trainer_log.jsonl", Path(model_dir) / "adapter" / "trainer_log.jsonl"):
        if path.is_file():
            rows = []
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a killed run may leave a partial last line
                if isinstance(row, dict) and row.get("loss") is not None:
                    rows.append(row)
            return rows
    return None


def loss_points(rows: Sequence[Mapping[str, Any]]) -> list[tuple[float, float]]:
    """(step, loss) per logged row; a row without a step number counts by position."""
    points = []
    for i, row in enumerate(rows, start=1):
        step = row.get("current_steps", row.get("step", i))
        points.append((float(step), float(row["loss"])))
    return points


def round_feedback(
    paths: Iterable[str], targets: Sequence[str], convention: str
) -> tuple[dict[str, dict[int, float | None]], dict[str, dict[int, float | None]]]:
    """Per target and round: the share of the round's candidates the judge passed (critique records) and
    the mean reward of its videos (reward records), from record files under results/dpo/round-<r>/.
    Round 1's critiques are shared: they count for every target."""
    from vpo.core.rounds import locate

    verdicts: dict[tuple[int, str | None], list[bool]] = {}
    scores: dict[tuple[int, str | None], list[float]] = {}
    for path in paths:
        where = locate(str(path))
        if where is None:
            raise SystemExit(f"{path} is not under a round's folder (results/dpo/round-<r>/)")
        for record in read_records(path):
            if "verdict" in record:
                verdicts.setdefault(where, []).append(record["verdict"] == "yes")
            else:
                scores.setdefault(where, []).append(record[f"score_{convention}"])
    rounds = sorted({r for r, _ in [*verdicts, *scores]})

    def mean(values: list[float] | list[bool] | None) -> float | None:
        return sum(values) / len(values) if values else None

    pass_rates = {
        t: {r: mean(verdicts.get((r, t)) or verdicts.get((r, None))) for r in rounds} for t in targets
    }
    rewards = {t: {r: mean(scores.get((r, t))) for r in rounds} for t in targets}
    return pass_rates, rewards
