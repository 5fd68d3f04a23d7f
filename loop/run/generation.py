"""Planning and rendering batches of samples into a run's store.

A :class:`BatchPlan` fixes everything about a batch before it is dispatched — sample ids,
seeds, parameters, parents — so a batch redone after a crash gives the same bytes.
Batches render inline (one worker) or as Ray tasks (several workers, local or cluster).
Every batch builds the run's generator from its name, its options and the run's own space
(:func:`generators.get_generator`), so each worker renders with the same exemplars and
accepts every parameter set of that space; the texture banks behind it are cached per process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from generators import Generator, get_generator
from generators.space import ParamSpace, with_defaults
from policies import Proposal
from loop.errors import InputError


@dataclass(frozen=True)
class BatchPlan:
    """Everything needed to render and commit one batch, decided before dispatch."""

    batch: int
    cycle: int
    split: str
    size: int
    sample_ids: tuple[int, ...]
    seeds: tuple[int, ...]
    params: tuple[dict[str, Any], ...]
    parent_ids: tuple[int | None, ...]
    policies: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.sample_ids)


def sample_seeds(seed: int, first_sample_id: int, n: int) -> list[int]:
    """Per-sample seeds derived from the run seed and the sample id (stable under resume)."""
    return [
        int(np.random.SeedSequence([seed, sid]).generate_state(1, dtype=np.uint32)[0])
        for sid in range(first_sample_id, first_sample_id + n)
    ]


def next_ids(store: Any) -> tuple[int, int]:
    """The first free sample id and the first free batch number of the run of ``store``."""
    params = store.params()
    first_id = int(max(params.column("sample_id").to_pylist(), default=-1)) + 1
    return first_id, max(store.committed_batches(), default=-1) + 1


def plan_batches(
    *,
    proposals: Sequence[Proposal],
    first_sample_id: int,
    first_batch: int,
    batch_size: int,
    seed: int,
    cycle: int,
    split: str,
    size: int,
) -> list[BatchPlan]:
    """Cut a policy's proposals into batch plans with consecutive sample ids and fixed seeds."""
    if batch_size < 1:
        raise InputError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
    seeds = sample_seeds(seed, first_sample_id, len(proposals))
    plans = []
    for b, start in enumerate(range(0, len(proposals), batch_size)):
        chunk = proposals[start:start + batch_size]
        plans.append(BatchPlan(
            batch=first_batch + b, cycle=cycle, split=split, size=size,
            sample_ids=tuple(range(first_sample_id + start, first_sample_id + start + len(chunk))),
            seeds=tuple(seeds[start:start + len(chunk)]),
            params=tuple(dict(p.params) for p in chunk),
            parent_ids=tuple(p.parent_id for p in chunk),
            policies=tuple(str(p.policy) for p in chunk),
        ))
    return plans


def run_generator(generator_name: str, options: Mapping[str, Any] | None = None,
                  space: ParamSpace | None = None) -> Generator:
    """The generator a run renders with: ``generator_name`` built with the run's ``options``
    (``run.generator_options``) and able to render its own ``space`` (``run.space``; ``None`` =
    the generator's)."""
    return get_generator(generator_name, options, space,
                         space_source=f"run.space (for the {generator_name} generator)")


def check_generator_build(store: Any, generator: Generator) -> None:
    """Raise :class:`InputError` when ``generator`` is not built from the data the run began with:
    the part of its version after ``+`` (the crack generator's exemplar digest) differs from the
    store's. The code part may differ (a newer generator renders an older run's dimensions as
    they were)."""
    have, want = generator.version.partition("+")[2], str(store.generator_version).partition("+")[2]
    if have != want:
        raise InputError(f"run {store.uri}: its {store.generator_name} generator was version "
                         f"{store.generator_version} when the run began, its options now give {generator.version}: "
                         "its data (e.g. the exemplar folder) changed since; restore it, or start a new run")


def render_plan(generator_name: str, plan: BatchPlan, *, options: Mapping[str, Any] | None = None,
                space: ParamSpace | None = None, generator: Generator | None = None,
                ) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray | None]:
    """Render one batch: parameter rows, images (n,H,W) and masks (or None for classification).

    The generator is :func:`run_generator` of ``generator_name``, ``options`` and ``space``
    (or ``generator``, built so already)."""
    generator = generator or run_generator(generator_name, options, space)
    rows, images, masks = [], [], []
    for sid, seed, params, parent, policy in zip(plan.sample_ids, plan.seeds, plan.params, plan.parent_ids,
                                                 plan.policies):
        # A run frozen before its generator gained dimensions renders them at their defaults.
        sample = generator.render(with_defaults(params, getattr(generator, "defaults", {})), seed, plan.size)
        images.append(sample.image)
        if sample.mask is not None:
            masks.append(sample.mask)
        rows.append({"sample_id": sid, "cycle": plan.cycle, "split": plan.split, "policy": policy,
                     "parent_id": parent, "seed": seed, "label": sample.label, **params})
    mask_array = np.stack(masks) if len(masks) == len(images) and masks else None
    return rows, np.stack(images), mask_array


_WRITER_STORES: dict[str, Any] = {}


def _writer_store(run_uri: str) -> Any:
    """The store at ``run_uri``, opened once per process: it reads only fragments it has not seen,
    so a long-lived worker's duplicate-id check does not re-read the whole run for every batch."""
    from stores import RunStore

    if run_uri not in _WRITER_STORES:
        _WRITER_STORES[run_uri] = RunStore.open(run_uri)
    return _WRITER_STORES[run_uri]


def write_plan(run_uri: str, generator_name: str, plan: BatchPlan, options: Mapping[str, Any] | None = None,
               space: ParamSpace | None = None) -> int:
    """Render a batch (:func:`render_plan`) and commit it to the store at ``run_uri``; returns the batch number.

    A batch already committed with this plan's samples (an earlier attempt) is left as it is;
    one committed with other samples is an error naming both writers; a generator whose data
    changed since the run began is an error too (:func:`check_generator_build`).
    """
    store = _writer_store(run_uri)
    if store.has_batch_of(plan.batch, plan.sample_ids):
        return plan.batch
    generator = run_generator(generator_name, options, space)
    check_generator_build(store, generator)
    rows, images, masks = render_plan(generator_name, plan, generator=generator)
    store.write_batch(plan.batch, rows, images, masks)
    return plan.batch


def run_plans(
    run_uri: str,
    generator_name: str,
    plans: Iterable[BatchPlan],
    *,
    workers: int = 1,
    on_done: Callable[[BatchPlan], None] | None = None,
    options: Mapping[str, Any] | None = None,
    space: ParamSpace | None = None,
) -> None:
    """Render and commit every plan, inline (``workers == 1``) or on Ray with ``workers`` tasks in flight.

    ``options`` and ``space``: the run's generator options and own space (:func:`run_generator`).
    On Ray each batch is a task retried by Ray when its worker dies; batches stream into
    the store as they finish.
    """
    plans = list(plans)
    options = dict(options) if options else None
    if workers <= 1:
        for plan in plans:
            write_plan(run_uri, generator_name, plan, options, space)
            if on_done:
                on_done(plan)
        return
    for plan in _ray_stream(run_uri, generator_name, plans, workers, options, space):
        if on_done:
            on_done(plan)


def _ray_stream(run_uri: str, generator_name: str, plans: list[BatchPlan], workers: int,
                options: dict[str, Any] | None, space: ParamSpace | None) -> Iterator[BatchPlan]:
    import ray

    remote = ray.remote(num_cpus=1, max_retries=3)(write_plan)
    pending: dict[Any, BatchPlan] = {}
    queue = list(reversed(plans))
    while queue or pending:
        while queue and len(pending) < workers:
            plan = queue.pop()
            pending[remote.remote(run_uri, generator_name, plan, options, space)] = plan
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            ray.get(ref)
            yield pending.pop(ref)
