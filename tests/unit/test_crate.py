"""RO-Crate export (vpo.tools.crate) of a small synthetic run: structure, checksums, provenance, no
secrets, and conformance to the Provenance Run Crate profile (roc-validator, offline)."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from rocrate.rocrate import ROCrate

from vpo.tools.crate import CrateError, build_crate, main

COMMIT = "0123456789abcdef0123456789abcdef01234567"
SECRET = "sk-test-" + "Zq7" * 12
VERSIONS_CORE = {"python": "3.11.9", "polars": "2.1.0", "snakemake": "9.27.1"}
STAGES = ("curate", "draft", "sft_data", "train_sft")
JOB_REPORTS = (
    "queries/sft.report.json",
    "sft/drafts/shard-0.report.json",
    "models/sft.report.json",
    "sft/report.json",
)
# The train env has no snakemake (as in a conda job env): the engine's version comes from another job.
VERSIONS_TRAIN = {"python": "3.11.9", "torch": "2.11.0", "transformers": "5.6.0"}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows).write_parquet(path)
    return path


def job_report(
    root: Path,
    rel: str,
    stage: str,
    inputs: dict[str, str],
    params: dict[str, Any],
    argv: list[str],
    started: str,
    wall_s: float,
    versions: dict[str, str],
    slurm_job_id: str | None = None,
    dirty: bool = False,
) -> Path:
    """A report shaped like JobReport.write's (vpo/core/provenance.py), built by hand."""
    report = {
        "stage": stage,
        "counts": {"ok": 3, "failed": 0},
        "provenance": {
            "inputs_sha256": inputs,
            "params": params,
            "run_options": {"llms": {"judge": {"api_key_env": "OPENAI_API_KEY", "max_concurrency": 64}}},
            "code": {"commit": COMMIT, "dirty": dirty},
            "versions": versions,
            "host": "node-a" if slurm_job_id is None else "gpu-7",
            "slurm_job_id": slurm_job_id,
            "argv": argv,
            "started": started,
            "wall_s": wall_s,
        },
    }
    return write(root / rel, json.dumps(report, indent=2) + "\n")


def make_project(root: Path, dirty: bool = False) -> dict[str, Any]:
    """Snakefile, a rules file, a config, outputs of four jobs with their reports, an SFT checkpoint."""
    write(root / "Snakefile", 'configfile: "config/config.yaml"\ninclude: "workflow/rules/sft.smk"\n')
    write(root / "workflow/rules/sft.smk", "rule draft:\n    output: 'results/sft/drafts/shard-0.parquet'\n")
    write(root / "workflow/vpo/__init__.py", '"""stand-in for the package"""\n')
    write(root / "envs/core.yaml", "channels: [conda-forge]\n")
    write(
        root / "config/config.yaml",
        "seed: 0\nllms:\n  judge:\n    backend: openai\n    api_key_env: OPENAI_API_KEY\n",
    )
    raw = write(root / "resources/queries/demo_sft.txt", "a cute dog\na red car at night\n")
    template = write(root / "resources/prompts/teacher.txt", "Rewrite: {query}\n")
    curated = parquet(root / "results/queries/sft.parquet", [{"query_id": "q1", "query": "a cute dog"}])
    parquet(root / "results/queries/sft.dropped.parquet", [{"query_id": "q9", "reason": "short"}])
    shard = parquet(root / "results/queries/sft/shard-0.parquet", [{"query_id": "q1", "query": "a cute dog"}])
    drafts = parquet(root / "results/sft/drafts/shard-0.parquet", [{"item_id": "q1-0", "prompt": "A dog."}])
    write(root / "results/sft/dataset/vpo_sft.json", '[{"messages": []}]\n')
    write(root / "results/sft/dataset/dataset_info.json", '{"vpo_sft": {"file_name": "vpo_sft.json"}}\n')
    parquet(root / "results/sft/examples.parquet", [{"query_id": "q1", "source": "draft"}])
    write(root / "results/models/sft/config.json", '{"model_type": "llama"}\n')
    (root / "results/models/sft/model.safetensors").write_bytes(bytes(range(256)) * 8)
    write(root / "results/logs/draft/shard-0.log", "draft on host node-a\n")

    llm = {"backend": "openai", "model": "gpt-4o", "api_key_env": "OPENAI_API_KEY"}
    job_report(
        root,
        "results/queries/sft.report.json",
        "curate",
        {"resources/queries/demo_sft.txt": sha(raw)},
        {"min_words": 3},
        ["curate.py", "--input", "resources/queries/demo_sft.txt", "--out", "results/queries/sft.parquet"],
        "2025-03-01T10:00:00+0100",
        1.5,
        VERSIONS_CORE,
        dirty=dirty,
    )
    job_report(
        root,
        "results/sft/drafts/shard-0.report.json",
        "draft",
        {"results/queries/sft/shard-0.parquet": sha(shard), "resources/prompts/teacher.txt": sha(template)},
        {"llm": llm, "seed": 0},
        ["generate.py", "--role", "draft", "--out", "results/sft/drafts/shard-0.parquet"],
        "2025-03-01T10:00:05+0100",
        12.25,
        VERSIONS_CORE,
        slurm_job_id="4242",
        dirty=dirty,
    )
    job_report(
        root,
        "results/sft/report.json",
        "sft_data",
        # The curated table changed after this job read it: the recorded checksum no longer matches.
        {"results/sft/drafts/shard-0.parquet": sha(drafts), "results/queries/sft.parquet": "f" * 64},
        {},
        ["sft_data.py", "--out-dir", "results/sft/dataset", "--examples", "results/sft/examples.parquet"],
        "2025-03-01T10:01:00+0100",
        0.75,
        VERSIONS_CORE,
        dirty=dirty,
    )
    job_report(
        root,
        "results/models/sft.report.json",
        "train_sft",
        {"results/sft/dataset/vpo_sft.json": sha(root / "results/sft/dataset/vpo_sft.json")},
        {"train": {"learning_rate": 1e-5}},
        ["train.py", "--stage", "sft", "--dataset-dir", "results/sft/dataset", "--out", "results/models/sft"],
        "2025-03-01T10:02:00+0100",
        3600.0,
        VERSIONS_TRAIN,
        dirty=dirty,
    )
    return {"curated": curated, "drafts": drafts, "template": template}


def graph_of(crate_dir: Path) -> dict[str, dict[str, Any]]:
    metadata = json.loads((crate_dir / "ro-crate-metadata.json").read_text())
    return {entity["@id"]: entity for entity in metadata["@graph"]}


def ids(value: Any) -> list[str]:
    return [v["@id"] for v in (value if isinstance(value, list) else [value])]


def types(entity: dict[str, Any]) -> set[str]:
    kind = entity["@type"]
    return set(kind if isinstance(kind, list) else [kind])


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    root = tmp_path / "project"
    make_project(root)
    return root


def test_crate_structure_checksums_and_provenance(project: Path):
    out = build_crate(project, project / "results/run-crate", [Path("config/config.yaml")])
    metadata = json.loads((out / "ro-crate-metadata.json").read_text())
    graph = graph_of(out)

    # Structure: the descriptor conforms to RO-Crate 1.1 and is about the root Dataset, which lists parts.
    assert "https://w3id.org/ro/crate/1.1/context" in metadata["@context"]
    descriptor = graph["ro-crate-metadata.json"]
    assert "https://w3id.org/ro/crate/1.1" in ids(descriptor["conformsTo"])
    assert ids(descriptor["about"]) == ["./"]
    root = graph["./"]
    assert "Dataset" in types(root) and root["name"] and root["description"] and root["datePublished"]
    assert ids(root["mainEntity"]) == ["Snakefile"]
    assert set(ids(root["conformsTo"])) == {
        "https://w3id.org/ro/wfrun/process/0.5",
        "https://w3id.org/ro/wfrun/workflow/0.5",
        "https://w3id.org/ro/wfrun/provenance/0.5",
        "https://w3id.org/workflowhub/workflow-ro-crate/1.0",
    }
    assert all(graph[i]["@type"] == "CreativeWork" for i in ids(root["conformsTo"]))
    assert ids(root["license"]) == ["https://spdx.org/licenses/Apache-2.0"]
    readme = graph["README.md"]
    assert readme["encodingFormat"] == "text/markdown" and ids(readme["about"]) == ["./"]
    parts = ids(root["hasPart"])
    for part in parts:  # every payload entity is in the crate; nothing described-only is a payload part
        assert not part.startswith("#") and (out / part).exists(), part
    # Every reference resolves to an entity of the graph (or is an absolute URI).
    for entity in graph.values():
        for key, value in entity.items():
            if key.startswith("@") or not isinstance(value, dict | list):
                continue
            for ref in value if isinstance(value, list) else [value]:
                if isinstance(ref, dict) and "@id" in ref and not ref["@id"].startswith("http"):
                    assert ref["@id"] in graph, (entity["@id"], key, ref)

    # The workflow: Snakemake, the commit as version, rules copied, the package referenced by commit.
    workflow = graph["Snakefile"]
    assert types(workflow) == {"File", "SoftwareSourceCode", "ComputationalWorkflow", "HowTo"}
    language = graph[ids(workflow["programmingLanguage"])[0]]
    assert language["name"] == "Snakemake" and language["version"] == "9.27.1"
    assert workflow["version"] == COMMIT
    # The rule files are parts of the workflow; its hasPart is kept for the tools its steps run.
    rules = graph["workflow/rules/sft.smk"]
    assert ids(rules["isPartOf"]) == ["Snakefile"] and (out / "workflow/rules/sft.smk").is_file()
    assert ids(workflow["buildInstructions"]) == ["envs/core.yaml"]
    package = graph["#vpo-package"]
    assert package["version"] == COMMIT and COMMIT in package["description"]
    assert not (out / "workflow/vpo").exists()
    assert (out / "config/config.yaml").read_text() == (project / "config/config.yaml").read_text()

    # Outputs: copied, with the sha256 of the copy and of the original.
    expected = [
        "results/queries/sft.parquet",
        "results/queries/sft.dropped.parquet",
        "results/sft/examples.parquet",
        "results/sft/drafts/shard-0.parquet",
        "results/sft/dataset/vpo_sft.json",
        "results/sft/report.json",
        "results/models/sft.report.json",
        "Snakefile",
        "config/config.yaml",
    ]
    for rel in expected:
        entity = graph[rel]
        assert entity["sha256"] == sha(out / rel) == sha(project / rel), rel
        assert int(entity["contentSize"]) == (project / rel).stat().st_size
        assert entity["encodingFormat"]
    assert graph["results/queries/sft.parquet"]["encodingFormat"] == "application/vnd.apache.parquet"
    for entity in graph.values():
        if "File" in types(entity) and not entity["@id"].startswith("#"):
            assert entity["sha256"] == sha(out / entity["@id"]), entity["@id"]
    assert not (out / "results/logs").exists()

    # The checkpoint: a Dataset listing each file with its checksum, nothing of it copied.
    model = graph["#results/models/sft/"]
    assert "Dataset" in types(model) and "not copied" in model["description"]
    model_files = {graph[i]["name"]: graph[i] for i in ids(model["hasPart"])}
    assert set(model_files) == {"results/models/sft/config.json", "results/models/sft/model.safetensors"}
    for rel, entity in model_files.items():
        assert entity["sha256"] == sha(project / rel)
    assert not (out / "results/models/sft").exists()
    assert not any(p.startswith("results/models/sft/") for p in parts)

    # One CreateAction for the run (the workflow as instrument), one per report (its stage's tool as
    # instrument), timed, with inputs and results.
    run = graph["#run"]
    actions = {e["name"]: e for e in graph.values() if "CreateAction" in types(e) and e is not run}
    assert sorted(actions) == ["curate", "draft", "sft_data", "train_sft"]
    assert ids(root["mentions"]) == ["#run", *(a["@id"] for a in actions.values())]
    steps = {graph[i]["name"]: graph[i] for i in ids(workflow["step"])}
    assert sorted(steps) == ["curate step", "draft step", "sft_data step", "train_sft step"]
    controls = [e for e in graph.values() if "ControlAction" in types(e)]
    for name, action in actions.items():
        start = dt.datetime.fromisoformat(action["startTime"])
        end = dt.datetime.fromisoformat(action["endTime"])
        assert start.utcoffset() == dt.timedelta(hours=1)
        assert end > start
        # instrument: the stage's tool, which the workflow has as part and its step as workExample
        step = steps[f"{name} step"]
        assert "HowToStep" in types(step) and ids(action["instrument"]) == ids(step["workExample"])
        tool = graph[ids(action["instrument"])[0]]
        assert types(tool) == {"SoftwareApplication"} and tool["@id"] in ids(workflow["hasPart"])
        assert "#vpo-package" in ids(tool["softwareRequirements"])
        # the engine ran the job as that step
        [control] = [c for c in controls if ids(c["object"]) == [action["@id"]]]
        assert ids(control["instrument"]) == [step["@id"]]
    assert len(ids(workflow["hasPart"])) == len(ids(workflow["step"])) == len(controls) == 4
    assert ids(run["instrument"]) == ["Snakefile"]
    assert run["startTime"] == actions["curate"]["startTime"] == "2025-03-01T10:00:00+01:00"
    assert run["endTime"] == actions["train_sft"]["endTime"] == "2025-03-01T11:02:00+01:00"
    assert actions["curate"]["endTime"] == "2025-03-01T10:00:01.500+01:00"
    # The run read the config and the inputs from outside results/; it made the main outputs.
    assert ids(run["object"]) == [
        "config/config.yaml",
        "#resources/queries/demo_sft.txt",
        "#resources/prompts/teacher.txt",
    ]
    assert ids(run["result"]) == [
        "results/queries/sft.dropped.parquet",
        "results/queries/sft.parquet",
        "results/sft/examples.parquet",
        "results/sft/dataset/",
        "#results/models/sft/",
    ]
    [engine_run] = [e for e in graph.values() if "OrganizeAction" in types(e)]
    engine = graph[ids(engine_run["instrument"])[0]]
    assert (engine["name"], engine["version"]) == ("snakemake", "9.27.1")
    assert ids(engine_run["result"]) == ["#run"]
    assert ids(engine_run["object"]) == [c["@id"] for c in controls]
    train = actions["train_sft"]
    assert dt.datetime.fromisoformat(train["endTime"]) - dt.datetime.fromisoformat(
        train["startTime"]
    ) == dt.timedelta(hours=1)
    assert ids(train["result"]) == ["results/models/sft.report.json", "#results/models/sft/"]
    assert ids(train["object"]) == ["results/sft/dataset/vpo_sft.json"]

    draft = actions["draft"]
    assert draft["slurm_job_id"] == "4242" and "slurm_job_id" not in actions["curate"]
    assert graph[ids(draft["agent"])[0]]["name"] == "gpu-7"
    assert graph[ids(actions["curate"]["agent"])[0]]["name"] == "node-a"
    assert set(ids(draft["result"])) == {
        "results/sft/drafts/shard-0.report.json",
        "results/sft/drafts/shard-0.parquet",
    }
    inputs = {graph[i].get("name", i): graph[i] for i in ids(draft["object"])}
    # Inputs not in the crate are referenced with the checksum the job recorded.
    shard_input = inputs["results/queries/sft/shard-0.parquet"]
    assert shard_input["@id"].startswith("#") and shard_input["sha256"] == sha(
        project / "results/queries/sft/shard-0.parquet"
    )
    assert inputs["resources/prompts/teacher.txt"]["sha256"] == sha(project / "resources/prompts/teacher.txt")

    sft_data = actions["sft_data"]
    objects = ids(sft_data["object"])
    assert "results/sft/drafts/shard-0.parquet" in objects  # in the crate, same content: linked
    stale = [graph[i] for i in objects if i.startswith("#")]
    assert [(e["name"], e["sha256"]) for e in stale] == [("results/queries/sft.parquet", "f" * 64)]
    assert "changed" in stale[0]["description"]
    assert {"results/sft/dataset/", "results/sft/examples.parquet", "results/sft/report.json"} <= set(
        ids(sft_data["result"])
    )
    assert set(ids(actions["curate"]["result"])) == {
        "results/queries/sft.report.json",
        "results/queries/sft.parquet",
        "results/queries/sft.dropped.parquet",
    }

    # Software: one entity per package version the reports recorded.
    software = {
        (e["name"], e["version"])
        for e in graph.values()
        if "SoftwareApplication" in types(e) and e["@id"] not in ids(workflow["hasPart"])
    }
    assert software == {*VERSIONS_CORE.items(), *VERSIONS_TRAIN.items()}
    assert len(ids(workflow["softwareRequirements"])) == len(software)

    # ro-crate-py reads it back.
    crate = ROCrate(out)
    assert crate.mainEntity.id == "Snakefile"
    assert len(crate.get_by_type("CreateAction")) == 5  # the run and its 4 jobs
    assert crate.dereference("results/queries/sft.parquet")["sha256"] == sha(
        project / "results/queries/sft.parquet"
    )


# The one remote document the validator reads, the RO-Crate 1.1 JSON-LD context, served from a copy so
# that the test runs offline: rocrate/data/ro-crate.jsonld of the ro-crate-py 0.13.0 wheel (the 1.1
# context, version 1.1.0, CC0-1.0), byte for byte.
RO_CRATE_11_CONTEXT = Path(__file__).parents[1] / "fixtures" / "ro-crate-1.1-context.jsonld"
RO_CRATE_11_CONTEXT_URL = "https://w3id.org/ro/crate/1.1/context"
PROFILE = "provenance-run-crate-0.5"  # roc-validator's id; it checks the profiles this one extends too
# What the profiles recommend and the job reports cannot tell: who ran the run and published the crate
# (agent, author, publisher), where the project's code is published (url and absolute @id of the
# workflow, its rule files, the package and the stage tools), and what a Bioschemas ComputationalWorkflow
# needs beyond the profiles (creator, dateCreated, input and output, ...).
RECOMMENDED_LEFT = sorted(
    [
        *(("Action agent", e) for e in ("#run", *(f"#job/results/{r}" for r in JOB_REPORTS))),
        *(
            ("Application url", e)
            for e in ("Snakefile", "workflow/rules/sft.smk", "#vpo-package", *(f"#tool/{s}" for s in STAGES))
        ),
        *(("SoftwareApplication id", "http://schema.org/SoftwareApplication") for _ in STAGES),
        *(("SoftwareApplication id", "http://schema.org/SoftwareSourceCode") for _ in range(3)),
        ("SoftwareApplication id", "https://bioschemas.org/ComputationalWorkflow"),
        ("Main Workflow Bioschemas compliance", "Snakefile"),
        ("Root Data Entity: `author` property", "./"),
        ("Root Data Entity: `publisher` property", "./"),
    ]
)


@pytest.fixture(scope="module")
def validator_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """roc-validator's HTTP cache, holding the RO-Crate 1.1 context; in offline mode it reads only this."""
    import urllib3
    from requests.adapters import BaseAdapter, HTTPAdapter
    from requests_cache import CachedSession

    class LocalContext(BaseAdapter):
        def send(self, request, **kwargs):
            assert request.url == RO_CRATE_11_CONTEXT_URL, request.url
            raw = urllib3.HTTPResponse(
                body=io.BytesIO(RO_CRATE_11_CONTEXT.read_bytes()),
                headers={"Content-Type": "application/ld+json"},
                status=200,
                preload_content=False,
                request_url=request.url,
            )
            return HTTPAdapter().build_response(request, raw)

        def close(self) -> None:
            pass

    cache = tmp_path_factory.mktemp("roc-validator") / "http_cache"
    with CachedSession(cache_name=str(cache), backend="sqlite", expire_after=-1) as session:
        session.mount("https://", LocalContext())
        session.mount("http://", LocalContext())
        session.get(RO_CRATE_11_CONTEXT_URL).raise_for_status()
    return cache


def validate(crate: Path, cache: Path, severity: str) -> tuple[bool, list[tuple[str, str, str]]]:
    """Whether roc-validator passes `crate` against the Provenance Run Crate 0.5 profile at `severity`,
    and the (severity, check, entity) of each issue it finds at that severity or above."""
    from rocrate_validator import services
    from rocrate_validator.models import Severity, ValidationSettings

    settings = ValidationSettings(
        rocrate_uri=str(crate),
        profile_identifier=PROFILE,
        requirement_severity=Severity[severity],
        offline=True,
        cache_path=cache,
    )
    result = services.validate(settings)
    issues = [
        (i.severity.name, i.check.name, _crate_relative(str(i.violatingEntity))) for i in result.get_issues()
    ]
    return result.passed(), sorted(issues)


def _crate_relative(entity: str) -> str:
    """An entity as the validator names it (./Snakefile, ./#run), as the crate does (Snakefile, #run)."""
    return entity[2:] if entity.startswith("./") and entity != "./" else entity


def test_crate_conforms_to_the_provenance_run_crate_profile(project: Path, validator_cache: Path):
    out = build_crate(project, project / "results/run-crate", [Path("config/config.yaml")])
    assert validate(out, validator_cache, "REQUIRED") == (True, [])
    passed, issues = validate(out, validator_cache, "RECOMMENDED")
    assert not passed and [(check, entity) for _, check, entity in issues] == RECOMMENDED_LEFT
    assert {severity for severity, _, _ in issues} == {"RECOMMENDED"}


def _drop_conforms_to(graph: dict[str, dict[str, Any]]) -> None:
    del graph["./"]["conformsTo"]


def _drop_license(graph: dict[str, dict[str, Any]]) -> None:
    del graph["./"]["license"]


def _jobs_run_by_the_workflow(graph: dict[str, dict[str, Any]]) -> None:
    """The crate's shape before it conformed: each job an action of the workflow, its tool unused."""
    for entity in graph.values():
        if entity["@id"].startswith("#job/"):
            entity["instrument"] = {"@id": "Snakefile"}


@pytest.mark.parametrize(
    ("damage", "check"),
    [
        (_drop_conforms_to, "Root Data Entity conformsTo"),
        (_drop_license, "Crate license"),
        (_jobs_run_by_the_workflow, "Tool inverse instrument"),
    ],
)
def test_the_validator_catches_a_crate_that_does_not_conform(
    project: Path, validator_cache: Path, damage: Callable[[dict[str, dict[str, Any]]], None], check: str
):
    out = build_crate(project, project / "results/run-crate", [Path("config/config.yaml")])
    metadata = json.loads((out / "ro-crate-metadata.json").read_text())
    damage({entity["@id"]: entity for entity in metadata["@graph"]})
    (out / "ro-crate-metadata.json").write_text(json.dumps(metadata))
    passed, issues = validate(out, validator_cache, "REQUIRED")
    assert not passed and check in {name for _, name, _ in issues}


def test_license_is_an_spdx_id_or_a_url(project: Path):
    out = build_crate(project, project / "results/run-crate", [], crate_license="CC-BY-4.0")
    assert graph_of(out)["https://spdx.org/licenses/CC-BY-4.0"]["identifier"] == "CC-BY-4.0"
    url = "https://example.org/terms"
    out = build_crate(project, project / "results/run-crate", [], crate_license=url)
    assert ids(graph_of(out)["./"]["license"]) == [url]
    with pytest.raises(CrateError, match="--license 'see terms': neither an SPDX license id"):
        build_crate(project, project / "results/run-crate", [], crate_license="see terms")


def test_no_secret_value_reaches_the_crate(project: Path):
    out = build_crate(project, project / "results/run-crate", [Path("config/config.yaml")])
    texts = [p.read_text(errors="replace") for p in out.rglob("*") if p.is_file() and p.suffix != ".parquet"]
    assert any("OPENAI_API_KEY" in t for t in texts)  # the variable's name is kept ...
    assert not any(SECRET in t for t in texts)  # ... its value never
    draft = json.loads((out / "results/sft/drafts/shard-0.report.json").read_text())
    assert draft["provenance"]["params"]["llm"]["api_key_env"] == "OPENAI_API_KEY"


@pytest.mark.parametrize(
    ("leak", "message"),
    [
        ({"llm": {"api_key": "abc123xyz"}}, "params.llm.api_key carries a value"),
        ({"note": SECRET}, "environment variable OPENAI_API_KEY"),
    ],
)
def test_a_report_holding_a_key_is_refused(project: Path, leak: dict[str, Any], message: str):
    path = project / "results/sft/drafts/shard-0.report.json"
    report = json.loads(path.read_text())
    report["provenance"]["params"].update(leak)
    path.write_text(json.dumps(report))
    with pytest.raises(CrateError, match=message):
        build_crate(project, project / "results/run-crate", [])
    assert not (project / "results/run-crate").exists()


def test_zip_variant(project: Path):
    out = build_crate(project, project / "results/run-crate.zip", [Path("config/config.yaml")])
    assert out.suffix == ".zip" and zipfile.is_zipfile(out)
    with zipfile.ZipFile(out) as archive:
        names = set(archive.namelist())
        metadata = json.loads(archive.read("ro-crate-metadata.json"))
        assert (
            archive.read("results/sft/dataset/vpo_sft.json")
            == (project / "results/sft/dataset/vpo_sft.json").read_bytes()
        )
    assert {
        "Snakefile",
        "workflow/rules/sft.smk",
        "config/config.yaml",
        "results/queries/sft.parquet",
    } <= names
    assert not any(n.startswith("results/models/sft/") for n in names)
    actions = [e for e in metadata["@graph"] if e["@type"] == "CreateAction"]
    assert len(actions) == 5  # the run and its 4 jobs
    assert len(ROCrate(out).get_by_type("CreateAction")) == 5
    assert "README.md" in names


def test_dirty_tree_copies_the_package_and_marks_the_version(tmp_path: Path):
    root = tmp_path / "project"
    make_project(root, dirty=True)
    out = build_crate(root, tmp_path / "crate", [])
    graph = graph_of(out)
    assert graph["Snakefile"]["version"] == f"{COMMIT}-dirty"
    assert ids(graph["#vpo-package"]["hasPart"]) == ["workflow/vpo/__init__.py"]
    assert (out / "workflow/vpo/__init__.py").is_file()


def test_cli_writes_rewrites_and_skips_earlier_crates(project: Path, capsys: pytest.CaptureFixture[str]):
    main(["--root", str(project)])  # defaults: results/run-crate, config/config.yaml
    out = project / "results/run-crate"
    printed = capsys.readouterr().out
    assert (
        printed.startswith(f"wrote {out}: ") and " entities, " in printed and printed.rstrip().endswith("MB")
    )
    assert "config/config.yaml" in graph_of(out)
    # A second export (the first crate's report copies are not jobs) replaces the folder in place.
    main(["--root", str(project), "--out", str(project / "results/other-crate")])
    main(["--root", str(project)])
    for crate in (out, project / "results/other-crate"):
        actions = [e for e in graph_of(crate).values() if e["@type"] == "CreateAction"]
        assert len(actions) == 5  # the run and its 4 jobs
    assert not [p for p in (project / "results").iterdir() if p.name.endswith(".tmp")]


def test_out_that_is_not_a_crate_is_left_alone(project: Path):
    write(project / "notes/todo.txt", "keep me\n")
    with zipfile.ZipFile(project / "other.zip", "w") as archive:
        archive.writestr("todo.txt", "keep me too")
    for target in ("notes", "other.zip", "notes/todo.txt"):
        with pytest.raises(SystemExit, match="is not an RO-Crate"):
            main(["--root", str(project), "--out", str(project / target)])
    assert (project / "notes/todo.txt").read_text() == "keep me\n"
    with zipfile.ZipFile(project / "other.zip") as archive:
        assert archive.namelist() == ["todo.txt"]
    # An earlier zip export is replaced.
    main(["--root", str(project), "--out", str(project / "run.zip")])
    main(["--root", str(project), "--out", str(project / "run.zip")])
    with zipfile.ZipFile(project / "run.zip") as archive:
        assert "ro-crate-metadata.json" in archive.namelist()


def test_no_reports_says_to_run_the_workflow_first(tmp_path: Path):
    write(tmp_path / "Snakefile", "")
    (tmp_path / "results").mkdir()
    write(tmp_path / "results/README.md", "outputs land here\n")
    with pytest.raises(SystemExit) as err:
        main(["--root", str(tmp_path)])
    message = str(err.value)
    assert str(tmp_path / "results") in message and "run the workflow first" in message
    assert not (tmp_path / "results/run-crate").exists()


def test_missing_config_names_the_file(project: Path):
    with pytest.raises(CrateError, match=r"config/paper\.yaml: config file not found"):
        build_crate(project, project / "results/run-crate", [Path("config/paper.yaml")])


def test_reports_written_by_jobreport_and_jobs_at_two_commits(project: Path):
    """A report from JobReport itself is read like the hand-built ones; mixed commits are recorded."""
    from vpo.core.provenance import JobReport

    pairs = parquet(project / "results/dpo/pairs.parquet", [{"pair_id": "p1"}])
    report = JobReport("build_pairs", params={"shuffle_seed": 0})
    report.add_inputs([project / "results/sft/examples.parquet"])
    report.counts["pairs"] = 1
    report.write(project / "results/dpo/pairs.report.json")
    written = json.loads((project / "results/dpo/pairs.report.json").read_text())
    other = "f" * 40
    written["provenance"]["code"] = {"commit": other, "dirty": False}
    written["provenance"]["started"] = "2030-01-01T00:00:00+0000"  # the latest job
    (project / "results/dpo/pairs.report.json").write_text(json.dumps(written))

    graph = graph_of(build_crate(project, project / "results/run-crate", []))
    action = next(e for e in graph.values() if e.get("name") == "build_pairs")
    assert action["startTime"] == "2030-01-01T00:00:00+00:00" and action["endTime"]
    assert ids(action["object"]) == ["results/sft/examples.parquet"]
    assert set(ids(action["result"])) == {"results/dpo/pairs.report.json", "results/dpo/pairs.parquet"}
    assert graph["results/dpo/pairs.parquet"]["sha256"] == sha(pairs)
    workflow = graph["Snakefile"]
    assert workflow["version"] == other and COMMIT in workflow["description"]
    assert other in action["description"]
