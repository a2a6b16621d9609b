"""What a credential looks like: the one set of patterns the config check, the run report and the
RO-Crate export refuse or redact with."""

from __future__ import annotations

import re
from collections.abc import Iterator
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
