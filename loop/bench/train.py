"""Training throughput: how fast the trainer runs, and how much the data path costs it.

:func:`bench_train` trains a preset's last stage on a dataset view (synthetic in-memory
grain images by default), then measures forward-only evaluation through the same loader and
a "bare loop": the same model, batch and size trained on tensors already on the device. The
ratio of the two training speeds is the data path's efficiency (1.0 = loading and augmenting
cost nothing). Numbers are noisy on a shared machine.

The data are the project's own generators (grains, cracks) rendered into an in-memory
:class:`loop.train.data.ArrayView`.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from generators import get_generator

from loop.train.checkpoints import save_checkpoint
from loop.config.training import get_preset
from loop.train.losses import build_loss
from loop.train.model import set_encoder_frozen
from loop.train.data import ArrayView
from loop.train.device import resolve_device
from loop.train.fit import Precision, make_loader, stage_generator, to_device, train
from loop.errors import InputError


def synthetic_view(spec: Mapping[str, Any]) -> ArrayView:
    """An :class:`ArrayView` of the project's own generator, described by a small dict (cheap to
    send to a Ray actor).

    ``spec``: ``{"task": "segmentation"|"classification", "n": int, "size": int, "seed": int}``;
    segmentation renders ``grains``, classification ``cracks``, at random points of their space.
    """
    task = spec.get("task", "segmentation")
    name = {"segmentation": "grains", "classification": "cracks"}.get(task)
    if name is None:
        raise InputError(f"task: expected 'segmentation' or 'classification', got {task!r}")
    generator = get_generator(name)
    n, size, seed = int(spec["n"]), int(spec["size"]), int(spec.get("seed", 0))
    rng = np.random.default_rng(seed)
    samples = [generator.render(params, seed * 1_000_003 + k, size)
               for k, params in enumerate(generator.space.sample(rng, n))]
    targets = [s.mask for s in samples] if task == "segmentation" else [s.label for s in samples]
    return ArrayView(np.stack([s.image for s in samples]), np.asarray(targets))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _eval_images_per_s(model, loader, device, precision, in_channels: int) -> float:
    model.eval()
    n = 0
    with torch.inference_mode():
        t0 = time.perf_counter()
        for x, _ in loader:
            x = to_device(x, device)
            with precision.autocast():
                model(x if in_channels == 1 else x.expand(-1, in_channels, -1, -1))
            n += x.shape[0]
        _sync(device)
    return n / max(time.perf_counter() - t0, 1e-9)


def _bare_images_per_s(model, batch, stage, cfg, loss_fn, device, precision, steps: int) -> float:
    """Train steps on one batch that already sits on the device: the speed with no data path."""
    x, y = batch
    set_encoder_frozen(model, stage.freeze_encoder)
    model.train()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=stage.lr_max / cfg.div_factor,
        weight_decay=cfg.weight_decay, fused=device.type == "cuda",
    )

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast():
            logits = model(x)
        precision.scaler.scale(loss_fn(logits, y)).backward()
        precision.scaler.step(optimizer)
        precision.scaler.update()

    for _ in range(2):  # warm-up: allocator, cuDNN autotuning
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * x.shape[0] / max(time.perf_counter() - t0, 1e-9)


def bench_train(
    preset: str = "smoke",
    n_images: int = 64,
    *,
    task: str = "segmentation",
    stage: int = -1,
    size: int | None = None,
    epochs: int = 2,
    num_workers: int | None = None,
    device: str | None = None,
    seed: int = 0,
    view: Any = None,
    schedule: bool = False,
) -> dict[str, Any]:
    """Measure training, evaluation and bare-loop throughput of one stage of ``preset``.

    Stage ``stage`` (default the last: all layers at the largest size; its size replaced by
    ``size`` if given) is trained for ``epochs`` epochs from scratch on ``view`` (default:
    ``n_images`` synthetic images at that size); figures are those of the last epoch (the
    first one pays for start-up). With ``schedule``, the preset's
    whole schedule is then run as a fine-tune from those weights and timed
    (``schedule_wall_s``). Returns a JSON-able dict.
    """
    p = get_preset(preset, task)
    try:
        chosen = p.train.stages[stage]
    except IndexError:
        raise InputError(f"stage: expected an index into the {len(p.train.stages)} stages of {preset!r}, got {stage}") from None
    stage_cfg = dataclasses.replace(chosen, size=size or chosen.size, epochs=epochs)
    cfg = dataclasses.replace(
        p.train, stages=(stage_cfg,), num_workers=p.train.num_workers if num_workers is None else num_workers
    )
    if view is None:
        view = synthetic_view({"task": task, "n": n_images, "size": stage_cfg.size, "seed": seed})
    dev = resolve_device(device)
    epochs_seen: list[dict[str, Any]] = []
    result = train(view, cfg, p.model, device=dev, progress=epochs_seen.append)
    model = result.model
    precision = Precision(dev, cfg.amp)
    loader = make_loader(view, task, stage_cfg, cfg, dev, stage_generator(seed, 99), augment=False)
    eval_ips = _eval_images_per_s(model, loader, dev, precision, p.model.in_channels)
    x, y = next(iter(loader))
    in_ch = p.model.in_channels
    batch = (to_device(x, dev).expand(-1, in_ch, -1, -1) if in_ch > 1 else to_device(x, dev), to_device(y, dev))
    steps = max(3, min(50, len(loader)))
    bare_ips = _bare_images_per_s(model, batch, stage_cfg, cfg, build_loss(task, cfg), dev, precision, steps)
    last_epoch = epochs_seen[-1]
    report: dict[str, Any] = {
        "preset": preset,
        "task": task,
        "encoder": p.model.encoder,
        "device": str(dev),
        "stage": stage,
        "size_px": stage_cfg.size,
        "batch_size": stage_cfg.batch_size,
        "freeze_encoder": stage_cfg.freeze_encoder,
        "n_images": len(view),
        "epochs": epochs,
        "num_workers": cfg.num_workers,
        "torch_threads": torch.get_num_threads(),
        "train_images_per_s": last_epoch["images_per_s"],
        "train_images_per_s_all_epochs": result.images_per_s,
        "data_wait_fraction": last_epoch["data_wait_fraction"],
        "eval_images_per_s": eval_ips,
        "bare_train_images_per_s": bare_ips,
        "data_path_efficiency": last_epoch["images_per_s"] / bare_ips,
        "train_wall_s": result.wall_s,
        "final_loss": result.epoch_losses[-1],
    }
    if schedule:
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = str(Path(tmp) / "bench.safetensors")
            save_checkpoint(ckpt, model.state_dict(), {"model": p.model.to_dict()})
            t0 = time.perf_counter()
            full_cfg = p.train if num_workers is None else dataclasses.replace(p.train, num_workers=num_workers)
            full = train(view, full_cfg, p.model, init=ckpt, device=dev)
            report["schedule_wall_s"] = time.perf_counter() - t0
        report["schedule_stages"] = [s.to_dict() for s in p.train.stages]
        report["schedule_images_per_s"] = full.images_per_s
        report["schedule_data_wait_fraction"] = full.data_wait_fraction
        report["schedule_epoch_losses"] = full.epoch_losses
    return report
