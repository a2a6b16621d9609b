"""What a credential looks like, and where one hides: the one set of patterns and scanners the config
check, the run report and the RO-Crate export refuse or redact with."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

# Environment variables whose values are credentials.
SECRET_ENV_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
# Shapes of well-known API keys: OpenAI/Anthropic (sk-…), Hugging Face, GitHub, AWS, Google.
SECRET_VALUE = re.compile(
    r"\bsk-[A-Za-z0-9_\-]{20,}|\bhf_[A-Za-z0-9]{30,}|\bgh[pousr]_[A-Za-z0-9]{30,}|\bAKIA[0-9A-Z]{16}\b"
    r"|\bAIza[0-9A-Za-z_\-]{35}\b"
)
# A settings key that would hold a credential itself (api_key_env, which names a variable, is fine).
SECRET_KEY = re.compile(r"^(?:.*[_-])?(?:api[_-]?key|apikey|token|secret|password|passwd)$", re.IGNORECASE)
# URL query parameters that carry a credential (`?api_key=…`, `?token=…`, a signed URL's `sig=…`).
_SECRET_QUERY_PARAM = re.compile(r"key|token|secret|password|passwd|sig|signature|auth", re.IGNORECASE)


def url_has_credential(url: str) -> bool:
    """Whether a URL carries a credential: `user:password@host`, or a key-like query parameter."""
    parts = urlsplit(url)
    if parts.username or parts.password or "@" in parts.netloc:
        return True
    return any(_SECRET_QUERY_PARAM.search(name) for name, _ in parse_qsl(parts.query))


def key_shaped_values(node: Any, trail: str = "") -> Iterator[str]:
    """Dotted keys of every string in a nested config that is shaped like an API key (values never
    leave this function, so an error message built from its output cannot leak one)."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{trail}.{key}" if trail else str(key)
            if SECRET_VALUE.search(str(key)):
                yield f"{trail or '(top level)'}.<a key name>"
            else:
                yield from key_shaped_values(value, here)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from key_shaped_values(value, f"{trail}[{i}]")
    elif isinstance(node, str) and SECRET_VALUE.search(node):
        yield trail


# Shorter values (flags, "1") would match ordinary text and cannot be real keys.
MIN_SECRET_LENGTH = 8


def secret_env_values(environ: Mapping[str, str], config: Any = None) -> dict[str, str]:
    """name → value of every variable that holds a credential: the ones the config names as key holders
    (`*_env` keys) and the secret-looking ones (SECRET_ENV_NAME). No output may contain these values."""
    names = set(_key_env_names(config)) | {n for n in environ if SECRET_ENV_NAME.search(n)}
    return {n: environ[n] for n in sorted(names) if len(environ.get(n) or "") >= MIN_SECRET_LENGTH}


def _key_env_names(node: Any) -> Iterator[str]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            if str(key).endswith("_env") and isinstance(value, str):
                yield value
            else:
                yield from _key_env_names(value)
    elif isinstance(node, list):
        for value in node:
            yield from _key_env_names(value)


def secrets_in_text(text: str, env_values: Mapping[str, str]) -> list[str]:
    """What in `text` is a credential, described without the value: a variable's value, or a string
    shaped like an API key."""
    found = [f"the value of the environment variable {name}" for name, v in env_values.items() if v in text]
    if SECRET_VALUE.search(text):
        found.append("a string shaped like an API key")
    return found


def scrub(text: str, env_values: Mapping[str, str]) -> str:
    """`text` with every credential `secrets_in_text` finds replaced by [redacted] (also HTML-escaped)."""
    for value in sorted(env_values.values(), key=len, reverse=True):
        text = text.replace(value, "[redacted]").replace(html.escape(value), "[redacted]")
    return SECRET_VALUE.sub("[redacted]", text)


def keys_holding_secrets(node: Any, trail: str = "") -> Iterator[str]:
    """Dotted keys of settings that name a credential and carry a value (`api_key: ...`; `api_key_env`,
    which names a variable, is fine)."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            here = f"{trail}.{key}" if trail else str(key)
            if SECRET_KEY.match(str(key)) and isinstance(value, str) and value:
                yield here
            else:
                yield from keys_holding_secrets(value, here)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from keys_holding_secrets(value, f"{trail}[{i}]")


def redact(node: Any) -> Any:
    """`node` with the value of every key that names a credential itself replaced by <redacted>."""
    if isinstance(node, Mapping):
        return {
            k: "<redacted>" if SECRET_KEY.match(str(k)) and v not in (None, "") else redact(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [redact(v) for v in node]
    return node
