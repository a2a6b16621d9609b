import copy
import re

import pytest
import yaml

from tests.conftest import REPO
from vpo.config.checks import unpinned_models
from vpo.config.doc import config_doc
from vpo.config.validate import ConfigError, validate_config


@pytest.fixture
def config(monkeypatch):
    monkeypatch.chdir(REPO)
    return yaml.safe_load((REPO / "config/config.yaml").read_text())


def test_default_and_paper_configs_are_valid(config):
    validate_config(config)
    paper = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    checked = validate_config(paper, check_files=False)
    assert checked["sample"]["k"] == 4 and checked["train_dpo"]["pref_beta"] == 0.1
    revisions = {name: m["revision"] for name, m in checked["models"].items()}
    # VisionReward-Video's commit could not be looked up: it follows main, and every DAG build says so.
    assert revisions.pop("visionreward-video") == "main"
    assert all(re.fullmatch(r"[0-9a-f]{40}", r) for r in revisions.values())
    assert [w.split(" ")[0] for w in unpinned_models(checked)] == ["models.visionreward-video.revision"]


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


KEY = "sk-" + "a1B2c3D4" * 4  # shaped like an OpenAI key; made up


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("queries.sft", "resources/queries/{k}.txt", r"'queries\.sft': .*braces"),
        ("draft.template", "resources/prompts/teacher\x00.txt", r"'draft\.template': .*control characters"),
        ("models.x$(touch y)", {"source": "a/b"}, r"'models\.x\$\(touch y\)': the name .* letters, digits"),
        ("llms.my llm", {"backend": "hf", "model": "smollm2-135m"}, r"'llms\.my llm': the name"),
        ("policy_model", "a;b", r"'policy_model': .* letters, digits"),
        ("t2v.pipeline", "CogVideoXPipeline; rm", r"'t2v\.pipeline': .*identifier"),
        (
            "train_sft.deepspeed",
            "resources/deepspeed/none.json",
            r"'train_sft\.deepspeed': file .* not found",
        ),
        (
            "models.smollm2-135m",
            {"source": "resources/model/smol"},
            r"does not exist \(and is no model hub id",
        ),
        (
            "models.smollm2-135m",
            {"source": "config/smol"},
            r"'models\.smollm2-135m\.source': config/smol does",
        ),
        ("models.smollm2-135m", {"source": "~/smol"}, r"'~' is not expanded"),
        (
            "models.smollm2-135m",
            {"source": "HuggingFaceTB/SmolLM2-135M-Instruct"},
            r"reads like a model hub id, but models\.smollm2-135m\.revision is null.*Fix: set",
        ),
        (
            "models.smollm2-135m",
            {"source": "HuggingFaceTB/SmolLM2-135M-Instruct", "revision": "a" * 40},
            None,
        ),
        (
            "models.smollm2-135m",
            {"source": "HuggingFaceTB/SmolLM2-135M-Instruct", "revision": "8afb486"},
            r"'models\.smollm2-135m\.revision': '8afb486' reads like a short commit SHA.*Fix: write the full",
        ),
        (
            "models.smollm2-135m",
            {"source": "resources/models/smollm2", "revision": "a" * 40},
            r"'models\.smollm2-135m\.source': .* is no model hub id `org/name`",
        ),
        (
            "models.smollm2-135m",
            {"source": "org/smol", "revision": "a" * 40, "build": "smollm2-gguf"},
            r"'models\.smollm2-135m\.build' and 'models\.smollm2-135m\.revision' are exclusive",
        ),
    ],
)
def test_hostile_names_and_paths_are_refused_with_the_fix(config, path, value, message):
    test_bad_values_name_the_key_and_the_fix(config, path, value, message)


def remote_llm(**fields):
    return {"backend": "openai", "base_url": "https://api.example.org/v1", "model": "gpt-4o", **fields}


@pytest.mark.parametrize(
    ("llm", "message"),
    [
        (remote_llm(api_key_env=KEY), r"llms\.remote\.api_key_env hold a value shaped like an API key"),
        (remote_llm(api_key_env="my key"), r"'llms\.remote\.api_key_env': .*NAME of an environment variable"),
        (remote_llm(api_key_env="xq" + KEY[3:]), r"'llms\.remote\.api_key_env': the value is refused"),
        (
            remote_llm(base_url=f"https://user:{KEY[:8]}@api.example.org/v1"),
            r"'llms\.remote\.base_url' carries",
        ),
        (remote_llm(base_url="https://api.example.org/v1?api_key=abc"), r"'llms\.remote\.base_url' carries"),
        (remote_llm(model=f"gpt-4o {KEY}"), r"llms\.remote\.model hold a value shaped like an API key"),
    ],
)
def test_keys_in_the_config_are_refused_and_never_repeated(config, llm, message):
    config["llms"]["remote"] = llm
    with pytest.raises(ConfigError, match=message) as info:
        validate_config(config)
    assert KEY[3:] not in str(info.value) and KEY[:8] not in str(info.value) and "Fix:" in str(info.value)


def test_a_key_anywhere_is_refused(config):
    config["eval"]["extra_methods"] = {"x": {"checkpoint": f"org/{KEY}"}}
    with pytest.raises(ConfigError, match=r"eval\.extra_methods\.x\.checkpoint hold a value shaped") as info:
        validate_config(config)
    assert KEY not in str(info.value)
    validate_config({**config, "eval": {**config["eval"], "extra_methods": {}}})  # the rest is fine
    config["llms"]["remote"] = remote_llm(api_key_env="OPENAI_API_KEY")
    validate_config({**config, "eval": {**config["eval"], "extra_methods": {}}})


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("sample.k", "0", r"'sample\.k': 0 is less than the minimum of 1"),  # not "'0' is not of type"
        ("train_sft.learning_rate", "1e-5", 1e-5),  # YAML 1.1 (PyYAML) reads unquoted 1e-5 as a string
        ("train_sft.learning_rate", "2E-6", 2e-6),
        ("train_sft.max_steps", "null", None),
        ("models.smollm2-135m.build", "null", None),  # an enum that allows null
        ("t2v.videos_per_prompt", "1e3", 1000),
        ("train_sft.learning_rate", "nan", r"'train_sft\.learning_rate': 'nan' is not of type 'number'"),
    ],
)
def test_command_line_strings_become_what_the_schema_wants(config, path, value, expected):
    changed = with_change(config, path, value)
    if isinstance(expected, str):
        with pytest.raises(ConfigError, match=expected):
            validate_config(changed, check_files=False)
        return
    node = validate_config(changed, check_files=False)
    for key in path.split("."):
        node = node[key]
    assert node == expected and type(node) is type(expected)


def test_query_files_that_cannot_be_read_or_would_be_empty_fail_at_config_time(config, tmp_path):
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("a calm lake at dawn\na café by the sea at night\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"'queries\.sft': .*latin1\.txt:2: byte 0xe9 is not UTF-8.*iconv"):
        validate_config(with_change(config, "queries.sft", str(latin1)))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(ConfigError, match=r"'queries\.dpo': .*empty\.txt holds no query"):
        validate_config(with_change(config, "queries.dpo", str(empty)))
    short = tmp_path / "short.txt"
    short.write_text("a cat\ndog\n!!!! ????\n")
    with pytest.raises(
        ConfigError, match=r"curation would keep none of the 3 queries .*2 too_short, 1 special_chars"
    ):
        validate_config(with_change(config, "queries.sft", str(short)))
