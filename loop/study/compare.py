"""``loop compare``: the same start fine-tuned by several policies, over seeds 1..N.

Layout of a comparison ``OUT``::

    OUT/compare.toml                 the frozen settings (policies, seeds, preset, cycles, sizes)
    OUT/runs/seed01/base             cycle 0 of seed 1: initial data, validation set, model
    OUT/runs/seed01/<policy>         a fork of the base (:mod:`loop.run.fork`) running cycles 1..C
    ...
    OUT/report.md, OUT/report.json, OUT/plots/   (:mod:`loop.study.report`)
    OUT/cycle_01/report.md, ...      the report after an earlier cycle (kept when OUT is extended)

For each seed the base run does cycle 0 once; each policy's run is a fork of it, so every
policy fine-tunes the same cycle-0 model with the same number of new samples per cycle
(the paper's setup, §3.3). Every run is a normal run directory (``loop status`` /
``loop resume`` work on it). ``loop compare`` resumes: a finished run is skipped, a
half-finished one is resumed (:func:`loop.run.lifecycle.resume_run`), a missing one is started or
forked; given more cycles than it has, it extends every run to the new count, keeping the
shorter comparison's report in ``OUT/cycle_NN``. Runs are driven from threads of this process on one Ray session, as many at once as
:func:`parallel_runs` allows.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from loop.config.run import RunConfig
from loop.study.compare_settings import (
    BASE, CompareError, Say, read_settings, resolve_settings, run_dir, split_policies,
)

def threads_per_run(cluster_resources: Mapping[str, float], slots: int) -> int | None:
    """Torch CPU threads for each of ``slots`` runs driven at once on a CPU cluster: its share
    of the cluster's cores (at least one), so that runs side by side do not each start a thread
    per core and oversubscribe them; ``None`` (a run's default, every core) for one run at a
    time or on GPUs.

    >>> threads_per_run({"CPU": 16.0}, 4), threads_per_run({"CPU": 2.0}, 3), threads_per_run({"CPU": 8.0}, 1)
    (4, 1, None)
    """
    if slots <= 1 or cluster_resources.get("GPU", 0):
        return None
    return max(1, int(float(cluster_resources.get("CPU", 1))) // slots)


def gpu_share_per_run(cluster_resources: Mapping[str, float], slots: int) -> float | None:
    """The fraction of a GPU each of ``slots`` runs driven at once reserves: ``None`` (a whole GPU,
    a run's default) on CPUs or when there is a GPU per run, else the GPUs shared out, so that
    ``--parallel 4`` on a one-GPU machine trains four runs side by side instead of one after another.

    >>> gpu_share_per_run({"CPU": 16.0, "GPU": 1.0}, 4), gpu_share_per_run({"GPU": 2.0}, 2), gpu_share_per_run({"CPU": 2.0}, 2)
    (0.25, None, None)
    """
    gpus = float(cluster_resources.get("GPU", 0))
    if gpus <= 0 or slots <= gpus:
        return None
    return gpus / slots


def parallel_runs(cluster_resources: Mapping[str, float]) -> int:
    """How many runs to drive at once on a cluster with ``cluster_resources``.

    A run's trainer and evaluator actors take turns on one GPU (half a GPU each, see
    :func:`loop.run.lifecycle.start_run`), so a GPU cluster drives one run per GPU (``--parallel``
    above that shares the GPUs, see :func:`gpu_share_per_run`). On CPUs a run's
    trainer uses every core of its node and its actors reserve no CPU slot, so Ray could not
    spread runs over nodes: one run at a time (``--parallel`` overrides).
    """
    return max(1, int(float(cluster_resources.get("GPU", 0))))


@dataclass
class _Job:
    name: str
    work: Callable[[], None]
    after: str | None = None


def _run_jobs(jobs: Sequence[_Job], slots: int, say: Say) -> list[tuple[str, BaseException]]:
    """Run ``jobs`` (in priority order; a job waits for the one it names in ``after``), at most
    ``slots`` at once. A failed job does not stop the others; its dependants are skipped.
    Returns the failed and the skipped jobs with their errors."""
    failures: list[tuple[str, BaseException]] = []
    state: dict[str, str] = {}
    if slots <= 1:
        for job in jobs:
            if job.after and state.get(job.after) != "done":
                state[job.name] = "skipped"
                failures.append((job.name, CompareError(f"skipped: {job.after} did not finish")))
                say(f"{job.name}: skipped ({job.after} did not finish)")
                continue
            try:
                job.work()
                state[job.name] = "done"
            except Exception as exc:  # noqa: BLE001 - one failed run must not stop the comparison
                state[job.name] = "failed"
                failures.append((job.name, exc))
                say(f"{job.name}: FAILED: {exc}")
        return failures

    pending = list(jobs)
    cond = threading.Condition()

    def take() -> _Job | None:
        with cond:
            while pending:
                for job in pending:
                    if job.after is None or state.get(job.after) in ("done", "failed", "skipped"):
                        pending.remove(job)
                        return job
                cond.wait()
            return None

    def worker() -> None:
        while (job := take()) is not None:
            if job.after and state.get(job.after) != "done":
                outcome = "skipped"
                with cond:
                    failures.append((job.name, CompareError(f"skipped: {job.after} did not finish")))
                say(f"{job.name}: skipped ({job.after} did not finish)")
            else:
                try:
                    job.work()
                    outcome = "done"
                except Exception as exc:  # noqa: BLE001 - one failed run must not stop the comparison
                    outcome = "failed"
                    with cond:
                        failures.append((job.name, exc))
                    say(f"{job.name}: FAILED: {exc}")
            with cond:
                state[job.name] = outcome
                cond.notify_all()

    threads = [threading.Thread(target=worker, name=f"compare-{i}", daemon=True) for i in range(slots)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures


def _finished(run: str, cycles: int) -> bool:
    """Whether run ``run`` has done cycles 0..``cycles``."""
    from loop.run.lifecycle import run_status

    done = {c["cycle"] for c in run_status(run)["cycles"] if c["state"] == "done"}
    return set(range(cycles + 1)) <= done


def _drive_run(run: str, config: RunConfig, *, base: str | None, address: str | None, say: Say,
               train_progress: Callable[[dict[str, Any]], None] | None = None,
               overrides: Mapping[str, Any] | None = None, threads: int | None = None,
               gpu_share: float | None = None) -> str:
    """Bring ``run`` to cycle ``config.cycles``: skip it, resume it, or start (or fork from ``base``) it,
    its actors with ``threads`` torch threads and ``gpu_share`` of a GPU (:func:`loop.run.lifecycle.start_run`).
    Returns what was done: ``"skipped"``, ``"resumed"``, ``"started"`` or ``"forked"``."""
    from loop.run.fork import fork_run
    from loop.run.lifecycle import resume_run, run_status, start_run
    from stores import RunStore

    if RunStore.exists(run):
        status = run_status(run)
        if status["policy"] != config.policy:
            raise CompareError(f"run {run}: has policy {status['policy']!r}, expected {config.policy!r}; "
                               "was it made by another comparison?")
        if _finished(run, config.cycles):
            say("done already, skipped")
            return "skipped"
        target = status["target_cycles"]
        resume_run(run, None if target >= config.cycles else config.cycles, address=address, say=say,
                   train_progress=train_progress, threads=threads, gpu_share=gpu_share)
        return "resumed"
    if base is None:
        start_run(run, config, address=address, overrides=overrides, say=say,
                  train_progress=train_progress, threads=threads, gpu_share=gpu_share)
        return "started"
    fork_run(base, run, policy=config.policy, cycles=config.cycles, say=say)
    resume_run(run, address=address, say=say, train_progress=train_progress, threads=threads, gpu_share=gpu_share)
    return "forked"


def compare(out: str, given: Mapping[str, Any], *, address: str | None = None, parallel: int | None = None,
            say: Say = print,
            train_progress: Callable[[dict[str, Any], str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the comparison in ``out`` and write its report; returns the report's data.

    ``given`` holds the :class:`CompareConfig` fields the caller set (``None`` = not set).
    ``train_progress(record, label)`` gets the training progress records of every run
    (:data:`loop.run.driver.TrainProgress`), ``label`` naming the run (``seed 1/3 random``).
    Raises :class:`CompareError` when some runs failed (the report still covers the rest).
    """
    from loop.config.fields import ConfigError
    from loop.config.run import real_groups
    from loop.run.lifecycle import check_real_folders
    from loop.run.ray_session import cluster_resources, ray_session
    from loop.study.report import write_report

    if parallel is not None and (isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1):
        raise CompareError(f"parallel: expected an integer >= 1, got {parallel!r}")
    if "policies" in given and isinstance(given["policies"], str):
        given = {**given, "policies": split_policies(given["policies"])}
    if given.get("real"):  # a missing or badly laid out folder fails now, before compare.toml is written
        try:
            check_real_folders(real_groups(given["real"], "--real"))
        except ConfigError as err:
            raise CompareError(str(err)) from None
    if given.get("real_val"):  # checked and digested now; a frozen comparison must have the same digest
        from loop.run.anchors import check_real_val

        frozen = read_settings(out)
        preset = given.get("preset") or (frozen.preset if frozen else "cpu")
        size = RunConfig.for_preset(preset, size=given.get("size") or (frozen.size if frozen else None)).size
        real = real_groups(given.get("real"), "--real") or (frozen.real if frozen else ())
        given = {**given, "real_val_digest": check_real_val(given["real_val"], size=size, real=real)}
    before = read_settings(out)
    config = resolve_settings(out, given)  # a bad primary endpoint or reference fails here
    if before is not None and config.cycles > before.cycles:
        # The report of the shorter comparison stays readable beside the longer one's.
        kept = write_report(out, at_cycle=before.cycles, say=say)
        say(f"compare {out}: extended from {before.cycles} to {config.cycles} cycles; the report after cycle "
            f"{before.cycles} is kept in {kept['files']['report']}")
    check_real_folders(config.real)
    started = time.time()
    total = config.seeds * (1 + len(config.policies))
    done = 0
    lock = threading.Lock()
    threads: int | None = None  # set once the Ray session tells the cluster's cores and GPUs
    gpu_share: float | None = None

    def job(seed: int, policy: str | None) -> _Job:
        label = f"seed {seed}/{config.seeds} {policy or BASE}"
        run = run_dir(out, seed, policy)
        base = None if policy is None else run_dir(out, seed)

        def work() -> None:
            nonlocal done
            tell = lambda line: say(f"[{label}] {line}")  # noqa: E731
            tell(f"{run}")
            sink = None if train_progress is None else (lambda record: train_progress(record, label))
            what = _drive_run(run, config.run_config(seed, policy), base=base, address=address, say=tell,
                              train_progress=sink, overrides=config.preset_overrides(), threads=threads,
                              gpu_share=gpu_share)
            with lock:
                done += 1
                count = done
            say(f"[{label}] {what}; {count}/{total} runs done, {time.time() - started:.0f} s so far")

        return _Job(name=label, work=work, after=None if policy is None else f"seed {seed}/{config.seeds} {BASE}")

    jobs = [job(seed, policy) for seed in range(1, config.seeds + 1) for policy in (None, *config.policies)]
    with ray_session(address):
        resources = cluster_resources()
        slots = parallel or parallel_runs(resources)
        threads = threads_per_run(resources, slots)
        gpu_share = gpu_share_per_run(resources, slots)
        say(f"compare {out}: {', '.join(config.policies)} × seeds 1..{config.seeds}, {config.cycles} cycles, "
            f"preset {config.preset}: {total} runs ({config.seeds} base + {total - config.seeds} policy runs), "
            f"{slots} at a time" + (f", {threads} CPU thread{'s' * (threads > 1)} each" if threads else "")
            + (f", {gpu_share:g} of a GPU each" if gpu_share else ""))
        failures = _run_jobs(jobs, slots, say)
    report = write_report(out, say=say)
    say(f"compare {out}: {total - len(failures)}/{total} runs ok in {time.time() - started:.0f} s; "
        f"report {report['files']['report']}")
    if failures:
        name, exc = failures[0]
        raise CompareError(f"{len(failures)} of {total} runs failed (first: {name}: {exc}); "
                           f"fix the cause and run `loop compare {out}` again to resume")
    return report
