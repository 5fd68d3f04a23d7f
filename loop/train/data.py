"""In-memory datasets: :class:`ArrayView`, the store view's interface over numpy arrays."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from loop.errors import InputError


class ArrayView:
    """A dataset view over arrays: ``len``, ``[i] -> (image, target)``, ``sample_ids``, ``params``, ``task``.

    What :func:`loop.train.fit.train` and :func:`loop.evaluate.scoring.evaluate_view` read, for
    images that are not in a run store (real images, synthetic ones made on the fly, benchmarks).
    ``images``: uint8 (n, H, W); ``targets``: uint8 masks (n, H, W) for segmentation or int
    labels (n,) for classification.
    """

    def __init__(self, images: np.ndarray, targets: np.ndarray | Sequence[int], sample_ids: Sequence[int] | None = None):
        self.images = np.asarray(images)
        self.targets = np.asarray(targets)
        if self.images.ndim != 3 or self.images.dtype != np.uint8:
            raise InputError(f"images: expected a uint8 (n, H, W) array, got {self.images.dtype} {self.images.shape}")
        if self.targets.shape[:1] != (len(self.images),) or self.targets.ndim not in (1, 3):
            raise InputError(f"targets: expected {len(self.images)} labels or masks, got shape {self.targets.shape}")
        if self.targets.ndim == 1:
            self.targets = self.targets.astype(np.int64)
        ids = np.arange(len(self.images)) if sample_ids is None else sample_ids
        self.sample_ids = np.asarray(ids, dtype=np.int64)

    @property
    def task(self) -> str:
        """``classification`` for int labels, ``segmentation`` for masks."""
        return "classification" if self.targets.ndim == 1 else "segmentation"

    @property
    def labels(self) -> np.ndarray:
        """The int labels of a classification view."""
        if self.task != "classification":
            raise InputError("labels: this view holds segmentation masks, not class labels")
        return self.targets

    @property
    def params(self) -> pa.Table:
        """A parameter table with the sample ids only (these samples have no generator parameters)."""
        return pa.table({"sample_id": pa.array(self.sample_ids, pa.int64())})

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[np.ndarray, Any]:
        target = self.targets[i]
        return self.images[i], (target if target.ndim else int(target))

    def subset(self, indices: Sequence[int]) -> "ArrayView":
        """The samples at ``indices``, in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        return ArrayView(self.images[idx], self.targets[idx], self.sample_ids[idx])
