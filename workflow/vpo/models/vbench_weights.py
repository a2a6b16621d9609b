"""Provision VBench's scorer weights: download each file the configured dimensions load, once, into
VBench's cache folder (`eval.vbench.weights`, VBench's own layout), and write a manifest.

Rule provision_vbench runs this where the workflow starts (it has network; compute nodes may not), like
the hub models' provision rules. A file already in the folder is kept, not fetched again. Files come from
where VBench itself fetches them, or from `<mirror>/<path>` with `--mirror`. A download lands in a
`.part` file and is renamed only when complete, so an interrupted run leaves no half file under the
final name. Hub models that a scorer loads by name (BERT, for Tag2Text and GRiT) are provisioned like the
workflow's own hub models (`vpo.models.provision`, HF_ENDPOINT for a mirror) into `<dest>/hub`, with the
name VBench's code asks for linked to the repo's current id. The manifest (every file's path, source, size
and sha256, and each hub model's commit) is the rule's output and the DAG input of every eval_vbench job.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from vpo.core.fingerprints import sha256_file_memoized
from vpo.core.io import write_json
from vpo.core.stage import setup_logging
from vpo.core.suites import BERT, BERT_LEGACY_NAME, HUB_FOLDER, VBENCH_HUB_MODELS, weight_files
from vpo.models.provision import provision as provision_hub_model
from vpo.models.provision import repo_folder

LEGACY_NAMES = {BERT: BERT_LEGACY_NAME}

log = logging.getLogger(__name__)
CHUNK = 1 << 20


def needed_files(dimensions: list[str]) -> dict[str, str | None]:
    """{path under the cache folder: source URL (None: to be put there by hand)} of the dimensions."""
    files: dict[str, str | None] = {}
    for dimension in dimensions:
        files.update(dict(weight_files(dimension)))
    return files


def download(url: str, target: Path, timeout: float = 60.0) -> None:
    part = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, part.open("wb") as handle:
            shutil.copyfileobj(response, handle, CHUNK)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        part.unlink(missing_ok=True)
        raise SystemExit(
            f"could not download {url} ({exc}). Fix: run where this address is reachable, set "
            f"eval.vbench.mirror to a copy, or put the file at {target} yourself."
        ) from None
    part.rename(target)


def provision(dimensions: list[str], dest: Path, mirror: str | None) -> list[dict[str, Any]]:
    files = needed_files(dimensions)
    by_hand = sorted(p for p, url in files.items() if url is None and not (dest / p).is_file())
    if by_hand:
        raise SystemExit(
            f"{', '.join(by_hand)} must be put under {dest} by hand (VBench gets them as a git checkout or a "
            "zip, README, VBench). Fix: do so, or leave out the dimensions that need them."
        )
    entries = []
    for path, url in sorted(files.items()):
        target = dest / path
        source = f"{mirror.rstrip('/')}/{path}" if mirror and url else url
        if target.is_file():
            log.info("%s: present, kept", path)
        else:
            log.info("%s: downloading from %s", path, source)
            download(str(source), target)
        entries.append(
            {
                "path": path,
                "source": source,
                "size": target.stat().st_size,
                "sha256": sha256_file_memoized(target),
            }
        )
    return entries


def provision_hub_models(dimensions: list[str], dest: Path) -> list[dict[str, Any]]:
    """Each hub model the dimensions load by name, at its main branch (resolved once and kept in this cache),
    with the name VBench asks for linked to it."""
    repos = sorted({repo for d in dimensions for repo in VBENCH_HUB_MODELS.get(d, ())})
    cache = dest / HUB_FOLDER
    entries = []
    for repo in repos:
        manifest = provision_hub_model(repo, "main", cache)
        legacy = LEGACY_NAMES.get(repo)
        if legacy:
            link = cache / repo_folder(legacy)
            if not link.is_symlink():
                link.symlink_to(repo_folder(repo), target_is_directory=True)  # relative: the folder may move
        entries.append({"repo": repo, "loaded_as": legacy or repo, "commit": manifest["commit"]})
    return entries


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vpo.models.vbench_weights", description=__doc__)
    p.add_argument("--dimensions", nargs="+", required=True, help="VBench dimensions to be scored")
    p.add_argument("--dest", required=True, help="VBench's cache folder (eval.vbench.weights)")
    p.add_argument("--mirror", default=None, help="base URL of a mirror in VBench's layout")
    p.add_argument("--manifest", required=True, help="where the manifest goes (JSON)")
    return p


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    args = make_parser().parse_args(argv)
    dest = Path(args.dest)
    entries = provision(args.dimensions, dest, args.mirror or None)
    hub = provision_hub_models(args.dimensions, dest)
    write_json(args.manifest, {"dimensions": sorted(args.dimensions), "files": entries, "hub_models": hub})
    log.info("%d weight files for %s in %s", len(entries), ", ".join(args.dimensions), args.dest)


if __name__ == "__main__":
    main()
