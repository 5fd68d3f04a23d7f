"""The two-node loopback Ray cluster of ``tests/loop/run/test_cluster.py`` with the run on the loopback S3 server.

Run with ``pytest -m cluster`` (CI does). The cluster's nodes are started with the S3
endpoint and credentials in their environment, as a real cluster's nodes get them from
their instance role or a Kubernetes Secret; the driver is a `loop start --address` process.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from s3server import BUCKET, keys

from loop.run.lifecycle import run_status
from tests.loop.run.test_cluster import loopback_cluster  # noqa: F401 - the fixture

pytestmark = pytest.mark.cluster


def test_two_smoke_cycles_on_a_two_node_cluster_with_the_run_on_s3(s3, loopback_cluster, tmp_path) -> None:
    address, env = loopback_cluster  # started after `s3`, so its nodes have the S3 environment
    assert env["AWS_ENDPOINT_URL"] == s3["AWS_ENDPOINT_URL"]
    run = f"s3://{BUCKET}/runs/cluster"
    out = subprocess.run(
        [sys.executable, "-m", "loop.cli", "start", "--run", run, "--policy", "worst10", "--preset", "smoke",
         "--cycles", "1", "--address", address, "--n-train", "8", "--n-val", "10", "--n-per-cycle", "6",
         "--size", "64"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=540,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "cycles 0..1 done" in out.stdout
    info = run_status(run)
    assert info["run"] == run and info["finished"]
    assert [c["state"] for c in info["cycles"]] == ["done", "done"]
    assert info["cycles"][1]["samples"] == {"worst:k=0.1,m=10,radius=0.05": 6}
    stored = keys("runs/cluster/")
    assert "runs/cluster/checkpoints/cycle_001.safetensors" in stored and "runs/cluster/metrics/val_c001.parquet" in stored
    assert list(tmp_path.iterdir()) == [], "the run wrote to local disk"
