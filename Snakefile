# VPO workflow: raw queries -> SFT data -> SFT -> sampled candidates -> critiques/refinements and
# videos -> checklist rewards -> preference pairs (text and video level) -> DPO, for each preference
# round and text-to-video target -> evaluation on held-out queries. Rules are thin; the logic lives in
# the `vpo` package (workflow/vpo).
import os
import sys

from snakemake.utils import min_version

# The `vpo` package is found next to this file, installed or not, here and in every job: jobs import it
# through PYTHONPATH, so the per-rule conda envs need not install the project (they stay relocatable
# under --conda-prefix) and a code change reaches every job without a reinstall.
PACKAGE_DIR = os.path.join(workflow.basedir, "workflow")
sys.path.insert(0, PACKAGE_DIR)

from vpo.config.validate import validate_config
from vpo.core.package_path import export_to_jobs

export_to_jobs(PACKAGE_DIR)

min_version("9.0")


# Config files given with --configfile replace the embedded default instead of being merged over it, so
# that a paper run never inherits a demo value for a key it leaves out. Layer files to override some keys:
#   snakemake --configfile config/paper.yaml my-site.yaml
if not workflow.overwrite_configfiles:

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


include: "workflow/rules/local.smk"


EVALUATE = CFG.get("eval", {}).get("enabled", False)
if EVALUATE:

    include: "workflow/rules/eval.smk"


# Last: the run report reads the job reports of every rule declared above.
include: "workflow/rules/report.smk"


rule all:
    input:
        per_round_target(rules.train_dpo.output.model),
        per_round_target(rules.build_pairs.output.report),
        "results/sft/report.json",
        "results/report/summary.html",
        per_round_target(rules.video_report.output.page) if CFG["pairs"]["video"] else [],
        per_round_target(rules.video_report.output.plot) if CFG["pairs"]["video"] else [],
        [rules.eval_table.output.csv.format(target=t) for t in TARGETS] if EVALUATE else [],
    default_target: True
