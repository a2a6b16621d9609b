"""VisionReward's release files: its question and weight files fetched, and converted into our checklist YAML.

The scorer (vpo.reward.visionreward) needs the model; this needs neither torch nor transformers.

Usage: python -m vpo.reward.visionreward_release fetch --out resources/visionreward
       python -m vpo.reward.visionreward_release checklist --questions QA.txt --out CHECKLIST.yaml
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vpo.core.stage import setup_logging

log = logging.getLogger(__name__)

RELEASE_PLACEHOLDER = "[[prompt]]"  # where the release's alignment questions take the text prompt
RELEASE_REPO = "THUDM/VisionReward"
# The question files' folder in the release: renamed from the hyphenated spelling at some point.
RELEASE_DIRS = ("VisionReward_Video", "VisionReward-Video")
RELEASE_FILES = (
    "VisionReward_video_qa.txt",  # the 64 questions VPO asks (VPO_WEIGHTS apply)
    "VisionReward_video_qa_select.txt",  # the 29 with a non-zero weight, in the same order
    "weight.json",  # those 29 weights: the non-zero entries of VPO_WEIGHTS
)

# VPO's weights over the 64 questions of VisionReward_video_qa.txt (in file order; 29 non-zero).
VPO_WEIGHTS: tuple[float, ...] = (
    0.9543901856422174, 0.25239747290239256, 0.0, 1.141818673357406, 0.03495652038170829,
    0.025237463294006605, 0.0, 0.0, 0.0, 0.12600844108184325, 0.0, 0.0, 0.0, 0.03221505988621183,
    0.16286819641189937, 0.21673935360893115, 0.01970324496671629, 0.13604019362894557,
    0.09647134683834487, 0.15490927135496332, 0.1294164598219855, 0.09891696198970226,
    0.18839328668539077, 0.1844335421380767, 0.0, 0.0, 0.2635526157239052, 0.0, 0.0, 0.0, 0.0,
    0.11168980468489233, 0.0, 0.05173789659242723, 0.0, 0.02562797122879315, 0.0, 0.4389890596048526,
    0.0, 0.0, 0.0, 0.0, 0.0, 0.26857694964769424, 0.0, 0.0, 0.0, 0.0, 0.0, 0.42925171836383774, 0.0,
    0.00846154228462919, 0.12757277121689847, 0.05798205026065391, 0.0, 0.1446334304609205, 0.0, 0.0,
    0.0, 0.39418111694677266, 0.0, 0.0, 0.0, 0.0,
)  # fmt: skip


def read_release_questions(path: str | Path) -> list[str]:
    """The questions of a release question file: one per line, trailing blank lines ignored."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    questions = [line.strip() for line in lines]
    if not questions:
        raise ValueError(f"{path}: no questions")
    if "" in questions:
        # A blank line would shift every later question off its weight.
        raise ValueError(f"{path}: line {questions.index('') + 1} is blank; one question per line expected")
    return questions


def read_release_weights(path: str | Path) -> list[float]:
    """A release weight file (weight.json): a JSON list of numbers."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, list) or not all(
        isinstance(w, (int, float)) and not isinstance(w, bool) for w in data
    ):
        raise ValueError(f"{path}: expected a JSON list of numbers")
    return [float(w) for w in data]


def checklist_from_release(
    questions_path: str | Path, weights: Sequence[float] | None = None, name: str = "visionreward-video"
) -> dict[str, Any]:
    """Our checklist structure (`name`, `questions: [{id, text, weight}]`) from a release question file.

    The release's `[[prompt]]` becomes `{query}` (filled with the user's original query when scoring).
    Without `weights`, the file must be the 64-question one and gets VPO_WEIGHTS; the 29-question
    `VisionReward_video_qa_select.txt` goes with its `weight.json`. Ids are q01, q02, ... in file order.
    """
    questions = read_release_questions(questions_path)
    if weights is None:
        if len(questions) != len(VPO_WEIGHTS):
            raise ValueError(
                f"{questions_path}: {len(questions)} questions, but the default weights (VPO's) are for the "
                f"{len(VPO_WEIGHTS)} of VisionReward_video_qa.txt. Fix: pass that file, or pass the weights "
                "that go with this one (VisionReward_video_qa_select.txt goes with weight.json)."
            )
        weights = VPO_WEIGHTS
    if len(weights) != len(questions):
        raise ValueError(f"{questions_path}: {len(questions)} questions but {len(weights)} weights")
    for index, weight in enumerate(weights):
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"weight {index + 1} is {weight!r}; weights must be finite and >= 0")
    width = max(2, len(str(len(questions))))
    return {
        "name": name,
        "questions": [
            {
                "id": f"q{i:0{width}d}",
                "text": text.replace(RELEASE_PLACEHOLDER, "{query}"),
                "weight": float(w),
            }
            for i, (text, w) in enumerate(zip(questions, weights, strict=True), start=1)
        ],
    }


def checklist_yaml(checklist: dict[str, Any], source: str | Path) -> str:
    """The checklist as YAML, headed by where it came from (file name and SHA-256)."""
    import yaml

    digest = hashlib.sha256(Path(source).read_bytes()).hexdigest()
    header = (
        f"# VisionReward-Video checklist converted from {Path(source).name} (sha256 {digest}).\n"
        "# Made by `python -m vpo.reward.visionreward_release checklist`; {query} is the user's original "
        "query.\n"
    )
    return header + yaml.safe_dump(checklist, sort_keys=False, allow_unicode=True, width=1000)


# -- model inputs ----------------------------------------------------------------------------------------


def release_urls(name: str, repo: str = RELEASE_REPO, ref: str = "main") -> list[str]:
    """Raw GitHub URLs a release file may be at (the folder name changed once)."""
    return [f"https://raw.githubusercontent.com/{repo}/{ref}/{folder}/{name}" for folder in RELEASE_DIRS]


def fetch_release_files(out_dir: str | Path, repo: str = RELEASE_REPO, ref: str = "main") -> list[Path]:
    """Download the question and weight files of the VisionReward release into `out_dir`."""
    from vpo.core.io import atomic_write_bytes

    written = []
    for name in RELEASE_FILES:
        urls = release_urls(name, repo, ref)
        data, errors = None, []
        for url in urls:
            try:
                with urllib.request.urlopen(url, timeout=60) as response:
                    data = response.read()
                break
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                errors.append(f"{url}: {exc}")
        if data is None:
            raise SystemExit(
                f"could not download {name}:\n  " + "\n  ".join(errors) + "\n"
                f"Without network access: on a machine with it, clone https://github.com/{repo}, copy "
                f"{RELEASE_DIRS[0]}/{name} (older checkouts: {RELEASE_DIRS[1]}/) into {out_dir}, then run "
                "`python -m vpo.reward.visionreward_release checklist --questions ... --out ...`."
            )
        path = Path(out_dir) / name
        atomic_write_bytes(path, data)
        log.info("%s  sha256 %s", path, hashlib.sha256(data).hexdigest())
        written.append(path)
    return written


# -- command line --------------------------------------------------------------------------------------


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vpo.reward.visionreward_release",
        description="VisionReward-Video's question files: download them, or convert them to a checklist.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("checklist", help="convert a release question file to checklist YAML")
    convert.add_argument("--questions", required=True, help="VisionReward_video_qa.txt (64) or *_select.txt")
    convert.add_argument("--weights", help="JSON list of weights (default: VPO's, for the 64-question file)")
    convert.add_argument("--name", default="visionreward-video", help="checklist name")
    convert.add_argument("--out", required=True, help="checklist YAML to write")
    fetch = commands.add_parser("fetch", help="download the release's question and weight files")
    fetch.add_argument("--out", required=True, help="folder to write them to")
    fetch.add_argument("--repo", default=RELEASE_REPO, help="GitHub repository of the release")
    fetch.add_argument("--ref", default="main", help="branch, tag or commit")
    return parser


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    args = make_parser().parse_args(argv)
    if args.command == "fetch":
        paths = fetch_release_files(args.out, args.repo, args.ref)
        log.info(
            "next: python -m vpo.reward.visionreward_release checklist --questions %s --out CHECKLIST",
            paths[0],
        )
        return
    from vpo.core.io import atomic_write_bytes

    try:
        weights = read_release_weights(args.weights) if args.weights else None
        checklist = checklist_from_release(args.questions, weights, name=args.name)
    except (OSError, ValueError) as exc:
        raise SystemExit(str(exc)) from None
    atomic_write_bytes(args.out, checklist_yaml(checklist, args.questions).encode("utf-8"))
    aligned = sum("{query}" in q["text"] for q in checklist["questions"])
    log.info("wrote %s: %d questions, %d with {query}", args.out, len(checklist["questions"]), aligned)


if __name__ == "__main__":
    main()
