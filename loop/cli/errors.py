"""The CLI's one error boundary."""

from __future__ import annotations

import sys
from typing import Any

import click

from loop.errors import LoopError

EXIT_ERROR = 1
"""Exit code of a project error (bad input, a run that cannot do what was asked)."""
EXIT_INTERNAL = 70
"""Exit code of an unexpected exception: a bug (``EX_SOFTWARE`` of sysexits.h)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _project_cause(exc: BaseException) -> BaseException | None:
    """The project error behind ``exc``: itself, or the cause a Ray task error carries."""
    # A Ray task error is an instance of its cause's class too, but its text is the Ray header.
    for candidate in (getattr(exc, "cause", None), exc):
        if isinstance(candidate, (LoopError, OSError)):
            return candidate
    return None


class Group(click.Group):
    """A click group with the CLI's one error boundary.

    Project errors (:class:`loop.errors.LoopError`, and ``OSError`` for files the user
    named) print one line and exit 1; anything else is a bug: one ``internal error`` line
    and exit 70. ``--debug`` shows the traceback of either.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("loop: interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - the CLI's one error boundary
            if ctx.obj and ctx.obj.get("debug"):
                raise
            cause = _project_cause(exc)
            if cause is not None:
                click.echo(f"loop: error: {_first_line(cause)}", err=True)
                sys.exit(EXIT_ERROR)
            click.echo(f"loop: internal error: {type(exc).__name__}: {_first_line(exc)} "
                       "(rerun with --debug for the traceback)", err=True)
            sys.exit(EXIT_INTERNAL)


