# VPO workflow: raw queries -> SFT data -> SFT -> sampled candidates -> critiques/refinements and
# videos -> checklist rewards -> preference pairs (text and video level) -> DPO -> evaluation on
# held-out queries. Rules are thin; the logic lives in the `vpo` package (workflow/vpo).
from snakemake.utils import min_version

from vpo.config import validate_config

min_version("9.0")


configfile: "config/config.yaml"


# Fails here, before any job, with the key and the fix (schema + cross-key + file checks).
CFG = validate_config(config, source="config")


include: "workflow/rules/common.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/queries.smk"
include: "workflow/rules/judge.smk"
include: "workflow/rules/sft.smk"
include: "workflow/rules/dpo.smk"


if CFG["pairs"]["video"]:

    include: "workflow/rules/video.smk"


include: "workflow/rules/report.smk"


EVALUATE = CFG.get("eval", {}).get("enabled", False)
if EVALUATE:

    include: "workflow/rules/eval.smk"


rule all:
    input:
        "results/models/dpo",
        "results/sft/report.json",
        "results/dpo/pairs.report.json",
        "results/report/summary.html",
        ["results/report/videos.html", "results/report/reward_distribution.svg"]
        if CFG["pairs"]["video"]
        else [],
        ["results/eval/table.csv"] if EVALUATE else [],
    default_target: True
