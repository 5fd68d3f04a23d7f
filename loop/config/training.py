"""Model and training configuration: frozen dataclasses, TOML-ready dicts, named presets.

A run writes ``ModelConfig.to_dict()`` and ``TrainConfig.to_dict()`` into its ``run.toml``
once; everything that trains reads them back with ``from_dict``. Every field is checked at
construction and a bad value raises :class:`ConfigError` naming the field, the value and what
was expected. TOML has no null, so ``to_dict`` leaves out fields whose value is ``None``
and ``from_dict`` takes a missing field as its default.

Presets (:func:`get_preset`):

``paper``  the paper's schedule (§3.2.2) for a GPU: ResNet50 U-Net, head 20 epochs at 128 px,
           head 10 epochs at 256 px, all layers 5 epochs at 512 px; for classification
           (§3.1.2) head 4 epochs then all layers 5 epochs at 128 px.
``cpu``    ResNet18: head 2 epochs at 64 px, all layers 3 epochs at 128 px; a fine-tune cycle
           on 300 images of 128 px took about 1-2 minutes on a shared 2-core CPU.
``smoke``  ResNet18 at 64 px, one epoch per stage; seconds, for tests.
"""

from __future__ import annotations

import dataclasses
import math

from dataclasses import dataclass, field
from typing import Any, Sequence
from generators.base import TASKS
from loop.config.fields import ConfigError, DictFields, check_bool, check_float, check_int, fail, set_field

ARCHS = {"segmentation": ("unet",), "classification": ("classifier",)}
# smp encoders (not its deprecated ``timm-`` ones); a local ImageNet weights file is adapted to
# the input channels by smp itself (loop.train.model.load_encoder_weights).
ENCODERS = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "resnext50_32x4d", "resnext101_32x8d", "se_resnet50", "se_resnext50_32x4d",
    "densenet121", "densenet169", "densenet201",
    *(f"efficientnet-b{i}" for i in range(8)),
    "mobilenet_v2", *(f"mobileone_s{i}" for i in range(5)),
)
INPUT_NORMS = ("fixed", "per_image")
"""How a model normalises its [0, 1] input: with fixed (ImageNet) statistics, or each image by its own."""
MAX_SIZE = 4096


@dataclass(frozen=True)
class ModelConfig(DictFields):
    """Which network to build.

    ``arch`` defaults to the task's only architecture ("unet" for segmentation, "classifier"
    — ResNet encoder, global average pooling, linear head — for classification); ``classes``
    defaults to 1 for segmentation (one boundary logit) and 2 for classification.
    ``encoder_weights`` is a local file of ImageNet weights for the encoder, or ``None`` for
    random initialisation; nothing is ever downloaded. ``input_norm`` (:data:`INPUT_NORMS`):
    ``fixed`` subtracts ImageNet's mean grey and divides by its spread; ``per_image`` subtracts
    each image's (each tile's, in tiled inference) own mean and divides by its own spread, so
    a model sees a bright micrograph and a dark one alike.
    """

    task: str = "segmentation"
    arch: str | None = None
    encoder: str = "resnet50"
    in_channels: int = 1
    classes: int | None = None
    encoder_weights: str | None = None
    input_norm: str = "fixed"

    _where = "model"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise fail("model.task", self.task, f"one of {TASKS}")
        archs = ARCHS[self.task]
        if self.arch is None:
            set_field(self, "arch", archs[0])
        elif self.arch not in archs:
            raise fail("model.arch", self.arch, f"one of {archs} for task {self.task!r}")
        if self.encoder not in ENCODERS:
            raise fail("model.encoder", self.encoder, f"one of {ENCODERS}")
        check_int("model.in_channels", self.in_channels, 1, 16)
        if self.classes is None:
            set_field(self, "classes", 1 if self.task == "segmentation" else 2)
        elif self.task == "segmentation":
            if self.classes != 1 or isinstance(self.classes, bool):
                raise fail("model.classes", self.classes, "1 for segmentation (one boundary logit per pixel)")
        else:
            check_int("model.classes", self.classes, 2, 100_000)
        if self.input_norm not in INPUT_NORMS:
            raise fail("model.input_norm", self.input_norm, f"one of {INPUT_NORMS}")
        if self.encoder_weights is not None and (not isinstance(self.encoder_weights, str) or not self.encoder_weights):
            raise fail("model.encoder_weights", self.encoder_weights, "a path to a local weights file, or none")


@dataclass(frozen=True)
class Stage(DictFields):
    """One step of the schedule: ``epochs`` at ``size`` px, encoder frozen or not, one LR cycle."""

    size: int
    epochs: int
    freeze_encoder: bool
    lr_max: float
    batch_size: int

    _where = "stage"

    def __post_init__(self) -> None:
        check_int("stage.size", self.size, 32, MAX_SIZE)
        if self.size % 32:
            raise fail("stage.size", self.size, "a multiple of 32 (the U-Net halves the image 5 times)")
        check_int("stage.epochs", self.epochs, 1, 100_000)
        check_bool("stage.freeze_encoder", self.freeze_encoder)
        set_field(self, "lr_max", check_float("stage.lr_max", self.lr_max, 0.0, 10.0, low_open=True))
        check_int("stage.batch_size", self.batch_size, 1, 1 << 16)


@dataclass(frozen=True)
class AugmentConfig(DictFields):
    """On-the-fly augmentation (see :mod:`loop.train.augment`).

    ``brightness``: additive shift drawn from [-b, b] (fraction of full scale);
    ``contrast``: factor drawn from [1 - c, 1 + c] about the image mean;
    ``stretch``: per-axis scale factors drawn from [1 - s, 1 + s] (anisotropic stretch and
    squish), the result cropped or padded back to the input size; ``rotate``: a rotation by an
    angle drawn from [-r, r] degrees (180 = any angle) and ``zoom``: an isotropic scale factor
    drawn from [1 - z, 1 + z], one warp about the centre (the paper's fastai augmentations;
    off in the presets). 0 disables each.
    """

    flip: bool = True
    rot90: bool = True
    brightness: float = 0.1
    contrast: float = 0.2
    stretch: float = 0.1
    rotate: float = 0.0
    zoom: float = 0.0

    _where = "augment"

    def __post_init__(self) -> None:
        check_bool("augment.flip", self.flip)
        check_bool("augment.rot90", self.rot90)
        set_field(self, "brightness", check_float("augment.brightness", self.brightness, 0.0, 1.0))
        set_field(self, "contrast", check_float("augment.contrast", self.contrast, 0.0, 0.9))
        set_field(self, "stretch", check_float("augment.stretch", self.stretch, 0.0, 0.5))
        set_field(self, "rotate", check_float("augment.rotate", self.rotate, 0.0, 180.0))
        set_field(self, "zoom", check_float("augment.zoom", self.zoom, 0.0, 0.5))


def _stages(value: Any, *, where: str) -> tuple[Stage, ...]:
    if not isinstance(value, (list, tuple)):
        raise fail(where, value, "a list of stage tables")
    return tuple(s if isinstance(s, Stage) else Stage.from_dict(s, where=f"{where}[{i}]") for i, s in enumerate(value))


def _augment(value: Any, *, where: str) -> AugmentConfig:
    return value if isinstance(value, AugmentConfig) else AugmentConfig.from_dict(value, where=where)


@dataclass(frozen=True)
class TrainConfig(DictFields):
    """How to train: the stages in order, one-cycle LR settings, AdamW, augmentation, loss.

    One-cycle (``torch.optim.lr_scheduler.OneCycleLR``, one cycle per stage) goes from
    ``lr_max / div_factor`` up to ``lr_max`` over ``pct_start`` of the steps, then down to
    ``lr_max / (div_factor * final_div_factor)``; Adam's beta1 cycles the other way between
    ``max_momentum`` and ``base_momentum`` (fastai's defaults, which the paper used).
    The segmentation loss is ``dice_weight * Dice + bce_weight * BCE``.
    ``deterministic``: same seed -> same weights (deterministic kernels, no cuDNN autotuning).
    ``amp``: mixed precision on CUDA (bf16 where supported, else fp16 with a grad scaler);
    ignored on the CPU. ``freeze_random_encoder``: whether a stage's ``freeze_encoder`` also
    freezes an encoder that starts random (no ImageNet weights, no checkpoint to fine-tune);
    a frozen random encoder leaves the decoder to learn from random features.
    ``stage_checkpoint_every_min``: when training writes stage checkpoints (a run's driver asks
    for them, see :mod:`loop.train.stage_checkpoints`), one at each stage end and, within a
    stage, one at the first step or epoch end this many minutes after the last (0: at stage
    ends only); a killed training resumes from the latest with the same result. It does not
    change what is trained.
    """

    stages: tuple[Stage, ...] = ()
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    max_momentum: float = 0.95
    base_momentum: float = 0.85
    weight_decay: float = 0.01
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    dice_weight: float = 1.0
    bce_weight: float = 1.0
    num_workers: int = 0
    seed: int = 0
    deterministic: bool = False
    amp: bool = True
    freeze_random_encoder: bool = True
    stage_checkpoint_every_min: float = 10.0

    _nested = {"stages": _stages, "augment": _augment}
    _where = "train"

    def __post_init__(self) -> None:
        set_field(self, "stages", _stages(self.stages, where="train.stages"))
        if not self.stages:
            raise fail("train.stages", self.stages, "at least one stage")
        set_field(self, "augment", _augment(self.augment, where="train.augment"))
        set_field(self, "pct_start", check_float("train.pct_start", self.pct_start, 0.0, 1.0, low_open=True))
        if self.pct_start >= 1.0:
            raise fail("train.pct_start", self.pct_start, "a number in (0, 1)")
        set_field(self, "div_factor", check_float("train.div_factor", self.div_factor, 1.0, 1e9))
        set_field(self, "final_div_factor", check_float("train.final_div_factor", self.final_div_factor, 1.0, 1e12))
        set_field(self, "max_momentum", check_float("train.max_momentum", self.max_momentum, 0.0, 1.0))
        set_field(self, "base_momentum", check_float("train.base_momentum", self.base_momentum, 0.0, self.max_momentum))
        set_field(self, "weight_decay", check_float("train.weight_decay", self.weight_decay, 0.0, 10.0))
        set_field(self, "dice_weight", check_float("train.dice_weight", self.dice_weight, 0.0, 1e3))
        set_field(self, "bce_weight", check_float("train.bce_weight", self.bce_weight, 0.0, 1e3))
        if self.dice_weight == 0 and self.bce_weight == 0:
            raise fail("train.dice_weight/bce_weight", (0.0, 0.0), "at least one weight > 0")
        check_int("train.num_workers", self.num_workers, 0, 256)
        check_int("train.seed", self.seed, 0, 2**63 - 1)
        check_bool("train.deterministic", self.deterministic)
        check_bool("train.amp", self.amp)
        check_bool("train.freeze_random_encoder", self.freeze_random_encoder)
        set_field(self, "stage_checkpoint_every_min",
                  check_float("train.stage_checkpoint_every_min", self.stage_checkpoint_every_min, 0.0, 1e6))


@dataclass(frozen=True)
class Preset:
    """A named pair of model and training configuration.

    ``classification_stages`` replaces the schedule when the preset is asked for the
    classification task (the paper trained its crack classifier differently, §3.1.2).
    ``classification_min_steps``: a run's classifier schedule is sized to its training set
    (:func:`sized_stages`) so that every stage has at least this many optimiser steps — a
    classifier learns from steps, and a loop's few hundred images at the preset's epochs give
    too few (a crack run's 90 steps left its classifier at chance; 126 per stage still did on
    some seeds; 250 per stage learned on both seeds tried).
    """

    name: str
    model: ModelConfig
    train: TrainConfig
    description: str
    classification_stages: tuple[Stage, ...] | None = None
    classification_min_steps: int = 0

    def for_task(self, task: str, classes: int | None = None) -> "Preset":
        """This preset for ``task`` (segmentation or classification, with ``classes``)."""
        if task not in TASKS:
            raise fail("task", task, f"one of {TASKS}")
        if task == self.model.task and classes is None:
            return self
        model = dataclasses.replace(self.model, task=task, arch=None, classes=classes)
        train = self.train
        if task == "classification" and self.classification_stages:
            train = dataclasses.replace(train, stages=self.classification_stages)
        return dataclasses.replace(self, model=model, train=train)

    def sized_for(self, n_train: int) -> "Preset":
        """This preset with a classifier's stages sized to ``n_train`` training samples
        (``classification_min_steps`` optimiser steps per stage at least, :func:`sized_stages`);
        a segmentation preset, or one without a minimum, as it is."""
        if self.model.task != "classification" or not self.classification_min_steps:
            return self
        stages = sized_stages(self.train.stages, n_train, min_steps=self.classification_min_steps)
        return dataclasses.replace(self, train=dataclasses.replace(self.train, stages=stages))

    def to_dict(self) -> dict[str, Any]:
        """``{"preset": name, "model": {...}, "train": {...}}``, TOML-ready."""
        return {"preset": self.name, "model": self.model.to_dict(), "train": self.train.to_dict()}


MIN_STEPS_PER_EPOCH = 4
"""A sized schedule's batch is at most this fraction of the training set, so an epoch has at least this many steps."""


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimiser steps in one epoch of ``n`` samples: a short last batch is dropped (BatchNorm
    needs more than one sample) unless it is the only one.

    >>> steps_per_epoch(300, 16), steps_per_epoch(10, 16)
    (18, 1)
    """
    return n // batch_size if n > batch_size else 1


def sized_stages(stages: Sequence[Stage], n: int, *, min_steps: int, epochs: int | None = None,
                 repeat: int = 1) -> tuple[Stage, ...]:
    """``stages`` sized to a training set of ``n`` samples (the same rule for every model).

    Per stage: batch = min(the stage's batch, n // :data:`MIN_STEPS_PER_EPOCH`), at least 2
    (BatchNorm) and never more than ``n``; epochs = ``epochs`` (default the stage's) passes
    over the data, where a set whose rarer class is repeated ``repeat`` times makes one
    epoch count as ``repeat`` passes; then raised until the stage has at least
    ``min_steps`` optimiser steps (a short last batch is dropped, so an epoch is
    ``n // batch`` steps).

    >>> s = Stage(size=128, epochs=5, freeze_encoder=False, lr_max=3e-4, batch_size=256)
    >>> [(t.batch_size, t.epochs) for t in sized_stages([s], 42, min_steps=30)]
    [(10, 8)]
    """
    if n < 1:
        raise fail("training set", n, "at least one sample")
    out = []
    for stage in stages:
        batch = min(stage.batch_size, max(2, n // MIN_STEPS_PER_EPOCH), n)
        steps = steps_per_epoch(n, batch)
        passes = stage.epochs if epochs is None else epochs
        count = max(1, math.ceil(passes / max(1, repeat)), math.ceil(min_steps / steps))
        out.append(dataclasses.replace(stage, batch_size=batch, epochs=count))
    return tuple(out)



PAPER = Preset(
    name="paper",
    description="the paper's schedule on a GPU: ResNet50 U-Net, head 20 ep @128, head 10 ep @256, all 5 ep @512",
    model=ModelConfig(encoder="resnet50"),
    train=TrainConfig(
        stages=(
            Stage(size=128, epochs=20, freeze_encoder=True, lr_max=1e-3, batch_size=64),
            Stage(size=256, epochs=10, freeze_encoder=True, lr_max=1e-3, batch_size=32),
            Stage(size=512, epochs=5, freeze_encoder=False, lr_max=3e-4, batch_size=16),
        ),
        num_workers=8,
    ),
    classification_stages=(
        Stage(size=128, epochs=4, freeze_encoder=True, lr_max=1e-3, batch_size=256),
        Stage(size=128, epochs=5, freeze_encoder=False, lr_max=3e-4, batch_size=256),
    ),
    classification_min_steps=100,
)

CPU = Preset(
    name="cpu",
    description="ResNet18 U-Net on a small CPU: head 2 ep @64, all 3 ep @128 (a classifier: both @128, "
                "at least 250 steps each)",
    model=ModelConfig(encoder="resnet18"),
    train=TrainConfig(
        stages=(
            Stage(size=64, epochs=2, freeze_encoder=True, lr_max=3e-3, batch_size=16),
            Stage(size=128, epochs=3, freeze_encoder=False, lr_max=1e-3, batch_size=16),
        ),
        num_workers=0,
    ),
    # at 128 px throughout: shrinking a crack a few pixels wide to 64 px halves it
    classification_stages=(
        Stage(size=128, epochs=2, freeze_encoder=True, lr_max=3e-3, batch_size=16),
        Stage(size=128, epochs=3, freeze_encoder=False, lr_max=1e-3, batch_size=16),
    ),
    classification_min_steps=250,
)

SMOKE = Preset(
    name="smoke",
    description="ResNet18 at 64 px, one epoch per stage: seconds, for tests",
    model=ModelConfig(encoder="resnet18"),
    train=TrainConfig(
        stages=(
            Stage(size=64, epochs=1, freeze_encoder=True, lr_max=3e-3, batch_size=4),
            Stage(size=64, epochs=1, freeze_encoder=False, lr_max=1e-3, batch_size=4),
        ),
        num_workers=0,
    ),
)

PRESETS: dict[str, Preset] = {p.name: p for p in (PAPER, CPU, SMOKE)}


def get_preset(name: str, task: str = "segmentation", classes: int | None = None) -> Preset:
    """The preset called ``name`` (see the module docstring), for ``task``."""
    try:
        preset = PRESETS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"preset: expected one of {', '.join(PRESETS)}, got {name!r}") from None
    return preset.for_task(task, classes)
