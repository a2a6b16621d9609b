"""Time and memory per rule for the run report: Snakemake's benchmark files beside each rule's memory request.

report.smk hands over, per rule, its benchmark path pattern, its job-report path pattern and the `mem_mb` of
a first try. A benchmark's `max_rss` is sampled (every 0.5 s at first, then every 30 s), so it can miss a
short peak; each job report also carries the job's own peak (`provenance.memory`, from getrusage), and
the larger of the two counts. A job over its request is what Slurm would have killed: the page flags it.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_WILDCARD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?:,[^}]*)?\}")


@dataclass(frozen=True)
class RuleUsage:
    """What the jobs of one rule took: wall seconds, peak resident memory, and the rule's request."""

    rule: str
    jobs: int
    wall_s_total: float
    wall_s_max: float
    peak_rss_mb: float | None  # None: no job of the rule measured it
    mem_mb: int | None  # None: the rule asks for Snakemake's default

    @property
    def share(self) -> float | None:
        """Peak memory as a share of the request."""
        if self.peak_rss_mb is None or not self.mem_mb:
            return None
        return self.peak_rss_mb / self.mem_mb

    @property
    def over(self) -> bool:
        return self.share is not None and self.share > 1


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A Snakemake path pattern (`results/benchmarks/critique/{phase}/shard-{k}.tsv`) as a regex whose
    named groups are its wildcards."""
    out, last, seen = [], 0, set()
    for match in _WILDCARD.finditer(pattern):
        out.append(re.escape(pattern[last : match.start()]))
        name = match.group(1)
        out.append(f"(?P={name})" if name in seen else f"(?P<{name}>[^/]+)")
        seen.add(name)
        last = match.end()
    out.append(re.escape(pattern[last:]))
    return re.compile("".join(out))


def fill(pattern: str, wildcards: Mapping[str, str]) -> str:
    """A path pattern with its wildcards (constraints and all) replaced by their values."""
    return _WILDCARD.sub(lambda match: wildcards[match.group(1)], pattern)


def read_benchmark(path: Path) -> tuple[float, float | None]:
    """(wall seconds, max_rss in MB or None) from the last row of a Snakemake benchmark TSV."""
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows:
        raise ValueError(f"{path}: a benchmark file without a row")
    last = rows[-1]
    rss = last.get("max_rss")
    return float(last["s"]), (float(rss) if rss not in (None, "", "NA", "-") else None)


def job_peak(report: Path) -> float | None:
    """The job's own peak (MB): the larger of its process's and its largest child's (the trainer runs
    as a child of a small parent). Not their sum: a child forked from a large process counts the
    parent's pages in its own peak until it execs (e.g. `git` for the code version)."""
    if not report.is_file():
        return None
    memory = json.loads(report.read_text(encoding="utf-8")).get("provenance", {}).get("memory")
    if not memory:
        return None
    return max(float(memory.get("peak_rss_mb") or 0), float(memory.get("children_peak_rss_mb") or 0))


def rule_usage(rules: Mapping[str, Mapping[str, Any]], root: Path = Path(".")) -> list[RuleUsage]:
    """One row per rule that has benchmark files under `root`, in the order of `rules`.

    `rules`: rule name -> {"benchmark": pattern, "report": job-report pattern or None, "mem_mb": int or
    None}. Every benchmark file of a rule's pattern counts (a file left by an earlier, larger run too)."""
    found = sorted(p.relative_to(root).as_posix() for p in root.glob("results/benchmarks/**/*.tsv"))
    rows = []
    for name, rule in rules.items():
        regex = pattern_regex(rule["benchmark"])
        walls, peaks = [], []
        for path in found:
            match = regex.fullmatch(path)
            if match is None:
                continue
            wall, rss = read_benchmark(root / path)
            walls.append(wall)
            report = root / fill(rule["report"], match.groupdict()) if rule.get("report") else None
            own = job_peak(report) if report is not None else None
            peaks += [m for m in (rss, own) if m is not None]
        if walls:
            rows.append(
                RuleUsage(
                    rule=name,
                    jobs=len(walls),
                    wall_s_total=sum(walls),
                    wall_s_max=max(walls),
                    peak_rss_mb=max(peaks) if peaks else None,
                    mem_mb=rule.get("mem_mb"),
                )
            )
    return rows
