"""The deploy configs give the cluster one GPU; the trainer and evaluator actors must share it."""

from __future__ import annotations

import os
import subprocess
import sys

CODE = """
import ray
ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
from loop.run.lifecycle import _actors
with _actors() as (trainer, evaluator, workers):
    refs = [trainer.device.remote(), evaluator.device_name.remote()]
    ready, _ = ray.wait(refs, num_returns=2, timeout=240)
    print("ready", len(ready), "workers", workers)
"""


def test_trainer_and_evaluator_both_start_on_a_one_gpu_cluster() -> None:
    # A Ray of its own (a process apart): the suite's shared Ray has no GPU.
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=400,
                         env={**os.environ, "RAY_ADDRESS": ""})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ready 2 workers 2" in out.stdout
