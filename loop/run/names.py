"""The one place that names a run's own files (beside the store's images and tables).

::

    RUN/journal.jsonl                 the run's events (:mod:`loop.run.journal`)
    RUN/checkpoints/cycle_NNN.safetensors  model weights of cycle N (+ ``.sha256``), N >= 3 digits;
                                      ``cycle_NNN.pt`` in runs made before safetensors (still read)
    RUN/checkpoints/cycle_NNN.stage.safetensors  cycle N's training so far (stage checkpoint), while it trains
    RUN/checkpoints/inverse_cycle_NNN.pt  the inverse model (image -> parameters) on cycle N's samples
    RUN/reports/real_cycle_NNN/       scores and overlays of cycle N's checkpoint on real images
    RUN/reports/locate_cycle_NNN/     ``loop locate``: real images placed in parameter space
    RUN/anchors/cycle_NNN.json        the real validation images (``--real-val``) located and scored after cycle N
    metrics fragment ``val_cNNN``     the validation scores of cycle N
    metrics fragment ``test_cNNN``    the held-out test scores of cycle N
"""

from __future__ import annotations

import re

from loop.errors import InputError

JOURNAL = "journal.jsonl"
CHECKPOINTS = "checkpoints"
REPORTS = "reports"
ANCHORS = "anchors"

_CHECKPOINT = re.compile(r"^cycle_(\d{3,})\.(safetensors|pt)$")


def checkpoint_name(cycle: int) -> str:
    """File name of cycle ``cycle``'s checkpoint under ``RUN/checkpoints``, as written now."""
    return f"cycle_{cycle:03d}.safetensors"


def legacy_checkpoint_name(cycle: int) -> str:
    """File name of cycle ``cycle``'s checkpoint in a run made before safetensors (a weights-only torch file)."""
    return f"cycle_{cycle:03d}.pt"


def stage_checkpoint_name(cycle: int) -> str:
    """File name under ``RUN/checkpoints`` of cycle ``cycle``'s stage checkpoint (its training so far)."""
    return f"cycle_{cycle:03d}.stage.safetensors"


def checkpoint_cycle(name: str) -> int | None:
    """The cycle of a checkpoint file name (``cycle_1000.safetensors`` or ``cycle_1000.pt`` -> 1000),
    or None for other names."""
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
    return f"inverse_cycle_{cycle:03d}.safetensors"


def legacy_inverse_checkpoint_name(cycle: int) -> str:
    """The name runs made before 2026-12-04 saved that inverse model under (safetensors bytes already)."""
    return f"inverse_cycle_{cycle:03d}.pt"


def locate_report_name(cycle: int) -> str:
    """Folder under ``RUN/reports`` with ``loop locate``'s estimates and plot for cycle ``cycle``."""
    return f"locate_cycle_{cycle:03d}"


def anchors_name(cycle: int) -> str:
    """File name under ``RUN/anchors`` of the real validation images' estimates and scores after cycle ``cycle``."""
    return f"cycle_{cycle:03d}.json"


def checkpoint_uri(store, cycle: int) -> str:
    """URI where cycle ``cycle``'s checkpoint is written in the run of ``store``."""
    return store.path(CHECKPOINTS, checkpoint_name(cycle))


def stage_checkpoint_uri(store, cycle: int) -> str:
    """URI of cycle ``cycle``'s stage checkpoint in the run of ``store``."""
    return store.path(CHECKPOINTS, stage_checkpoint_name(cycle))


def found_checkpoint_name(store, cycle: int, recorded: str | None = None) -> str:
    """The file name of cycle ``cycle``'s checkpoint in the run of ``store``: ``recorded`` (the
    name its journal's ``trained`` event records) when given, else ``cycle_NNN.safetensors``
    when there, else the legacy ``cycle_NNN.pt`` when there, else ``cycle_NNN.safetensors``
    (whose loading then says it is missing). A recorded name of another cycle or kind raises
    :class:`~loop.errors.InputError`."""
    if recorded is not None:
        if checkpoint_cycle(recorded) != cycle:
            raise InputError(f"journal: cycle {cycle}'s trained event records checkpoint {recorded!r}; expected "
                             f"{checkpoint_name(cycle)} or {legacy_checkpoint_name(cycle)}")
        return recorded
    for name in (checkpoint_name(cycle), legacy_checkpoint_name(cycle)):
        if store.location.exists(CHECKPOINTS, name):
            return name
    return checkpoint_name(cycle)


def found_checkpoint_uri(store, cycle: int, recorded: str | None = None) -> str:
    """URI of cycle ``cycle``'s checkpoint in the run of ``store`` (see :func:`found_checkpoint_name`)."""
    return store.path(CHECKPOINTS, found_checkpoint_name(store, cycle, recorded))


def checkpoint_cycles(store) -> list[int]:
    """Cycles that have a checkpoint in the run of ``store`` (either kind), in order."""
    found = {checkpoint_cycle(name) for name in store.location.listdir(CHECKPOINTS)}
    return sorted(c for c in found if c is not None)
