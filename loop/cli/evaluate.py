"""``loop evaluate``: a checkpoint scored on real labelled micrographs."""

from __future__ import annotations

import click

from loop.cli.output import echo_json, fmt, table_console


class CheckpointChoice(click.ParamType):
    """A cycle number (>= 0) or ``best``."""

    name = "N|best"

    def convert(self, value, param, ctx):
        """``best`` as is, else the cycle as an int >= 0; anything else fails naming the value."""
        from loop.run.real_report import BEST

        if isinstance(value, int) or value == BEST:
            return value
        try:
            cycle = int(value)
        except ValueError:
            cycle = -1
        if cycle < 0:
            self.fail(f"expected a cycle number >= 0 or '{BEST}', got {value!r}", param, ctx)
        return cycle


@click.command()
@click.argument("run")
@click.option("--real", "real_dir", required=True, help="Folder of real images and masks (DIR/images, DIR/masks).")
@click.option("--checkpoint", "cycle", type=CheckpointChoice(), default=None, metavar="N|best",
              help="Cycle whose checkpoint to score (default: the latest); `best`: the finished cycle that "
                   "scored best on the run's --real-val images (`loop status` names it).")
@click.option("--tile", type=click.IntRange(min=32), default=None,
              help="Inference tile side in px (default: the run's real_tile, the side its model trains at last).")
@click.option("--overlap", type=click.IntRange(min=0), default=None,
              help="Tile overlap in px (default: a quarter of the tile).")
@click.option("--pixel-size", "pixel_size_um", type=click.FloatRange(min=0, min_open=True), default=None,
              help="µm per pixel of every image (else DIR/pixel_size_um.json, {NAME: µm}): adds grains/mm² and ASTM G.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def evaluate(run: str, real_dir: str, cycle: int | str | None, tile: int | None, overlap: int | None,
             pixel_size_um: float | None, as_json: bool) -> None:
    """Score a checkpoint of RUN on real labelled micrographs (tiled inference, any size)."""
    from loop.run.real_report import score_real

    result, reports = score_real(run, real_dir, cycle=cycle, tile=tile, overlap=overlap,
                                 pixel_size_um=pixel_size_um)
    cycle = result["cycle"]
    if as_json:
        echo_json(result)
        return
    from rich.table import Table

    if result.get("task") == "classification":
        _print_classification(run, cycle, real_dir, result, reports)
        return
    images = result["images"]
    metrics = [k for k in ("miou", "error", "boundary_f1", "grain_count_rel_error", "mean_grain_area_rel_error",
                           "mean_intercept_rel_error", "boundary_intercept_rel_error", "astm_g_abs_error", "loss",
                           "boundary_visibility")
               if images and k in images[0] and any(_known(row[k]) for row in images)]
    table = Table(title=f"{run} cycle {cycle} on {real_dir} ({result['n_images']} images, "
                        f"{result['tile']} px tiles overlapping {result['overlap']} px)")
    table.add_column("image")
    for key in metrics:
        table.add_column(key, justify="right")
    for row in images:
        table.add_row(row["name"], *(fmt(row[k]) for k in metrics))
    table.add_row("mean ± sd", *(f"{result.get(k, float('nan')):.4f} ± {result.get(k + '_std', float('nan')):.4f}"
                                 for k in metrics), style="bold")
    table_console(table).print(table)
    click.echo(f"wrote {reports}/scores.json and overlays")




def _print_classification(run: str, cycle: int, real_dir: str, result: dict, reports: str) -> None:
    """A classifier on real tiles: its error per class, and the images with the most wrong tiles."""
    from collections import Counter

    from rich.table import Table

    rows = result["images"]
    table = Table(title=f"{run} cycle {cycle} on {real_dir} ({len(rows)} inputs)")
    for column in ("class", "inputs", "wrong", "error rate"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for label, name, rate in ((1, "crack", "miss_rate"), (0, "no crack", "false_alarm_rate")):
        n = sum(r["label"] == label for r in rows)
        wrong = sum(r["label"] == label and r["error"] > 0 for r in rows)
        table.add_row(name, str(n), str(wrong), fmt(result.get(rate)))
    table.add_row("balanced error", "", "", fmt(result.get("balanced_error")), style="bold")
    console = table_console(table)
    console.print(table)
    worst = Counter(r["image"] for r in rows if r["error"] > 0).most_common(10)
    if worst:
        console.print("most wrong inputs: " + ", ".join(f"{name} ({n})" for name, n in worst),
                      markup=False, highlight=False)
    click.echo(f"wrote {reports}/scores.json" + (" and the worst inputs' sheet" if worst else ""))


def _known(value) -> bool:
    return value is not None and value == value  # NaN is the one value unequal to itself
