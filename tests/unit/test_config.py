import copy

import pytest
import yaml

from tests.conftest import REPO
from vpo.config import ConfigError, config_doc, validate_config


@pytest.fixture
def config(monkeypatch):
    monkeypatch.chdir(REPO)
    return yaml.safe_load((REPO / "config/config.yaml").read_text())


def test_default_and_paper_configs_are_valid(config):
    validate_config(config)
    paper = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    checked = validate_config(paper, check_files=False)
    assert checked["sample"]["k"] == 4 and checked["train_dpo"]["pref_beta"] == 0.1


def with_change(config, path, value):
    changed = copy.deepcopy(config)
    *parents, last = path.split(".")
    node = changed
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return changed


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            "critique.generation.temperature",
            "hot",
            r"'critique\.generation\.temperature': 'hot' is not of type",
        ),
        ("critique.generation.temperature", 3, r"'critique\.generation\.temperature': 3 is greater than"),
        ("sample.k", 0, r"'sample\.k': 0 is less than the minimum"),
        (
            "sample.backend",
            "vllm",
            r"'sample\.backend': 'vllm' is not allowed\. Fix: use one of 'hf', 'openai'",
        ),
        ("train_dpo.pref_beta", KeyError, r"'train_dpo': 'pref_beta' is a required property"),
        ("curation.typo_key", 1, r"'curation': unknown key\(s\) \['typo_key'\]"),
        (
            "queries.sft",
            "resources/queries/missing.txt",
            r"'queries\.sft': file resources/queries/missing\.txt not found",
        ),
        ("critique.llm", "gpt-5", r"'critique\.llm': 'gpt-5' is not an entry of 'llms'"),
        (
            "critique.template",
            "resources/prompts/refine.txt",
            r"'critique\.template': .* lacks the slot\(s\) \{query\} \{prompt\}",
        ),
        ("curation.min_words", 500, r"'curation\.min_words' > 'curation\.max_words'"),
        ("sample.serve", "transformers", None),
    ],
)
def test_bad_values_name_the_key_and_the_fix(config, path, value, message):
    changed = with_change(config, path, value)
    if message is None:
        validate_config(changed)
        return
    with pytest.raises(ConfigError, match=message) as info:
        validate_config(changed)
    assert "Fix:" in str(info.value) or "required" in str(info.value)


def test_openai_llm_needs_an_endpoint(config):
    config["llms"]["smollm2"]["backend"] = "openai"
    with pytest.raises(ConfigError, match=r"'llms\.smollm2': backend openai needs base_url .* or serve"):
        validate_config(config)


def test_config_readme_is_generated_from_the_schema():
    assert (REPO / "config/README.md").read_text() == config_doc(), "run: vpo config-doc > config/README.md"


def test_every_schema_key_has_a_description():
    doc = config_doc()
    rows = [line for line in doc.splitlines() if line.startswith("| `")]
    assert len(rows) > 60
    undocumented = [r.split("|")[1] for r in rows if not r.split("|")[3].strip()]
    assert undocumented == []


def test_strings_from_the_command_line_become_the_type_the_schema_wants(config):
    # `snakemake --config sample='{k: 4}'` delivers {"k": "4"}.
    changed = with_change(config, "sample.k", "4")
    changed = with_change(changed, "draft.generation.temperature", "0.5")
    validated = validate_config(changed, check_files=False)
    assert validated["sample"]["k"] == 4
    assert validated["draft"]["generation"]["temperature"] == 0.5
    with pytest.raises(ConfigError, match=r"sample\.k.*'four'"):
        validate_config(with_change(config, "sample.k", "four"), check_files=False)
    with pytest.raises(ConfigError, match=r"sample\.k"):
        validate_config(with_change(config, "sample.k", "2.5"), check_files=False)
