"""The one place that names a run's own files (beside the store's images and tables).

::

    RUN/journal.jsonl                 the run's events (:mod:`loop.run.journal`)
    RUN/checkpoints/cycle_NNN.pt      model weights of cycle N (+ ``.sha256``), N >= 3 digits
    RUN/checkpoints/inverse_cycle_NNN.pt  the inverse model (image -> parameters) on cycle N's samples
    RUN/reports/real_cycle_NNN/       scores and overlays of cycle N's checkpoint on real images
    RUN/reports/locate_cycle_NNN/     ``loop locate``: real images placed in parameter space
    metrics fragment ``val_cNNN``     the validation scores of cycle N
    metrics fragment ``test_cNNN``    the held-out test scores of cycle N
"""

from __future__ import annotations

import re

JOURNAL = "journal.jsonl"
CHECKPOINTS = "checkpoints"
REPORTS = "reports"

_CHECKPOINT = re.compile(r"^cycle_(\d{3,})\.pt$")


def checkpoint_name(cycle: int) -> str:
    """File name of cycle ``cycle``'s checkpoint under ``RUN/checkpoints``."""
    return f"cycle_{cycle:03d}.pt"


def checkpoint_cycle(name: str) -> int | None:
    """The cycle of a checkpoint file name (``cycle_1000.pt`` -> 1000), or None for other names."""
    match = _CHECKPOINT.match(name)
    return int(match.group(1)) if match else None


def val_metrics_name(cycle: int) -> str:
    """Name of the metric fragment holding the validation scores of cycle ``cycle``."""
    return f"val_c{cycle:03d}"


def test_metrics_name(cycle: int) -> str:
    """Name of the metric fragment holding the held-out test scores of cycle ``cycle``."""
    return f"test_c{cycle:03d}"


def real_report_name(cycle: int) -> str:
    """Folder under ``RUN/reports`` with cycle ``cycle``'s scores and overlays on real images."""
    return f"real_cycle_{cycle:03d}"


def inverse_checkpoint_name(cycle: int) -> str:
    """File name under ``RUN/checkpoints`` of the inverse model trained on the samples up to cycle ``cycle``."""
    return f"inverse_cycle_{cycle:03d}.pt"


def locate_report_name(cycle: int) -> str:
    """Folder under ``RUN/reports`` with ``loop locate``'s estimates and plot for cycle ``cycle``."""
    return f"locate_cycle_{cycle:03d}"


def checkpoint_uri(store, cycle: int) -> str:
    """URI of cycle ``cycle``'s checkpoint in the run of ``store``."""
    return store.path(CHECKPOINTS, checkpoint_name(cycle))


def checkpoint_cycles(store) -> list[int]:
    """Cycles that have a checkpoint in the run of ``store``, in order."""
    found = (checkpoint_cycle(name) for name in store.location.listdir(CHECKPOINTS))
    return sorted(c for c in found if c is not None)
