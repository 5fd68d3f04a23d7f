"""``loop locate``: real micrographs placed in a run's parameter space by the inverse model."""

from __future__ import annotations

import click

from loop.cli.output import echo_json, table_console

PER_IMAGE_COLUMNS = 4
"""Up to this many images the table has a column per image; beyond, the spread of their estimates."""


@click.command()
@click.argument("run")
@click.option("--images", "images_dir", required=True,
              help="Folder of real images (PNG/TIF, grey or colour, any size), or a real labelled folder (uses DIR/images).")
@click.option("--out", default=None, help="Folder for locate.json and locate.png (default: RUN/reports/locate_cycle_NNN).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--renders", type=click.IntRange(min=0), default=None,
              help="Fresh samples of the run's space rendered to train the inverse model on, besides its stored "
                   "train samples (default: 10 per stored sample, at most 3000; 0 = stored samples only). "
                   "Used only when the model is trained.")
def locate(run: str, images_dir: str, out: str | None, as_json: bool, renders: int | None) -> None:
    """Estimate the generator parameters of each real image, with the inverse model's uncertainty.

    The inverse model (an ensemble of small MLPs on physically motivated image statistics:
    grey levels, variograms, noise, power spectrum, top-hats, orientation, ...) is trained on
    RUN's train samples plus fresh renders of RUN's own space (--renders), scored on its
    held-out test samples (else val) the first time, and saved as
    RUN/checkpoints/inverse_cycle_NNN.pt (NNN: the run's latest cycle) under the run lock; an
    existing checkpoint is loaded (delete it to retrain). Images are read at native resolution
    (lengths are the training render's pixels) and described by the mean over tiles of the
    model's input size; an image smaller than that is refused.
    Per dimension: estimate ± ensemble spread in the space's units, the held-out R² (a
    dimension is identifiable from an image at R² >= 0.5), and a flag when the estimates pile
    at an end of the range (the real images may lie outside the run's space there).
    """
    from loop.run.locate import EDGE, locate as run_locate
    from loop.train.inverse import InverseConfig

    def say(line: str) -> None:
        click.echo(line, err=as_json)

    report = run_locate(run, images_dir, out=out, cfg=InverseConfig(renders=renders), say=say)
    if as_json:
        echo_json(report)
        return
    import numpy as np
    from rich.table import Table

    table = Table(title=f"{run} cycle {report['cycle']}: {report['n_images']} images of {images_dir} "
                        f"(estimate ± ensemble spread of {report['members']} members)")
    for column in ("dimension", "unit", f"R² {report['r2_split']}", "identifiable"):
        table.add_column(column, no_wrap=column == "dimension")
    per_image = len(report["images"]) <= PER_IMAGE_COLUMNS
    if per_image:
        for row in report["images"]:
            table.add_column(row["name"], justify="right")
    else:  # a column per image would not fit: the spread of their estimates (each one is in locate.json)
        for column in ("space range", "median", "10–90 %", "at an end"):
            table.add_column(column, justify="right", no_wrap=True)
    table.add_column("edge")
    for d in report["dimensions"]:
        estimates = [row["estimates"][d["name"]] for row in report["images"]]
        if per_image:
            cells = [f"{_num(e['value'])} ± {_num(e['spread'])}{' *' if e['edge'] else ''}" for e in estimates]
        else:
            values = np.array([e["value"] for e in estimates], dtype=float)
            q10, q50, q90 = np.quantile(values, [0.1, 0.5, 0.9])
            cells = [f"{_num(d['low'])}–{_num(d['high'])}", _num(float(q50)), f"{_num(float(q10))}–{_num(float(q90))}",
                     str(sum(1 for e in estimates if e["edge"]))]
        edge = f"piles at {d['edge']} end" if d["edge"] else ""
        table.add_row(d["name"], d["unit"], "-" if d["r2"] is None else f"{d['r2']:.2f}",
                      "yes" if d["identifiable"] else "no", *cells, edge,
                      style=None if d["identifiable"] else "dim")
    table_console(table, 150).print(table)
    ident = ", ".join(report["identifiable"]) or "none"
    click.echo(f"identifiable (held-out {report['r2_split']} R² >= {report['identifiable_r2']}): {ident}")
    if report["fixed"]:
        click.echo(f"not located (fixed in the run's space, or choices): {', '.join(report['fixed'])}")
    click.echo(f"* estimate within {EDGE:.0%} of an end of the dimension's range")
    trained = "trained and saved" if report["trained"] else "loaded"
    click.echo(f"inverse model {trained}: {report['checkpoint']}; wrote {report['out']}/locate.png and locate.json "
               f"({report['wall_s']:.1f} s)")


def _num(value) -> str:
    return str(value) if isinstance(value, int) else f"{value:.4g}"
