"""A comparison's folder and frozen settings: ``OUT/compare.toml`` and where each run lives.

Read by :mod:`loop.study.compare` (which runs the comparison) and :mod:`loop.study.report`
(which reports it).
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import re
import tomllib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import tomli_w

from loop.config.fields import ConfigError
from loop.config.training import INPUT_NORMS, AugmentConfig
from loop.config.run import (
    DATA_PRESETS, FINETUNE_DATA, LEGACY_REAL_TILE, RealGroups, RunConfig, check_real_tile, checked_generator_options,
    checked_real_val, real_groups, training_tile,
)
from loop.errors import InputError
from stores.location import Location

SETTINGS_FILE = "compare.toml"
RUNS_DIR = "runs"
BASE = "base"
Say = Callable[[str], None]


class CompareError(InputError):
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


ENDPOINT_METRICS = ("miou", "error", "boundary_f1", "grain_count_rel_error", "mean_intercept_rel_error",
                    "boundary_intercept_rel_error", "balanced_error", "miss_rate", "false_alarm_rate")
"""The metrics a comparison reports (per source), and so the metrics a primary endpoint may name."""
REAL_ONLY_METRICS = frozenset({"grain_count_rel_error", "mean_intercept_rel_error", "boundary_intercept_rel_error",
                               "balanced_error", "miss_rate", "false_alarm_rate"})
"""Scored on real images only, so an endpoint naming one must name a real source: grain statistics
against the mask (of closed grains, and the intercept counted on the boundary map;
:mod:`loop.evaluate.grains`) and a classifier's error per class
on real tiles (:func:`loop.evaluate.scoring.class_rates`)."""
BASE_SOURCES = ("val", "test", "real")
"""Score sources: the synthetic validation set, the held-out synthetic test set, the real images
pooled; each real group ``NAME`` is the source ``real/NAME``."""
DEFAULT_REFERENCE = "random"


def real_source(name: str) -> str:
    """The score source of real group ``name``."""
    return f"real/{name}"


def parse_endpoint(text: Any, sources: tuple[str, ...], where: str = "--primary") -> tuple[str, str]:
    """``"SOURCE:METRIC"`` -> ``(source, metric)``; a malformed text, a source not in ``sources`` or a
    metric not in :data:`ENDPOINT_METRICS` is a :class:`CompareError` naming the value and the choices."""
    choices = ", ".join(f"{s}:{m}" for s in sources[:1] for m in ENDPOINT_METRICS[:1])
    if not isinstance(text, str) or text.count(":") != 1:
        raise CompareError(f"{where} {text!r}: expected SOURCE:METRIC, e.g. {choices}; sources: "
                           f"{', '.join(sources)}; metrics: {', '.join(ENDPOINT_METRICS)}")
    source, metric = (part.strip() for part in text.split(":"))
    if source not in sources:
        missing = {"test": " (test needs n_test > 0)", "real": " (real needs --real)"}.get(source, "")
        raise CompareError(f"{where} {text!r}: unknown source {source!r}{missing}; expected one of "
                           f"{', '.join(sources)}")
    if metric not in ENDPOINT_METRICS:
        raise CompareError(f"{where} {text!r}: unknown metric {metric!r}; expected one of {', '.join(ENDPOINT_METRICS)}")
    if metric in REAL_ONLY_METRICS and source.split("/")[0] != "real":
        raise CompareError(f"{where} {text!r}: {metric} is scored on real images only; expected source real or "
                           "real/NAME")
    return source, metric


def policy_slug(policy: str) -> str:
    """Folder name of a policy's runs: the spec with every character other than letters,
    digits, ``.``, ``=`` and ``-`` turned into ``_`` (``worst:k=0.1,m=10`` → ``worst_k=0.1_m=10``)."""
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", policy)


@dataclass(frozen=True)
class CompareConfig:
    """The frozen settings of a comparison (``OUT/compare.toml``).

    ``policies`` are policy specs (:func:`policies.get_policy`), each run for ``cycles``
    adaptive cycles after the shared cycle 0; ``seeds`` runs per policy, seeds 1..N. Data
    sizes default to the preset's (:data:`loop.config.run.DATA_PRESETS`), the held-out test
    set's (``n_test``) too. ``real``: named real folders (:data:`loop.config.run.RealGroups`;
    a compare.toml of before, with one ``real_dir``, loads as one group). ``encoder_weights``
    (a local file) starts the cycle-0 model's encoder; ``finetune_on`` as in
    :class:`loop.config.run.RunConfig`.

    ``primary``: the one primary endpoint, ``SOURCE:METRIC`` (:func:`parse_endpoint`), declared
    before any run: by default the real images' mIoU when there are real folders, else the
    held-out test set's (``error`` for classification generators). ``reference``: the policy
    every other is compared with on it (default ``random`` when compared, else the first).
    Both are resolved and frozen at construction, so compare.toml holds them. ``space``: the
    parameter space every run samples from (a :class:`generators.space.ParamSpace` or its
    ``to_dict`` form, e.g. from ``loop fit-grains``), frozen in compare.toml itself (not as a
    path to a file that could change); ``None`` = the generator's. ``freeze_random_encoder``
    and ``input_norm``: as in :class:`loop.config.training.TrainConfig` and
    :class:`~loop.config.training.ModelConfig` (``None``: the preset's); ``augment``: a dict of
    :class:`~loop.config.training.AugmentConfig` fields set over the preset's augmentation. ``generator_options``:
    as ``run.generator_options`` (e.g. ``{"exemplars": DIR}`` from ``--exemplars``, the path
    made absolute), given to every run. ``real_val``: as ``run.real_val`` (``--real-val``, an
    absolute path) with ``real_val_digest``, the digest of its files, set when the comparison is
    made (:func:`loop.study.compare.compare`); every run is checked against it. ``real_tile``: as
    ``run.real_tile`` (default: the preset's, resolved and frozen here); a compare.toml written
    before the field existed loads with 256, the tile its runs were scored with.
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
    n_test: int | None = None
    real: RealGroups = ()
    encoder_weights: str | None = None
    finetune_on: str = "all"
    primary: str | None = None
    reference: str | None = None
    space: Any = None
    freeze_random_encoder: bool | None = None
    input_norm: str | None = None
    augment: Any = None
    generator_options: Any = None
    real_val: str | None = None
    real_val_digest: str | None = None
    real_tile: int | None = None

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
                                        n_per_cycle=self.n_per_cycle, size=self.size, n_test=self.n_test)
        for name in ("n_train", "n_val", "n_per_cycle", "size", "n_test"):
            object.__setattr__(self, name, getattr(resolved, name))
        try:
            object.__setattr__(self, "real_tile", training_tile(self.preset) if self.real_tile is None
                               else check_real_tile(self.real_tile, "real_tile"))
        except ConfigError as err:
            raise CompareError(str(err)) from None
        try:
            object.__setattr__(self, "real", real_groups(self.real, "--real"))
        except ConfigError as err:
            raise CompareError(str(err)) from None
        try:
            object.__setattr__(self, "space", RunConfig(space=self.space).space)
        except ConfigError as err:
            raise CompareError(str(err).replace("run.space", "space", 1)) from None
        try:
            object.__setattr__(self, "generator_options", checked_generator_options(
                self.generator, self.generator_options, "generator_options"))
        except ConfigError as err:
            raise CompareError(str(err)) from None
        try:
            object.__setattr__(self, "real_val", checked_real_val(self.real_val, "real_val"))
        except ConfigError as err:
            raise CompareError(str(err)) from None
        if self.freeze_random_encoder is not None and not isinstance(self.freeze_random_encoder, bool):
            raise CompareError(f"freeze_random_encoder: expected true or false, got {self.freeze_random_encoder!r}")
        if self.input_norm is not None and self.input_norm not in INPUT_NORMS:
            raise CompareError(f"input_norm: expected one of {', '.join(INPUT_NORMS)}, got {self.input_norm!r}")
        if self.augment is not None:
            if not isinstance(self.augment, Mapping):
                raise CompareError(f"augment: expected a table of augmentation settings, got {self.augment!r}")
            try:
                AugmentConfig(**self.augment)
            except (TypeError, InputError) as err:
                raise CompareError(f"augment: {err}") from None
            object.__setattr__(self, "augment", dict(self.augment))
        if self.finetune_on not in FINETUNE_DATA:
            raise CompareError(f"finetune_on: expected one of {', '.join(FINETUNE_DATA)}, got {self.finetune_on!r}")
        if self.encoder_weights is not None:
            if not isinstance(self.encoder_weights, str) or not os.path.isfile(self.encoder_weights):
                raise CompareError(f"encoder_weights: {self.encoder_weights!r} is not a file; expected a local "
                                   "file of ImageNet encoder weights")
            object.__setattr__(self, "encoder_weights", os.path.abspath(self.encoder_weights))
        object.__setattr__(self, "reference", self._resolved_reference())
        if self.primary is None:
            from generators import get_generator

            # Real crack tiles are mostly crack-free: their plain error is the false-alarm rate.
            metric = (("balanced_error" if self.real else "error")
                      if get_generator(self.generator).task == "classification" else "miou")
            object.__setattr__(self, "primary", f"{'real' if self.real else 'test'}:{metric}")
        source, metric = parse_endpoint(self.primary, self.sources)
        object.__setattr__(self, "primary", f"{source}:{metric}")
        self.run_config(1)  # checks generator, policies and preset together

    @property
    def sources(self) -> tuple[str, ...]:
        """The score sources of this comparison: ``val``, ``test`` (with a test set), ``real`` and
        ``real/NAME`` per group (with real folders)."""
        out = ["val", *(["test"] if self.n_test else [])]
        if self.real:
            out += ["real", *(real_source(name) for name, _ in self.real)]
        return tuple(out)

    def _resolved_reference(self) -> str:
        from policies import get_policy

        if self.reference is None:
            default = get_policy(DEFAULT_REFERENCE).name
            return next((p for p in self.policies if get_policy(p).name == default), self.policies[0])
        if not isinstance(self.reference, str) or not self.reference.strip():
            raise CompareError(f"--reference {self.reference!r}: expected one of the compared policies "
                               f"{', '.join(self.policies)}")
        try:
            wanted = get_policy(self.reference).name
        except InputError:
            wanted = None
        for p in self.policies:
            if p == self.reference.strip() or get_policy(p).name == wanted:
                return p
        raise CompareError(f"--reference {self.reference!r}: not one of the compared policies {', '.join(self.policies)}")

    def preset_overrides(self) -> dict[str, Any]:
        """The preset settings every run of this comparison starts with (see
        :data:`loop.run.lifecycle.PRESET_OVERRIDES`)."""
        return {"encoder_weights": self.encoder_weights, "freeze_random_encoder": self.freeze_random_encoder,
                "input_norm": self.input_norm, "augment": self.augment}

    def run_config(self, seed: int, policy: str | None = None) -> RunConfig:
        """The run config of seed ``seed``: the base run (``policy=None``, cycle 0 only) or a policy's run."""
        from loop.run.lifecycle import check_run_config

        config = RunConfig.for_preset(
            self.preset, generator=self.generator, initial_policy=self.initial_policy,
            policy=policy or self.initial_policy, cycles=self.cycles if policy else 0, seed=seed,
            n_train=self.n_train, n_val=self.n_val, n_per_cycle=self.n_per_cycle, size=self.size,
            n_test=self.n_test, real=self.real, finetune_on=self.finetune_on, space=self.space,
            generator_options=self.generator_options, real_val=self.real_val, real_val_digest=self.real_val_digest,
            real_tile=self.real_tile,
        )
        check_run_config(config, real_folders=False)  # compare() checks them; a report needs none
        return config

    def to_dict(self) -> dict[str, Any]:
        """TOML-ready form (``None`` fields left out; ``real`` as [name, dir] pairs)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}
        out["policies"] = list(self.policies)
        out["real"] = [list(group) for group in self.real]
        if self.space is not None:
            out["space"] = self.space.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = SETTINGS_FILE) -> "CompareConfig":
        """Rebuild from :meth:`to_dict`; unknown keys raise :class:`CompareError` naming ``where``.
        The single ``real_dir`` of an older compare.toml becomes one real group."""
        data = dict(data)
        if "real_dir" in data and "real" not in data:
            data["real"] = data.pop("real_dir")
        data.setdefault("real_tile", LEGACY_REAL_TILE)
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
    try:
        raw = Location(out).read_bytes(SETTINGS_FILE)
    except FileNotFoundError:
        return None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CompareError(f"{path}: not valid TOML ({exc})") from None
    return CompareConfig.from_dict(data.get("compare", {}), where=path)


def resolve_settings(out: str, given: Mapping[str, Any]) -> CompareConfig:
    """The settings to run ``out`` with: those frozen in ``OUT/compare.toml`` (a value given
    here must equal the frozen one, else :class:`CompareError` names the setting), or, for a
    new OUT, ``given`` (which must name ``policies`` and ``seeds``). Writes compare.toml for a new OUT.

    The one setting that may change is ``cycles``, and only upwards: more cycles **extend** the
    comparison (every run goes on from where it stopped; a run's first cycles do not depend on
    how many follow), and compare.toml is rewritten with the new count."""
    given = {k: v for k, v in given.items() if v is not None}
    frozen = read_settings(out)
    if frozen is None:
        missing = [k for k in ("policies", "seeds") if k not in given]
        if missing:
            raise CompareError(f"{out}: no comparison there yet; --{missing[0]} is needed to start one")
        config = CompareConfig(**given)
        _write_settings(out, config)
        return config
    asked = CompareConfig(**{**frozen.to_dict(), "policies": frozen.policies, **given})
    for field in dataclasses.fields(CompareConfig):
        if field.name == "cycles" and asked.cycles < frozen.cycles:
            raise CompareError(
                f"{settings_path(out)}: cycles is {frozen.cycles} in this comparison, got {asked.cycles}; a comparison "
                f"can be extended to more cycles, not cut back (`loop compare {out} --report --at-cycle "
                f"{asked.cycles}` reports cycle {asked.cycles})")
        if field.name != "cycles" and field.name in given and getattr(asked, field.name) != getattr(frozen, field.name):
            raise CompareError(
                f"{settings_path(out)}: {field.name} is {_show(getattr(frozen, field.name))} in this comparison, "
                f"got {_show(getattr(asked, field.name))}; use the same settings to resume it, or another OUT")
    if asked.cycles > frozen.cycles:
        extended = dataclasses.replace(frozen, cycles=asked.cycles)
        _write_settings(out, extended)
        return extended
    return frozen


def _write_settings(out: str, config: CompareConfig) -> None:
    """Freeze ``config`` in ``OUT/compare.toml``."""
    Location(out).write_bytes(SETTINGS_FILE, tomli_w.dumps({"compare": config.to_dict()}).encode("utf-8"))


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join("=".join(v) if isinstance(v, tuple) else str(v) for v in value)
    return repr(value)


def run_dir(out: str, seed: int, policy: str | None = None) -> str:
    """Run directory of seed ``seed``'s base run (``policy=None``) or of a policy's run."""
    return posixpath.join(out.rstrip("/"), RUNS_DIR, f"seed{seed:02d}", policy_slug(policy) if policy else BASE)


