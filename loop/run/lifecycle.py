"""Starting, resuming and reporting on runs: the glue between the CLI, the store, Ray and the driver."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any, Callable, Iterator, Mapping

import pyarrow.compute as pc

from generators import Generator, get_generator
from generators.registry import fit_space
from generators.space import ParamSpace
from loop.config.training import ConfigError, ModelConfig, Preset, TrainConfig, get_preset
from loop.run.driver import TEST_SPLIT, CycleDriver, TrainProgress
from loop.run.generation import check_generator_build, run_generator
from loop.run.adding import check_cycle_run
from loop.run.journal import Journal
from loop.run.names import CHECKPOINTS, JOURNAL, checkpoint_cycles
from loop.run.lock import RunLock
from loop.run.ray_session import ray_session
from loop.config.run import RealGroups, RunConfig, run_config_from
from policies import get_policy
from loop.errors import InputError
from loop.train.checkpoints import remove_temporaries



class RunError(InputError):
    """A run cannot be started or resumed as asked."""


def check_real_folders(groups: RealGroups) -> None:
    """Each named real folder must exist and be laid out as :class:`loop.evaluate.real.RealFolder` reads it."""
    from loop.evaluate.real import RealDataError, RealFolder

    for name, folder in groups:
        try:
            RealFolder(folder)
        except RealDataError as err:
            raise RunError(f"real group {name!r}: {err}") from None


def config_generator(config: RunConfig) -> Generator:
    """The generator of run config ``config``: its name built with ``run.generator_options`` and
    able to render ``run.space`` (:func:`loop.run.generation.run_generator`)."""
    return run_generator(config.generator, config.generator_options, config.space)


def run_space(config: RunConfig) -> ParamSpace:
    """The parameter space a run samples from: its own (``run.space``, completed the generator's
    way: :func:`generators.registry.fit_space`) or its generator's (with its options: the crack
    generator's ``texture`` lists its exemplars)."""
    generator = get_generator(config.generator, config.generator_options)
    if config.space is None:
        return generator.space
    return fit_space(generator, config.space, f"run.space (for the {config.generator} generator)")[1]


def check_run_config(config: RunConfig, *, real_folders: bool = True) -> None:
    """Fail early, before anything is written, on an unknown generator, policy or preset, generator
    options it does not take or cannot use (a missing exemplar folder), a space that does not fit
    the generator (its ``check_space`` hook: inside the grain generator's space, inside the crack
    generator's limits with textures among its exemplars), a policy that names dimensions the space
    lacks, or (with ``real_folders``) a missing or badly laid out real folder."""
    from policies import PolicyError

    generator = config_generator(config)
    space = run_space(config)
    for field in ("policy", "initial_policy"):
        spec = getattr(config, field)
        policy = get_policy(spec)
        try:
            policy.check_space(space)
        except PolicyError as err:
            raise PolicyError(f"run.{field} {spec!r} does not fit the {generator.name} generator's space: {err}") from None
    get_preset(config.preset)
    if get_policy(config.policy).uses_anchors() and not config.real_val:
        raise RunError(f"run.policy {config.policy!r} proposes around real validation images; give the run some "
                       "with --real-val DIR (a real labelled folder, or a folder of images)")
    if real_folders:
        check_real_folders(config.real)


def frozen_real_val(config: RunConfig) -> RunConfig:
    """``config`` with its real validation folder checked (:func:`loop.run.anchors.check_real_val`)
    and its digest set; a digest already set (a comparison's) must match the folder's."""
    from loop.run.anchors import RealValError, check_real_val

    if not config.real_val:
        return config
    digest = check_real_val(config.real_val, size=config.size, real=config.real)
    if config.real_val_digest is not None and config.real_val_digest != digest:
        raise RealValError(f"--real-val {config.real_val}: changed since it was frozen (digest "
                           f"{config.real_val_digest[:12]}…, now {digest[:12]}…); restore it, or use another OUT")
    return dataclasses.replace(config, real_val_digest=digest)


PRESET_OVERRIDES = {"encoder_weights": "model", "input_norm": "model", "freeze_random_encoder": "train",
                    "augment": "train"}
"""Preset settings a run or a comparison may set (``loop start --encoder-weights`` ...), and
the part of the preset (model or train configuration) each belongs to. ``augment`` is a dict of
:class:`loop.config.training.AugmentConfig` fields set over the preset's augmentation."""


def resolved_preset(config: RunConfig, overrides: Mapping[str, Any] | None = None) -> Preset:
    """The training preset of ``config`` for its generator's task, with ``overrides`` (names of
    :data:`PRESET_OVERRIDES`; ``None`` values keep the preset's) set and checked; a classifier's
    schedule sized to the run's initial training set (:meth:`Preset.sized_for`)."""
    generator = get_generator(config.generator)
    preset = get_preset(config.preset, task=generator.task).sized_for(config.n_train)
    for name, value in (overrides or {}).items():
        if name not in PRESET_OVERRIDES:
            raise RunError(f"override {name!r}: unknown; expected some of {', '.join(PRESET_OVERRIDES)}")
        if value is None:
            continue
        part = PRESET_OVERRIDES[name]
        if name == "augment":
            value = dataclasses.replace(preset.train.augment, **dict(value))
        preset = dataclasses.replace(preset, **{part: dataclasses.replace(getattr(preset, part), **{name: value})})
    return preset


def start_run(run: str, config: RunConfig, *, address: str | None = None,
              overrides: Mapping[str, Any] | None = None, say: Callable[[str], None] = print,
              train_progress: TrainProgress | None = None, threads: int | None = None,
              gpu_share: float | None = None) -> None:
    """Create run ``run`` with ``config`` and run all its cycles.

    ``overrides``: preset settings (:data:`PRESET_OVERRIDES`), frozen with the rest in run.toml.
    ``say`` gets the progress lines; ``train_progress`` gets the training progress records
    while a model trains (see :class:`loop.run.driver.CycleDriver`). ``threads``: torch CPU
    threads of the run's trainer and evaluator (default: every core of their node; a
    comparison driving several runs at once on CPUs gives each its share). ``gpu_share``: the
    fraction of a GPU the run's actors reserve together on a GPU cluster (default one whole GPU;
    a comparison driving more runs than there are GPUs gives each its share).
    """
    from stores import RunStore

    check_run_config(config)
    config = frozen_real_val(config)
    if config.space is not None:  # frozen complete: a space file may predate the generator's newer dimensions
        config = dataclasses.replace(config, space=run_space(config))
    preset = resolved_preset(config, overrides)
    generator = config_generator(config)  # its version names custom exemplars (their digest)
    if RunStore.exists(run):
        raise RunError(f"run {run} already exists; use `loop resume {run}` to go on with it")
    store = RunStore.create(run, generator_name=generator.name, generator_version=generator.version,
                            task=generator.task, space=run_space(config),
                            config={"run": config.to_dict(), **preset.to_dict()})
    _drive(store.uri, config.cycles, address, say, train_progress, started=True, threads=threads,
           gpu_share=gpu_share)


def resume_run(run: str, cycles: int | None = None, *, address: str | None = None,
               say: Callable[[str], None] = print, train_progress: TrainProgress | None = None,
               threads: int | None = None, gpu_share: float | None = None) -> None:
    """Go on with run ``run`` after a crash or a kill, or add cycles (``cycles`` = new total).

    ``say``, ``train_progress``, ``threads`` and ``gpu_share`` as for :func:`start_run`.
    """
    from stores import RunStore

    store = RunStore.open(run)
    check_cycle_run(store, run)
    journal = Journal(store.path(JOURNAL))
    config = run_config_from(store.config["run"])
    check_generator_build(store, config_generator(config))  # e.g. an exemplar folder changed since the start
    if config.real_val:
        from loop.run.anchors import check_unchanged

        check_unchanged(config.real_val, config.real_val_digest, f"run {run}")
    _check_journal_matches_data(store, journal)
    target = _target_cycles(journal, config)
    done = _cycles_done(journal)
    if cycles is None:
        if done and max(done) >= target:
            raise RunError(f"run {run} is finished (cycles 0..{target}); pass --cycles N (> {target}) to add cycles")
        cycles = target
    elif cycles < target:
        raise RunError(f"--cycles {cycles}: the run already aims at {target} cycles; expected at least {target}")
    _drive(store.uri, cycles, address, say, train_progress, started=False, threads=threads, gpu_share=gpu_share)


def _check_journal_matches_data(store: Any, journal: Journal) -> None:
    """Refuse a run that has samples, scores or checkpoints but no journal events: resuming
    it would redo its cycles over that data and overwrite its checkpoints."""
    if journal.events():
        return
    batches, ckpts = store.committed_batches(), checkpoint_cycles(store)
    if not (batches or ckpts or store.metric_fragment_names()):
        return  # nothing was done yet (a start killed before its first event)
    has = [f"{len(batches)} committed batches"]
    if ckpts:
        has.append(f"checkpoints of cycles {ckpts}")
    raise RunError(f"run {store.uri}: its journal {journal.uri} is missing or empty, but the run has "
                   f"{' and '.join(has)}; resuming would redo its cycles over them. Restore the journal "
                   "(e.g. from a backup), or start a new run with `loop start --run NEW`")


def _drive(run: str, cycles: int, address: str | None, say: Callable[[str], None],
           train_progress: TrainProgress | None, *, started: bool, threads: int | None = None,
           gpu_share: float | None = None) -> None:
    from stores import RunStore

    with RunLock(run) as lock:
        store = RunStore.open(run, recover=True)
        for batch in getattr(store, "recovered", []) or []:
            say(f"recovered: removed uncommitted batch {batch}")
        for name in remove_temporaries(store.path(CHECKPOINTS)):
            say(f"recovered: removed {CHECKPOINTS}/{name}, left by a checkpoint save that was killed")
        config = run_config_from(store.config["run"])
        preset = _preset_from_store(store.config)
        journal = Journal(store.path(JOURNAL), guard=lock.check)  # a lost lease stops the driver's writes
        journal.append("started" if started else "resumed", cycles=cycles, pid=os.getpid())
        with ray_session(address), _actors(threads, gpu_share) as (trainer, evaluator, workers):
            driver = CycleDriver(store, journal, config, preset, trainer=trainer, evaluator=evaluator,
                                 workers=config.workers or workers, say=say, train_progress=train_progress)
            driver.run(cycles)
        journal.append("finished", cycles=cycles)
        say(f"run {run}: cycles 0..{cycles} done")


def _preset_from_store(config: dict[str, Any]) -> Preset:
    try:
        return Preset(name=config["preset"], model=ModelConfig.from_dict(config["model"]),
                      train=TrainConfig.from_dict(config["train"]), description="as frozen in run.toml")
    except KeyError as missing:
        raise ConfigError(f"run.toml: config lacks {missing}; was this run made by `loop start`?") from None


def actor_options(cluster_resources: Mapping[str, float], gpu_share: float | None = None) -> dict[str, Any]:
    """Ray options for each of a run's two actors (trainer, evaluator) on a cluster with
    ``cluster_resources``: on a GPU cluster half of ``gpu_share`` of a GPU each (default a whole
    GPU per run), no CPU slot.

    >>> actor_options({"CPU": 16.0, "GPU": 1.0}, 0.25)
    {'num_gpus': 0.125, 'num_cpus': 0}
    """
    from loop.run.trainer_actor import trainer_actor_options

    if gpu_share is not None and not 0 < gpu_share <= 1:
        raise RunError(f"gpu_share: expected a fraction of a GPU in (0, 1], got {gpu_share!r}")
    # The actors work between generation phases, never during one, so they reserve no CPU
    # slot: generator tasks get every CPU of the cluster.
    options = {**trainer_actor_options(cluster_resources), "num_cpus": 0}
    if options.get("num_gpus"):
        # They also take turns on the GPU, so each reserves half the run's share: a whole GPU
        # each would leave the evaluator unscheduled, and the run waiting for it, on a one-GPU cluster.
        options["num_gpus"] = 0.5 * (gpu_share or 1.0)
    return options


@contextlib.contextmanager
def _actors(threads: int | None = None, gpu_share: float | None = None) -> Iterator[tuple[Any, Any, int]]:
    """The trainer and evaluator actors (``threads`` torch CPU threads each; default every core
    of their node; ``gpu_share`` of a GPU together, see :func:`actor_options`) and the number of
    generator workers the cluster allows."""
    import ray

    from loop.run.evaluator_actor import EvaluatorActor
    from loop.run.trainer_actor import TrainerActor

    resources = ray.cluster_resources()
    options = actor_options(resources, gpu_share)
    trainer = TrainerActor.options(**options).remote(num_threads=threads)
    evaluator = EvaluatorActor.options(**options).remote(num_threads=threads)
    try:
        yield trainer, evaluator, max(1, int(resources.get("CPU", 1)))
    finally:
        for actor in (trainer, evaluator):
            ray.kill(actor)


def best_real_val(cycles: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The finished cycle whose model scored best on the real validation images (``real_val``):
    highest mIoU, or for a classifier lowest balanced error (else error); ties go to the earlier
    cycle. ``{"cycle", "metric", "value"}``, or ``None`` when no finished cycle was scored there.
    More cycles fit the generator better and may fit real images worse, so this, not the last
    cycle, is the checkpoint to take to real micrographs."""
    scored = [c for c in cycles if c["state"] == "done" and c.get("real_val")]
    for metric, higher in (("miou", True), ("balanced_error", False), ("error", False)):
        values = [(c["real_val"][metric], c["cycle"]) for c in scored if c["real_val"].get(metric) is not None]
        if values:
            value, cycle = (max(values, key=lambda v: (v[0], -v[1])) if higher
                            else min(values, key=lambda v: (v[0], v[1])))
            return {"cycle": cycle, "metric": metric, "value": value}
    return None


def _target_cycles(journal: Journal, config: RunConfig) -> int:
    targets = [e["cycles"] for e in journal.events() if e["event"] in ("started", "resumed")]
    return max(targets, default=config.cycles)


def _cycles_done(journal: Journal) -> list[int]:
    return sorted({e["cycle"] for e in journal.events() if e["event"] == "cycle_done"})


def run_status(run: str) -> dict[str, Any]:
    """Where run ``run`` is: per cycle, samples by policy, validation, test and real scores, wall time per stage.

    A cycle's ``samples`` count the ``val`` and ``test`` rows by split and the training rows by
    policy; ``val`` and ``test`` hold the mean scores of the validation and held-out test sets
    (``test`` only in a run that has one), ``real`` the pooled real-image scores and
    ``real_groups`` those of each named folder (runs scored on one folder before groups existed
    have ``real`` only).

    A cycle's ``state``: ``done``, ``pending`` (not begun: no journal event, no sample), or, when
    begun and unfinished, ``running`` while a live process holds the run lock (``lock_holder``, see
    :meth:`loop.run.lock.RunLock.holder`) and ``interrupted`` when none does (the driver is gone:
    ``loop resume`` goes on with it). An unfinished cycle that has trained a while carries its
    latest ``train_progress`` record (the journaled event, with its ``time``). The run's own
    ``state``: ``running``, ``finished`` (every cycle done) or ``interrupted``.
    """
    from stores import RunStore

    store = RunStore.open(run)
    journal = Journal(store.path(JOURNAL))
    events = journal.events()
    check_cycle_run(store, run)
    config = run_config_from(store.config["run"])
    params = store.params()
    target = _target_cycles(journal, config)
    holder = RunLock(store.uri).holder()
    unfinished = "running" if holder else "interrupted"
    cycles = []
    for cycle in range(target + 1):
        rows = params.filter(pc.equal(params["cycle"], cycle))
        by_policy: dict[str, int] = {}
        for split, policy in zip(rows["split"].to_pylist(), rows["policy"].to_pylist()):
            key = split if split in ("val", TEST_SPLIT) else policy
            by_policy[key] = by_policy.get(key, 0) + 1
        entry: dict[str, Any] = {"cycle": cycle, "samples": by_policy, "wall_s": {}}
        begun = bool(by_policy)
        for event in events:
            if event.get("cycle") != cycle:
                continue
            begun = True  # planned at least
            kind = event["event"]
            if kind in ("generated", "trained", "evaluated", "test_evaluated", "real_evaluated", "real_val_evaluated",
                        "anchored", "cycle_done"):
                entry["wall_s"][kind] = round(float(event["wall_s"]), 2)
            if kind == "evaluated":
                entry["val"] = event["summary"]
            if kind == "test_evaluated":
                entry["test"] = event["summary"]
            if kind == "real_evaluated":
                entry["real"] = {k: v for k, v in event["summary"].items() if not k.endswith("_std")}
                if "groups" in event:  # runs before real groups scored one folder: no per-group scores
                    entry["real_groups"] = {name: {k: v for k, v in summary.items() if not k.endswith("_std")}
                                            for name, summary in event["groups"].items()}
            if kind == "real_val_evaluated":
                entry["real_val"] = {k: v for k, v in event["summary"].items() if not k.endswith("_std")}
            if kind == "anchored":
                # runs of before scored the real validation images only where they placed them
                entry.setdefault("real_val", event["summary"])
                if "inverse_r2" in event:  # held-out R² per dimension of the inverse model that placed them
                    entry["inverse_r2"] = event["inverse_r2"]
            if kind == "train_progress":
                entry["train_progress"] = {k: v for k, v in event.items() if k not in ("event", "cycle")}
        entry["state"] = "done" if "cycle_done" in entry["wall_s"] else (unfinished if begun else "pending")
        if entry["state"] == "done":
            entry.pop("train_progress", None)
        cycles.append(entry)
    all_done = all(c["state"] == "done" for c in cycles)
    return {"run": store.uri, "generator": store.generator_name, "policy": config.policy, "preset": config.preset,
            "target_cycles": target, "cycles": cycles, "best_real_val": best_real_val(cycles),
            "state": "running" if holder else ("finished" if all_done else "interrupted"), "lock_holder": holder,
            "finished": bool(events) and events[-1]["event"] == "finished"}
