"""`shoal hire --slurm` on a real single-node Slurm (tests/slurmd.py starts it)."""

from __future__ import annotations

import pytest

from tests import slurmd
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(300)
slurm, slurm_cluster = slurmd.slurm, slurmd.slurm_cluster


def test_the_test_cluster_runs_a_batch_job_to_completion(slurm_cluster, tmp_path):
    out = tmp_path / "out.txt"
    job = slurm_cluster.run("sbatch", "--parsable", "-o", str(out), "--wrap",
                            "echo ran on $SLURM_JOB_NODELIST").stdout.strip()
    wait_for(lambda: slurm_cluster.job_state(job) == "COMPLETED", 60,
             message=f"Slurm job {job} to complete")
    assert out.read_text().startswith("ran on ")
