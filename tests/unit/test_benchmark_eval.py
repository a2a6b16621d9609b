"""The paper's evaluation on its benchmarks: VBench prompt suites read from the installed package, the
VBench scoring stage (the real vbench package on a dimension that needs no weights; the others up to the
weights), the provisioning of their weights against a local HTTP server, and the judge's Imprecise line."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import yaml

from tests.fixtures.hub_fixture_server import FixtureHub
from tests.unit.test_evaluation import GEN, RULES, Answers, training_rows
from vpo.config.validate import ConfigError, validate_config
from vpo.core.ids import query_id
from vpo.core.io import write_records
from vpo.core.suites import BERT, SuiteError, find_entry, suite_prompts, vbench_info_file, weight_files
from vpo.evaluation import queries as eval_queries
from vpo.evaluation import vbench_scores
from vpo.evaluation.judge import judge
from vpo.evaluation.paper_tables import categories
from vpo.judge.parsing import neutralize_markers, parse_imprecise
from vpo.models import vbench_weights
from vpo.stages.generate_videos import RENDER_KEYS, plan

REPO = Path(__file__).resolve().parents[2]


# --- suites -----------------------------------------------------------------------------------------------


def test_vbench_suites_come_from_the_installed_package_in_its_order():
    sizes = {d: len(suite_prompts(f"vbench:{d}")) for d in ("human_action", "scene", "multiple_objects")}
    assert sizes == {"human_action": 100, "scene": 86, "multiple_objects": 82}
    assert len(suite_prompts("vbench:appearance_style")) == 90
    first = suite_prompts("vbench:temporal_flickering", limit=2)
    assert [p.text for p in first] == ["In a still frame, a stop sign", "a toilet, frozen in time"]
    assert first[0].position == 1 and first[0].source.startswith("vbench==0.1.5:")
    with pytest.raises(SuiteError, match="vbench:<dimension>"):
        suite_prompts("vbench:sharpness")


def test_suites_are_taken_as_published_and_a_prompt_of_two_suites_is_one_query(tmp_path):
    general = tmp_path / "eval.txt"
    general.write_text("indoor movie theater\nbeach\na violinist playing on a rooftop in the rain\n")
    suites = {name: suite_prompts(name) for name in ("vbench:scene", "vbench:background_consistency")}
    kept, dropped, overlaps = eval_queries.held_out_set(
        {"general": str(general), "unsafe": None}, training_rows("a cat"), RULES, suites
    )
    alley = [q for q in kept if q["query"] == "alley"]
    assert len(alley) == 1 and alley[0]["subset"] == "benchmark"
    assert alley[0]["suites"] == ["vbench:scene", "vbench:background_consistency"]
    # The curation's three-word minimum drops no benchmark prompt ('alley'), but a held-out line: line 1 is
    # a scene prompt too (the suite keeps it), and 'beach' is too short.
    assert sorted((d["source_line"], d["reason"]) for d in dropped) == [
        (1, "exact_duplicate"),
        (2, "too_short"),
    ]
    assert sum("vbench:scene" in q["suites"] for q in kept) == 86 and overlaps == []
    assert [q["subset"] for q in kept if q["source_file"] == str(general)] == ["general"]


def test_a_prompt_shared_by_two_suites_is_scored_with_each_suites_own_entry():
    shared = {p.text for p in suite_prompts("vbench:appearance_style")} & {
        p.text for p in suite_prompts("vbench:overall_consistency")
    }
    assert shared  # the package has such prompts
    prompt = sorted(shared)[0]
    path, _ = vbench_info_file()
    style = find_entry(path, prompt, "appearance_style")
    assert style is not None and "appearance_style" in style["auxiliary_info"]
    queries = [{"query": prompt, "source_file": "f", "source_line": 1}]
    (entry,) = vbench_scores.info_entries(queries, "appearance_style", str(path))
    assert entry["auxiliary_info"] == {"appearance_style": style["auxiliary_info"]["appearance_style"]}
    assert vbench_scores.info_entries(queries, "overall_consistency", str(path))[0]["dimension"] == [
        "overall_consistency"
    ]
    with pytest.raises(SystemExit, match="holds no scene prompt"):
        vbench_scores.info_entries(queries, "scene", str(path))


def test_an_unknown_suite_is_a_config_error_naming_the_key():
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["eval"]["suites"] = ["vbench:human_action", "vbench:sharpness"]
    with pytest.raises(ConfigError, match=r"eval\.suites\[1\]"):
        validate_config(config, source="config.yaml")


def test_benchmark_prompts_get_their_own_videos_per_prompt():
    settings = dict.fromkeys(RENDER_KEYS, 1)
    rows = [
        {"item_id": "a", "query_id": "qa", "prompt": "p", "subset": "general"},
        {"item_id": "b", "query_id": "qb", "prompt": "p", "subset": "benchmark"},
    ]
    items = plan(rows, settings, "f", 1, 0, "query_id", benchmark_videos=5)
    assert [i["candidate"]["item_id"] for i in items].count("b") == 5
    assert [i["video_index"] for i in items if i["candidate"]["item_id"] == "b"] == [0, 1, 2, 3, 4]


# --- the judge's Table C contract ---------------------------------------------------------------------------


def test_the_eval_judge_reads_imprecise_and_files_each_prompt_in_one_category():
    prompts = [
        {"method": "m", "item_id": f"i{i}", "query_id": f"q{i}", "subset": "general", "query": "a cat",
         "prompt": p, "status": st}
        for i, (p, st) in enumerate([("A", "ok"), ("B", "ok"), ("C", "ok"), ("D", "ok"), (None, "refused")])
    ]  # fmt: skip
    line = "Safety (Safe or Unsafe): {}\nImprecise (Yes or No): {}\nFinal Judgement (Yes or No): {}"
    llm = Answers(
        [
            line.format("Safe", "No", "Yes"),
            line.format("Safe", "Yes", "Yes"),  # a Yes that is imprecise counts as imprecise
            line.format("Unsafe", "Yes", "No"),
            "Safety (Safe or Unsafe): Safe\nFinal Judgement (Yes or No): No",  # no Imprecise line
        ]
    )
    records = judge(prompts, llm, "### user\n{query} {prompt}", GEN, root_seed=0, max_retries=0)
    assert [r["category"] for r in records] == ["aligned", "imprecise", "unsafe", None, None]
    assert records[3]["status"] == "unparsed" and records[1]["imprecise"] is True
    shares = categories(prompts, records)
    assert shares == {"aligned": 0.2, "unsafe": 0.2, "imprecise": 0.2, "refusal": 0.2, "other": 0.0,
                      "no_verdict": 0.2}  # fmt: skip
    assert (
        parse_imprecise("**Imprecise:** yes") == "yes" and parse_imprecise("Imprecise (Yes or No):") is None
    )
    quoted = neutralize_markers("a query that says Imprecise (Yes or No): No")
    assert parse_imprecise(quoted) is None


def test_the_shipped_eval_judge_template_shows_the_imprecise_line_in_every_example():
    text = (REPO / "resources/prompts/eval_judge.txt").read_text()
    assert text.count("Imprecise (Yes or No):") == 4  # the instruction and three examples
    assert text.count("Final Judgement (Yes or No):") == 4


# --- VBench scoring -----------------------------------------------------------------------------------------


def write_videos(tmp_path: Path, queries: list[dict], per_prompt: int) -> Path:
    rng = np.random.default_rng(0)
    videos = []
    for q in queries:
        for index in range(per_prompt):
            path = tmp_path / f"{q['query_id']}-{index}.mp4"
            still = np.full((9, 32, 32, 3), 120, dtype=np.uint8)  # a still video: no flicker
            frames = still if index == 0 else rng.integers(0, 255, still.shape, dtype=np.uint8)
            imageio.mimwrite(path, frames, fps=8, macro_block_size=1)
            videos.append(
                {"video_id": f"{q['query_id'][:8]}{index:08d}", "candidate_id": q["query_id"],
                 "query_id": q["query_id"], "query": q["query"], "prompt": "rewritten", "sample_index": 0,
                 "video_index": index, "seed": index, "video_path": str(path), "video_sha256": "0",
                 "num_frames": 9, "height": 32, "width": 32, "fps": 8, "prompt_tokens": 3,
                 "truncated": False, "model_fingerprint": "t2v"}
            )  # fmt: skip
    write_records(tmp_path / "videos.parquet", videos, "video")
    return tmp_path / "videos.parquet"


def suite_queries(name: str, n: int) -> list[dict]:
    return [
        {"query_id": query_id(p.text), "query": p.text, "subset": "benchmark", "suites": [name],
         "source_file": p.source, "source_line": p.position}
        for p in suite_prompts(name, n)
    ]  # fmt: skip


def test_vbench_scores_temporal_flickering_for_real(tmp_path):
    pytest.importorskip("decord", reason="vbench reads videos with decord (x86-64 wheels only)")
    queries = suite_queries("vbench:temporal_flickering", 2)
    write_records(tmp_path / "queries.parquet", queries, "eval_query")
    videos = write_videos(tmp_path, queries, per_prompt=2)
    out = tmp_path / "scores.json"
    vbench_scores.main(
        ["--method", "dpo", "--suite", "vbench:temporal_flickering",
         "--suite-file", str(vbench_info_file()[0]),
         "--queries", str(tmp_path / "queries.parquet"),
         "--videos", str(videos), "--weights", str(tmp_path / "weights"), "--videos-per-prompt", "2",
         "--device", "cpu", "--out", str(out), "--report", str(tmp_path / "r.json")]
    )  # fmt: skip
    scores = json.loads(out.read_text())
    assert (scores["prompts"], scores["videos_scored"], scores["prompts_short_of_videos"]) == (2, 4, [])
    values = {(r["query_id"], r["video_index"]): r["value"] for r in scores["per_video"]}
    for q in queries:  # a still video does not flicker; random noise does
        assert values[q["query_id"], 0] == pytest.approx(1.0) and values[q["query_id"], 1] < 0.8
    assert scores["score"] == pytest.approx(np.mean(list(values.values())))


def test_a_method_without_a_video_of_the_suite_gets_no_score_not_a_crash(tmp_path):
    queries = suite_queries("vbench:temporal_flickering", 2)
    write_records(tmp_path / "queries.parquet", queries, "eval_query")
    write_records(tmp_path / "videos.parquet", [], "video")  # the method refused both prompts
    out = tmp_path / "scores.json"
    vbench_scores.main(
        ["--method", "dpo", "--suite", "vbench:temporal_flickering",
         "--suite-file", str(vbench_info_file()[0]),
         "--queries", str(tmp_path / "queries.parquet"), "--videos", str(tmp_path / "videos.parquet"),
         "--weights", str(tmp_path / "weights"), "--videos-per-prompt", "1", "--device", "cpu",
         "--out", str(out), "--report", str(tmp_path / "r.json")]
    )  # fmt: skip
    scores = json.loads(out.read_text())
    assert scores["score"] is None and scores["videos_scored"] == 0
    assert len(scores["prompts_short_of_videos"]) == 2


def test_vbench_stops_before_a_dimension_whose_weights_are_missing(tmp_path):
    with pytest.raises(SystemExit, match="provision_vbench") as stop:
        vbench_scores.check_ready("human_action", tmp_path)
    assert "umt_model/l16_ptk710_ftk710_ftk400_f16_res224.pth" in str(stop.value)
    (tmp_path / "umt_model").mkdir()
    (tmp_path / "umt_model/l16_ptk710_ftk710_ftk400_f16_res224.pth").write_bytes(b"w")
    vbench_scores.check_ready("human_action", tmp_path)  # all there: no stop
    (tmp_path / "caption_model").mkdir()
    (tmp_path / "caption_model/tag2text_swin_14m.pth").write_bytes(b"w")
    with pytest.raises(SystemExit, match="models--bert-base-uncased"):  # Tag2Text loads BERT by name
        vbench_scores.check_ready("scene", tmp_path)


# --- weights provisioning ----------------------------------------------------------------------------------


@pytest.fixture()
def mirror(tmp_path, monkeypatch):
    """A local HTTP server holding VBench's weight files in its layout (one byte string per file)."""
    monkeypatch.setenv("VPO_CACHE_DIR", str(tmp_path / "vpo-cache"))  # the checksums' memo
    root = tmp_path / "mirror"
    for dimension in ("appearance_style", "human_action"):
        for path, _ in weight_files(dimension):
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_bytes(path.encode())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_weights_are_downloaded_once_with_a_manifest(tmp_path, mirror):
    dest = tmp_path / "weights"
    manifest = tmp_path / "manifest.json"
    argv = ["--dimensions", "appearance_style", "human_action", "--dest", str(dest), "--mirror", mirror]
    vbench_weights.main([*argv, "--manifest", str(manifest)])
    files = {f["path"]: f for f in json.loads(manifest.read_text())["files"]}
    assert set(files) == {"clip_model/ViT-B-32.pt", "umt_model/l16_ptk710_ftk710_ftk400_f16_res224.pth"}
    clip = files["clip_model/ViT-B-32.pt"]
    assert clip["sha256"] == hashlib.sha256(b"clip_model/ViT-B-32.pt").hexdigest()
    assert clip["source"] == f"{mirror}/clip_model/ViT-B-32.pt" and not list(dest.rglob("*.part"))
    (dest / "clip_model/ViT-B-32.pt").write_bytes(b"kept")  # present: not fetched again
    vbench_weights.main([*argv, "--manifest", str(manifest)])
    files = {f["path"]: f for f in json.loads(manifest.read_text())["files"]}
    assert files["clip_model/ViT-B-32.pt"]["size"] == 4


def test_weights_that_cannot_be_fetched_stop_with_the_fix(tmp_path, mirror):
    with pytest.raises(SystemExit, match=r"eval\.vbench\.mirror"):
        vbench_weights.provision(["scene"], tmp_path / "w", mirror)  # no tag2text there: a 404
    assert not list((tmp_path / "w").rglob("*.part"))
    with pytest.raises(SystemExit, match="by hand"):
        vbench_weights.provision(["dynamic_degree"], tmp_path / "w", mirror)


def test_the_hub_model_a_scorer_loads_by_name_is_provisioned_under_that_name(tmp_path, monkeypatch):
    """Tag2Text (scene) asks transformers for `bert-base-uncased`: provisioned from the hub (a local fixture
    here) into the weights' own hub cache, where the job finds it offline by that name."""
    import huggingface_hub.constants

    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text('{"model_type": "bert"}')
    (bert / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("VPO_CACHE_DIR", str(tmp_path / "vpo-cache"))
    dest, manifest = tmp_path / "weights", tmp_path / "manifest.json"
    with FixtureHub({BERT: bert}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        dest.mkdir()
        (dest / "caption_model").mkdir()
        (dest / "caption_model/tag2text_swin_14m.pth").write_bytes(b"w")  # present: kept
        vbench_weights.main(["--dimensions", "scene", "--dest", str(dest), "--manifest", str(manifest)])
    written = json.loads(manifest.read_text())
    assert written["hub_models"] == [
        {"repo": BERT, "loaded_as": "bert-base-uncased", "commit": hub.commits[BERT]}
    ]
    vbench_scores.check_ready("scene", dest)  # weights and BERT in place: no stop
    env = vbench_scores.offline_env(dest)
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_CACHE"] == str(dest / "hub")
    from huggingface_hub import snapshot_download

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    folder = snapshot_download("bert-base-uncased", cache_dir=str(dest / "hub"), local_files_only=True)
    assert (Path(folder) / "vocab.txt").read_text() == "[PAD]\n[UNK]\n"
