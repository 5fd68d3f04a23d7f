"""The project's one error hierarchy.

Every error that synthloop raises on purpose derives from :class:`LoopError`; where the
input (an argument, a file, a setting, a run directory) is at fault it derives from
:class:`InputError`, which is also a :class:`ValueError`. The CLI prints a ``LoopError`` as one
line; anything else is a bug and is reported as an internal error.

This module imports nothing, so that ``generators``, ``stores`` and ``policies`` can derive
their errors from it without depending on the rest of ``loop``.
"""

from __future__ import annotations


class LoopError(Exception):
    """Root of every error synthloop raises on purpose."""


class InputError(LoopError, ValueError):
    """The input is at fault: a bad argument, setting, file or run directory."""
