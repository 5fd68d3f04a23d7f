"""The ``loop`` command line: thin commands over the packages of ``loop``.

Errors: a project error (:class:`loop.errors.LoopError`) is one line on stderr and exit
code 1; anything else is a bug, reported as one ``internal error`` line and exit code 70.
``loop --debug ...`` shows the traceback.
"""

from __future__ import annotations

import logging

import click

from loop.cli import bench, data, evaluate, fit_grains, locate, runs, study
from loop.cli.errors import EXIT_ERROR, EXIT_INTERNAL, Group

__all__ = ["main", "EXIT_ERROR", "EXIT_INTERNAL"]


@click.group(cls=Group)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """synthloop: train microscopy networks on synthetic images, with adaptive sampling."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


for _command in (data.generate, data.show, data.query, data.split_real, runs.start, runs.resume, runs.status, evaluate.evaluate,
                 bench.bench, locate.locate, study.compare_cmd, fit_grains.fit_grains_cmd, study.fit_cracks_cmd, study.experiment):
    main.add_command(_command)
