"""One LLM interface, two backends (in-process transformers, OpenAI-compatible HTTP), one item cache."""

from vpo.llm.base import Request, Response
from vpo.llm.factory import open_llm

__all__ = ["Request", "Response", "open_llm"]
