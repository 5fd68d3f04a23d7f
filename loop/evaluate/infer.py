"""Model inference: probabilities for a batch, and tiled inference for images of any size.

Input convention: grey uint8 images become float32 tensors in [0, 1], shape (N, C, H, W),
with the grey channel repeated when the model's first convolution takes C = 3 channels.
Segmentation models give boundary logits (N, 1, H, W) and we return sigmoid
probabilities; classification models give logits (N, C).

Inference runs where the model's weights are (``device=None``), and never moves the
model: a ``device`` that differs from the weights' is an error.

Tiled inference (:func:`predict_image`) cuts a large image into ``tile``×``tile`` tiles that
overlap by at least ``overlap`` pixels and *blends* them: each tile's logits are weighted
by a separable window and the weighted sum is divided by the summed weights, so the map
has no seams at tile borders. Along each axis a tile's weight is 1 except where it
overlaps a neighbour; across an overlap of ``L`` pixels it is

* ``BLEND_FLOOR`` (practically 0) in the ``L // 4`` pixels next to its own cut edge,
  which see the tile's padding rather than the image,
* a raised-cosine (Hann) ramp, ``cos²`` going out and ``sin²`` coming in, over the
  middle ``L - 2 (L // 4)`` pixels, where the two tiles' weights sum to 1,
* 1 in the quarter next to the neighbour's cut edge.

Sides on the image border are not tapered. The weight never reaches exactly zero, so
the normalisation is defined in any layout. A model whose receptive field reaches no
farther than ``overlap // 4`` pixels gives the whole-image result (up to
``BLEND_FLOOR`` times the tiles' disagreement); for a U-Net, whose receptive field is
larger than any tile, the tiles' small disagreements are faded out over the ramp
instead of meeting at a cut.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch
from torch import nn

from generators.base import TASKS
from loop.evaluate.metrics import EvaluationError

DIVISOR = 32
"""U-Net encoders downsample five times: inputs must have sides divisible by 32."""

BLEND_FLOOR = 1e-6
"""Smallest tile weight in tiled inference: near a tile's cut edge, instead of 0."""


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


def _ramp(n: int) -> np.ndarray:
    """``n`` samples of a raised-cosine rise from 0 to 1, at pixel centres: ``sin²(π/2 · (i + ½) / n)``."""
    return np.sin(0.5 * np.pi * (np.arange(n) + 0.5) / n) ** 2


def blend_weights(starts: list[int], tile: int) -> list[np.ndarray]:
    """Per-axis blending windows (float64, length ``tile``) of tiles at ``starts`` (see the module docstring).

    Across the overlap ``L`` of two neighbouring tiles, the ``L // 4`` pixels next to
    each tile's cut edge get :data:`BLEND_FLOOR`, and over the remaining middle
    pixels the left tile's weight falls as ``cos²`` while the right tile's rises as
    ``sin²``: the two sum to 1 there. Sides without a neighbour keep weight 1.
    """
    windows = []
    for k, s in enumerate(starts):
        w = np.ones(tile, dtype=np.float64)
        if k > 0:                                    # rise across the overlap with the previous tile
            overlap = starts[k - 1] + tile - s
            margin = overlap // 4
            ramp = overlap - 2 * margin
            w[:margin] = 0.0
            w[margin:margin + ramp] *= _ramp(ramp)
        if k + 1 < len(starts):                      # fall across the overlap with the next tile
            first = starts[k + 1] - s
            overlap = tile - first
            margin = overlap // 4
            ramp = overlap - 2 * margin
            w[first + margin:first + margin + ramp] *= _ramp(ramp)[::-1]
            w[first + margin + ramp:] = 0.0
        windows.append(np.maximum(w, BLEND_FLOOR))
    return windows


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
    row_w, col_w = blend_weights(rows, th), blend_weights(cols, tw)
    jobs = [(r, c, wr, wc) for r, wr in zip(rows, row_w) for c, wc in zip(cols, col_w)]
    # The windows are separable, so their sum over all tiles is the outer product of the per-axis sums.
    row_sum, col_sum = np.zeros(ph), np.zeros(pw)
    for r, wr in zip(rows, row_w):
        row_sum[r:r + th] += wr
    for c, wc in zip(cols, col_w):
        col_sum[c:c + tw] += wc

    dev = model_device(model, device)
    channels = input_channels(model)
    acc = np.zeros((ph, pw), dtype=np.float64)
    with eval_mode(model):
        for i in range(0, len(jobs), batch_size):
            chunk = jobs[i:i + batch_size]
            tiles = np.stack([padded[r:r + th, c:c + tw] for r, c, _, _ in chunk])
            logits = _segmentation_logits(model(images_to_tensor(tiles, channels).to(dev))).cpu().numpy()
            for (r, c, wr, wc), z in zip(chunk, logits):
                acc[r:r + th, c:c + tw] += np.outer(wr, wc) * z
    acc /= row_sum[:, None]
    acc /= col_sum[None, :]
    return acc[:h, :w].astype(np.float32)


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
    tiles overlapping by at least ``overlap`` pixels (a side shorter than ``tile`` is one
    tile of the padded side), run ``batch_size`` tiles at a time and blended with
    raised-cosine weights normalised by their sum (see the module docstring), then
    cropped back to H×W. The logits are blended; the probabilities are their sigmoid.
    """
    return sigmoid(predict_image_logits(model, image_uint8, tile, overlap, device, batch_size))
