"""Model inference: probabilities for a batch, and tiled inference for images of any size.

Input convention: grey uint8 images become float32 tensors in [0, 1], shape (N, C, H, W),
with the grey channel repeated when the model's first convolution takes C = 3 channels.
Segmentation models give boundary logits (N, 1, H, W) and we return sigmoid
probabilities; classification models give logits (N, C).

Inference runs where the model's weights are (``device=None``), and never moves the
model: a ``device`` that differs from the weights' is an error.

Tiled inference (:func:`predict_image`) cuts a large image into ``tile``×``tile`` tiles that
overlap by ``overlap`` pixels and stitches them by *centre cropping*: every output pixel
comes from the tile in which it lies farthest from a cut edge, i.e. at least
``overlap // 2`` pixels inside it. A model whose receptive field reaches no farther
than ``overlap // 2`` pixels gives exactly the whole-image result; for a U-Net the cut
edges are kept out of the output, which is what matters for seams.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch
from torch import nn

from generators.base import TASKS
from loop.evaluate.metrics import EvaluationError
from loop.train.device import resolve_device

DIVISOR = 32
"""U-Net encoders downsample five times: inputs must have sides divisible by 32."""


def model_device(model: nn.Module, device: str | torch.device | None = None) -> torch.device:
    """Where ``model`` runs: the device of its parameters, checked against ``device`` when one is given.

    Inference never moves the caller's model; asking for another device than the one its
    weights are on raises :class:`~loop.evaluate.metrics.EvaluationError`.
    """
    param = next(iter(model.parameters()), None)
    here = param.device if param is not None else torch.device(device or "cpu")
    if device is not None:
        asked = torch.device(device)
        if asked.type != here.type or (asked.index is not None and here.index is not None and asked.index != here.index):
            raise EvaluationError(
                f"device: asked for {asked} but the model's weights are on {here}; "
                f"move it first with model.to({str(asked)!r})"
            )
    return here


def input_channels(model: nn.Module) -> int:
    """Number of input channels of ``model``: those of its first 2-D convolution."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return int(module.in_channels)
    raise EvaluationError(f"model: no Conv2d layer found in {type(model).__name__}; cannot tell its input channels")


def images_to_tensor(images: np.ndarray, channels: int = 1) -> torch.Tensor:
    """uint8 (N, H, W) grey images → float32 (N, channels, H, W) in [0, 1]."""
    arr = np.asarray(images)
    if arr.ndim != 3 or arr.dtype != np.uint8:
        raise EvaluationError(f"images: expected uint8 (N, H, W), got dtype {arr.dtype} shape {arr.shape}")
    x = torch.from_numpy(np.ascontiguousarray(arr)).unsqueeze(1).float().div_(255.0)
    return x.expand(-1, channels, -1, -1) if channels != 1 else x


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with gradients off; restore its training flag after."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield model
    finally:
        model.train(was_training)


def padded_shape(height: int, width: int, divisor: int = DIVISOR) -> tuple[int, int]:
    """The smallest (H, W) at least as large whose sides are multiples of ``divisor``."""
    return -(-height // divisor) * divisor, -(-width // divisor) * divisor


def pad_to_multiple(images: np.ndarray, divisor: int = DIVISOR) -> np.ndarray:
    """Pad the last two axes at the bottom and right, by reflection, to multiples of ``divisor``."""
    h, w = images.shape[-2:]
    ph, pw = padded_shape(h, w, divisor)
    if (ph, pw) == (h, w):
        return images
    pad = [(0, 0)] * (images.ndim - 2) + [(0, ph - h), (0, pw - w)]
    # numpy reflects repeatedly, so this works even when the pad exceeds the side.
    return np.pad(images, pad, mode="reflect" if min(h, w) > 1 else "edge")




def _check_task(task: str) -> None:
    if task not in TASKS:
        raise EvaluationError(f"task: expected one of {', '.join(TASKS)}, got {task!r}")


def _segmentation_logits(out: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) model output → (N, H, W) float32 logits."""
    if out.ndim != 4 or out.shape[1] != 1:
        raise EvaluationError(
            f"model output: expected segmentation logits (N, 1, H, W), got shape {tuple(out.shape)}"
        )
    return out[:, 0].float()


def _classification_logits(out: torch.Tensor) -> torch.Tensor:
    if out.ndim != 2:
        raise EvaluationError(f"model output: expected classification logits (N, C), got shape {tuple(out.shape)}")
    return out.float()


def model_task(model: nn.Module, device: str | torch.device | None = None) -> str:
    """``"segmentation"`` or ``"classification"``, from the shape of the model's output on a blank 64×64 image."""
    dev = model_device(model, device)
    x = torch.zeros((1, input_channels(model), 64, 64), device=dev)
    with eval_mode(model):
        out = model(x)
    if out.ndim == 4:
        return "segmentation"
    if out.ndim == 2:
        return "classification"
    raise EvaluationError(
        f"model output: expected (N, 1, H, W) segmentation or (N, C) classification logits, got shape {tuple(out.shape)}"
    )


def forward_logits(
    model: nn.Module,
    images: np.ndarray,
    device: str | torch.device | None = None,
    task: str = "segmentation",
) -> torch.Tensor:
    """Raw model outputs for a batch of same-size grey uint8 images (N, H, W), as a float32 tensor on the model's device.

    Segmentation: boundary logits (N, H, W); images whose sides are not multiples of 32
    are padded by reflection for the model and the output is cropped back.
    Classification: class logits (N, C), the images fed as they are. The tensor is made
    under ``torch.inference_mode`` (no autograd history).
    """
    _check_task(task)
    arr = np.asarray(images)
    if arr.ndim != 3 or arr.dtype != np.uint8 or arr.size == 0:
        raise EvaluationError(f"images: expected non-empty uint8 (N, H, W), got dtype {arr.dtype} shape {arr.shape}")
    dev = model_device(model, device)
    h, w = arr.shape[1:]
    if task == "segmentation":
        arr = pad_to_multiple(arr)
    x = images_to_tensor(arr, input_channels(model)).to(dev)
    with eval_mode(model):
        out = model(x)
        return _segmentation_logits(out)[:, :h, :w] if task == "segmentation" else _classification_logits(out)


def predict_logits(
    model: nn.Module,
    images: np.ndarray,
    device: str | torch.device | None = None,
    task: str = "segmentation",
) -> np.ndarray:
    """:func:`forward_logits` as a float32 numpy array."""
    return forward_logits(model, images, device, task).cpu().numpy()


def predict_batch(
    model: nn.Module,
    images: np.ndarray,
    device: str | torch.device | None = None,
    task: str = "segmentation",
) -> np.ndarray:
    """Probabilities for a batch of same-size grey uint8 images (N, H, W).

    Segmentation: boundary probabilities float32 (N, H, W) (sigmoid of
    :func:`predict_logits`); classification: softmax class probabilities float32 (N, C).
    """
    logits = torch.from_numpy(predict_logits(model, images, device, task))
    probs = torch.sigmoid(logits) if task == "segmentation" else torch.softmax(logits, dim=1)
    return probs.numpy()


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)`` with at least ``overlap`` shared.

    The last tile is aligned to the end, so it may overlap its neighbour by more.
    """
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def _owned_ranges(starts: list[int], tile: int, length: int) -> list[tuple[int, int]]:
    """For each tile, the output interval it writes: cut halfway through each overlap."""
    cuts = [0]
    for a, b in zip(starts[:-1], starts[1:]):
        cuts.append((b + a + tile) // 2)
    cuts.append(length)
    return list(zip(cuts[:-1], cuts[1:]))


def check_tiling(tile: int, overlap: int) -> None:
    """Raise :class:`~loop.evaluate.metrics.EvaluationError` unless ``tile`` is a multiple of 32 and ``0 <= overlap < tile``."""
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < DIVISOR or tile % DIVISOR:
        raise EvaluationError(f"tile: expected a positive multiple of {DIVISOR} px, got {tile!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, (int, np.integer)) or not 0 <= overlap < tile:
        raise EvaluationError(f"overlap: expected an integer in [0, tile={tile}) px, got {overlap!r}")


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Logistic function, float32, without overflow warnings for large negative logits."""
    return torch.sigmoid(torch.from_numpy(np.asarray(logits, dtype=np.float32))).numpy()


def predict_image_logits(
    model: nn.Module,
    image_uint8: np.ndarray,
    tile: int = 256,
    overlap: int = 64,
    device: str | torch.device | None = None,
    batch_size: int = 8,
) -> np.ndarray:
    """Boundary logits float32 H×W for one grey uint8 image of any size (see :func:`predict_image`)."""
    check_tiling(tile, overlap)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise EvaluationError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
    img = np.asarray(image_uint8)
    if img.ndim != 2 or img.dtype != np.uint8 or img.size == 0:
        raise EvaluationError(
            f"image: expected a non-empty grey uint8 H×W array, got dtype {img.dtype} shape {img.shape}"
        )
    h, w = img.shape
    padded = pad_to_multiple(img)
    ph, pw = padded.shape
    th, tw = min(tile, ph), min(tile, pw)
    rows, cols = tile_starts(ph, th, overlap), tile_starts(pw, tw, overlap)
    row_own, col_own = _owned_ranges(rows, th, ph), _owned_ranges(cols, tw, pw)
    jobs = [(r, c, ro, co) for r, ro in zip(rows, row_own) for c, co in zip(cols, col_own)]

    dev = model_device(model, device)
    channels = input_channels(model)
    out = np.empty((ph, pw), dtype=np.float32)
    with eval_mode(model):
        for i in range(0, len(jobs), batch_size):
            chunk = jobs[i:i + batch_size]
            tiles = np.stack([padded[r:r + th, c:c + tw] for r, c, _, _ in chunk])
            logits = _segmentation_logits(model(images_to_tensor(tiles, channels).to(dev))).cpu().numpy()
            for (r, c, (r0, r1), (c0, c1)), z in zip(chunk, logits):
                out[r0:r1, c0:c1] = z[r0 - r:r1 - r, c0 - c:c1 - c]
    return out[:h, :w]


def predict_image(
    model: nn.Module,
    image_uint8: np.ndarray,
    tile: int = 256,
    overlap: int = 64,
    device: str | torch.device | None = None,
    batch_size: int = 8,
) -> np.ndarray:
    """Boundary probabilities float32 H×W for one grey uint8 image of any size.

    The image is padded by reflection to multiples of 32, cut into ``tile``×``tile``
    tiles overlapping by ``overlap`` pixels (a side shorter than ``tile`` is one tile of
    the padded side), run ``batch_size`` tiles at a time and stitched by centre cropping
    (see the module docstring), then cropped back to H×W.
    """
    return sigmoid(predict_image_logits(model, image_uint8, tile, overlap, device, batch_size))
