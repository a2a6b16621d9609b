# Video-level feedback: render every sampled candidate (T2V), score each video with a checklist
# reward model, and turn clear winners into video-level pairs. In the DAG only when pairs.video is true.
from pathlib import Path

from vpo.config.resolve import reward_spec
from vpo.stages.generate_videos import missing_videos

T2V = CFG["t2v"]
REWARD = CFG["reward"]


# A video deleted from results/state/videos is not a rule output, so Snakemake cannot see it: say which job
# brings it back (only the missing videos are rendered again; the rest are found where they are).
for _manifest, _gone in missing_videos(video_parts("results/dpo/videos/shard-{k}/part-{p}.parquet")):
    logger.warning(
        f"{_manifest} lists {len(_gone)} video(s) that no longer exist (e.g. {_gone[0]}). "
        f"Re-render only those with: snakemake --forcerun {_manifest}"
    )


if REWARD["backend"] == "visionreward" and not Path(REWARD["checklist"]).exists():

    rule visionreward_checklist:
        """Download VisionReward-Video's questions from its release and write them as a checklist file."""
        localrule: True
        output:
            REWARD["checklist"],
        params:
            release="resources/visionreward",
        log:
            "results/logs/visionreward_checklist.log",
        conda:
            "../../envs/core.yaml"
        shell:
            "(python -m vpo.reward.visionreward_release fetch --out {params.release:q} &&"
            " python -m vpo.reward.visionreward_release checklist"
            " --questions {params.release:q}/VisionReward_video_qa.txt --out {output:q}) > {log:q} 2>&1"


rule generate_videos:
    """Render one shard part's candidate prompts into mp4 videos with the configured diffusers pipeline."""
    input:
        candidates="results/dpo/candidates/shard-{k}.parquet",
        model=built_model(T2V["model"]),
    output:
        records="results/dpo/videos/shard-{k}/part-{p}.parquet",
        report="results/dpo/videos/shard-{k}/part-{p}.report.json",
    params:
        model=model_location(T2V["model"]),
        revision="",  # the model folder is local (a hub model: its pinned snapshot)
        t2v=as_json(t2v_settings()),
        parts=n_video_parts(),
        seed=CFG["seed"],
    log:
        "results/logs/generate_videos/shard-{k}/part-{p}.log",
    benchmark:
        "results/benchmarks/generate_videos/shard-{k}/part-{p}.tsv"
    priority: TRAINING_PATH
    threads: res("t2v", "threads", 2)
    resources:
        mem_mb=res("t2v", "mem_mb", 4000),
        runtime=res("t2v", "runtime", 60),
        gpu=gpus("t2v"),
    conda:
        backend_env("t2v")
    shell:
        "python -m vpo.stages.generate_videos --candidates {input.candidates:q} --part {wildcards.p:q} --parts {params.parts:q}"
        " --model {params.model:q} --revision={params.revision:q} --t2v {params.t2v:q} --seed {params.seed:q}"
        " --threads {threads:q} --out {output.records:q} --report {output.report:q} > {log:q} 2>&1"


rule score_videos:
    """The checklist reward model answers every question about every video of one part."""
    input:
        videos="results/dpo/videos/shard-{k}/part-{p}.parquet",
        checklist=REWARD["checklist"],
        model=built_model(REWARD["model"]),
    output:
        records="results/dpo/rewards/shard-{k}/part-{p}.parquet",
        report="results/dpo/rewards/shard-{k}/part-{p}.report.json",
    params:
        scorer=as_json(on_device(reward_spec(CFG))),
    log:
        "results/logs/score_videos/shard-{k}/part-{p}.log",
    benchmark:
        "results/benchmarks/score_videos/shard-{k}/part-{p}.tsv"
    priority: TRAINING_PATH
    threads: res("reward", "threads", 2)
    resources:
        mem_mb=res("reward", "mem_mb", 4000),
        runtime=res("reward", "runtime", 60),
        gpu=gpus("reward"),
    conda:
        backend_env("reward")
    shell:
        "python -m vpo.stages.score_videos --videos {input.videos:q} --checklist {input.checklist:q}"
        " --scorer {params.scorer:q} --threads {threads:q} --out {output.records:q}"
        " --report {output.report:q} > {log:q} 2>&1"


rule video_pairs:
    """Video-level pairs: a clear winner over a loser among one query's videos (the method's rule)."""
    localrule: True
    input:
        video_parts("results/dpo/rewards/shard-{k}/part-{p}.parquet"),
    output:
        pairs="results/dpo/video_pairs.parquet",
        report="results/dpo/video_pairs.report.json",
    params:
        margin=CFG["pairs"]["margin"],
        convention=CFG["pairs"]["score_convention"],
    log:
        "results/logs/video_pairs.log",
    benchmark:
        "results/benchmarks/video_pairs.tsv"
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
        rewards=video_parts("results/dpo/rewards/shard-{k}/part-{p}.parquet"),
        pairs="results/dpo/video_pairs.parquet",
    output:
        page=report(
            "results/report/videos.html",
            caption="../report/videos.rst",
            category="Video-level feedback",
        ),
        plot=report(
            "results/report/reward_distribution.svg",
            caption="../report/reward_distribution.rst",
            category="Video-level feedback",
        ),
    params:
        max_queries=CFG["video_report"]["max_queries"],
        convention=CFG["pairs"]["score_convention"],
    log:
        "results/logs/video_report.log",
    threads: 1
    conda:
        "../../envs/core.yaml"
    shell:
        "python -m vpo.pages.video_report --rewards {input.rewards:q} --pairs {input.pairs:q}"
        " --max-queries {params.max_queries:q} --convention {params.convention:q}"
        " --page {output.page:q} --plot {output.plot:q} > {log:q} 2>&1"
