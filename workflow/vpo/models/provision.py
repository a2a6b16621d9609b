"""Provision a hub model: download `repo@revision` once into the shared hub cache, write its manifest.

A `models` entry with a `revision` is a model hub repo. The rule provision_<name> runs this module where
the workflow is started (it has network; compute nodes may not). It calls
`huggingface_hub.snapshot_download` into `hub_cache`, which leaves the standard cache layout:

    <hub_cache>/models--<org>--<name>/snapshots/<revision>/...   (the folder every loader gets)
    <hub_cache>/models--<org>--<name>/vpo-manifests/<revision>.json   (this module's manifest)

The manifest lists every file of the snapshot with its size and sha256. It is the rule's output, the
DAG input of every stage that loads the model, and what model fingerprints and `vpo audit` read. It sits
beside the snapshot so that a model folder alone leads to it, and so that workflows sharing one cache
share the download.

A snapshot already complete in the cache is not fetched again (no request at all). The hub token comes
from the environment variable HF_TOKEN only and is never written (not to the manifest, not to the log).
Jobs later read the cache offline: `offline_hub_env` gives them HF_HUB_OFFLINE=1 and HF_HUB_CACHE.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vpo.core.io import write_json
from vpo.core.stage import setup_logging

log = logging.getLogger(__name__)

# The Snakefile exports the configured hub cache to every job in this variable (when a model has a
# revision); jobs turn it into HF_HUB_CACHE.
HUB_CACHE_ENV = "VPO_HUB_CACHE"
MANIFEST_DIR = "vpo-manifests"
MANIFEST_VERSION = 1
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHORT_SHA = re.compile(r"[0-9a-f]{7,39}")
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a commit, or a branch or tag name
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ProvisionError(RuntimeError):
    """A hub model could not be provisioned; the message names the cause and the fix."""


def repo_folder(repo: str) -> str:
    """The cache folder of a model repo, as huggingface_hub names it."""
    return "models--" + repo.replace("/", "--")


def snapshot_path(hub_cache: str | os.PathLike, repo: str, revision: str) -> Path:
    """Where the snapshot of `repo@revision` lies in the cache (known before anything is downloaded)."""
    return Path(hub_cache) / repo_folder(repo) / "snapshots" / revision


def manifest_path(hub_cache: str | os.PathLike, repo: str, revision: str) -> Path:
    return Path(hub_cache) / repo_folder(repo) / MANIFEST_DIR / f"{revision}.json"


def manifest_of_snapshot(folder: str | os.PathLike) -> Path | None:
    """The manifest path that belongs to a snapshot folder, or None when `folder` is no hub snapshot."""
    path = Path(folder)
    if not (_REVISION.fullmatch(path.name) and path.parent.name == "snapshots"):
        return None
    if not path.parent.parent.name.startswith("models--"):
        return None
    return path.parent.parent / MANIFEST_DIR / f"{path.name}.json"


def read_manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of a provisioned snapshot folder; None when the folder was not provisioned here."""
    manifest = manifest_of_snapshot(folder)
    if manifest is None or not manifest.is_file():
        return None
    data = json.loads(manifest.read_text(encoding="utf-8"))
    data["manifest"] = str(manifest)
    return data


def check_snapshot(folder: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Every file the manifest lists is in the snapshot with its size (a cheap check: no hashing)."""
    root = Path(folder)
    for entry in manifest["files"]:
        file = root / entry["path"]
        if not file.is_file() or file.stat().st_size != entry["size"]:
            state = "missing" if not file.is_file() else f"{file.stat().st_size} bytes, not {entry['size']}"
            raise ProvisionError(
                f"{root}: {entry['path']} is {state} although {manifest['manifest']} lists it; the hub "
                "cache was changed after provisioning. Fix: delete the manifest and run the workflow again "
                "where it has network (it re-downloads only what is missing)."
            )


def offline_hub_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """A job's environment: the hub is never contacted, and the configured hub cache (when the Snakefile
    exported one) is where huggingface_hub looks. `env` defaults to this process's environment."""
    env = dict(os.environ if env is None else env)
    env["HF_HUB_OFFLINE"] = "1"
    cache = env.get(HUB_CACHE_ENV)
    if cache:
        env["HF_HUB_CACHE"] = str(Path(cache).resolve())
    return env


def check_revision(repo: str, revision: str) -> None:
    if not _REPO.fullmatch(repo):
        raise ProvisionError(f"{repo!r} is no model hub id `org/name`. Fix: correct models.<name>.source.")
    if not _REVISION.fullmatch(revision) or _SHORT_SHA.fullmatch(revision):
        raise ProvisionError(
            f"revision {revision!r} of {repo} is no full 40-hex commit SHA nor a branch or tag name (a "
            f"short SHA is ambiguous). Fix: set models.<name>.revision to the commit, e.g. from `hf models "
            f"info {repo}` (field sha) or `git ls-remote https://huggingface.co/{repo}`."
        )


def pin_branch(hub_cache: str | os.PathLike, repo: str, revision: str) -> str:
    """The commit a branch or tag resolved to in this cache (huggingface_hub's refs/<revision>), with
    snapshots/<revision> made a link to its snapshot, so that the folder every job gets is known before
    the download and stays on that commit in this cache however the branch moves on the hub."""
    storage = Path(hub_cache) / repo_folder(repo)
    commit = (storage / "refs" / revision).read_text(encoding="utf-8").strip()
    alias = storage / "snapshots" / revision
    if not alias.is_symlink():
        alias.symlink_to(commit, target_is_directory=True)  # relative: the cache may move as a whole
    return commit


def provision(
    repo: str,
    revision: str,
    hub_cache: str | os.PathLike,
    manifest: str | os.PathLike | None = None,
    endpoint: str | None = None,
    progress_every_s: float = 30.0,
) -> dict[str, Any]:
    """Make `repo@revision` complete in `hub_cache` (downloading only what is missing) and write its
    manifest to `manifest` (default: beside the snapshot). Returns the manifest."""
    check_revision(repo, revision)
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    folder = snapshot_path(hub_cache, repo, revision)
    if _snapshot_complete(repo, revision, hub_cache):
        log.info("%s@%s is complete in %s: nothing to download", repo, revision, folder)
    else:
        log.info("downloading %s@%s from %s into %s", repo, revision, endpoint or "the hub", hub_cache)
        started = time.monotonic()
        with _progress(Path(hub_cache) / repo_folder(repo), repo, revision, hub_cache, progress_every_s):
            _download(repo, revision, hub_cache, endpoint)
        log.info("download finished in %.0f s", time.monotonic() - started)
    pinned = bool(_COMMIT.fullmatch(revision))
    commit = revision if pinned else pin_branch(hub_cache, repo, revision)
    files = _file_entries(folder)
    data = {
        "manifest_version": MANIFEST_VERSION,
        "repo": repo,
        "revision": revision,
        "commit": commit,
        "pinned": pinned,
        "snapshot": str(folder),
        "files": files,
        "total_bytes": sum(f["size"] for f in files),
        "provisioned": {
            "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": socket.gethostname(),
            "huggingface_hub": _hub_version(),
        },
    }
    out = Path(manifest) if manifest is not None else manifest_path(hub_cache, repo, revision)
    write_json(out, data)
    if data["pinned"] is False:
        log.warning(
            "%s@%s is a branch or tag: it resolved to commit %s, kept in this cache; pin it by setting "
            "models.<name>.revision to that commit", repo, revision, data["commit"],
        )  # fmt: skip
    log.info("manifest %s: %d files, %.2f GB", out, len(files), data["total_bytes"] / 1e9)
    return data


def _hub_version() -> str:
    import huggingface_hub

    return huggingface_hub.__version__


def _snapshot_complete(repo: str, revision: str, hub_cache: str | os.PathLike) -> bool:
    """True when the cache holds the whole snapshot, judged offline from the file listing that
    snapshot_download stored before it fetched the first file (so an interrupted download is no
    complete one)."""
    from huggingface_hub import get_cached_repo_tree
    from huggingface_hub.errors import CachedRepoTreeNotFoundError

    folder = snapshot_path(hub_cache, repo, revision)
    if not folder.is_dir():
        return False
    try:
        tree = get_cached_repo_tree(repo, revision=revision, cache_dir=hub_cache)
    except CachedRepoTreeNotFoundError:
        log.info("%s has no stored file listing: asking the hub which files belong to it", folder)
        return False
    missing = [f.path for f in tree if not (folder / f.path).is_file()]
    if missing:
        log.info("%s misses %d file(s) (e.g. %s): completing it", folder, len(missing), missing[0])
    return not missing


def _download(repo: str, revision: str, hub_cache: str | os.PathLike, endpoint: str | None) -> None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()  # bars redraw with \r, which a log file turns into one endless line
    token = os.environ.get("HF_TOKEN") or False  # the environment only, never a stored login
    where = endpoint or "the hub"

    def brief(exc: Exception) -> str:  # the client's messages span lines; a log line should not
        return " ".join(str(exc).split())

    try:
        snapshot_download(repo, revision=revision, cache_dir=hub_cache, endpoint=endpoint, token=token)
    except GatedRepoError as exc:
        raise ProvisionError(
            f"{repo} is gated and {'HF_TOKEN was refused' if token else 'HF_TOKEN is not set'} "
            f"({brief(exc)}). Fix: accept the license at https://huggingface.co/{repo} with your account, "
            "create a read token, and export HF_TOKEN=<token> before starting the workflow."
        ) from None
    except RevisionNotFoundError:
        raise ProvisionError(
            f"{where} has no commit, branch or tag {revision} in {repo}. Fix: set models.<name>.revision "
            f"to an existing full commit SHA (`hf models info {repo}`, field sha, or `git ls-remote "
            f"https://huggingface.co/{repo}`)."
        ) from None
    except RepositoryNotFoundError:
        raise ProvisionError(
            f"{where} has no model repo {repo} (or it is private and HF_TOKEN grants no access). Fix: "
            "correct models.<name>.source, or export HF_TOKEN with a token that can read it."
        ) from None
    except OfflineModeIsEnabled:
        raise ProvisionError(
            f"{repo}@{revision} is not complete in {hub_cache} and HF_HUB_OFFLINE is set, so nothing can be "
            "downloaded. Fix: unset HF_HUB_OFFLINE where the workflow starts (the provision rules run there; "
            "the jobs stay offline), or fill the cache from a machine with network."
        ) from None
    except LocalEntryNotFoundError as exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        hint = (
            "HF_HUB_OFFLINE is set in this environment: unset it for the provision rules"
            if offline
            else "run the workflow where the hub is reachable (a login node), or set HF_ENDPOINT to a mirror"
        )
        raise ProvisionError(
            f"cannot download {repo}@{revision} from {where}: {brief(exc)}. Fix: {hint}."
        ) from None
    except HfHubHTTPError as exc:
        raise ProvisionError(
            f"downloading {repo}@{revision} from {where} failed: {brief(exc)}. Fix: run the rule again (it "
            "resumes what is missing); if it persists, check the hub's status and your network."
        ) from None


@contextlib.contextmanager
def _progress(
    storage: Path, repo: str, revision: str, hub_cache: str | os.PathLike, every_s: float
) -> Iterator[None]:
    """Log bytes in the repo's blob folder (finished and partial files) every `every_s` seconds, with the
    total once the file listing is stored: a 16 GB download shows how far it is and how fast it goes."""
    stop = threading.Event()

    def total() -> int | None:
        from huggingface_hub import get_cached_repo_tree
        from huggingface_hub.errors import CachedRepoTreeNotFoundError

        try:
            tree = get_cached_repo_tree(repo, revision=revision, cache_dir=hub_cache)
        except CachedRepoTreeNotFoundError:
            return None
        return sum((f.lfs.size if f.lfs else f.size) for f in tree)

    def present() -> int:
        size = 0
        for file in (storage / "blobs").glob("*"):
            with contextlib.suppress(FileNotFoundError):  # a partial file renamed while we look
                size += file.stat().st_size
        return size

    def report() -> None:
        start, first = time.monotonic(), present()
        while not stop.wait(every_s):
            done, expected = present(), total()
            rate = (done - first) / max(time.monotonic() - start, 1e-9) / 1e6
            of = f" of {expected / 1e9:.2f} GB ({100 * done / expected:.0f}%)" if expected else ""
            log.info("%s: %.2f GB in the cache%s, %.1f MB/s", repo, done / 1e9, of, rate)

    thread = threading.Thread(target=report, name="provision-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _file_entries(folder: Path) -> list[dict[str, Any]]:
    """Every file of the snapshot with its size and sha256. A blob named by a sha256 (the hub's name for
    a large-file-storage object) must match it: a corrupt download fails here, not inside a GPU job."""
    from vpo.core.fingerprints import sha256_file_memoized  # memoized, so a re-run does not hash 16 GB again

    if not folder.is_dir():
        raise ProvisionError(f"{folder}: the download reported success but left no snapshot folder")
    entries = []
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = file.relative_to(folder).as_posix()
        sha = sha256_file_memoized(file)
        blob = file.resolve().name
        if _SHA256.fullmatch(blob) and blob != sha:
            raise ProvisionError(
                f"{file}: content sha256 {sha} differs from its blob name {blob} (a corrupt download). Fix: "
                f"delete {file.resolve()} and run the provision rule again."
            )
        entries.append({"path": rel, "size": file.stat().st_size, "sha256": sha})
        log.info("sha256 %s %s", sha[:16], rel)
    if not entries:
        raise ProvisionError(f"{folder}: the snapshot holds no file")
    return entries


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vpo.models.provision", description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", required=True, help="model hub id org/name (models.<name>.source)")
    p.add_argument("--revision", required=True, help="full 40-hex commit SHA (models.<name>.revision)")
    p.add_argument("--cache-dir", required=True, help="hub cache folder (config hub_cache)")
    p.add_argument("--manifest", default=None, help="manifest to write (default: beside the snapshot)")
    p.add_argument("--progress-every", type=float, default=30.0, help="seconds between progress lines")
    return p


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    args = make_parser().parse_args(argv)
    from vpo.core.provenance import log_placement

    log_placement("provision")
    try:
        provision(
            args.repo, args.revision, args.cache_dir, args.manifest, progress_every_s=args.progress_every
        )
    except ProvisionError as exc:
        raise SystemExit(f"provision {args.repo}: {exc}") from None


if __name__ == "__main__":
    main()
