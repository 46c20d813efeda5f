"""The SLURM cluster the tests in this folder submit to: started once per session, stopped after."""

from __future__ import annotations

import pytest

from tests.slurm.cluster import CannotStart, Cluster, prepare_machine


@pytest.fixture(scope="session")
def slurm() -> Cluster:
    try:
        prepare_machine()
    except CannotStart as exc:
        pytest.skip(f"no SLURM cluster: {exc}")
    cluster = Cluster()
    try:
        cluster.start()
    except BaseException as exc:  # nothing is left running, whatever stopped the start
        cluster.stop(keep_logs=True)
        if isinstance(exc, CannotStart):
            pytest.skip(f"no SLURM cluster: {exc}")
        raise
    yield cluster
    cluster.stop()
