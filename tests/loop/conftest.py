"""Fixtures of the ``loop`` tests: torch's process-wide settings do not leak from one test to the next."""

from __future__ import annotations

import sys
from typing import Any

import pytest


def _torch_settings(torch: Any) -> tuple:
    return (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.benchmark,
            torch.backends.cudnn.deterministic, torch.get_default_dtype(), torch.get_float32_matmul_precision(),
            torch.is_grad_enabled())


def _restore(torch: Any, settings: tuple) -> None:
    threads, deterministic, warn_only, benchmark, cudnn_deterministic, dtype, precision, grad = settings
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = benchmark, cudnn_deterministic
    torch.set_default_dtype(dtype)
    torch.set_float32_matmul_precision(precision)
    torch.set_grad_enabled(grad)


@pytest.fixture(autouse=True)
def _torch_settings_restored():
    """Put torch's global settings back after each test.

    An in-process ``Evaluator(num_threads=...)`` or ``Trainer(num_threads=...)`` sets the thread
    count of the whole process, as it should in its actor; in a test that setting would reach
    every later test and change float32 reduction orders in them (issue 15, item 11). Tests
    that never imported torch cost nothing here.
    """
    torch = sys.modules.get("torch")
    settings = _torch_settings(torch) if torch is not None else None
    yield
    if settings is not None:
        _restore(torch, settings)
