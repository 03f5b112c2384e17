"""A single-node SLURM cluster for the tests marked `cluster` (see local_slurm.py).

Where SLURM cannot run (not installed, not root) the tests are skipped with the reason;
with BIOFA_REQUIRE_CLUSTER=1 (set by .ci/run once it has installed SLURM) they fail instead.
"""

import os

import pytest

import local_slurm


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slurm")
    try:
        local_slurm.start(folder)
    except local_slurm.ClusterUnavailable as error:
        if os.environ.get("BIOFA_REQUIRE_CLUSTER") == "1":
            pytest.fail(f"local SLURM did not start: {error}")
        pytest.skip(f"no local SLURM: {error}")
    yield folder
    local_slurm.stop(folder)
