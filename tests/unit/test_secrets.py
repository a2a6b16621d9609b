"""The one set of credential scanners (vpo.core.secrets) the run report and the RO-Crate export use."""

from __future__ import annotations

from vpo.core.secrets import keys_holding_secrets, redact, scrub, secret_env_values, secrets_in_text

# Shaped like an OpenAI key so that the shape check fires too; not a real key.
FAKE_KEY = "sk-" + "a1B2" * 8
CONFIG = {"llms": {"judge": {"api_key_env": "MY_JUDGE_KEY", "model": "gpt-4o"}}}


def test_variables_named_by_the_config_or_shaped_like_secrets_are_found():
    environ = {"MY_JUDGE_KEY": "a-long-value-1", "HF_TOKEN": "hf_abcdefgh", "HOME": "/root", "GH_TOKEN": "1"}
    assert secret_env_values(environ, CONFIG) == {"HF_TOKEN": "hf_abcdefgh", "MY_JUDGE_KEY": "a-long-value-1"}
    # Without the config the judge's variable is still found by its name; a 1-char value is not a key.
    assert set(secret_env_values(environ)) == {"HF_TOKEN", "MY_JUDGE_KEY"}


def test_text_is_scanned_and_scrubbed_for_values_and_key_shapes():
    env = {"HF_TOKEN": "hf_abcdefgh"}
    text = f"a hf_abcdefgh b {FAKE_KEY} c <hf_abcdefgh>"
    assert secrets_in_text(text, env) == [
        "the value of the environment variable HF_TOKEN",
        "a string shaped like an API key",
    ]
    assert scrub(text, env) == "a [redacted] b [redacted] c <[redacted]>"
    assert secrets_in_text("nothing here", env) == []


def test_settings_that_hold_a_key_are_named_and_redacted():
    report = {"params": {"llm": {"api_key": "x", "api_key_env": "NAME"}, "runs": [{"token": "t"}]}}
    assert list(keys_holding_secrets(report)) == ["params.llm.api_key", "params.runs[0].token"]
    assert redact({"a": {"api_key": "x", "api_key_env": "NAME", "max_new_tokens": 3}}) == {
        "a": {"api_key": "<redacted>", "api_key_env": "NAME", "max_new_tokens": 3}
    }
