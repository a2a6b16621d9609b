#!/usr/bin/env bash
# Set up the pinned environment, then run the VPO workflow. With no argument it runs the whole DAG
# on the embedded default (2-core CPU, tiny local models) and rewrites one query with the result.
# Arguments go to snakemake: scripts/run.sh --configfile config/paper.yaml --dry-run
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

# Local runs say their cores: profiles/default sets none (there it would cap every cluster job's threads).
cores=(--cores 2)
for arg in "$@"; do
    case "$arg" in -c* | --cores* | -j* | --jobs* | --profile* | --executor* | -e*) cores=() ;; esac
done
snakemake "${cores[@]}" "$@"

if [[ $# -eq 0 ]]; then
    tables=results/eval/tables/tiny-cogvideox
    echo "The evaluation on held-out queries ($tables/table.md; tiny models, so the numbers mean nothing):" >&2
    grep '^|' "$tables/table.md" >&2
    echo "The paper's Tables A and C for this run, beside its reported numbers ($tables/table_{a,c}.md):" >&2
    grep '^|' "$tables/table_a.md" "$tables/table_c.md" --no-filename >&2
    echo "The DPO policy rewrites a query:" >&2
    vpo rewrite "a cute dog on the grass" --model results/models/dpo/round-1/tiny-cogvideox
fi
