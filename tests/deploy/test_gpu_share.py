"""The deploy configs give the cluster one GPU; the trainer and evaluator actors must share it,
and several runs' actors too when a comparison drives more runs than there are GPUs."""

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


SHARED = """
import contextlib
import ray
ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
from loop.run.lifecycle import _actors
from loop.study.compare import gpu_share_per_run
share = gpu_share_per_run(ray.cluster_resources(), 3)
with contextlib.ExitStack() as stack:
    actors = [a for _ in range(3) for a in stack.enter_context(_actors(gpu_share=share))[:2]]
    ready, _ = ray.wait([a.__ray_call__.remote(lambda self: 1) for a in actors], num_returns=6, timeout=240)
    print("share", share, "ready", len(ready))
"""


def test_three_runs_share_one_gpu() -> None:
    # Each run reserving a whole GPU, only the first run's actors would start within the wait.
    out = subprocess.run([sys.executable, "-c", SHARED], capture_output=True, text=True, timeout=400,
                         env={**os.environ, "RAY_ADDRESS": ""})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "share 0.3333333333333333 ready 6" in out.stdout
