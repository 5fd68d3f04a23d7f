"""Views of committed samples for training and evaluation, with random access by index."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from stores.images import IMAGE, MASK, ChunkReader
from stores.location import Location


class DatasetView:
    """An ordered selection of committed samples.

    ``view[i]`` is ``(image, target)``: the image as an (H, W) uint8 array and the target,
    the mask (segmentation, (H, W) uint8) or the int label (classification). Each read is one
    chunk read; opened arrays are cached per batch. Built by :meth:`RunStore.view`.
    """

    def __init__(self, uri: str, task: str, params: pa.Table, rows: np.ndarray):
        self._uri = uri
        self._task = task
        self._params = params
        self._sample_ids = params["sample_id"].to_numpy().astype(np.int64, copy=False)
        self._batches = params["batch"].to_numpy().astype(np.int64, copy=False)
        self._rows = np.asarray(rows, dtype=np.int64)
        labels = params["label"]
        self._labels = (labels.to_numpy(zero_copy_only=False) if task == "classification" else None)
        self._reader: ChunkReader | None = None

    def __len__(self) -> int:
        return len(self._sample_ids)

    @property
    def sample_ids(self) -> np.ndarray:
        """Sample ids in view order (int64)."""
        return self._sample_ids

    @property
    def params(self) -> pa.Table:
        """Parameter rows in view order."""
        return self._params

    @property
    def task(self) -> str:
        """``"segmentation"`` or ``"classification"``: what the target is."""
        return self._task

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray | int]:
        """``(image, target)`` of the i-th sample of the view (negative indices count from the end).

        Every read is verified: damaged image data raises :class:`StoreError` naming the run,
        batch, array and sample id.
        """
        batch, row = self.locate(i)
        sid = int(self._sample_ids[self._index(i)])
        reader = self._get_reader()
        image = reader.read(batch, IMAGE, row, sample_id=sid)
        if self._labels is not None:
            return image, int(self._labels[self._index(i)])
        return image, reader.read(batch, MASK, row, sample_id=sid)

    def mask(self, i: int) -> np.ndarray | None:
        """The i-th sample's pixel mask (for a classification run, e.g. the crack), or None if its batch stored none."""
        batch, row = self.locate(i)
        sid = int(self._sample_ids[self._index(i)])
        if self._labels is None:
            return self._get_reader().read(batch, MASK, row, sample_id=sid)
        if not self._get_reader().has(batch, MASK):
            return None
        return self._get_reader().read(batch, MASK, row, sample_id=sid)

    def locate(self, i: int) -> tuple[int, int]:
        """``(batch, row in the batch's arrays)`` of the i-th sample."""
        i = self._index(i)
        return int(self._batches[i]), int(self._rows[i])

    def _index(self, i: int) -> int:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"view index: expected an integer, got {type(i).__name__}")
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"view index {i} out of range for {n} samples")
        return int(i) % n

    def _get_reader(self) -> ChunkReader:
        if self._reader is None:
            self._reader = ChunkReader(Location(self._uri))
        return self._reader

    def __getstate__(self) -> dict[str, Any]:
        # Opened arrays and file handles stay in the process that opened them.
        state = self.__dict__.copy()
        state["_reader"] = None
        return state
