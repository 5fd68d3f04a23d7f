"""Fixtures for the store tests: a fake generator and tiny runs in tmp_path."""

from __future__ import annotations

import pytest
from storefakes import FakeGenerator, create_run


@pytest.fixture
def generator() -> FakeGenerator:
    return FakeGenerator("segmentation")


@pytest.fixture
def run(tmp_path):
    """An empty segmentation run on local disk."""
    return create_run(tmp_path / "run")
