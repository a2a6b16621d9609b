"""Stage `eval_vbench`: VBench scores one method's videos of one benchmark suite on the suite's dimension.

The videos are the evaluation's own (rule eval_videos, rendered from the method's rewrite of each
benchmark prompt); VBench's standard protocol names a video by the benchmark prompt it answers,
`<prompt>-<index>.mp4`, so the job links the method's videos under those names in a scratch folder, writes
VBench's info file for the suite's prompts (their entries of the installed package, auxiliary info
included) and runs `vbench.VBench.evaluate` in local mode: weights are read from `--weights`
(VBENCH_CACHE_DIR, filled by rule provision_vbench), never downloaded by the job. The output keeps VBench's
dimension score and every video's own result, joined back to the video ids.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from vpo.core.io import read_many, read_records, write_json
from vpo.core.stage import job_report, setup
from vpo.core.suites import (
    BERT_LEGACY_NAME,
    HUB_FOLDER,
    VBENCH_EXTRA_IMPORTS,
    VBENCH_HUB_MODELS,
    find_entry,
    weight_files,
)
from vpo.models.provision import repo_folder

log = logging.getLogger(__name__)


def missing_weights(dimension: str, weights: Path) -> list[str]:
    files = [path for path, _ in weight_files(dimension) if not (weights / path).is_file()]
    if VBENCH_HUB_MODELS.get(dimension):  # loaded as `bert-base-uncased`, from the main branch
        snapshot = Path(HUB_FOLDER) / repo_folder(BERT_LEGACY_NAME) / "snapshots" / "main"
        files += [] if (weights / snapshot).is_dir() else [str(snapshot)]
    return files


def offline_env(weights: Path) -> dict[str, str]:
    """VBench's cache folder, and the hub cache of the models its scorers load by name, read offline."""
    hub = str(weights / HUB_FOLDER)
    return {
        "VBENCH_CACHE_DIR": str(weights),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_CACHE": hub,
        "HUGGINGFACE_HUB_CACHE": hub,  # the name transformers 4.33 (envs/vbench.yaml) reads
        "TRANSFORMERS_CACHE": hub,
    }


def check_ready(dimension: str, weights: Path) -> None:
    """Stop before VBench starts when a weight file or an extra package is missing (VBench itself would
    try to download the file, which a compute node cannot)."""
    missing = missing_weights(dimension, weights)
    if missing:
        raise SystemExit(
            f"VBench's {dimension} scorer needs {', '.join(missing)} under {weights} (eval.vbench.weights), "
            "which is not there. Fix: run the workflow where it has network, so that rule provision_vbench "
            "downloads them (or copy them there in VBench's layout; README, VBench)."
        )
    for module in VBENCH_EXTRA_IMPORTS.get(dimension, ()):
        if importlib.util.find_spec(module) is None:
            raise SystemExit(
                f"VBench's {dimension} scorer imports {module}, which this environment lacks. Fix: install "
                "it into the vbench env (envs/vbench.yaml says how)."
            )


def benchmark_videos(
    queries: list[dict[str, Any]], videos: list[dict[str, Any]], suite: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the suite's queries, the method's videos of them)."""
    mine = [q for q in queries if suite in q["suites"]]
    ids = {q["query_id"] for q in mine}
    return mine, [v for v in videos if v["query_id"] in ids]


def info_entries(queries: list[dict[str, Any]], dimension: str, info_file: str) -> list[dict[str, Any]]:
    """VBench's info records of the suite's prompts, each the file's own entry for the prompt (a prompt of
    several suites has one entry per dimension only in the file's order, so it is found by text)."""
    entries = []
    for q in queries:
        entry = find_entry(info_file, q["query"], dimension)
        if entry is None:
            raise SystemExit(
                f"{info_file} holds no {dimension} prompt {q['query']!r} ({q['source_file']}:"
                f"{q['source_line']}). Fix: score with the vbench version the queries were read with "
                "(envs/vbench.yaml and scripts/setup.sh pin the same), or re-run rule eval_queries."
            )
        entries.append({"prompt_en": q["query"], "dimension": [dimension], **_aux(entry, dimension)})
    return entries


def _aux(entry: dict[str, Any], dimension: str) -> dict[str, Any]:
    aux = entry.get("auxiliary_info", {})
    return {"auxiliary_info": {dimension: aux[dimension]}} if dimension in aux else {}


def link_videos(videos: list[dict[str, Any]], query_text: dict[str, str], folder: Path) -> dict[str, str]:
    """Link each video as `<prompt>-<index>.mp4` in `folder`; {link path: video id}."""
    folder.mkdir(parents=True, exist_ok=True)
    names = {}
    for v in videos:
        link = folder / f"{query_text[v['query_id']]}-{v['video_index']}.mp4"
        link.symlink_to(Path(v["video_path"]).resolve())
        names[str(link)] = v["video_id"]
    return names


def run_vbench(dimension: str, entries: list[dict[str, Any]], videos: Path, work: Path, device: str) -> Any:
    """VBench's own result for the dimension: [score, [{video_path, video_results}, ...]]."""
    import torch
    from vbench import VBench

    info = work / "info.json"
    info.write_text(json.dumps(entries), encoding="utf-8")
    bench = VBench(torch.device(device), str(info), str(work / "out"))
    bench.evaluate(str(videos), "vpo", dimension_list=[dimension], local=True, mode="vbench_standard")
    return json.loads((work / "out" / "vpo_eval_results.json").read_text(encoding="utf-8"))[dimension]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vpo.evaluation.vbench_scores", description=__doc__)
    p.add_argument("--method", required=True, help="the rewriter whose videos these are")
    p.add_argument("--suite", required=True, help="vbench:<dimension>")
    p.add_argument("--suite-file", required=True, help="VBench_full_info.json the suites were read from")
    p.add_argument("--queries", required=True, help="held-out queries (Parquet)")
    p.add_argument("--videos", nargs="+", required=True, help="the method's video records (Parquet parts)")
    p.add_argument("--weights", required=True, help="VBench's cache folder (VBENCH_CACHE_DIR)")
    p.add_argument(
        "--manifest",
        default=None,
        help="provision_vbench's manifest (recorded in the job report: which weights)",
    )
    p.add_argument("--videos-per-prompt", type=int, required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", required=True, help="scores (JSON)")
    p.add_argument("--report", required=True)
    return p


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    setup(args.threads)
    dimension = args.suite.partition(":")[2]
    weights = Path(args.weights).resolve()
    report = job_report("eval_vbench", args, [args.suite_file, args.queries, *args.videos, args.manifest])
    check_ready(dimension, weights)
    os.environ.update(offline_env(weights))  # read when vbench and transformers are imported
    from vpo.core.devices import resolve_device

    device = resolve_device(args.device, "eval.vbench device")
    queries, videos = benchmark_videos(read_records(args.queries), read_many(args.videos), args.suite)
    per_query = Counter(v["query_id"] for v in videos)
    short = sorted(q["query"] for q in queries if per_query[q["query_id"]] < args.videos_per_prompt)
    if not queries:
        raise SystemExit(f"no held-out query is of {args.suite}: all dropped? (results/eval/dropped.parquet)")
    if videos:
        with tempfile.TemporaryDirectory(prefix="vpo-vbench-") as tmp:
            work = Path(tmp)
            names = link_videos(videos, {q["query_id"]: q["query"] for q in queries}, work / "videos")
            entries = info_entries(queries, dimension, args.suite_file)
            score, per_video = run_vbench(dimension, entries, work / "videos", work, str(device))
    else:  # the method gave no prompt for any of the suite's queries: nothing to score (VBench would crash)
        names, score, per_video = {}, None, []
        log.warning("%s: no video of the method for any of its %d prompts", args.suite, len(queries))
    by_id = {v["video_id"]: v for v in videos}
    rows = []
    for item in per_video:
        video_id = names.get(item["video_path"])
        if video_id is None:
            raise SystemExit(f"VBench scored {item['video_path']}, which this job did not link")
        v = by_id[video_id]
        rows.append(
            {"video_id": video_id, "query_id": v["query_id"], "video_index": v["video_index"],
             "result": item["video_results"], "value": _number(item["video_results"])}
        )  # fmt: skip
    scores = {
        "method": args.method,
        "suite": args.suite,
        "dimension": dimension,
        "score": _number(score),
        "prompts": len(queries),
        "videos": len(videos),
        "videos_scored": len(rows),
        "prompts_short_of_videos": short,
        "per_video": sorted(rows, key=lambda r: (r["query_id"], r["video_index"])),
    }
    write_json(args.out, scores)
    report.counts = {k: scores[k] for k in ("score", "prompts", "videos", "videos_scored")}
    report.write(args.report)
    log.info("%s: %s over %d videos of %d prompts", args.suite, scores["score"], len(rows), len(queries))


if __name__ == "__main__":
    main()
