"""Job reports: provenance that helps an audit, and no secret in it."""

from __future__ import annotations

import hashlib
import json

from vpo.core.provenance import JobReport
from vpo.core.run_options import RUN_OPTIONS_ENV, run_options

SECRET = "sk-live-0123456789abcdef"


def test_a_job_report_names_the_key_variable_but_never_holds_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    config = {
        "llms": {
            "judge": {
                "backend": "openai",
                "model": "gpt-4o",
                "api_key_env": "OPENAI_API_KEY",
                "mode": "batch",
            }
        },
        "prices": {"gpt-4o": {"input_per_mtok": 2.5, "output_per_mtok": 10.0}},
        "budget_usd": 20,
    }
    monkeypatch.setenv(RUN_OPTIONS_ENV, json.dumps(run_options(config)))
    source = tmp_path / "in.txt"
    source.write_text("a cat\n")
    report = JobReport("critique", {"llm": {"name": "judge", "model": "gpt-4o"}, "seed": 3})
    report.add_inputs([source])
    report.counts = {"items": 1}
    report.write(tmp_path / "r.json")

    text = (tmp_path / "r.json").read_text()
    assert SECRET not in text
    data = json.loads(text)
    prov = data["provenance"]
    assert prov["run_options"]["llms"]["judge"] == {"api_key_env": "OPENAI_API_KEY", "mode": "batch"}
    assert prov["run_options"]["budget_usd"] == 20
    assert prov["inputs_sha256"][str(source)] == hashlib.sha256(b"a cat\n").hexdigest()
    assert prov["params"]["seed"] == 3 and prov["started"] and prov["finished"] and prov["wall_s"] >= 0
    assert set(prov["versions"]) >= {"python", "openai", "polars"}
    assert "commit" in prov["code"] and "dirty" in prov["code"]
