"""``loop generate``: random samples added to a run's store, outside the cycles."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

import generators
from loop.errors import InputError
from loop.run.driver import policy_view
from loop.run.generation import BatchPlan, next_ids, plan_batches, run_plans
from loop.run.ray_session import ray_session
from policies import get_policy
from stores import RunStore, StoreError


def open_or_create(run: str, generator: generators.Generator, config: dict[str, Any]) -> RunStore:
    """The store of ``run``, made for ``generator`` when it does not exist yet."""
    try:
        store = RunStore.open(run, recover=True)
    except StoreError:
        if RunStore.exists(run):
            raise
        return RunStore.create(run, generator_name=generator.name, generator_version=generator.version,
                               task=generator.task, space=generator.space, config=config)
    if store.generator_name != generator.name:
        raise InputError(f"--generator {generator.name!r}: run {run} was made with generator {store.generator_name!r}")
    return store


def add_random_samples(run: str, generator_name: str, n: int, *, size: int, seed: int, split: str = "train",
                       batch_size: int = 16, workers: int = 1, address: str | None = None,
                       on_done: Callable[[BatchPlan], None] | None = None) -> RunStore:
    """Draw ``n`` random parameter sets and render them into ``run`` (made if absent).

    Sample ids and batches continue after the run's last ones, as a cycle's would. With
    ``workers > 1`` the batches render as Ray tasks (``address``, or an embedded local Ray).
    Returns the store.
    """
    generator = generators.get_generator(generator_name)
    generators.check_size(size)
    store = open_or_create(run, generator, {"seed": seed, "size": size})
    first_id, first_batch = next_ids(store)
    proposals = get_policy("random").propose(policy_view(store, cycle=0), n, np.random.default_rng([seed, first_id]))
    plans = plan_batches(proposals=proposals, first_sample_id=first_id, first_batch=first_batch,
                         batch_size=batch_size, seed=seed, cycle=0, split=split, size=size)
    if workers > 1:
        with ray_session(address, num_cpus=None if address else workers):
            run_plans(store.uri, generator_name, plans, workers=workers, on_done=on_done)
    else:
        run_plans(store.uri, generator_name, plans, workers=1, on_done=on_done)
    return RunStore.open(store.uri)
