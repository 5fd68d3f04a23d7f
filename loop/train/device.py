"""The one device resolver of training and inference."""

from __future__ import annotations

import torch

from loop.errors import InputError


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch device; ``None`` means CUDA when present, else the CPU.

    Raises :class:`InputError` for a CUDA device on a machine without CUDA, or a name torch
    does not know.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"device: expected 'cpu', 'cuda' or 'cuda:N', got {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device: {device!r} asked for but CUDA is not available here")
    return dev
