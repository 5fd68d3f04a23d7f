"""``loop compare``: the same start fine-tuned by several policies, over seeds 1..N.

Layout of a comparison ``OUT``::

    OUT/compare.toml                 the frozen settings (policies, seeds, preset, cycles, sizes)
    OUT/runs/seed01/base             cycle 0 of seed 1: initial data, validation set, model
    OUT/runs/seed01/<policy>         a fork of the base (:mod:`loop.run.fork`) running cycles 1..C
    ...
    OUT/report.md, OUT/report.json, OUT/plots/   (:mod:`loop.study.report`)

For each seed the base run does cycle 0 once; each policy's run is a fork of it, so every
policy fine-tunes the same cycle-0 model with the same number of new samples per cycle
(the paper's setup, §3.3). Every run is a normal run directory (``loop status`` /
``loop resume`` work on it). ``loop compare`` resumes: a finished run is skipped, a
half-finished one is resumed (:func:`loop.run.lifecycle.resume_run`), a missing one is started or
forked. Runs are driven from threads of this process on one Ray session, as many at once as
:func:`parallel_runs` allows.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import re
import threading
import time
import tomllib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import fsspec
import tomli_w

from loop.config.run import DATA_PRESETS, RunConfig

SETTINGS_FILE = "compare.toml"
RUNS_DIR = "runs"
BASE = "base"
Say = Callable[[str], None]


class CompareError(ValueError):
    """A comparison cannot be run or resumed as asked."""


def split_policies(text: str) -> tuple[str, ...]:
    """Split ``--policies`` on commas; a piece that is only ``key=value`` continues the
    previous policy's settings, so ``random,worst:k=0.1,m=10,sobol`` gives three policies."""
    if not isinstance(text, str) or not text.strip():
        raise CompareError(f"--policies: expected a comma-separated list such as random,worst10, got {text!r}")
    policies: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            raise CompareError(f"--policies {text!r}: empty policy name between commas")
        if "=" in piece and ":" not in piece and policies and ":" in policies[-1]:
            policies[-1] += "," + piece
        else:
            policies.append(piece)
    return tuple(policies)


def policy_slug(policy: str) -> str:
    """Folder name of a policy's runs: the spec with every character other than letters,
    digits, ``.``, ``=`` and ``-`` turned into ``_`` (``worst:k=0.1,m=10`` → ``worst_k=0.1_m=10``)."""
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", policy)


@dataclass(frozen=True)
class CompareConfig:
    """The frozen settings of a comparison (``OUT/compare.toml``).

    ``policies`` are policy specs (:func:`policies.get_policy`), each run for ``cycles``
    adaptive cycles after the shared cycle 0; ``seeds`` runs per policy, seeds 1..N. Data
    sizes default to the preset's (:data:`loop.config.run.DATA_PRESETS`).
    """

    policies: tuple[str, ...]
    seeds: int
    preset: str = "cpu"
    cycles: int = 3
    generator: str = "grains"
    initial_policy: str = "random"
    n_train: int | None = None
    n_val: int | None = None
    n_per_cycle: int | None = None
    size: int | None = None
    real_dir: str | None = None

    def __post_init__(self) -> None:
        from policies import get_policy

        if isinstance(self.policies, str):
            object.__setattr__(self, "policies", split_policies(self.policies))
        object.__setattr__(self, "policies", tuple(self.policies))
        if not self.policies:
            raise CompareError("policies: expected at least one policy, got none")
        canonical: dict[str, str] = {}
        for spec in self.policies:
            name = get_policy(spec).name  # PolicyError lists the known policies
            if name in canonical:
                raise CompareError(f"policies: {spec!r} is the same policy as {canonical[name]!r} ({name}); "
                                   "expected each policy once")
            canonical[name] = spec
        slugs = [policy_slug(p) for p in self.policies]
        if len(set(slugs)) != len(slugs) or BASE in slugs:
            raise CompareError(f"policies: {list(self.policies)} give the run folders {slugs}; expected distinct "
                               f"names other than {BASE!r}")
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise CompareError(f"seeds: expected an integer >= 1, got {self.seeds!r}")
        if isinstance(self.cycles, bool) or not isinstance(self.cycles, int) or self.cycles < 1:
            raise CompareError(f"cycles: expected an integer >= 1 (policies differ only after cycle 0), "
                               f"got {self.cycles!r}")
        if self.preset not in DATA_PRESETS:
            raise CompareError(f"preset: expected one of {', '.join(DATA_PRESETS)}, got {self.preset!r}")
        # Resolve the preset's data sizes now, so that compare.toml holds numbers, not defaults.
        resolved = RunConfig.for_preset(self.preset, n_train=self.n_train, n_val=self.n_val,
                                        n_per_cycle=self.n_per_cycle, size=self.size)
        for name in ("n_train", "n_val", "n_per_cycle", "size"):
            object.__setattr__(self, name, getattr(resolved, name))
        if self.real_dir is not None and "://" not in self.real_dir:
            object.__setattr__(self, "real_dir", os.path.abspath(self.real_dir))
        self.run_config(1)  # checks generator, policies and preset together

    def run_config(self, seed: int, policy: str | None = None) -> RunConfig:
        """The run config of seed ``seed``: the base run (``policy=None``, cycle 0 only) or a policy's run."""
        from loop.run.lifecycle import check_run_config

        config = RunConfig.for_preset(
            self.preset, generator=self.generator, initial_policy=self.initial_policy,
            policy=policy or self.initial_policy, cycles=self.cycles if policy else 0, seed=seed,
            n_train=self.n_train, n_val=self.n_val, n_per_cycle=self.n_per_cycle, size=self.size,
            real_dir=self.real_dir,
        )
        check_run_config(config)
        return config

    def to_dict(self) -> dict[str, Any]:
        """TOML-ready form (``None`` fields left out)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}
        out["policies"] = list(self.policies)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = SETTINGS_FILE) -> "CompareConfig":
        """Rebuild from :meth:`to_dict`; unknown keys raise :class:`CompareError` naming ``where``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise CompareError(f"{where}: unknown setting(s) {unknown}; expected some of {sorted(names)}")
        return cls(**{**data, "policies": tuple(data.get("policies", ()))})


def settings_path(out: str) -> str:
    """Where a comparison's frozen settings live."""
    return posixpath.join(out.rstrip("/"), SETTINGS_FILE)


def read_settings(out: str) -> CompareConfig | None:
    """The settings frozen in ``OUT/compare.toml``, or ``None`` when OUT has none."""
    path = settings_path(out)
    fs, fpath = fsspec.core.url_to_fs(path)
    if not fs.exists(fpath):
        return None
    try:
        data = tomllib.loads(fs.cat_file(fpath).decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CompareError(f"{path}: not valid TOML ({exc})") from None
    return CompareConfig.from_dict(data.get("compare", {}), where=path)


def resolve_settings(out: str, given: Mapping[str, Any]) -> CompareConfig:
    """The settings to run ``out`` with: those frozen in ``OUT/compare.toml`` (a value given
    here must equal the frozen one, else :class:`CompareError` names the setting), or, for a
    new OUT, ``given`` (which must name ``policies`` and ``seeds``). Writes compare.toml for a new OUT."""
    given = {k: v for k, v in given.items() if v is not None}
    frozen = read_settings(out)
    if frozen is None:
        missing = [k for k in ("policies", "seeds") if k not in given]
        if missing:
            raise CompareError(f"{out}: no comparison there yet; --{missing[0]} is needed to start one")
        config = CompareConfig(**given)
        fs, path = fsspec.core.url_to_fs(settings_path(out))
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        fs.pipe_file(path, tomli_w.dumps({"compare": config.to_dict()}).encode("utf-8"))
        return config
    asked = CompareConfig(**{**frozen.to_dict(), "policies": frozen.policies, **given})
    for field in dataclasses.fields(CompareConfig):
        if field.name in given and getattr(asked, field.name) != getattr(frozen, field.name):
            raise CompareError(
                f"{settings_path(out)}: {field.name} is {_show(getattr(frozen, field.name))} in this comparison, "
                f"got {_show(getattr(asked, field.name))}; use the same settings to resume it, or another OUT")
    return frozen


def _show(value: Any) -> str:
    return ",".join(value) if isinstance(value, tuple) else repr(value)


def run_dir(out: str, seed: int, policy: str | None = None) -> str:
    """Run directory of seed ``seed``'s base run (``policy=None``) or of a policy's run."""
    return posixpath.join(out.rstrip("/"), RUNS_DIR, f"seed{seed:02d}", policy_slug(policy) if policy else BASE)


def parallel_runs(cluster_resources: Mapping[str, float]) -> int:
    """How many runs to drive at once on a cluster with ``cluster_resources``.

    A run's trainer and evaluator actors take turns on one GPU (half a GPU each, see
    :func:`loop.run.lifecycle.start_run`), so a GPU cluster drives one run per GPU. On CPUs a run's
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


def _drive_run(run: str, config: RunConfig, *, base: str | None, address: str | None, say: Say) -> str:
    """Bring ``run`` to cycle ``config.cycles``: skip it, resume it, or start (or fork from ``base``) it.
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
        resume_run(run, None if target >= config.cycles else config.cycles, address=address, say=say)
        return "resumed"
    if base is None:
        start_run(run, config, address=address, say=say)
        return "started"
    fork_run(base, run, policy=config.policy, cycles=config.cycles, say=say)
    resume_run(run, address=address, say=say)
    return "forked"


def compare(out: str, given: Mapping[str, Any], *, address: str | None = None, parallel: int | None = None,
            say: Say = print) -> dict[str, Any]:
    """Run (or resume) the comparison in ``out`` and write its report; returns the report's data.

    ``given`` holds the :class:`CompareConfig` fields the caller set (``None`` = not set).
    Raises :class:`CompareError` when some runs failed (the report still covers the rest).
    """
    from loop.run.ray_session import ray_session
    from loop.evaluate.real import RealFolder
    from loop.study.report import write_report

    if parallel is not None and (isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1):
        raise CompareError(f"parallel: expected an integer >= 1, got {parallel!r}")
    if "policies" in given and isinstance(given["policies"], str):
        given = {**given, "policies": split_policies(given["policies"])}
    if given.get("real_dir"):
        RealFolder(given["real_dir"])  # a missing or badly laid out folder fails now, not after cycle 0
    config = resolve_settings(out, given)
    if config.real_dir:
        RealFolder(config.real_dir)
    started = time.time()
    total = config.seeds * (1 + len(config.policies))
    done = 0
    lock = threading.Lock()

    def job(seed: int, policy: str | None) -> _Job:
        label = f"seed {seed}/{config.seeds} {policy or BASE}"
        run = run_dir(out, seed, policy)
        base = None if policy is None else run_dir(out, seed)

        def work() -> None:
            nonlocal done
            tell = lambda line: say(f"[{label}] {line}")  # noqa: E731
            tell(f"{run}")
            what = _drive_run(run, config.run_config(seed, policy), base=base, address=address, say=tell)
            with lock:
                done += 1
                count = done
            say(f"[{label}] {what}; {count}/{total} runs done, {time.time() - started:.0f} s so far")

        return _Job(name=label, work=work, after=None if policy is None else f"seed {seed}/{config.seeds} {BASE}")

    jobs = [job(seed, policy) for seed in range(1, config.seeds + 1) for policy in (None, *config.policies)]
    with ray_session(address):
        import ray

        slots = parallel or parallel_runs(ray.cluster_resources())
        say(f"compare {out}: {', '.join(config.policies)} × seeds 1..{config.seeds}, {config.cycles} cycles, "
            f"preset {config.preset}: {total} runs ({config.seeds} base + {total - config.seeds} policy runs), "
            f"{slots} at a time")
        failures = _run_jobs(jobs, slots, say)
    report = write_report(out, say=say)
    say(f"compare {out}: {total - len(failures)}/{total} runs ok in {time.time() - started:.0f} s; "
        f"report {report['files']['report']}")
    if failures:
        name, exc = failures[0]
        raise CompareError(f"{len(failures)} of {total} runs failed (first: {name}: {exc}); "
                           f"fix the cause and run `loop compare {out}` again to resume")
    return report
