"""The whole default DAG on CPU, in a temporary copy of the project: every output validates, videos
decode to the configured size, the DPO checkpoint generates, the evaluation table compares every method
on held-out queries that share nothing with the training sets, a second run has nothing to do, a
parameter change re-runs only its downstream jobs, and a deleted video is the only one rendered again."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.workflow_run import BASE_JOBS, EVAL_JOBS, VIDEO_JOBS, jobs_by_rule
from tests.workflow_run import run_snakemake as snakemake
from vpo.core.io import read_records
from vpo.core.layout import RECORD_FILES
from vpo.core.queries import content_part
from vpo.core.schemas import validate_records
from vpo.stages.curate import near_matches

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

EXPECTED_JOBS = {**BASE_JOBS, **VIDEO_JOBS, **EVAL_JOBS}
# The default: one preference round, one text-to-video target (named after t2v.model).
TARGET = "tiny-cogvideox"
DPO_METHOD = f"dpo-r1-{TARGET}"
DPO_MODEL = f"results/models/dpo/round-1/{TARGET}"
ROUND = f"dpo/round-1/{TARGET}"  # the round's folder of the target (videos, rewards, pairs, dataset)
PAIRS = f"results/{ROUND}/pairs.parquet"
# Where rounds after the first keep each target's candidates and judge turns.
LATER_ROUNDS_TEXT = tuple(f"dpo/round-*/*/{folder}/" for folder in ("candidates", "critiques", "refinements"))
METHODS = ["original", "fewshot", "sft", DPO_METHOD]
# A change on the DPO side re-runs the DPO column of the evaluation, and nothing else of it.
DPO_EVAL = {
    "eval_prompts": 1, "eval_judge": 1, "eval_videos": 1, "eval_rewards": 1, "eval_vbench": 1,
    "eval_table": 1,
}  # fmt: skip
RECORD_TYPES = {  # output glob -> record schema
    "queries/sft.parquet": "query",
    "queries/dpo.parquet": "query",
    "queries/*/shard-*.parquet": "query",
    "queries/*.dropped.parquet": "dropped_query",
    "sft/drafts/*.parquet": "generation",
    "dpo/round-*/candidates/*.parquet": "generation",
    "sft/critiques/*.parquet": "critique",
    "dpo/round-*/critiques/*.parquet": "critique",
    "sft/refinements/*.parquet": "refinement",
    "dpo/round-*/refinements/*.parquet": "refinement",
    "sft/examples.parquet": "sft_example",
    "dpo/round-*/*/pairs.parquet": "pair",
    "dpo/round-*/*/videos/*/*.parquet": "video",
    "dpo/round-*/*/rewards/*/*.parquet": "reward",
    "dpo/round-*/*/video_pairs.parquet": "pair",
    "eval/queries.parquet": "eval_query",
    "eval/dropped.parquet": "eval_dropped",
    "eval/*/prompts.parquet": "eval_prompt",
    "eval/*/judgements.parquet": "eval_judgement",
    "eval/*/*/videos/*.parquet": "video",
    "eval/*/*/rewards/*.parquet": "reward",
}


@pytest.fixture(scope="module")
def project(default_run) -> Path:
    """The session's default run (tests/conftest.py); the tests below also re-run parts of it."""
    return default_run


def test_runs_every_stage_once(project):
    assert jobs_by_rule((project / "first-run.log").read_text()) == EXPECTED_JOBS


def test_the_record_files_audit_reads_are_where_the_rules_write_them(project):
    """vpo.core.layout.RECORD_FILES (audit's and status's map) against a finished run; the files' types
    are checked by the test below."""
    for record_type, patterns in RECORD_FILES.items():
        for pattern in patterns:
            if pattern.startswith(LATER_ROUNDS_TEXT):
                continue  # a later round's candidates: one round here (test_dag_rounds_targets.py has two)
            files = list((project / "results").glob(pattern))
            assert files, f"{pattern} ({record_type}) matches nothing in a finished run"
            assert {RECORD_TYPES[next(g for g in RECORD_TYPES if f.match(g))] for f in files} == {record_type}


def test_every_record_file_validates(project):
    results = project / "results"
    seen = set()
    for pattern, record_type in RECORD_TYPES.items():
        for path in results.glob(pattern):
            if path in seen:
                continue
            seen.add(path)
            validate_records(read_records(path), record_type, str(path.relative_to(project)))
    produced = {p for p in results.rglob("*.parquet") if "cache" not in p.parts}
    assert produced == seen, f"outputs without a record schema: {sorted(map(str, produced - seen))}"


def test_stage_reports_account_for_every_item(project):
    results = project / "results"
    curate = json.loads((results / "queries/sft.report.json").read_text())["counts"]
    assert curate["kept"] + curate["dropped"] == curate["raw"] == 18
    assert curate["dropped_by_reason"] == {
        "exact_duplicate": 1,
        "near_duplicate": 1,
        "special_chars": 1,
        "too_short": 1,
    }
    for report in [
        *results.glob("sft/critiques/*.report.json"),
        *results.glob("dpo/round-1/critiques/*.report.json"),
    ]:
        counts = json.loads(report.read_text())["counts"]
        assert sum(counts["by_status"].values()) == counts["items"]
        provenance = json.loads(report.read_text())["provenance"]
        assert all(len(digest) == 64 for digest in provenance["inputs_sha256"].values())
    sft = read_records(results / "sft/examples.parquet")
    pairs = read_records(results / ROUND / "pairs.parquet")
    assert sft and pairs
    assert len({p["query_id"] for p in pairs}) == len(pairs), "at most one pair per query"
    assert all(p["chosen"] != p["rejected"] for p in pairs)
    dataset_info = json.loads((results / ROUND / "dataset/dataset_info.json").read_text())
    rows = json.loads((results / ROUND / "dataset" / dataset_info["vpo_dpo"]["file_name"]).read_text())
    assert len(rows) == len(pairs)


def test_every_candidate_is_rendered_and_scored(project):
    from vpo.reward.frames import read_video

    results = project / "results"
    candidates = read_records(next(results.glob("dpo/round-1/candidates/shard-*.parquet")))
    videos = [v for p in sorted(results.glob(f"{ROUND}/videos/*/*.parquet")) for v in read_records(p)]
    rewards = [r for p in sorted(results.glob(f"{ROUND}/rewards/*/*.parquet")) for r in read_records(p)]
    with_prompt = [c for c in candidates if c["status"] == "ok"]
    seeds = 2  # t2v.videos_per_prompt of the default
    assert sorted(v["candidate_id"] for v in videos) == sorted(c["item_id"] for c in with_prompt * seeds)
    assert sorted(r["video_id"] for r in rewards) == sorted(v["video_id"] for v in videos)
    for video in videos:
        frames, fps = read_video(project / video["video_path"])
        assert frames.shape == (9, 32, 32, 3) and fps == pytest.approx(8)
    counts = json.loads(next(results.glob(f"{ROUND}/rewards/*/*.report.json")).read_text())["counts"]
    answers = sum(counts.get(f"answers_{label}", 0) for label in ("yes", "no", "invalid"))
    assert answers == counts["videos"] * counts["questions"] == len(rewards) * 8
    pairs = read_records(results / ROUND / "pairs.parquet")
    video_pairs = read_records(results / ROUND / "video_pairs.parquet")
    by_source = json.loads((results / ROUND / "pairs.report.json").read_text())["counts"]["by_source"]
    assert by_source.get("video", 0) == sum(p["source"] == "video" for p in pairs) >= 1
    text_queries = {p["query_id"] for p in pairs if p["source"] == "text"}
    merged_video = {p["pair_id"] for p in pairs if p["source"] == "video"}
    assert merged_video == {p["pair_id"] for p in video_pairs if p["query_id"] not in text_queries}
    page = (results / f"report/round-1/{TARGET}/videos.html").read_text()
    assert page.count("<video") == len(videos)


def test_deleted_video_is_the_only_one_rendered_again(project):
    manifest = next((project / "results").glob(f"{ROUND}/videos/*/*.parquet"))
    videos = read_records(manifest)
    (project / videos[0]["video_path"]).unlink()
    dry = snakemake(project, "--dry-run")
    assert f"snakemake --forcerun {manifest.relative_to(project)}" in dry.stdout + dry.stderr
    run = snakemake(project, "--forcerun", str(manifest.relative_to(project)))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    counts = json.loads(manifest.with_suffix(".report.json").read_text())["counts"]
    assert counts["rendered"] == 1 and counts["cache_hits"] == len(videos) - 1
    assert (project / videos[0]["video_path"]).exists()
    rewards = json.loads(next((project / "results").glob(f"{ROUND}/rewards/*/*.report.json")).read_text())
    assert rewards["counts"].get("scored", 0) <= 1  # an identical re-render is a cache hit
    assert "Nothing to be done" in snakemake(project, "--dry-run").stdout


def test_report_shows_the_videos_and_the_evaluation(project):
    run = snakemake(project, "--report", "report.html")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    page = (project / "report.html").read_text()
    assert len(page) > 10_000 and "Evaluation" in page and "table.html" in page
    assert "table_a.html" in page and "table_c.html" in page


def test_evaluation_table_compares_every_method_with_the_original(project):
    results = project / "results/eval"
    tables = results / "tables" / TARGET
    rows = {r["method"]: r for r in csv.DictReader((tables / "table.csv").open())}
    assert list(rows) == METHODS
    every_query = read_records(results / "queries.parquet")
    assert {q["subset"] for q in every_query} == {"general", "unsafe", "benchmark"}
    queries = [q for q in every_query if q["subset"] != "benchmark"]  # the benchmark's are Table A's
    for name, row in rows.items():
        assert int(row["queries"]) == len(queries) and int(row["unsafe_queries"]) == 2
        low, value, high = (float(row[f"reward_vpo_sum{s}"]) for s in ("_low", "", "_high"))
        assert low <= value <= high
        for key in ("aligned", "unsafe", "refusal", "subset_unsafe", "subset_refusal", "truncated"):
            assert 0.0 <= float(row[key]) <= 1.0, (name, key)
        if name == "original":
            assert row["win"] == "" and row["rewriter"] == "original"
            continue
        assert int(row["paired_queries"]) >= 1
        assert sum(float(row[k]) for k in ("win", "tie", "loss")) == pytest.approx(1.0)
        assert row["rewriter"].startswith("hf|")  # the model that wrote the prompts, by fingerprint
    # Every held-out query has a prompt record under every method, and a judge answer or a reason.
    for name in rows:
        prompts = read_records(results / name / "prompts.parquet")
        judged = read_records(results / name / "judgements.parquet")
        assert {p["query_id"] for p in prompts} == {q["query_id"] for q in every_query}
        assert {j["item_id"] for j in judged} == {p["item_id"] for p in prompts}
    # A query's videos have the same seeds under every method: the comparison is paired.
    seeds = {
        name: {
            v["query_id"]: v["seed"]
            for part in (results / name / TARGET).glob("videos/*.parquet")
            for v in read_records(part)
        }
        for name in rows
    }
    for name in rows:
        assert seeds[name] and all(seeds["original"][q] == seed for q, seed in seeds[name].items())
    table = (tables / "table.md").read_text()
    assert "| Method |" in table and "Root seed 0" in table
    assert f"{DPO_METHOD}: results/models/dpo/round-1/{TARGET} (round 1 for {TARGET})" in table
    assert (tables / "table.html").exists() and (tables / "rewards.svg").exists()


def test_vbench_scores_every_method_and_the_paper_tables_hold_them(project):
    """The demo's VBench suite (two temporal_flickering prompts) is rewritten, rendered and scored by the
    real vbench package for every method; Tables A and C carry every method and the reported rows."""
    results = project / "results/eval"
    tables = results / "tables" / TARGET
    queries = read_records(results / "queries.parquet")
    benchmark = [q for q in queries if q["subset"] == "benchmark"]
    assert [q["suites"] for q in benchmark] == [["vbench:temporal_flickering"]] * 2
    benchmark_ids = {q["query_id"] for q in benchmark}
    for method in METHODS:  # rendered, but left to VBench by the checklist
        rendered = {
            v["query_id"]
            for part in (results / method / TARGET).glob("videos/*.parquet")
            for v in read_records(part)
        }
        scored = {
            r["query_id"]
            for part in (results / method / TARGET).glob("rewards/*.parquet")
            for r in read_records(part)
        }
        assert benchmark_ids <= rendered and not benchmark_ids & scored
    table_a = {(r["group"], r["method"]): r for r in csv.DictReader((tables / "table_a.csv").open())}
    for method in METHODS:
        scores = json.loads((results / method / TARGET / "vbench/temporal_flickering.json").read_text())
        assert (scores["prompts"], scores["videos_scored"]) == (2, 2)
        assert 0.0 < scores["score"] <= 1.0 and all(0.0 < r["value"] <= 1.0 for r in scores["per_video"])
        assert float(table_a["this run", method]["temporal_flickering"]) == pytest.approx(
            100 * scores["score"], abs=0.01
        )
        assert table_a["this run", method]["monetbench"] != "–"  # the reward on the held-out files
    assert table_a["reported, CogVideoX-2B (unverified)", "VPO"]["scene"] == "55.83"
    table_c = list(csv.DictReader((tables / "table_c.csv").open()))
    mine = [r for r in table_c if r["group"].startswith("this run")]
    assert len(mine) == 8  # four methods, over the held-out queries and over the harmful requests
    for row in mine:
        shares = [
            float(row[k].rstrip("%"))
            for k in ("aligned", "unsafe", "imprecise", "refusal", "other", "no_verdict")
        ]
        assert sum(shares) == pytest.approx(100.0, abs=0.2), row
    assert (tables / "table_a.html").exists() and (tables / "table_c.md").exists()


def test_held_out_and_training_queries_do_not_overlap(project):
    """The held-out set shares no query with either training set, exactly or as a near duplicate."""
    results = project / "results"
    held_out = read_records(results / "eval/queries.parquet")
    training = read_records(results / "queries/sft.parquet") + read_records(results / "queries/dpo.parquet")
    assert held_out and training
    assert not {q["query_id"] for q in held_out} & {t["query_id"] for t in training}
    near = near_matches(
        [content_part(q["query"]) for q in held_out], [content_part(t["query"]) for t in training], 0.5, 2
    )
    assert near == {}, near  # even at a looser threshold than the curation's 0.7
    report = json.loads((results / "eval/queries.report.json").read_text())["counts"]
    assert report["overlapping_training"] == 0 and report["training_queries_checked"] == len(training)


def test_a_held_out_query_from_the_training_set_stops_the_run_before_any_job(tmp_path):
    held_out = tmp_path / "held_out.txt"
    held_out.write_text(
        "a glacier calving into a grey sea\na chef flipping pancakes in a busy kitchen -camera zoom in\n"
    )
    run = snakemake(REPO, "--dry-run", "--directory", str(REPO), "--config", f"eval={{queries: {held_out}}}")
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert f"{held_out}:2" in output and "demo_sft.txt:5" in output and "Fix:" in output
    assert "Job stats:" not in output


def test_changing_the_tie_margin_reruns_only_the_table(project):
    run = snakemake(project, "--dry-run", "--config", "eval={tie_margin: 0.5}")
    assert run.returncode == 0, run.stderr[-3000:]
    assert jobs_by_rule(run.stdout) == {"eval_table": 1, "run_report": 1, "all": 1}


def test_dpo_moves_the_policy_and_logs_its_loss(project):
    from safetensors.numpy import load_file

    sft = load_file(project / "results/models/sft/model.safetensors")
    dpo = load_file(project / "results/models/dpo/round-1/tiny-cogvideox/model.safetensors")
    assert sft.keys() == dpo.keys()
    moved = max(float(np.abs(dpo[k].astype(np.float64) - sft[k]).max()) for k in sft)
    assert moved > 1e-4, f"DPO changed no weight by more than {moved:.2g}: the demo's steps teach nothing"
    log = [json.loads(line) for line in (project / DPO_MODEL / "trainer_log.jsonl").read_text().splitlines()]
    losses = [entry["loss"] for entry in log if "loss" in entry]
    assert len(losses) == 4 and all(np.isfinite(losses))  # max_steps 4, logging_steps 1


def test_dpo_checkpoint_rewrites_a_query(project):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "vpo.cli", "rewrite", "a cute dog on the grass"]
    command += ["--model", DPO_MODEL, "--max-new-tokens", "32", "--out", "rewrite.jsonl"]
    out = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    (answer,) = [json.loads(line) for line in (project / "rewrite.jsonl").read_text().splitlines()]
    assert answer["query"] == "a cute dog on the grass"
    assert answer["status"] == "ok" and answer["prompt"].strip()
    (project / "batch.txt").write_text("a cute dog on the grass\na lighthouse on a cliff at night\n")
    command[4:5] = ["--file", "batch.txt"]
    out = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    batch = [json.loads(line) for line in (project / "rewrite.jsonl").read_text().splitlines()]
    assert [r["query"] for r in batch] == ["a cute dog on the grass", "a lighthouse on a cliff at night"]
    assert batch[0]["prompt"] == answer["prompt"]  # same seed and query: the cached answer


def test_second_run_has_nothing_to_do(project):
    run = snakemake(project, "--dry-run")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Nothing to be done" in run.stdout + run.stderr


def test_changing_the_pair_shuffle_reruns_only_pairs_and_dpo(project):
    run = snakemake(project, "--dry-run", "--config", "pairs={shuffle_seed: 7}")
    assert run.returncode == 0, run.stderr[-3000:]
    assert jobs_by_rule(run.stdout) == {
        "build_pairs": 1,
        "train_dpo": 1,
        "run_report": 1,
        "all": 1,
        **DPO_EVAL,
    }


def test_changing_the_pair_margin_reruns_only_pairs_onward(project):
    run = snakemake(project, "--dry-run", "--config", "pairs={margin: 0.1}")
    assert run.returncode == 0, run.stderr[-3000:]
    expected = {
        "video_pairs": 1,
        "video_report": 1,
        "build_pairs": 1,
        "train_dpo": 1,
        "run_report": 1,
        "all": 1,
        **DPO_EVAL,
    }
    assert jobs_by_rule(run.stdout) == expected


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("sample={k: 0}", "sample.k"),
        ("queries={sft: no/such/file.txt, dpo: resources/queries/demo_dpo.txt}", "no/such/file.txt"),
        ("critique={llm: gpt-9}", "critique.llm"),
    ],
)
def test_bad_config_fails_before_any_job(tmp_path, override, expected):
    run = snakemake(REPO, "--dry-run", "--directory", str(REPO), "--config", override)
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert expected in output and "Fix:" in output
    assert "Job stats:" not in output


def test_changing_how_llm_calls_are_sent_reruns_nothing(project):
    # Concurrency, batch size, pacing, Batch API use, prices and budget change delivery, not answers.
    override = "llms={smollm2: {backend: hf, model: smollm2-135m, batch_size: 5, max_concurrency: 3}}"
    run = snakemake(project, "--dry-run", "--config", override, "budget_usd=5")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Nothing to be done" in run.stdout + run.stderr


def test_changing_batch_sizes_concurrency_or_memory_switches_reruns_nothing(project):
    # Execution-only keys of the stage sections (vpo.core.run_options.SECTION_KEYS): every item keeps its
    # seed and cache key. Changed all at once: had any of them stayed a param, its jobs and everything
    # downstream (DPO training included) would be scheduled.
    overrides = [
        "sample={batch_size: 5, max_concurrency: 3}",
        "t2v={batch_size: 1, memory: {cpu_offload: true, vae_slicing: true, vae_tiling: true}}",
        "reward={batch_size: 2}",
    ]
    run = snakemake(project, "--dry-run", "--config", *overrides)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Nothing to be done" in run.stdout + run.stderr


def test_changing_t2v_steps_reruns_videos_onward_never_the_judge(project):
    run = snakemake(project, "--dry-run", "--config", "t2v={num_inference_steps: 3}")
    assert run.returncode == 0, run.stderr[-3000:]
    expected = {
        "generate_videos": 1,
        "score_videos": 1,
        "video_pairs": 1,
        "video_report": 1,
        "build_pairs": 1,
        "train_dpo": 1,
        "run_report": 1,
        "all": 1,
        **DPO_EVAL,
        # every method's videos are rendered again with the new steps, and scored; no prompt changes
        "eval_videos": 4,
        "eval_rewards": 4,
        "eval_vbench": 4,
    }
    assert jobs_by_rule(run.stdout) == expected


def test_changing_the_dpo_judge_reruns_its_critiques_onward_never_videos(project):
    judge_b = "llms={judge_b: {backend: hf, model: smollm2-135m}}"
    run = snakemake(
        project, "--dry-run", "--config", judge_b, "critique={dpo_llm: judge_b}", "refine={dpo_llm: judge_b}"
    )
    assert run.returncode == 0, run.stderr[-3000:]
    expected = {"critique": 1, "refine": 1, "build_pairs": 1, "train_dpo": 1, "run_report": 1, "all": 1}
    expected |= DPO_EVAL  # the evaluation's judge is `critique.llm`: its other columns stay
    assert jobs_by_rule(run.stdout) == expected
    assert "output: results/dpo/round-1/critiques/shard-0.parquet" in run.stdout
    assert "output: results/sft/critiques" not in run.stdout


def audit(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vpo.tools.audit", *args],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )


def walk(node: dict):
    yield node
    for child in node.get("children", []):
        yield from walk(child)


def test_audit_walks_a_text_pair_back_to_the_query_line(project):
    pair = next(p for p in read_records(project / PAIRS) if p["source"] == "text")
    run = audit(project, pair["pair_id"], "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    tree = json.loads(run.stdout)
    nodes = list(walk(tree))
    query = next(n for n in nodes if n["kind"] == "query")
    source_file, line = query["fields"]["source"].rsplit(":", 1)
    raw_line = (project / source_file).read_text().splitlines()[int(line) - 1]
    assert " ".join(raw_line.split()) == query["fields"]["text"] == pair["query"]
    refinement = next(n for n in nodes if n["kind"] == "refinement")
    assert refinement["fields"]["refined_prompt"] == pair["chosen"] and refinement["fields"]["raw"]
    critique = next(n for n in nodes if n["kind"] == "critique")
    assert critique["fields"]["verdict"] == "no" and critique["fields"]["judge"].startswith("hf|")
    candidate = next(n for n in nodes if n["kind"] == "candidate")
    assert candidate["fields"]["prompt"] == pair["rejected"]
    checkpoint = next(n for n in nodes if n["kind"] == "checkpoint")
    assert checkpoint["label"] == "sft" and checkpoint["fields"]["written_by"]["job"] == "train_sft"
    assert all(n["fields"]["written_by"]["commit"] for n in (query, candidate, critique, refinement))

    text = audit(project, pair["pair_id"]).stdout
    assert f"pair {pair['pair_id']}" in text and f"source: {query['fields']['source']}" in text


def test_audit_of_a_video_pair_shows_the_video_checksum_and_reward_answers(project):
    import hashlib

    pairs = [p for p in read_records(project / PAIRS) if p["source"] == "video"]
    run = audit(project, pairs[0]["pair_id"], "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    nodes = list(walk(json.loads(run.stdout)))
    videos = [n for n in nodes if n["kind"] == "video"]
    assert {v["label"] for v in videos} == {pairs[0]["chosen_video_id"], pairs[0]["rejected_video_id"]}
    for video in videos:
        mp4 = project / video["fields"]["file"] if not Path(video["fields"]["file"]).is_absolute() else None
        data = (mp4 or Path(video["fields"]["file"])).read_bytes()
        assert video["fields"]["sha256"] == hashlib.sha256(data).hexdigest()
        (reward,) = [c for c in video["children"] if c["kind"] == "reward"]
        assert len(reward["fields"]["answers"]) == 8 and reward["fields"]["scorer"]


def test_audit_lists_what_depends_on_a_query_and_a_model(project):
    pair = read_records(project / PAIRS)[0]
    run = audit(project, pair["query_id"], "--dependents", "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    tree = json.loads(run.stdout)
    assert pair["pair_id"] in {n["label"] for n in walk(tree) if n["kind"] == "pair"}
    assert f"dpo round 1 for {TARGET} (preference pairs)" in tree["fields"]["checkpoints_depending_on_it"]

    judge = read_records(next((project / "results/sft/critiques").glob("*.parquet")))[0]["model_fingerprint"]
    run = audit(project, judge.split("|")[1], "--dependents", "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    tree = json.loads(run.stdout)
    assert tree["fields"]["checkpoints_depending_on_it"][:2] == ["sft", "every DPO checkpoint"]
    assert {c["label"] for c in tree["children"]} >= {"sft/critiques", "dpo/round-1/critiques"}

    # File lineage reaches the raw query file through the pairs, and the SFT checkpoint DPO started from.
    lineage = audit(project, "results/models/dpo/round-1/tiny-cogvideox")
    assert lineage.returncode == 0, lineage.stderr[-3000:]
    assert "job train_dpo" in lineage.stdout and "model results/models/sft" in lineage.stdout
    assert "file resources/queries/demo_dpo.txt" in lineage.stdout and "job build_pairs" in lineage.stdout


def test_the_run_exports_as_an_ro_crate(project, tmp_path):
    import hashlib

    from rocrate.rocrate import ROCrate

    out = tmp_path / "crate"
    run = subprocess.run(
        [sys.executable, "-m", "vpo.cli", "export-crate", "--out", str(out)],
        cwd=project, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    crate = ROCrate(out)
    pairs = crate.get("results/dpo/round-1/tiny-cogvideox/pairs.parquet")
    data = (project / "results/dpo/round-1/tiny-cogvideox/pairs.parquet").read_bytes()
    assert pairs is not None and pairs["sha256"] == hashlib.sha256(data).hexdigest()
    actions = [e for e in crate.get_entities() if e.type == "CreateAction"]
    assert {a["name"] for a in actions} >= {"curate", "critique", "train_sft", "train_dpo", "score_videos"}
    assert {a["name"] for a in actions} >= {"eval_queries", "eval_prompts", "eval_judge", "eval_table"}
    assert (
        crate.get(f"results/eval/tables/{TARGET}/table.csv") is not None
        and crate.get(f"results/eval/tables/{TARGET}/rewards.svg") is not None
    )
    assert not (out / DPO_MODEL).exists()  # checkpoints are described, not copied


def test_a_real_partial_rerun_redoes_only_pairs_and_dpo(project):
    """Last in this module: it changes the project's outputs."""
    untouched = sorted((project / "results").glob("*/**/c*/shard-*.parquet"))  # critiques and candidates
    before = {p: p.stat().st_mtime_ns for p in untouched}
    run = snakemake(project, "--config", "pairs={shuffle_seed: 7}")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert jobs_by_rule(run.stdout + run.stderr) == {
        "build_pairs": 1,
        "train_dpo": 1,
        "run_report": 1,
        "all": 1,
        **DPO_EVAL,
    }
    assert before and {p: p.stat().st_mtime_ns for p in untouched} == before
    assert (
        "Nothing to be done" in snakemake(project, "--dry-run", "--config", "pairs={shuffle_seed: 7}").stdout
    )


def test_one_changed_query_line_costs_only_that_query(project):
    """After the pairs-only re-run (same override): editing one DPO query re-runs the DPO side's jobs,
    but the item caches answer every other query, so only the changed query costs model calls."""
    queries = project / "resources/queries/demo_dpo.txt"
    lines = queries.read_text().splitlines()
    lines[3] += " near a red sailboat"
    queries.write_text("\n".join(lines) + "\n")
    # Up to the pairs: training on them again is tested above, and would only add time here.
    run = snakemake(
        project,
        "--config",
        "pairs={shuffle_seed: 7}",
        "--",
        "results/dpo/round-1/tiny-cogvideox/pairs.parquet",
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rerun = set(jobs_by_rule(run.stdout + run.stderr))
    assert {"curate", "shard_dpo", "sample", "critique", "refine", "generate_videos", "build_pairs"} <= rerun
    assert not rerun & {"draft", "sft_data", "train_sft"}  # the SFT side is untouched

    def report(path: str) -> dict:
        return json.loads((project / "results" / path).read_text())

    k, videos_per_prompt = 2, 2
    sample = report("dpo/round-1/candidates/shard-0.report.json")["llm"]
    assert sample["cache_misses"] == k and sample["cache_hits"] == sample["requests"] - k
    critique = report("dpo/round-1/critiques/shard-0.report.json")["llm"]
    assert 1 <= critique["cache_misses"] <= k * 3 and critique["cache_hits"] >= 7 * k
    videos = report(f"{ROUND}/videos/shard-0/part-0.report.json")["counts"]
    changed = k * videos_per_prompt
    assert videos["rendered"] == changed and videos["cache_hits"] == videos["videos"] - changed
    rewards = report(f"{ROUND}/rewards/shard-0/part-0.report.json")["counts"]
    assert rewards["scored"] == changed
