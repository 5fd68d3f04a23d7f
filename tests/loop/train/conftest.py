"""Fixtures of the training tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def two_torch_threads():
    """Two torch threads for each training test module, and the thread count before restored after.

    (Set at import time, it applied to every test of the session that ran after collection.)
    """
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)
