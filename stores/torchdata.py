"""A ``torch.utils.data.Dataset`` over a :class:`~stores.dataset.DatasetView`.

Kept apart from :mod:`stores.dataset` so that reading the store does not import torch.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from stores.dataset import DatasetView


class ViewDataset(Dataset):
    """Items of a view as tensors, or through ``transform(image, target)``.

    Pickling drops the view's opened arrays, so each DataLoader worker opens its own lazily.
    """

    def __init__(self, view: DatasetView, transform: Callable[[np.ndarray, Any], Any] | None = None):
        self.view = view
        self.transform = transform

    def __len__(self) -> int:
        return len(self.view)

    def __getitem__(self, i: int) -> Any:
        image, target = self.view[int(i)]
        if self.transform is not None:
            return self.transform(image, target)
        if isinstance(target, np.ndarray):
            return torch.from_numpy(image), torch.from_numpy(target)
        return torch.from_numpy(image), torch.tensor(target, dtype=torch.int64)
