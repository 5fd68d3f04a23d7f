"""``loop bench loop``: the loop's own overhead per cycle, and how generation scales with workers."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from generators import get_generator
from loop.run.generation import plan_batches, run_plans
from loop.run.journal import Journal
from loop.config.run import RunConfig
from loop.run.lifecycle import start_run
from loop.run.names import JOURNAL
from policies import Proposal


def loop_overhead(run: str) -> dict[str, float]:
    """From a finished run's journal: per-cycle wall time, time in generate/train/evaluate, and the rest.

    The overhead is everything in a cycle that is not generating, training or evaluating
    (planning, policy proposals, journaling, actor calls, store listing).
    """
    events = Journal(str(Path(run) / JOURNAL)).events()
    steps = ("generated", "trained", "evaluated", "test_evaluated", "real_evaluated")
    cycle_wall = sum(e["wall_s"] for e in events if e["event"] == "cycle_done")
    work = sum(e["wall_s"] for e in events if e["event"] in steps)
    return {"cycle_wall_s": cycle_wall, "work_s": work, "overhead_s": cycle_wall - work,
            "overhead_fraction": (cycle_wall - work) / cycle_wall if cycle_wall else float("nan")}


def generation_scaling(workdir: str, generator: str = "grains", size: int = 128, n: int = 256,
                       batch_size: int = 16, workers: tuple[int, ...] = (1, 2)) -> dict[str, float]:
    """Samples/s of the Ray worker pool writing into a store, for each worker count."""
    from stores import RunStore

    gen = get_generator(generator)
    out: dict[str, float] = {}
    proposals = [Proposal(p, None, "random") for p in gen.space.sample(np.random.default_rng(0), n)]
    plans = plan_batches(proposals=proposals, first_sample_id=0, first_batch=0, batch_size=batch_size, seed=0,
                         cycle=0, split="train", size=size)
    warm_up = plans[:2]
    for w in workers:
        store = RunStore.create(str(Path(workdir) / f"gen-{w}"), generator_name=gen.name, generator_version=gen.version,
                                task=gen.task, space=gen.space, config={})
        run_plans(store.uri, generator, warm_up, workers=w)  # start the worker processes first
        rest = plans[len(warm_up):]
        t0 = time.perf_counter()
        run_plans(store.uri, generator, rest, workers=w)
        out[f"generate_{w}_workers_samples_per_s"] = sum(len(p) for p in rest) / (time.perf_counter() - t0)
    if len(workers) >= 2:
        out["generate_scaling"] = out[f"generate_{workers[-1]}_workers_samples_per_s"] / out[f"generate_{workers[0]}_workers_samples_per_s"]
    return out


def bench_loop(preset: str = "smoke", cycles: int = 1, workdir: str | None = None, **overrides: Any) -> dict[str, Any]:
    """Run a whole ``preset`` run of ``cycles`` cycles and the generation scaling test; one dict of figures."""
    from loop.run.ray_session import cluster_resources, ray_session

    with tempfile.TemporaryDirectory(dir=workdir) as tmp, ray_session():
        scaling = generation_scaling(tmp, workers=(1, max(2, min(4, int(cluster_resources().get("CPU", 2))))))
        run = str(Path(tmp) / "run")
        t0 = time.perf_counter()
        start_run(run, RunConfig.for_preset(preset, cycles=cycles, **overrides), say=lambda _line: None)
        total = time.perf_counter() - t0
        overhead = loop_overhead(run)
    return {"preset": preset, "cycles": cycles, "run_wall_s": total, **overhead, **scaling}
