"""Small stand-ins for the evaluator tests: an in-memory dataset view, tiny models, synthetic grains."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch
from scipy.spatial import cKDTree
from skimage.segmentation import find_boundaries
from torch import nn

BOUNDARY_GREY = 30
"""Grey level of boundary pixels in :func:`grain_sample` images (grains are 120..220)."""


class ArrayView:
    """The dataset-view interface over lists: ``len``, ``sample_ids``, ``params``, ``view[i] -> (image, target)``."""

    def __init__(self, images, targets, sample_ids=None):
        self.images = list(images)
        self.targets = list(targets)
        ids = np.arange(100, 100 + len(self.images)) if sample_ids is None else sample_ids
        self.sample_ids = np.asarray(ids, dtype=np.int64)
        self.params = pa.table({"sample_id": self.sample_ids})

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], self.targets[i]


def grain_sample(rng: np.random.Generator, height: int, width: int, n_grains: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """A Voronoi grain image and its 0/1 boundary mask (2-px boundaries, dark, plus bounded noise)."""
    seeds = rng.uniform(0, [height, width], size=(n_grains, 2))
    yy, xx = np.mgrid[:height, :width]
    _, labels = cKDTree(seeds).query(np.column_stack([yy.ravel(), xx.ravel()]))
    labels = labels.reshape(height, width)
    mask = find_boundaries(labels, connectivity=1, mode="thick").astype(np.uint8)
    grey = rng.uniform(120, 220, size=n_grains)[labels]
    grey[mask == 1] = BOUNDARY_GREY
    noise = rng.integers(-10, 11, size=(height, width))
    return np.clip(np.round(grey) + noise, 0, 255).astype(np.uint8), mask


class ThresholdNet(nn.Module):
    """Pointwise 'oracle': boundary logit = 0.2 * (75 - grey), so dark pixels are boundary."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, kernel_size=1)
        with torch.no_grad():
            self.conv.weight.fill_(-0.2 * 255.0)
            self.conv.bias.fill_(0.2 * 75.0)

    def forward(self, x):
        return self.conv(x)


class ConstantNet(nn.Module):
    """Predicts the same boundary logit everywhere (a conv with zero weights)."""

    def __init__(self, logit: float):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, kernel_size=1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.fill_(logit)

    def forward(self, x):
        return self.conv(x)


class DilatedNet(nn.Module):
    """Three 3×3 convolutions with dilations 1, 4 and 8: receptive field radius 13 px, zero padding."""

    RADIUS = 13

    def __init__(self, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.layers = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1, dilation=1), nn.Tanh(),
            nn.Conv2d(4, 4, 3, padding=4, dilation=4), nn.Tanh(),
            nn.Conv2d(4, 1, 3, padding=8, dilation=8),
        )
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)

    def forward(self, x):
        return self.layers(x)


class MeanClassifier(nn.Module):
    """Two-class logits ``[0, 8 * (mean grey in [0, 1] - 0.5)]``: bright images are class 1."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, kernel_size=1, bias=False)
        self.head = nn.Linear(1, 2)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.head.weight.copy_(torch.tensor([[0.0], [8.0]]))
            self.head.bias.copy_(torch.tensor([0.0, -4.0]))

    def forward(self, x):
        return self.head(self.conv(x).mean(dim=(2, 3)))
