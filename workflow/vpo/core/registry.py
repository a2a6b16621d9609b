"""Backend tables: what a config enum value (`reward.backend`, `t2v.backend`) stands for.

Each family keeps one table (vpo.reward.factory.REWARD_BACKENDS, vpo.t2v.T2V_BACKENDS), which the rules
read for the conda env of its jobs and the stage reads to fingerprint and build the model. Adding a
backend is one entry, its module, and its name in the schema's enum (a test keeps the two equal).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Backend:
    # "package.module:Class" with a `from_spec(spec)` constructor; imported only when a job builds it,
    # so that the Snakefile, which reads `env`, never imports torch.
    target: str
    # The conda env file its jobs run in, relative to the repository root.
    env: str
    # The model's identity in every output's cache key, from the resolved spec, without loading weights
    # (a re-run that finds everything cached never pays the load).
    fingerprint: Callable[[dict[str, Any]], str]

    def build(self, spec: dict[str, Any]) -> Any:
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module), name).from_spec(spec)


def lookup(table: Mapping[str, Backend], key: str, name: str) -> Backend:
    """The entry `name` of `table`, or an error naming the config `key` and the choices."""
    if name not in table:
        raise ValueError(f"{key}: unknown backend {name!r}. Fix: use one of {', '.join(sorted(table))}.")
    return table[name]
