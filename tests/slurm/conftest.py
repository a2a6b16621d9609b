"""The `slurm_cluster` fixture: one throwaway one-node Slurm cluster per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .cluster import Cluster, running_cluster, skip_reason


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """munge + slurmctld + slurmd from a temp config, node idle; every daemon stopped by PID afterwards."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with running_cluster(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster
