"""Preference rounds × text-to-video targets without Snakemake: the config's targets over the top-level
sections, the checkpoint each round samples with and is held to, where each round's files go, and what
`vpo estimate` counts and prices for them."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from vpo.config.validate import ConfigError, validate_config
from vpo.core import rounds
from vpo.tools.estimate import estimate, gpu_estimate

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load((REPO / "config/config.yaml").read_text())


def two_by_two(raw: dict, reference: str = "previous") -> dict:
    raw = copy.deepcopy(raw)
    raw["models"]["tiny-wan"] = {"source": "resources/models/tiny-wan", "build": "tiny-wan"}
    raw["rounds"] = {"count": 2, "reference": reference}
    raw["targets"] = {
        "tiny-cogvideox": {},
        "tiny-wan": {"t2v": {"model": "tiny-wan", "pipeline": "WanPipeline"}},
    }
    return validate_config(raw, check_files=False)


def test_without_targets_the_run_has_one_named_after_the_t2v_model(raw):
    cfg = validate_config(raw, check_files=False)
    assert list(cfg["targets"]) == ["tiny-cogvideox"]
    assert cfg["targets"]["tiny-cogvideox"]["t2v"] == cfg["t2v"]
    assert cfg["rounds"] == {"count": 1, "reference": "sft"}


def test_a_target_takes_the_top_level_sections_with_its_own_keys_over_them(raw):
    cfg = two_by_two(raw)
    wan = cfg["targets"]["tiny-wan"]["t2v"]
    assert (wan["model"], wan["pipeline"]) == ("tiny-wan", "WanPipeline")
    assert wan["height"] == cfg["t2v"]["height"] and wan["resources"] == cfg["t2v"]["resources"]
    assert wan["memory"] == cfg["t2v"]["memory"]  # a schema default, filled for the target too
    assert cfg["targets"]["tiny-wan"]["reward"] == cfg["reward"]


@pytest.mark.parametrize(
    ("targets", "expected"),
    [
        ({"candidates": {}}, "targets.candidates"),
        ({"a": {"t2v": {"model": "no-such-model"}}}, "targets.a.t2v.model"),
        ({"a": {"t2v": {"height": 12}}}, "targets.a.t2v.height"),  # not a multiple of 8
        ({"a": {"t2v": {"colour": "red"}}}, "targets.a.t2v"),  # unknown key
        ({"a b": {}}, "targets.a b"),  # a name becomes a folder and a wildcard value
        ({"a": {"reward": {"backend": "visionreward"}}}, "targets.a.reward.backend"),  # one env per rule
        ({"a": {"t2v": {"resources": {"threads": 4}}}}, "targets.a.t2v.resources.threads"),
    ],
)
def test_a_bad_target_is_an_error_naming_its_key(raw, targets, expected):
    raw["targets"] = targets
    with pytest.raises(ConfigError, match="Fix") as error:
        validate_config(raw, check_files=False)
    assert expected in str(error.value)


def test_several_targets_need_video_feedback(raw):
    raw["pairs"]["video"] = False
    raw["targets"] = {"a": {}, "b": {}}
    with pytest.raises(ConfigError, match=r"pairs\.video"):
        validate_config(raw, check_files=False)


@pytest.mark.parametrize("reference", ["sft", "previous"])
def test_each_round_samples_with_the_previous_checkpoint_of_its_target(raw, reference):
    cfg = two_by_two(raw, reference)
    assert rounds.text_phases(cfg) == [
        "sft",
        "dpo/round-1",
        "dpo/round-2/tiny-cogvideox",
        "dpo/round-2/tiny-wan",
    ]
    assert rounds.sampler("dpo/round-1") == "results/models/sft"
    assert rounds.sampler("dpo/round-2/tiny-wan") == "results/models/dpo/round-1/tiny-wan"
    assert rounds.reference(cfg, 1, "tiny-wan") == "results/models/sft"  # round 1: SFT either way
    expected = "results/models/sft" if reference == "sft" else "results/models/dpo/round-1/tiny-wan"
    assert rounds.reference(cfg, 2, "tiny-wan") == expected
    assert list(rounds.dpo_methods(cfg)) == [
        "dpo-r1-tiny-cogvideox", "dpo-r2-tiny-cogvideox", "dpo-r1-tiny-wan", "dpo-r2-tiny-wan",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "where"),
    [
        ("results/dpo/round-1/critiques/shard-0.parquet", (1, None)),
        ("results/dpo/round-2/tiny-wan/critiques/shard-0.parquet", (2, "tiny-wan")),
        ("results/dpo/round-1/tiny-wan/rewards/shard-0/part-1.parquet", (1, "tiny-wan")),
        ("results/models/dpo/round-2/cogvideox-1.5.report.json", (2, "cogvideox-1.5")),
        ("results/sft/critiques/shard-0.parquet", None),
    ],
)
def test_a_file_tells_its_round_and_target(path, where):
    assert rounds.locate(path) == where


def test_estimate_prices_every_round_and_target(raw):
    one = validate_config(raw, check_files=False)
    cfg = two_by_two(raw)
    for target in cfg["targets"].values():
        target["t2v"]["gpu_seconds_per_video"] = 30.0
    phases = {line.phase: line.requests for line in estimate(cfg) if line.stage == "critique"}
    base = {line.phase: line.requests for line in estimate(one) if line.stage == "critique"}
    # Round 1's candidates are judged once for both targets; round 2's once per target.
    assert phases["dpo round 1"] == base["dpo round 1"]
    assert phases["dpo round 2 x2 targets"] == 2 * base["dpo round 1"]
    judge = {line.stage: line.requests for line in estimate(cfg)}["eval_judge"]
    judge_one = {line.stage: line.requests for line in estimate(one)}["eval_judge"]
    assert judge == judge_one // 4 * (3 + 4)  # original, fewshot, sft + a DPO method per round and target
    gpu = {(g.stage, g.target): g for g in gpu_estimate(cfg)}
    gpu_one = {(g.stage, g.target): g for g in gpu_estimate(one)}
    rendered = gpu["generate_videos", "tiny-wan"]
    assert rendered.videos == 2 * gpu_one["generate_videos", "tiny-cogvideox"].videos  # two rounds
    assert rendered.hours == pytest.approx(rendered.videos * 30 / 3600)
    assert gpu["score_videos", "tiny-wan"].hours is None  # not priced in the config


def test_the_run_report_reads_pass_rate_and_reward_per_round_and_target(tmp_path):
    import polars as pl

    from vpo.pages.plots import plot_rounds, save_svg
    from vpo.pages.records import round_feedback

    def write(rel: str, rows: list[dict]) -> str:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        pl.DataFrame(rows).write_parquet(path)
        return str(path)

    paths = [
        # Round 1's critiques are shared by both targets; round 2's are each target's own.
        write(
            "results/dpo/round-1/critiques/shard-0.parquet",
            [{"verdict": v} for v in ("yes", "no", None, "no")],
        ),
        write("results/dpo/round-2/a/critiques/shard-0.parquet", [{"verdict": v} for v in ("yes", "yes")]),
        write("results/dpo/round-2/b/critiques/shard-0.parquet", [{"verdict": v} for v in ("no", "yes")]),
        write(
            "results/dpo/round-1/a/rewards/shard-0/part-0.parquet", [{"score_vpo_sum": s} for s in (1.0, 3.0)]
        ),
        write("results/dpo/round-2/a/rewards/shard-0/part-0.parquet", [{"score_vpo_sum": 4.0}]),
    ]
    pass_rates, rewards = round_feedback(paths, ["a", "b"], "vpo_sum")
    assert pass_rates == {"a": {1: 0.25, 2: 1.0}, "b": {1: 0.25, 2: 0.5}}
    assert rewards == {"a": {1: 2.0, 2: 4.0}, "b": {1: None, 2: None}}
    svg = save_svg(plot_rounds(pass_rates, rewards, "vpo_sum"), tmp_path / "rounds.svg", salt="rounds")
    assert "judge pass rate" in (tmp_path / "rounds.svg").read_text() and svg
    with pytest.raises(SystemExit, match="round"):
        round_feedback(
            [write("results/sft/critiques/shard-0.parquet", [{"verdict": "yes"}])], ["a"], "vpo_sum"
        )
