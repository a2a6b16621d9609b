"""`vpo audit`: where an artifact of a run came from, and what depends on it.

Records carry the ids that join them (query_id, item_id of a candidate, video_id, pair_id) and the
fingerprint of the model that produced them; every job wrote a report beside its output with its
inputs' sha256, params, code version, host and Slurm job id. This module reads both and walks:

- upstream from a DPO pair, a candidate or draft (item id), a video, a query or a file: the pair → its
  candidates → the query (source file and line) → the critique and refinement raw answers → the video
  file with its sha256 → the reward answers → the models and their fingerprints → the checkpoint that
  sampled the candidates, with the job that wrote each file;
- downstream (`--dependents`) from a query id or a model (fingerprint prefix or path): which records,
  pairs and checkpoints depend on it.

`vpo audit <id | path> [--results results] [--json] [--dependents]`
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vpo.core import rounds
from vpo.core.fingerprints import sha256_file
from vpo.core.io import read_records
from vpo.core.layout import RECORD_FILES
from vpo.core.provenance import report_beside

RAW_CHARS = 160  # raw model answers are shortened in the tree; --json keeps them whole


@dataclass
class Node:
    kind: str
    label: str
    fields: dict[str, Any] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "label": self.label,
            **({"fields": self.fields} if self.fields else {}),
            **({"children": [c.to_json() for c in self.children]} if self.children else {}),
        }


class Run:
    """Every record file and job report of one results folder, indexed by the ids that join them."""

    def __init__(self, results: Path):
        self.results = results
        if not results.is_dir():
            raise SystemExit(f"{results} does not exist: run the workflow first, or pass --results")
        self.queries = self._index("query", key="query_id")
        self.generations = self._index("generation", key="item_id")
        self.critiques = self._index("critique", key="item_id")
        self.refinements = self._index("refinement", key="item_id")
        self.videos = self._index("video", key="video_id")
        self.rewards = self._index("reward", key="video_id")
        self.pairs = self._index("pair", key="pair_id")
        self.sft_examples = self._index("sft_example", key="query_id")

    def _index(self, record_type: str, key: str) -> dict[str, tuple[dict[str, Any], Path]]:
        index: dict[str, tuple[dict[str, Any], Path]] = {}
        for pattern in RECORD_FILES[record_type]:
            for path in sorted(self.results.glob(pattern)):
                for record in read_records(path):
                    index[record[key]] = (record, path)
        return index

    def report_of(self, path: Path) -> dict[str, Any] | None:
        """The job report written beside an output file or folder, if any."""
        found = report_beside(path, self.results)
        return json.loads(found.read_text(encoding="utf-8")) if found else None

    def job(self, path: Path) -> dict[str, Any]:
        """Who wrote `path`: the job's stage, time, host, Slurm job id and code version."""
        report = self.report_of(path)
        if report is None:
            return {"file": str(path), "job": None, "note": "no job of this run wrote it (an input)"}
        prov = report.get("provenance", {})
        code = prov.get("code") or {}
        commit = (code.get("commit") or "unknown")[:12] + (" (dirty)" if code.get("dirty") else "")
        job = {
            "file": str(path),
            "job": report.get("stage"),
            "started": prov.get("started"),
            "wall_s": prov.get("wall_s"),
            "host": prov.get("host"),
            "commit": commit,
        }
        if prov.get("slurm_job_id"):
            job["slurm_job_id"] = prov["slurm_job_id"]
        return job


def _short(text: str | None) -> str | None:
    if text is None or len(text) <= RAW_CHARS:
        return text
    return text[:RAW_CHARS] + f"… ({len(text)} chars)"


class Auditor:
    def __init__(self, run: Run, full_text: bool = False):
        self.run = run
        self.full_text = full_text

    def text(self, value: str | None) -> str | None:
        return value if self.full_text else _short(value)

    # -- upstream ---------------------------------------------------------------------------------

    def query(self, query_id: str) -> Node:
        record, path = self.run.queries[query_id]
        fields = {
            "text": record["query"],
            "set": record["set"],
            "source": f"{record['source_file']}:{record['source_line']}",
            "written_by": self.run.job(path),
        }
        return Node("query", query_id, fields)

    def generation(self, item_id: str) -> Node:
        record, path = self.run.generations[item_id]
        kind = "candidate" if "/dpo/" in str(path) else "draft"
        fields = {
            "prompt": self.text(record["prompt"]),
            "status": record["status"],
            "sample_index": record["sample_index"],
            "seed": record["seed"],
            "finish_reason": record["finish_reason"],
            "model": record["model_fingerprint"],
            "written_by": self.run.job(path),
        }
        node = Node(kind, item_id, fields)
        if kind == "candidate":
            node.children.append(self.checkpoint(self.sampler_of(path), record["model_fingerprint"]))
        return node

    def sampler_of(self, path: Path) -> Path:
        """The checkpoint that sampled a round's candidates: SFT in round 1, else the target's previous
        round's DPO checkpoint (vpo.core.rounds)."""
        where = rounds.locate(path.relative_to(self.run.results).as_posix())
        round_, target = where if where else (1, None)
        folder = rounds.checkpoint(round_ - 1, target or "").removeprefix("results/")
        return self.run.results / folder

    def critique(self, item_id: str) -> Node | None:
        if item_id not in self.run.critiques:
            return None
        record, path = self.run.critiques[item_id]
        fields = {
            "verdict": record["verdict"],
            "status": record["status"],
            "attempts": record["attempts"],
            "seed": record["seed"],
            "judge": record["model_fingerprint"],
            "raw": self.text(record["critique"]),
            "written_by": self.run.job(path),
        }
        return Node("critique", item_id, fields)

    def refinement(self, item_id: str) -> Node | None:
        if item_id not in self.run.refinements:
            return None
        record, path = self.run.refinements[item_id]
        fields = {
            "refined_prompt": self.text(record["refined_prompt"]),
            "status": record["status"],
            "attempts": record["attempts"],
            "seed": record["seed"],
            "judge": record["model_fingerprint"],
            "raw": self.text(record["raw"]),
            "written_by": self.run.job(path),
        }
        return Node("refinement", item_id, fields)

    def judged(self, item_id: str) -> Node:
        """A candidate or draft with the judge's turns on it."""
        node = self.generation(item_id)
        node.children += [n for n in (self.critique(item_id), self.refinement(item_id)) if n is not None]
        return node

    def video(self, video_id: str) -> Node:
        record, path = self.run.videos[video_id]
        video_file = Path(record["video_path"])
        fields = {
            "file": record["video_path"],
            "sha256": record.get("video_sha256")
            or (sha256_file(video_file) if video_file.is_file() else "missing"),
            "seed": record["seed"],
            "frames": f"{record['num_frames']} × {record['height']}×{record['width']} at {record['fps']} fps",
            "prompt_truncated": record["truncated"],
            "t2v_model": record["model_fingerprint"],
            "written_by": self.run.job(path),
        }
        node = Node("video", video_id, fields)
        if video_id in self.run.rewards:
            node.children.append(self.reward(video_id))
        return node

    def reward(self, video_id: str) -> Node:
        record, path = self.run.rewards[video_id]
        answers = [
            f"{q}: {label} (p_yes {p:.3f}, raw {raw!r})"
            for q, label, p, raw in zip(
                record["question_ids"], record["labels"], record["p_yes"], record["raw_answers"], strict=True
            )
        ]
        fields = {
            "video_sha256": record["video_sha256"],
            "score_vpo_sum": round(record["score_vpo_sum"], 4),
            "score_visionreward_mean": round(record["score_visionreward_mean"], 4),
            "invalid_answers": record["invalid_count"],
            "checklist": record["checklist"],
            "scorer": record["scorer_fingerprint"],
            "answers": answers,
            "written_by": self.run.job(path),
        }
        return Node("reward", video_id, fields)

    def checkpoint(self, path: Path, fingerprint: str | None = None, kind: str = "checkpoint") -> Node:
        """A policy checkpoint, the data it was trained on, and the checkpoints it started from and was
        held to (DPO's reference), back through the rounds to SFT and its base model."""
        report = self.run.report_of(path) or {}
        prov = report.get("provenance", {})
        fields: dict[str, Any] = {"path": str(path)}
        if fingerprint:
            fields["fingerprint"] = fingerprint
        fields["trained_from"] = {k: v[:16] for k, v in prov.get("inputs_sha256", {}).items()}
        fields["written_by"] = self.run.job(path)
        where = rounds.locate(path.as_posix())
        label = f"round {where[0]} for {where[1]}" if where and where[1] else path.name
        node = Node(kind, label, fields)
        models = self.run.results.resolve() / "models"
        for role, (source, model_fp) in zip(
            ("started from", "reference"), prov.get("models", {}).items(), strict=False
        ):
            source_path = Path(source)
            if models in source_path.resolve().parents and source_path.resolve() != path.resolve():
                node.children.append(self.checkpoint(source_path, model_fp, f"checkpoint ({role})"))
            elif role == "started from":
                node.children.append(Node("base model", source, {"fingerprint": model_fp}))
        return node

    def pair(self, pair_id: str) -> Node:
        record, path = self.run.pairs[pair_id]
        fields = {
            "source": record["source"],
            "chosen": self.text(record["chosen"]),
            "rejected": self.text(record["rejected"]),
            **(
                {"score_margin": record["score_margin"], "convention": record["score_convention"]}
                if record["source"] == "video"
                else {}
            ),
            "written_by": self.run.job(path),
        }
        node = Node("pair", pair_id, fields, [self.query(record["query_id"])])
        chosen = Node(
            f"chosen ({record['chosen_kind']})",
            record["chosen_id"],
            children=[self.judged(record["chosen_id"])],
        )
        rejected = Node("rejected (candidate)", record["rejected_id"])
        if record["rejected_id"] != record["chosen_id"]:
            rejected.children.append(self.judged(record["rejected_id"]))
        else:
            rejected.fields["note"] = "the candidate above, as sampled"
        for side, video_id in ((chosen, record["chosen_video_id"]), (rejected, record["rejected_video_id"])):
            if video_id:
                side.children.append(self.video(video_id))
        node.children += [chosen, rejected]
        return node

    def lookup(self, target: str) -> Node:
        """The tree for a record id (pair, item, video, query) or an artifact path."""
        if target in self.run.pairs:
            return self.pair(target)
        if target in self.run.generations:
            node = self.judged(target)
            record = self.run.generations[target][0]
            node.children.insert(0, self.query(record["query_id"]))
            node.children += [
                self.video(v) for v, (r, _) in self.run.videos.items() if r["candidate_id"] == target
            ]
            return node
        if target in self.run.videos:
            node = self.video(target)
            candidate = self.run.videos[target][0]["candidate_id"]
            node.children.append(self.judged(candidate))
            return node
        if target in self.run.queries:
            return self.query(target)
        path = Path(target)
        if path.exists():
            return self.file(path)
        raise SystemExit(
            f"{target!r} is neither a pair, candidate, draft, video or query id of {self.run.results} "
            "nor a file. Fix: copy an id from a Parquet record (pair_id, item_id, video_id, query_id) "
            "or give a path."
        )

    def file(self, path: Path, seen: set[Path] | None = None) -> Node:
        """File-level lineage: the job that wrote `path`, then the same for each of its inputs."""
        seen = set() if seen is None else seen
        resolved = path.resolve()
        node = Node("file", str(path), {"written_by": self.run.job(path)})
        if path.is_file():
            node.fields["sha256"] = sha256_file(path)
        if resolved in seen:
            node.fields["note"] = "shown above"
            return node
        seen.add(resolved)
        provenance = (self.run.report_of(path) or {}).get("provenance", {})
        for source in provenance.get("inputs_sha256", {}):
            node.children.append(self.file(Path(source), seen))
        hub = provenance.get("hub_models", {})
        for source, fingerprint in provenance.get("models", {}).items():
            model = self.file(Path(source), seen) if Path(source).exists() else Node("file", source)
            model.kind = "model"
            model.fields["fingerprint"] = fingerprint
            if source in hub:  # downloaded from the hub: the repo, the commit and each file's sha256
                origin = hub[source]
                model.fields.update(
                    repo=origin["repo"],
                    revision=origin["revision"],
                    commit=origin.get("commit", origin["revision"]),
                    manifest=origin["manifest"],
                )
                model.children += [
                    Node("file", name, {"sha256": sha}) for name, sha in origin["files_sha256"].items()
                ]
            node.children.append(model)
        return node

    # -- downstream -------------------------------------------------------------------------------

    def dependents(self, target: str) -> Node:
        if target in self.run.queries:
            return self._query_dependents(target)
        return self._model_dependents(target)

    def _query_dependents(self, query_id: str) -> Node:
        node = self.query(query_id)
        items = [i for i, (r, _) in self.run.generations.items() if r["query_id"] == query_id]
        node.children += [self.judged(i) for i in items]
        example = self.run.sft_examples.get(query_id)
        pairs = [(p, r, path) for p, (r, path) in self.run.pairs.items() if r["query_id"] == query_id]
        trained_on = [p for p, _, path in pairs if path.name == "pairs.parquet"]
        node.children += [
            Node("pair", p, {"source": r["source"], "in_dpo_data": path.name == "pairs.parquet"})
            for p, r, path in pairs
        ]
        checkpoints = []
        if example and example[0]["status"] == "included":
            checkpoints += ["sft (SFT example)", "every DPO checkpoint (trained from sft)"]
        for p in trained_on:
            round_, target = rounds.locate(self.run.pairs[p][1].as_posix()) or (1, "?")
            later = "" if round_ == self.rounds_of(target) else " and the rounds after it"
            checkpoints.append(f"dpo round {round_} for {target} (preference pairs{later})")
        node.fields["sft_example"] = example[0]["status"] if example else None
        node.fields["checkpoints_depending_on_it"] = sorted(set(checkpoints)) or ["none"]
        return node

    def _model_dependents(self, model: str) -> Node:
        """Records whose model fingerprint contains `model` (or the fingerprint of a model folder), and the
        pairs and checkpoints that depend on them."""
        match = model
        if Path(model).is_dir():
            from vpo.core.fingerprints import fingerprint

            match = fingerprint(model)
        used: Counter[str] = Counter()
        items: set[str] = set()
        videos: set[str] = set()
        sft_side = False
        for table in (self.run.generations, self.run.critiques, self.run.refinements):
            for item_id, (record, path) in table.items():
                if match in record["model_fingerprint"]:
                    used[str(path.relative_to(self.run.results).parent)] += 1
                    items.add(item_id)
                    sft_side |= path.relative_to(self.run.results).parts[0] == "sft"
        for table, field_name in (
            (self.run.videos, "model_fingerprint"),
            (self.run.rewards, "scorer_fingerprint"),
        ):
            for video_id, (record, path) in table.items():
                if match in record[field_name]:
                    used[str(path.relative_to(self.run.results).parent.parent)] += 1
                    videos.add(video_id)
        if not used:
            raise SystemExit(
                f"no record of {self.run.results} was made by a model matching {model!r}. Fix: give part of "
                "a fingerprint as `vpo audit <id>` prints it (e.g. its hex digits), or a model folder."
            )
        # Through the SFT data every candidate, hence every pair, depends on a model used on the SFT side.
        trained_on = {p: r for p, (r, path) in self.run.pairs.items() if path.name == "pairs.parquet"}
        pairs = [
            pair_id
            for pair_id, r in trained_on.items()
            if sft_side
            or {r["chosen_id"], r["rejected_id"]} & items
            or {r["chosen_video_id"], r["rejected_video_id"]} & videos
        ]
        node = Node("model", model, {"fingerprint_match": match})
        node.children += [Node("records", where, {"count": n}) for where, n in sorted(used.items())]
        node.fields["dpo_pairs_depending_on_it"] = f"{len(pairs)} of {len(trained_on)}"
        first_rounds: dict[str, int] = {}
        for pair_id in pairs:
            round_, target = rounds.locate(self.run.pairs[pair_id][1].as_posix()) or (1, "?")
            first_rounds[target or "?"] = min(round_, first_rounds.get(target or "?", round_))
        node.fields["checkpoints_depending_on_it"] = (["sft", "every DPO checkpoint"] if sft_side else []) + [
            f"dpo round {r} for {t}" + ("" if r == self.rounds_of(t) else " and the rounds after it")
            for t, r in sorted(first_rounds.items())
        ]
        return node

    def rounds_of(self, target: str | None) -> int:
        """The last round of `target` with a DPO checkpoint in this run (1 if none)."""
        folders = (self.run.results / "models" / "dpo").glob("round-*")
        found = [int(p.name.removeprefix("round-")) for p in folders if (p / (target or "")).is_dir()]
        return max(found, default=1)


def render(node: Node, prefix: str = "", last: bool = True, top: bool = True) -> list[str]:
    """An indented tree, one node per line, its fields below it."""
    branch = "" if top else ("└─ " if last else "├─ ")
    lines = [f"{prefix}{branch}{node.kind} {node.label}"]
    inner = prefix if top else prefix + ("   " if last else "│  ")
    bar = "│  " if node.children else "   "
    for key, value in node.fields.items():
        if isinstance(value, list):
            lines.append(f"{inner}{bar}{key}:")
            lines += [f"{inner}{bar}  - {item}" for item in value]
        elif isinstance(value, dict):
            lines.append(f"{inner}{bar}{key}: " + ", ".join(f"{k} {v}" for k, v in value.items()))
        else:  # model answers span lines; the tree must not
            lines.append(f"{inner}{bar}{key}: " + str(value).replace("\n", " ⏎ "))
    for i, child in enumerate(node.children):
        lines += render(child, inner, i == len(node.children) - 1, top=False)
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vpo audit", description=__doc__.split("\n\n")[0])
    parser.add_argument("target", help="a pair_id, item_id, video_id or query_id, or a path under results/")
    parser.add_argument("--results", default="results", help="results folder of the run")
    parser.add_argument("--dependents", action="store_true", help="what depends on a query id or model")
    parser.add_argument("--json", action="store_true", help="machine-readable output (raw answers in full)")
    args = parser.parse_args(argv)
    auditor = Auditor(Run(Path(args.results)), full_text=args.json)
    tree = auditor.dependents(args.target) if args.dependents else auditor.lookup(args.target)
    if args.json:
        json.dump(tree.to_json(), sys.stdout, indent=1, ensure_ascii=False, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write("\n".join(render(tree)) + "\n")


if __name__ == "__main__":
    main()
