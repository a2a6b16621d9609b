"""Split curated queries into shards by query id, so a query's shard never depends on the others."""

from __future__ import annotations

import argparse
import logging

from vpo.core.ids import shard_of
from vpo.core.io import read_records, write_records
from vpo.core.provenance import log_placement
from vpo.core.stage import setup_logging

log = logging.getLogger(__name__)


def split(rows: list[dict], n_shards: int) -> list[list[dict]]:
    shards: list[list[dict]] = [[] for _ in range(n_shards)]
    for row in rows:
        shards[shard_of(row["query_id"], n_shards)].append(row)
    return shards


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vpo.stages.shard", description=__doc__)
    p.add_argument("--input", required=True, help="curated queries (Parquet)")
    p.add_argument("--out", nargs="+", required=True, help="one output path per shard, in shard order")
    return p


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    log_placement("shard")
    args = make_parser().parse_args(argv)
    shards = split(read_records(args.input), len(args.out))
    for path, rows in zip(args.out, shards, strict=True):
        write_records(path, rows, "query")
    log.info("shard sizes: %s", [len(s) for s in shards])


if __name__ == "__main__":
    main()
