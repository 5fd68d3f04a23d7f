"""The configuration of a whole run: generator, policy, data sizes per cycle, seeds.

Resolved once at ``loop start`` and frozen into ``RUN/run.toml`` beside the model and
training configuration (:mod:`loop.config.training`); ``loop resume`` reads it back and nothing else.
Data-size presets follow the training presets: ``paper`` (§3.2.2/§3.3: 3200 train, 1000
validation, 1000 new per cycle at 512 px), ``cpu`` (a few hundred 128 px images, minutes a
cycle here) and ``smoke`` (a handful at 64 px, seconds; for tests).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from loop.config.fields import ConfigError, DictFields, check_int, fail

FINETUNE_DATA = ("new", "all")

# preset -> (size, n_train, n_val, n_per_cycle)
DATA_PRESETS: dict[str, tuple[int, int, int, int]] = {
    "paper": (512, 3200, 1000, 1000),
    "cpu": (128, 300, 100, 100),
    "smoke": (64, 16, 8, 8),
}


@dataclass(frozen=True)
class RunConfig(DictFields):
    """What a run does, cycle by cycle.

    Cycle 0 renders ``n_train`` training samples (``initial_policy``) and ``n_val`` fixed
    validation samples, trains from scratch and evaluates. Each of the ``cycles`` further
    cycles asks ``policy`` for ``n_per_cycle`` samples, fine-tunes the previous cycle's
    model on all training samples so far (``finetune_on="all"``, the default) or on the new
    ones only (``"new"``), and evaluates. "all" is the default: fine-tuning a cpu-preset model
    on its 100 new samples alone lowered the validation mIoU from 0.66 to 0.51 in one cycle
    (it forgets); with the paper's 1000 new samples per cycle "new" is a fair choice. ``workers`` generator workers (0 = one per CPU of the cluster)
    write batches of ``batch_size`` samples. ``real_dir``: a folder of real labelled images
    scored after every cycle.
    """

    generator: str = "grains"
    policy: str = "worst10"
    initial_policy: str = "random"
    preset: str = "cpu"
    cycles: int = 3
    seed: int = 0
    size: int = 128
    n_train: int = 300
    n_val: int = 100
    n_per_cycle: int = 100
    batch_size: int = 16
    workers: int = 0
    finetune_on: str = "all"
    real_dir: str | None = None

    def __post_init__(self) -> None:
        for name in ("generator", "policy", "initial_policy", "preset"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise fail(f"run.{name}", value, "a non-empty name")
        check_int("run.cycles", self.cycles, 0, 10_000)
        check_int("run.seed", self.seed, 0, 2**63 - 1)
        check_int("run.size", self.size, 32, 4096)
        check_int("run.n_train", self.n_train, 1, 10**8)
        check_int("run.n_val", self.n_val, 1, 10**8)
        check_int("run.n_per_cycle", self.n_per_cycle, 1, 10**8)
        check_int("run.batch_size", self.batch_size, 1, 10**5)
        check_int("run.workers", self.workers, 0, 100_000)
        if self.finetune_on not in FINETUNE_DATA:
            raise fail("run.finetune_on", self.finetune_on, f"one of {FINETUNE_DATA}")

    @classmethod
    def for_preset(cls, preset: str, **overrides: Any) -> "RunConfig":
        """The run configuration of a preset's data sizes, with ``overrides`` (``None`` values ignored)."""
        if preset not in DATA_PRESETS:
            raise ConfigError(f"preset: expected one of {', '.join(DATA_PRESETS)}, got {preset!r}")
        size, n_train, n_val, n_per_cycle = DATA_PRESETS[preset]
        base = cls(preset=preset, size=size, n_train=n_train, n_val=n_val, n_per_cycle=n_per_cycle)
        return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})

    def with_cycles(self, cycles: int) -> "RunConfig":
        """The same run with a different number of adaptive cycles."""
        return dataclasses.replace(self, cycles=cycles)


def run_config_from(data: Mapping[str, Any]) -> RunConfig:
    """Rebuild a :class:`RunConfig` from its ``to_dict`` form (as stored in ``run.toml``)."""
    return RunConfig.from_dict(data, where="run")
