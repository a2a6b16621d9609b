# Video-level feedback, per (round, target): render every sampled candidate with the target's T2V model,
# score each video with the target's checklist reward model, and turn clear winners into video-level
# pairs. In the DAG only when pairs.video is true.
from pathlib import Path

from vpo.stages.generate_videos import missing_videos

VIDEO_PARTS = "results/dpo/round-{round}/{target}/videos/shard-{k}/part-{p}.parquet"
REWARD_PARTS = "results/dpo/round-{round}/{target}/rewards/shard-{k}/part-{p}.parquet"
# Checklists of the targets, some perhaps to download (VisionReward's).
CHECKLISTS = {t: target_section(t, "reward")["checklist"] for t in TARGETS}


# A video deleted from results/state/videos is not a rule output, so Snakemake cannot see it: say which job
# brings it back (only the missing videos are rendered again; the rest are found where they are).
_manifests = [m for r, t in ROUND_TARGETS for m in video_parts(VIDEO_PARTS, r, t)]
for _manifest, _gone in missing_videos(_manifests):
    logger.warning(
        f"{_manifest} lists {len(_gone)} video(s) that no longer exist (e.g. {_gone[0]}). "
        f"Re-render only those with: snakemake --forcerun {_manifest}"
    )


VISIONREWARD_CHECKLISTS = sorted(
    {
        CHECKLISTS[t]
        for t in TARGETS
        if target_section(t, "reward")["backend"] == "visionreward" and not Path(CHECKLISTS[t]).exists()
    }
)
if VISIONREWARD_CHECKLISTS:

    rule visionreward_checklist:
        """Download VisionReward-Video's questions from its release and write them as a checklist file."""
        localrule: True
        output:
            VISIONREWARD_CHECKLISTS,
        params:
            release="resources/visionreward",
        log:
            "results/logs/visionreward_checklist.log",
        conda:
            "../../envs/core.yaml"
        shell:
            "(python -m vpo.reward.visionreward_release fetch --out {params.release:q} &&"
            " for out in {output:q}; do python -m vpo.reward.visionreward_release checklist"
            ' --questions {params.release:q}/VisionReward_video_qa.txt --out "$out" || exit 1; done) > {log:q} 2>&1'


rule generate_videos:
    """Render one shard part's candidates of a round with the target's diffusers pipeline."""
    input:
        candidates=lambda w: f"results/{rounds.text_phase(int(w.round), w.target)}/candidates/shard-{w.k}.parquet",
        model=lambda w: built_model(target_section(w.target, "t2v")["model"]),
    output:
        records=VIDEO_PARTS,
        report="results/dpo/round-{round}/{target}/videos/shard-{k}/part-{p}.report.json",
    params:
        model=lambda w, input: model_path(CFG, target_section(w.target, "t2v")["model"]),
        revision="",  # the model folder is local (a hub model: its pinned snapshot)
        t2v=lambda w: as_json(t2v_settings(w.target)),
        parts=lambda w: n_video_parts(w.target),
        seed=CFG["seed"],
    log:
        "results/logs/generate_videos/round-{round}/{target}/shard-{k}/part-{p}.log",
    benchmark:
        "results/benchmarks/generate_videos/round-{round}/{target}/shard-{k}/part-{p}.tsv"
    priority: TRAINING_PATH
    threads: res("t2v", "threads", 2)
    resources:
        mem_mb=target_res("t2v", "mem_mb", 4000),
        runtime=target_res("t2v", "runtime", 60),
        gpu=target_gpus("t2v"),
    conda:
        backend_env("t2v")
    shell:
        "python -m vpo.stages.generate_videos --candidates {input.candidates:q} --part {wildcards.p:q} --parts {params.parts:q}"
        " --model {params.model:q} --revision={params.revision:q} --t2v {params.t2v:q} --target {wildcards.target:q}"
        " --seed {params.seed:q} --threads {threads:q} --out {output.records:q} --report {output.report:q} > {log:q} 2>&1"


rule score_videos:
    """The target's checklist reward model answers every question about every video of one part."""
    input:
        videos=VIDEO_PARTS,
        checklist=lambda w: CHECKLISTS[w.target],
        model=lambda w: built_model(target_section(w.target, "reward")["model"]),
    output:
        records=REWARD_PARTS,
        report="results/dpo/round-{round}/{target}/rewards/shard-{k}/part-{p}.report.json",
    params:
        scorer=lambda w: as_json(scorer_settings(w.target)),
    log:
        "results/logs/score_videos/round-{round}/{target}/shard-{k}/part-{p}.log",
    benchmark:
        "results/benchmarks/score_videos/round-{round}/{target}/shard-{k}/part-{p}.tsv"
    priority: TRAINING_PATH
    threads: res("reward", "threads", 2)
    resources:
        mem_mb=target_res("reward", "mem_mb", 4000),
        runtime=target_res("reward", "runtime", 60),
        gpu=target_gpus("reward"),
    conda:
        backend_env("reward")
    shell:
        "python -m vpo.stages.score_videos --videos {input.videos:q} --checklist {input.checklist:q}"
        " --scorer {params.scorer:q} --target {wildcards.target:q} --threads {threads:q} --out {output.records:q}"
        " --report {output.report:q} > {log:q} 2>&1"


rule video_pairs:
    """Video-level pairs: a clear winner over a loser among one query's videos (the method's rule)."""
    localrule: True
    input:
        round_video_parts(REWARD_PARTS),
    output:
        pairs="results/dpo/round-{round}/{target}/video_pairs.parquet",
        report="results/dpo/round-{round}/{target}/video_pairs.report.json",
    params:
        margin=CFG["pairs"]["margin"],
        convention=CFG["pairs"]["score_convention"],
    log:
        "results/logs/video_pairs/round-{round}/{target}.log",
    benchmark:
        "results/benchmarks/video_pairs/round-{round}/{target}.tsv"
    priority: TRAINING_PATH
    threads: 1
    conda:
        "../../envs/core.yaml"
    shell:
        "python -m vpo.stages.video_pairs --rewards {input:q} --margin {params.margin:q}"
        " --convention {params.convention:q} --out {output.pairs:q} --report {output.report:q} > {log:q} 2>&1"


rule video_report:
    """Report pages: each query's candidate videos side by side with their scores; reward distribution."""
    localrule: True
    input:
        rewards=round_video_parts(REWARD_PARTS),
        pairs="results/dpo/round-{round}/{target}/video_pairs.parquet",
    output:
        page=report(
            "results/report/round-{round}/{target}/videos.html",
            caption="../report/videos.rst",
            category="Video-level feedback",
            subcategory="round {round}, {target}",
        ),
        plot=report(
            "results/report/round-{round}/{target}/reward_distribution.svg",
            caption="../report/reward_distribution.rst",
            category="Video-level feedback",
            subcategory="round {round}, {target}",
        ),
    params:
        max_queries=CFG["video_report"]["max_queries"],
        convention=CFG["pairs"]["score_convention"],
    log:
        "results/logs/video_report/round-{round}/{target}.log",
    threads: 1
    conda:
        "../../envs/core.yaml"
    shell:
        "python -m vpo.pages.video_report --rewards {input.rewards:q} --pairs {input.pairs:q}"
        " --max-queries {params.max_queries:q} --convention {params.convention:q}"
        " --page {output.page:q} --plot {output.plot:q} > {log:q} 2>&1"
