"""Training and fine-tuning on a dataset view with the paper's schedule.

The schedule (§2.2, §3.2.2): the stages of a :class:`~loop.config.training.TrainConfig` in order,
weights carried from one to the next; a stage with ``freeze_encoder`` trains the decoder and
head only; every sample is resized to the stage's size (progressive resizing); each stage is
one one-cycle LR schedule (``OneCycleLR``) over a fresh AdamW.

One code path for both devices: channels-last tensors on both; on CUDA, mixed precision
(bf16, or fp16 with a grad scaler), pinned memory and persistent loader workers; on the CPU,
float32. Shuffling and augmentation draw from a torch generator seeded from ``cfg.seed`` and
the stage index: the sampler hands each sample an augmentation seed with its index, so the
batches do not depend on the number of loader workers, and with ``cfg.deterministic`` the
same seed gives the same weights.

Stage checkpoints (:mod:`loop.train.stage_checkpoints`): given a ``stage_checkpoint`` URI,
:func:`train` saves its whole state there at each stage end and every
``cfg.stage_checkpoint_every_min`` minutes within a stage, and a later call of the same
training resumes from it with the same result as an uninterrupted one. The shuffling stream
makes this exact: each epoch's order and augmentation seeds are drawn from the stage's
generator when the epoch starts, so its state then, and the steps done since, place a resumed
stream where the killed one was.

A view is anything with ``len(view)``, ``view[i] -> (image uint8 H×W, target)`` and
``view.sample_ids``; the target is a uint8 mask (segmentation, non-zero = boundary) or an
int class label (classification).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from loop.train.augment import augment_pair, resize_pair, to_unit_float
from loop.train.checkpoints import load_checkpoint, load_state_into, read_digest, save_checkpoint
from loop.config.training import AugmentConfig, ModelConfig, Stage, TrainConfig, steps_per_epoch
from loop.train.losses import build_loss
from loop.train.device import resolve_device
from loop.train.model import build_model, set_encoder_frozen
from loop.train.stage_checkpoints import StagePoint, load_stage_checkpoint, save_stage_checkpoint
from loop.errors import InputError


class TrainError(InputError):
    """Training cannot run on what it was given (empty view, wrong targets, bad device)."""


@dataclass
class TrainResult:
    """What a call of :func:`train` did.

    ``epoch_losses``: mean training loss per epoch over all stages in order (``epoch_stage``
    gives each epoch's stage index); ``step_losses``: the loss of every optimiser step;
    ``images_per_s``: samples trained per second of the training loops; ``data_wait_fraction``:
    the part of that time spent waiting for the next batch (loading, augmenting, copying to the
    device); ``wall_s``: the whole call, model building and checkpoint writing included.
    ``resumed_at``: ``[stage, epoch, step]`` of the stage checkpoint this call resumed from, or
    ``None``; the losses, counts and ``train_s`` then include the part trained before.
    ``model`` is the trained model (left out of :meth:`to_dict`).
    """

    epoch_losses: list[float]
    epoch_stage: list[int]
    step_losses: list[float]
    images_per_s: float
    data_wait_fraction: float
    train_s: float
    wall_s: float
    n_samples: int
    n_images: int
    device: str
    init: str | None
    out: str | None
    digest: str | None
    resumed_at: list[int] | None = None
    model: nn.Module | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON/TOML/Ray friendly), without the model."""
        d = dataclasses.asdict(dataclasses.replace(self, model=None))
        d.pop("model")
        return d


class _StageBatches(Sampler):
    """``epochs`` epochs of batches of ``(index, augmentation seed)`` pairs, as one stream.

    Each epoch is a fresh shuffled order of ``range(n)`` cut into batches; a short last batch
    is dropped (BatchNorm needs > 1 sample) unless it is the only one. One stream for the
    whole stage keeps the loader workers busy across epoch boundaries instead of draining
    and refilling their queue every epoch. A resumed stream starts at step ``start_step`` of
    epoch ``start_epoch``, its generator in the state it had when that epoch started
    (:meth:`state_at`).
    """

    def __init__(self, n: int, batch_size: int, epochs: int, generator: torch.Generator,
                 start_epoch: int = 0, start_step: int = 0):
        self.n = n
        self.batch_size = batch_size
        self.epochs = epochs
        self.generator = generator
        self.steps_per_epoch = steps_per_epoch(n, batch_size)
        self.start_epoch = start_epoch
        self.start_step = start_step
        self._epoch_states: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return (self.epochs - self.start_epoch) * self.steps_per_epoch - self.start_step

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for epoch in range(self.start_epoch, self.epochs):
            self._epoch_states[epoch] = self.generator.get_state()
            order = torch.randperm(self.n, generator=self.generator).tolist()
            seeds = torch.randint(0, 2**62, (self.n,), generator=self.generator).tolist()
            pairs = list(zip(order, seeds))
            for step in range(self.start_step if epoch == self.start_epoch else 0, self.steps_per_epoch):
                yield pairs[step * self.batch_size:(step + 1) * self.batch_size]

    def state_at(self, epoch: int) -> torch.Tensor:
        """The generator's state when epoch ``epoch`` started, or (the next epoch, not drawn yet:
        the loader may run ahead of training, but never by an epoch it has not begun) now."""
        state = self._epoch_states.get(epoch)
        return state.clone() if state is not None else self.generator.get_state()


class PairDataset(Dataset):
    """A view's samples as training tensors at one size, augmented when ``augment`` is given.

    Items are requested as ``(index, seed)``; ``seed`` seeds the sample's augmentation. Returns
    ``(image float32 (1, size, size) in [0, 1], target)`` with target a float32 (1, size, size)
    boundary mask (soft after shrinking) or an int64 class label.
    """

    def __init__(self, view: Any, task: str, size: int, augment: AugmentConfig | None = None):
        self.view = view
        self.task = task
        self.size = size
        self.augment = augment

    def __len__(self) -> int:
        return len(self.view)

    def __getitem__(self, item: tuple[int, int] | int) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = item if isinstance(item, tuple) else (item, 0)
        image, target = self.view[index]
        image = to_unit_float(image)
        if self.task == "segmentation":
            mask = np.asarray(target)
            if mask.shape != image.shape:
                raise TrainError(f"sample {index}: mask shape {mask.shape} differs from image shape {image.shape}")
            mask = (mask > 0).astype(np.float32)
        else:
            if isinstance(target, np.ndarray) and target.ndim > 0:
                raise TrainError(f"sample {index}: expected an int class label for classification, got an array")
            mask = None
        image, mask = resize_pair(image, mask, self.size)
        if self.augment is not None:
            image, mask = augment_pair(image, mask, np.random.default_rng(seed), self.augment)
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
        if mask is None:
            y = torch.tensor(int(target), dtype=torch.long)
        else:
            y = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None]
        return x, y


def stage_generator(seed: int, stage_index: int) -> torch.Generator:
    """The torch generator that shuffles and augments stage ``stage_index`` of a run seeded ``seed``."""
    state = np.random.SeedSequence([seed, stage_index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def make_loader(
    view: Any, task: str, stage: Stage, cfg: TrainConfig, device: torch.device, generator: torch.Generator,
    *, augment: bool = True, epochs: int = 1, start_epoch: int = 0, start_step: int = 0,
) -> DataLoader:
    """The DataLoader of ``epochs`` epochs of one stage, as one stream of batches: seeded
    shuffling, per-sample augmentation seeds, the stage's size; a resumed stream begins at
    step ``start_step`` of epoch ``start_epoch`` (``generator`` as it was when that epoch began)."""
    dataset = PairDataset(view, task, stage.size, cfg.augment if augment else None)
    batches = _StageBatches(len(view), stage.batch_size, epochs, generator, start_epoch, start_step)
    return DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.num_workers > 0,
    )


@contextlib.contextmanager
def _determinism(on: bool, cuda: bool) -> Iterator[None]:
    """Deterministic kernels (and no cuDNN autotuning) while training, restored after."""
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    torch.use_deterministic_algorithms(on, warn_only=True)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = cuda and not on
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[2], before[3]


@dataclass
class _Stats:
    """What the finished epochs of a training did (a stage checkpoint keeps it as plain values)."""

    epoch_losses: list[float] = field(default_factory=list)
    epoch_stage: list[int] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    images: int = 0
    wait_s: float = 0.0
    loop_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form."""
        return dataclasses.asdict(self)


class _StageSaver:
    """Writes the stage checkpoints of one :func:`train` call to ``uri``: at stage ends, and
    within a stage when :meth:`due` (``every_s`` after the last; never when 0)."""

    def __init__(self, uri: str, identity: dict[str, Any], every_s: float):
        self.uri = uri
        self.identity = identity
        self.every_s = every_s
        self.last = time.monotonic()

    def due(self) -> bool:
        """Whether a within-stage checkpoint is due now."""
        return self.every_s > 0 and time.monotonic() - self.last >= self.every_s

    def save(self, point: StagePoint) -> None:
        """Write ``point`` over the last one."""
        save_stage_checkpoint(self.uri, point, self.identity)
        self.last = time.monotonic()


ProgressCallback = Callable[[dict[str, Any]], None]
"""What :func:`train` calls with each progress event (see :func:`train` for the fields)."""

TRAINABLE_ENCODER_COST = 1.5
"""For ETAs only: an epoch that trains the encoder too costs about this many times one that
trains the decoder and head only (the encoder's backward pass), at the same size."""


def stage_name(stage: Stage) -> str:
    """A stage in words, as the presets describe it: ``head @128px`` (encoder frozen) or ``all @512px``."""
    return f"{'head' if stage.freeze_encoder else 'all'} @{stage.size}px"


def _epoch_images(n: int, batch_size: int) -> int:
    return (n // batch_size) * batch_size if n > batch_size else n  # a short last batch is dropped


def _epoch_work(stage: Stage, n: int) -> float:
    """Relative cost of one epoch of ``stage`` on ``n`` samples: images × pixels, more with a trainable encoder."""
    factor = 1.0 if stage.freeze_encoder else TRAINABLE_ENCODER_COST
    return _epoch_images(n, stage.batch_size) * stage.size ** 2 * factor


class _Reporter:
    """Builds the progress events of one :func:`train` call and hands them to its callback.

    The ETA covers the whole schedule: the work left (epochs × images × pixels, see
    :func:`_epoch_work`) at the rate measured so far (work done per second of training loop).
    Reporting reads values the loop has computed anyway and draws no random numbers, so it
    does not change what is trained.
    """

    def __init__(self, callback: ProgressCallback, every_s: float | None, stages: tuple[Stage, ...], n: int,
                 t_start: float):
        self.callback = callback
        self.every_s = every_s
        self.stages = stages
        self.n = n
        self.t_start = t_start
        self.last = t_start  # when the last event was sent
        self.total = sum(s.epochs * _epoch_work(s, n) for s in stages)
        self.done = 0.0  # work of the finished epochs

    def resume(self, epoch_stage: list[int]) -> None:
        """Count the epochs finished before a resume (their stage indices) as done."""
        self.done = sum(_epoch_work(self.stages[i], self.n) for i in epoch_stage)

    def due(self, step: int, steps: int) -> bool:
        """Whether a mid-epoch event is due after ``step`` of ``steps`` optimiser steps (a clock read, no sync)."""
        return self.every_s is not None and step < steps and time.perf_counter() - self.last >= self.every_s

    def emit(self, *, kind: str, stage_index: int, epoch: int, step: int, steps: int, loss: float, lr: float,
             images: int, wait: float, seconds: float, loop_s: float) -> None:
        """Send one event; ``seconds``/``images``/``wait``: this epoch so far; ``loop_s``: all training loops so far."""
        stage = self.stages[stage_index]
        epoch_work = _epoch_work(stage, self.n)
        done = self.done + epoch_work * step / max(steps, 1)
        if kind == "epoch":
            self.done += epoch_work
        eta = (self.total - done) * loop_s / done if done > 0 and loop_s > 0 else None
        self.last = time.perf_counter()
        self.callback({
            "kind": kind, "stage": stage_index, "stages": len(self.stages), "stage_name": stage_name(stage),
            "size": stage.size, "freeze_encoder": stage.freeze_encoder, "epoch": epoch, "epochs": stage.epochs,
            "step": step, "steps": steps, "loss": loss, "lr": lr,
            "images_per_s": images / max(seconds, 1e-9), "data_wait_fraction": wait / max(seconds, 1e-9),
            "elapsed_s": self.last - self.t_start, "eta_s": eta,
            "fraction": min(done / self.total, 1.0) if self.total else 1.0,
        })


class Precision:
    """Mixed-precision settings for a device: autocast dtype and a grad scaler (fp16 only)."""

    def __init__(self, device: torch.device, amp: bool):
        self.enabled = amp and device.type == "cuda"
        self.dtype = torch.bfloat16 if self.enabled and torch.cuda.is_bf16_supported() else torch.float16
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.enabled and self.dtype == torch.float16)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context for the forward pass (a no-op when disabled)."""
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled)


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a batch to ``device`` (asynchronously from pinned memory; images channels-last)."""
    if x.ndim == 4:
        return x.to(device, non_blocking=True, memory_format=torch.channels_last)
    return x.to(device, non_blocking=True)


def _input(x: torch.Tensor, in_channels: int) -> torch.Tensor:
    return x if in_channels == 1 else x.expand(-1, in_channels, -1, -1)


def _run_stage(
    model: nn.Module, view: Any, stage_index: int, stage: Stage, cfg: TrainConfig, model_cfg: ModelConfig,
    loss_fn: nn.Module, device: torch.device, precision: Precision, stats: _Stats, progress: _Reporter | None,
    start: StagePoint | None = None, saver: _StageSaver | None = None,
) -> None:
    """Train one stage (from ``start`` when it is a point within this stage), saving stage
    checkpoints through ``saver`` when due."""
    set_encoder_frozen(model, stage.freeze_encoder)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=stage.lr_max, weight_decay=cfg.weight_decay, betas=(cfg.max_momentum, 0.99),
        fused=device.type == "cuda",
    )
    within = start is not None and start.optimizer is not None  # a point within this stage
    first_epoch, first_step = (start.epoch, start.step) if within else (0, 0)
    generator = stage_generator(cfg.seed, stage_index)
    if within:
        generator.set_state(start.sampler_rng)  # as it was when epoch `first_epoch` began
    loader = make_loader(view, model_cfg.task, stage, cfg, device, generator, epochs=stage.epochs,
                         start_epoch=first_epoch, start_step=first_step)
    sampler = loader.batch_sampler
    steps = sampler.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=stage.lr_max, total_steps=stage.epochs * steps, pct_start=cfg.pct_start,
        div_factor=cfg.div_factor, final_div_factor=cfg.final_div_factor, cycle_momentum=True,
        base_momentum=cfg.base_momentum, max_momentum=cfg.max_momentum,
    )
    before: dict[str, Any] = {}
    if within:
        optimizer.load_state_dict(start.optimizer)
        scheduler.load_state_dict(start.scheduler)
        if start.scaler:
            precision.scaler.load_state_dict(start.scaler)
        before = dict(start.stats.get("epoch_so_far") or {})
    batches = iter(loader)
    for epoch in range(first_epoch, stage.epochs):
        model.train()
        resumed = before if epoch == first_epoch else {}
        done_losses: list[float] = list(resumed.get("losses", []))  # steps of this epoch trained before a resume
        losses: list[torch.Tensor] = []
        images = 0
        wait = 0.0
        t_epoch = time.perf_counter()

        def epoch_so_far() -> dict[str, Any]:
            new = torch.stack(losses).float().cpu().tolist() if losses else []
            return {"losses": done_losses + new, "images": resumed.get("images", 0) + images,
                    "wait_s": resumed.get("wait_s", 0.0) + wait,
                    "loop_s": resumed.get("loop_s", 0.0) + time.perf_counter() - t_epoch}

        def point(at_epoch: int, at_step: int, so_far: dict[str, Any] | None) -> StagePoint:
            return StagePoint(
                stage=stage_index, epoch=at_epoch, step=at_step, model_state=model.state_dict(),
                stats={**stats.to_dict(), "epoch_so_far": so_far}, torch_rng=torch.get_rng_state(),
                sampler_rng=sampler.state_at(at_epoch), optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(), scaler=precision.scaler.state_dict() or None,
            )

        for step in range((first_step if epoch == first_epoch else 0) + 1, steps + 1):
            t0 = time.perf_counter()
            x, y = next(batches)
            x, y = _input(to_device(x, device), model_cfg.in_channels), to_device(y, device)
            wait += time.perf_counter() - t0
            optimizer.zero_grad(set_to_none=True)
            with precision.autocast():
                logits = model(x)
            loss = loss_fn(logits, y)
            precision.scaler.scale(loss).backward()
            precision.scaler.step(optimizer)
            precision.scaler.update()
            scheduler.step()
            losses.append(loss.detach())
            images += x.shape[0]
            if saver is not None and step < steps and saver.due():
                saver.save(point(epoch, step, epoch_so_far()))
            if progress is not None and progress.due(step, steps):
                seconds = time.perf_counter() - t_epoch
                mean = (float(torch.stack(losses).float().mean()) if not done_losses
                        else float(np.mean(epoch_so_far()["losses"])))
                progress.emit(kind="batch", stage_index=stage_index, epoch=epoch, step=step, steps=steps,
                              loss=mean, lr=float(scheduler.get_last_lr()[0]),
                              images=images, wait=wait, seconds=seconds, loop_s=stats.loop_s + seconds)
        # One device sync per epoch: losses stay on the device until here.
        epoch_losses = done_losses + (torch.stack(losses).float().cpu().tolist() if losses else [])
        seconds = time.perf_counter() - t_epoch
        stats.loop_s += resumed.get("loop_s", 0.0) + seconds
        stats.wait_s += resumed.get("wait_s", 0.0) + wait
        stats.images += resumed.get("images", 0) + images
        stats.step_losses.extend(epoch_losses)
        stats.epoch_losses.append(float(np.mean(epoch_losses)))
        stats.epoch_stage.append(stage_index)
        if progress is not None:
            progress.emit(kind="epoch", stage_index=stage_index, epoch=epoch, step=steps, steps=steps,
                          loss=stats.epoch_losses[-1], lr=float(scheduler.get_last_lr()[0]), images=images,
                          wait=wait, seconds=seconds, loop_s=stats.loop_s)
        if saver is not None and epoch + 1 < stage.epochs and saver.due():
            saver.save(point(epoch + 1, 0, None))


def effective_stages(cfg: TrainConfig, *, random_encoder: bool) -> tuple[Stage, ...]:
    """The stages as trained: ``cfg.stages``, with no stage freezing a random encoder unless
    ``cfg.freeze_random_encoder`` says so."""
    if not random_encoder or cfg.freeze_random_encoder:
        return tuple(cfg.stages)
    return tuple(dataclasses.replace(stage, freeze_encoder=False) for stage in cfg.stages)


def _sample_ids_digest(view: Any) -> str:
    ids = np.ascontiguousarray(np.asarray(view.sample_ids, dtype=np.int64))
    return hashlib.sha256(ids.tobytes()).hexdigest()


def training_identity(view: Any, cfg: TrainConfig, model_cfg: ModelConfig, init: str | None,
              stages: tuple[Stage, ...]) -> dict[str, Any]:
    """What a stage checkpoint must have been written by to be resumed from: the same configs
    (the checkpoint interval aside), stages as trained, init checkpoint (by digest) and samples."""
    train_cfg = {k: v for k, v in cfg.to_dict().items() if k != "stage_checkpoint_every_min"}
    return {
        "model": model_cfg.to_dict(), "train": train_cfg, "stages": [s.to_dict() for s in stages],
        "init_sha256": read_digest(init) if init is not None else None,
        "n_samples": len(view), "sample_ids_sha256": _sample_ids_digest(view),
    }


def train(
    view: Any,
    cfg: TrainConfig,
    model_cfg: ModelConfig,
    *,
    init: str | None = None,
    out: str | None = None,
    device: str | torch.device | None = None,
    progress: ProgressCallback | None = None,
    progress_every_s: float | None = None,
    stage_checkpoint: str | None = None,
) -> TrainResult:
    """Train a model on ``view`` with ``cfg``'s schedule; fine-tune from checkpoint ``init`` if given.

    Writes the trained weights to checkpoint ``out`` when given (meta: ``model``, ``train``,
    ``input``, ``init``, ``n_samples``, ``sample_ids_sha256``, ``result``).

    ``stage_checkpoint``: a URI where this training keeps its stage checkpoint (see
    :mod:`loop.train.stage_checkpoints`): written at each stage end but the last and every
    ``cfg.stage_checkpoint_every_min`` minutes within a stage, and resumed from when it holds
    one of this same training (same configs, ``init`` and samples), with the same final weights
    as an uninterrupted run. It is left in place; the caller removes it
    (:func:`loop.train.stage_checkpoints.remove_stage_checkpoint`) once it has recorded ``out``.

    ``progress`` is called at the end of every epoch with an event dict and, when
    ``progress_every_s`` is given, also after any optimiser step within an epoch that comes at
    least that many seconds after the last event (``kind`` tells them apart; a mid-epoch event
    costs one device sync for its loss). It runs in the training thread, so it should be
    quick. Fields: ``kind`` ("epoch" or "batch"), ``stage`` (index), ``stages`` (count),
    ``stage_name`` (e.g. ``head @128px``), ``size``, ``freeze_encoder``, ``epoch`` (0-based, in the stage), ``epochs`` (of the stage),
    ``step``/``steps`` (optimiser steps done in this epoch / per epoch), ``loss`` (mean over
    the epoch's steps so far), ``lr``, ``images_per_s`` and ``data_wait_fraction`` (this epoch
    so far), ``elapsed_s`` (since this call began), ``eta_s`` (to the end of the whole
    schedule, estimated from the work left at the rate so far; see :class:`_Reporter`) and
    ``fraction`` (of the schedule's work done). Reporting does not change the trained weights.
    """
    if progress_every_s is not None and (isinstance(progress_every_s, bool)
                                         or not isinstance(progress_every_s, (int, float)) or not progress_every_s >= 0):
        raise TrainError(f"progress_every_s: expected a number of seconds >= 0 or None, got {progress_every_s!r}")
    t_start = time.perf_counter()
    if len(view) == 0:
        raise TrainError("view: expected at least one sample, got an empty view")
    dev = resolve_device(device)
    stages = effective_stages(cfg, random_encoder=init is None and model_cfg.encoder_weights is None)
    saver = start = None
    if stage_checkpoint is not None:
        saver = _StageSaver(stage_checkpoint, training_identity(view, cfg, model_cfg, init, stages),
                            60.0 * cfg.stage_checkpoint_every_min)
        start = load_stage_checkpoint(stage_checkpoint, saver.identity)
    if start is not None:
        # The stage checkpoint's weights replace the init checkpoint's or any ImageNet start.
        model = build_model(dataclasses.replace(model_cfg, encoder_weights=None), seed=cfg.seed)
        load_state_into(model, start.model_state, f"stage checkpoint {stage_checkpoint}")
        torch.set_rng_state(start.torch_rng)
    elif init is not None:
        # The checkpoint's weights replace any ImageNet start, so don't read that file.
        model = build_model(dataclasses.replace(model_cfg, encoder_weights=None), seed=cfg.seed)
        state, _ = load_checkpoint(init)
        load_state_into(model, state, f"checkpoint {init}")
    else:
        model = build_model(model_cfg, seed=cfg.seed)
    # Channels-last on the CPU too: oneDNN's convolutions run ~15 % faster at 128 px that way.
    model = model.to(dev, memory_format=torch.channels_last)
    loss_fn = build_loss(model_cfg.task, cfg)
    precision = Precision(dev, cfg.amp)
    stats = _Stats()
    if start is not None:
        stats = _Stats(**{k: v for k, v in start.stats.items() if k != "epoch_so_far"})
    reporter = None if progress is None else _Reporter(progress, progress_every_s, stages, len(view), t_start)
    if reporter is not None:
        reporter.resume(stats.epoch_stage)
    with _determinism(cfg.deterministic, dev.type == "cuda"):
        for i, stage in enumerate(stages):
            if start is not None and i < start.stage:
                continue
            # Its loader (and persistent workers) ends with the call, before the next stage starts its own.
            _run_stage(model, view, i, stage, cfg, model_cfg, loss_fn, dev, precision, stats, reporter,
                       start=start if start is not None and start.stage == i else None, saver=saver)
            if saver is not None and i + 1 < len(stages):
                saver.save(StagePoint(stage=i + 1, epoch=0, step=0, model_state=model.state_dict(),
                                      stats=stats.to_dict(), torch_rng=torch.get_rng_state()))
    set_encoder_frozen(model, False)
    model.eval()
    result = TrainResult(
        epoch_losses=stats.epoch_losses,
        epoch_stage=stats.epoch_stage,
        step_losses=stats.step_losses,
        images_per_s=stats.images / max(stats.loop_s, 1e-9),
        data_wait_fraction=stats.wait_s / max(stats.loop_s, 1e-9),
        train_s=stats.loop_s,
        wall_s=0.0,
        n_samples=len(view),
        n_images=stats.images,
        device=str(dev),
        init=init,
        out=out,
        digest=None,
        resumed_at=[start.stage, start.epoch, start.step] if start is not None else None,
        model=model,
    )
    if out is not None:
        meta = {
            "model": model_cfg.to_dict(),
            "train": cfg.to_dict(),
            "input": {"scale": "uint8 / 255", "in_channels": model_cfg.in_channels, "size": cfg.stages[-1].size},
            "init": init or "",
            "n_samples": len(view),
            "sample_ids_sha256": _sample_ids_digest(view),
            "result": {k: v for k, v in result.to_dict().items() if k not in ("step_losses", "digest", "wall_s")},
        }
        state = {k: v for k, v in model.state_dict().items()}
        result.digest = save_checkpoint(out, state, meta)
    result.wall_s = time.perf_counter() - t_start
    return result
