"""A real multi-process Ray cluster on loopback: `ray start --head` plus a second worker node.

Run with ``pytest -m cluster`` (CI does). Everything listens on 127.0.0.x only: the head on
127.0.0.2, the worker node on 127.0.0.3 (Ray rewrites 127.0.0.1 itself to the machine's
outward address, so the test uses other loopback addresses).
"""

from __future__ import annotations

import os
import signal
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loop.run.lifecycle import run_status

pytestmark = pytest.mark.cluster

HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"


def _free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def _ray_bin() -> str:
    """The ``ray`` CLI of this Python: beside the interpreter in a venv, else on PATH (a system
    Python, e.g. in the container image, where pip puts scripts in /usr/local/bin)."""
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.exists() else (shutil.which("ray") or str(beside))


@pytest.fixture
def loopback_cluster(tmp_path):
    """A head and one worker node (1 CPU each) started with `ray start --block`; stopped after the test."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    port = _free_port(HEAD_IP)
    address = f"{HEAD_IP}:{port}"
    common = ["--num-cpus=1", "--disable-usage-stats", "--block"]
    head = subprocess.Popen([_ray_bin(), "start", "--head", f"--node-ip-address={HEAD_IP}", f"--port={port}",
                             "--include-dashboard=false", *common],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = [head]
    try:
        _wait_for_port(HEAD_IP, port, head)
        worker = subprocess.Popen([_ray_bin(), "start", f"--address={address}", f"--node-ip-address={WORKER_IP}", *common],
                                  env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(worker)
        _wait_for_nodes(address, 2, env)
        yield address, env
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _wait_for_port(ip: str, port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "ray start --head exited"
        with socket.socket() as s:
            if s.connect_ex((ip, port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"the Ray head did not listen on {ip}:{port}")


def _wait_for_nodes(address: str, n: int, env: dict, timeout: float = 90) -> None:
    code = f"import ray; ray.init(address={address!r}); print(sum(x['Alive'] for x in ray.nodes()))"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1] == str(n):
            return
        time.sleep(1)
    raise AssertionError(f"the cluster at {address} did not reach {n} nodes")


def test_two_smoke_cycles_on_a_two_node_cluster(loopback_cluster, tmp_path) -> None:
    address, env = loopback_cluster
    run = str(tmp_path / "run")
    out = subprocess.run(
        [sys.executable, "-m", "loop.cli", "start", "--run", run, "--policy", "worst10", "--preset", "smoke",
         "--cycles", "1", "--address", address, "--n-train", "8", "--n-val", "10", "--n-per-cycle", "6", "--size", "64"],
        env=env, capture_output=True, text=True, timeout=540,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "cycles 0..1 done" in out.stdout
    info = run_status(run)
    assert [c["state"] for c in info["cycles"]] == ["done", "done"]
    assert info["cycles"][1]["samples"] == {"worst:k=0.1,m=10,radius=0.05": 6}
