"""The configuration of a whole run: generator, policy, data sizes per cycle, seeds.

Resolved once at ``loop start`` and frozen into ``RUN/run.toml`` beside the model and
training configuration (:mod:`loop.config.training`); ``loop resume`` reads it back and nothing else.
Data-size presets follow the training presets: ``paper`` (§3.2.2/§3.3: 3200 train, 1000
validation, 1000 new per cycle at 512 px), ``cpu`` (a few hundred 128 px images, minutes a
cycle here) and ``smoke`` (a handful at 64 px, seconds; for tests).
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

from generators.base import GeneratorError
from generators.registry import generator_options, unknown_option_message
from generators.space import ParamSpace, ParamSpaceError, space_from_data
from loop.config.fields import ConfigError, DictFields, check_int, fail, set_field

FINETUNE_DATA = ("new", "all")

# preset -> (size, n_train, n_val, n_per_cycle, n_test)
DATA_PRESETS: dict[str, tuple[int, int, int, int, int]] = {
    "paper": (512, 3200, 1000, 1000, 1000),
    "cpu": (128, 300, 100, 100, 100),
    "smoke": (64, 16, 8, 8, 8),
}

RealGroups = tuple[tuple[str, str], ...]
"""Named folders of real labelled images: ``(("iron", "/data/iron"), ("tbm", "/data/tbm"))``."""

_GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_DIGEST = re.compile(r"[0-9a-f]{64}\Z")
LEGACY_REAL_TILE = 256
"""The tile side real images were predicted in before runs chose theirs (``RunConfig.real_tile``)."""


def _real_group(item: Any, where: str) -> tuple[str, str]:
    """One ``NAME=DIR`` (or a bare ``DIR``, named after its folder, or a ``(name, dir)`` pair)."""
    if isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(x, str) for x in item):
        name, folder, text = item[0].strip(), item[1].strip(), f"{item[0]}={item[1]}"
    elif isinstance(item, str) and item.strip():
        text = item.strip()
        head, eq, tail = text.partition("=")
        if eq and "/" not in head and os.sep not in head:  # NAME=DIR (a '=' inside a path is part of DIR)
            name, folder = head.strip(), tail.strip()
        else:
            folder = text
            name = text.rstrip("/").rsplit("/", 1)[-1]
            if "://" not in text:
                name = os.path.basename(os.path.abspath(text))
    else:
        raise fail(where, item, "NAME=DIR or DIR (a folder of real labelled images)")
    if not name:
        raise ConfigError(f"{where}: {text!r} has an empty name; expected NAME=DIR, e.g. iron=data/iron")
    if not folder:
        raise ConfigError(f"{where}: {text!r} names no folder; expected NAME=DIR, e.g. iron=data/iron")
    if not _GROUP_NAME.match(name):
        raise ConfigError(f"{where}: {text!r} gives the group name {name!r}; expected letters, digits, '_', '.' "
                          "or '-' (write NAME=DIR to name it)")
    if "://" not in folder:
        folder = os.path.abspath(folder)
    return name, folder


def real_groups(value: Any, where: str = "real") -> RealGroups:
    """Named real folders from ``value``: ``None`` or ``""`` (none), one ``NAME=DIR`` / ``DIR`` string,
    a sequence of those or of ``(name, dir)`` pairs, or a mapping name -> dir. Local folders become
    absolute paths; an empty name, an empty folder or a name given twice is a :class:`ConfigError`.
    Whether the folders exist is checked where they are used (a run.toml may be read elsewhere)."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        items: list[Any] = [value]
    elif isinstance(value, Mapping):
        items = [(k, v) for k, v in value.items()]
    elif isinstance(value, (tuple, list)):
        items = list(value)
    else:
        raise fail(where, value, "NAME=DIR strings or (name, dir) pairs")
    groups: list[tuple[str, str]] = []
    for item in items:
        name, folder = _real_group(item, where)
        if any(name == seen for seen, _ in groups):
            raise ConfigError(f"{where}: group name {name!r} is given twice; expected distinct names "
                              "(write NAME=DIR to tell same-named folders apart)")
        groups.append((name, folder))
    return tuple(groups)


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
    write batches of ``batch_size`` samples.

    ``n_test``: a held-out synthetic test set drawn at cycle 0 from the initial policy with an
    rng stream of its own, scored after every cycle and never shown to a policy; 0 (the
    default of the dataclass, and so of a run.toml written before it existed) means none.
    The presets set it (:data:`DATA_PRESETS`). ``real``: named folders of real labelled images
    (:data:`RealGroups`), each scored after every cycle; a run.toml of before, with one
    ``real_dir`` folder, loads as one group named after the folder.

    ``space``: the parameter space the run samples from (e.g. fitted by ``loop fit-grains``,
    read from a space file), inside the generator's own; ``None`` = the generator's space.
    Frozen here, so ``loop resume`` and a fork sample from the same space.

    ``generator_options``: the generator's constructor options by name (e.g. the crack
    generator's ``exemplars``, a folder of texture images; see
    :func:`generators.registry.generator_options`); ``None`` (or empty) = its defaults. An
    option the generator does not take is a :class:`ConfigError`; path options become absolute.
    Frozen here, so every process that renders for the run builds the same generator.

    ``real_val``: a folder of a few real images (``DIR/images`` + ``DIR/masks``, or images
    only) located in the space and, with masks, scored after every cycle: the anchors of the
    ``anchored`` policy (:mod:`loop.run.anchors`); never one of the ``real`` test folders.
    Frozen as an absolute path with ``real_val_digest``, the SHA-256 of its files, set by
    ``loop start`` (:func:`loop.run.anchors.real_val_digest`), so a resume refuses a changed folder.

    ``real_tile``: the side in px of the tiles real images (``real`` and ``real_val``) are
    predicted in, at their native resolution; they overlap by a quarter of it
    (:attr:`real_overlap`). The presets set it to the side the model is trained at last
    (:func:`training_tile`): a model that learnt on 128 px images saw every pixel within 64 px
    of a border, and a fragile one answers only near tile borders when shown 256 px tiles
    (issue 14's seed-10 model: mIoU 0.556 at 256 px, 0.693 at 128 px on nist). 256, the default
    of the dataclass, is what a run.toml written before the field existed was scored with.
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
    n_test: int = 0
    real: RealGroups = ()
    space: ParamSpace | None = None
    generator_options: dict[str, str] | None = None
    real_val: str | None = None
    real_val_digest: str | None = None
    real_tile: int = LEGACY_REAL_TILE

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
        check_int("run.n_test", self.n_test, 0, 10**8)
        set_field(self, "real", real_groups(self.real, "run.real"))
        check_int("run.batch_size", self.batch_size, 1, 10**5)
        check_int("run.workers", self.workers, 0, 100_000)
        if self.finetune_on not in FINETUNE_DATA:
            raise fail("run.finetune_on", self.finetune_on, f"one of {FINETUNE_DATA}")
        set_field(self, "space", _space(self.space))
        set_field(self, "generator_options", checked_generator_options(self.generator, self.generator_options))
        set_field(self, "real_val", checked_real_val(self.real_val))
        if self.real_val_digest is not None and not (isinstance(self.real_val_digest, str)
                                                     and _DIGEST.match(self.real_val_digest)):
            raise fail("run.real_val_digest", self.real_val_digest, "a SHA-256 in hex (64 characters)")
        check_real_tile(self.real_tile, "run.real_tile")

    @classmethod
    def for_preset(cls, preset: str, **overrides: Any) -> "RunConfig":
        """The run configuration of a preset's data sizes, with ``overrides`` (``None`` values ignored)."""
        if preset not in DATA_PRESETS:
            raise ConfigError(f"preset: expected one of {', '.join(DATA_PRESETS)}, got {preset!r}")
        size, n_train, n_val, n_per_cycle, n_test = DATA_PRESETS[preset]
        base = cls(preset=preset, size=size, n_train=n_train, n_val=n_val, n_per_cycle=n_per_cycle, n_test=n_test,
                   real_tile=training_tile(preset))
        return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str | None = None) -> "RunConfig":
        """As :meth:`DictFields.from_dict`; the single ``real_dir`` folder of an older run.toml
        becomes one group of ``real``."""
        if isinstance(data, Mapping) and "real_dir" in data:
            data = dict(data)
            legacy = data.pop("real_dir")
            if "real" in data:
                raise ConfigError(f"{where or 'run'}: has both real_dir and real; expected one of them")
            data["real"] = real_groups(legacy, f"{where or 'run'}.real_dir")
        return super().from_dict(data, where=where)

    @property
    def real_overlap(self) -> int:
        """How far neighbouring tiles of real images overlap, in px (:func:`real_overlap`)."""
        return real_overlap(self.real_tile)

    def with_cycles(self, cycles: int) -> "RunConfig":
        """The same run with a different number of adaptive cycles."""
        return dataclasses.replace(self, cycles=cycles)


def _space(value: Any) -> ParamSpace | None:
    """``run.space`` as a :class:`ParamSpace`: given as one, or in its ``to_dict`` form (run.toml)."""
    if value is None or isinstance(value, ParamSpace):
        return value
    try:
        return space_from_data(value, "run.space")
    except ParamSpaceError as exc:
        raise ConfigError(str(exc)) from None


def checked_generator_options(generator: str, value: Any, where: str = "run.generator_options"
                              ) -> dict[str, str] | None:
    """``value`` as the options of ``generator``: ``None`` for none (``None`` or empty), else a
    dict (sorted by name) of option -> non-empty string, local paths made absolute. An option
    ``generator`` does not take is a :class:`ConfigError` naming it and the known ones (an unknown
    generator is left for the run's checks to name)."""
    if value is None or (isinstance(value, Mapping) and not value):
        return None
    if not isinstance(value, Mapping):
        raise fail(where, value, 'a table of option = value, e.g. {exemplars = "DIR"}')
    try:
        kinds: dict[str, str] | None = generator_options(generator)
    except GeneratorError:
        kinds = None
    out: dict[str, str] = {}
    for name in sorted(value):
        item = value[name]
        if kinds is not None and name not in kinds:
            raise ConfigError(unknown_option_message(generator, str(name), where))
        if not isinstance(item, str) or not item.strip():
            raise fail(f"{where}.{name}", item, "a non-empty string")
        item = item.strip()
        if kinds is not None and kinds[name] == "path" and "://" not in item:
            item = os.path.abspath(item)
        out[str(name)] = item
    return out


def training_tile(preset: str) -> int:
    """The side in px at which ``preset`` trains a segmentation model last: the default tile of
    its real-image inference (``RunConfig.real_tile``)."""
    from loop.config.training import get_preset

    return get_preset(preset).train.stages[-1].size


def real_overlap(tile: int) -> int:
    """How far neighbouring tiles of ``tile`` px overlap when real images are predicted: a quarter
    of the tile."""
    return tile // 4


def check_real_tile(value: Any, where: str = "run.real_tile") -> int:
    """``value`` if it is a tile side tiled inference takes (a multiple of 32 px, 32 to 4096),
    else a :class:`ConfigError` naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 32 <= value <= 4096 or value % 32:
        raise fail(where, value, "a multiple of 32 px from 32 to 4096 (the U-Net halves a tile 5 times)")
    return value


def checked_real_val(value: Any, where: str = "run.real_val") -> str | None:
    """``value`` as a real validation folder: ``None`` (or ``""``) for none, else a non-empty
    string, a local path made absolute. Whether it exists is checked where it is used."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.strip():
        raise fail(where, value, "a folder of real images")
    value = value.strip()
    return value if "://" in value else os.path.abspath(value)


def run_config_from(data: Mapping[str, Any]) -> RunConfig:
    """Rebuild a :class:`RunConfig` from its ``to_dict`` form (as stored in ``run.toml``)."""
    return RunConfig.from_dict(data, where="run")
