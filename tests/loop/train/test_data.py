"""The in-memory dataset view."""

from __future__ import annotations

import numpy as np
import pytest

from loop.errors import InputError
from loop.train.data import ArrayView


def test_classification_view_indexes_and_subsets() -> None:
    view = ArrayView(np.zeros((3, 8, 8), np.uint8), [0, 1, 1])
    assert len(view) == 3 and view[1][1] == 1 and view.subset([2, 0]).sample_ids.tolist() == [2, 0]
    assert view.task == "classification" and view.labels.tolist() == [0, 1, 1]
    assert view.params.column("sample_id").to_pylist() == [0, 1, 2]


def test_segmentation_view_returns_masks() -> None:
    masks = np.zeros((2, 8, 8), np.uint8)
    masks[1, 3] = 1
    view = ArrayView(np.zeros((2, 8, 8), np.uint8), masks, sample_ids=[7, 9])
    assert view.task == "segmentation" and view[1][1].sum() == 8
    assert view.subset([1]).sample_ids.tolist() == [9]
    with pytest.raises(InputError, match="labels: this view holds segmentation masks"):
        view.labels


def test_bad_arrays_are_refused() -> None:
    with pytest.raises(InputError, match="targets: expected 3 labels"):
        ArrayView(np.zeros((3, 8, 8), np.uint8), [0, 1])
    with pytest.raises(InputError, match="images: expected a uint8"):
        ArrayView(np.zeros((3, 8, 8), np.float32), [0, 1, 1])
