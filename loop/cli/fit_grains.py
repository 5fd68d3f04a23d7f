"""``loop fit-grains``: the grain generator's parameter ranges fitted on labelled real micrographs."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import click
import numpy as np

from loop.cli.output import echo_json, table_console


def real_folder_pairs(folder: str | Path) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """``(mask file, grey image, 0/1 boundary mask)`` of every pair of a real folder, read and
    checked by :class:`loop.evaluate.real.RealFolder` (its errors name the file)."""
    from loop.evaluate.real import RealFolder

    for pair in RealFolder(folder):
        yield str(pair.mask_path), pair.image, pair.mask


@click.command("fit-grains")
@click.argument("real_dirs", metavar="REAL_DIR...", nargs=-1, required=True)
@click.option("--out", default="grain_space.toml", show_default=True, help="Parameter-space file (TOML) to write.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def fit_grains_cmd(real_dirs: tuple[str, ...], out: str, as_json: bool) -> None:
    """Fit the grain generator's parameter ranges on real labelled micrographs; print them and save a space file.

    REAL_DIR holds images/NAME.png and masks/NAME.png (boundary masks or label images, as
    `loop evaluate` reads them). Per image: mean grain diameter (equivalent circle of the
    cells not touching the border), boundary thickness (area / skeleton length), mean grey
    and grain contrast (per-grain interior means), boundary contrast (boundary minus the
    grain next to it), white noise and Perlin texture amplitude. Bounds: the range of the
    per-image values (their 10th-90th percentiles from 10 images on), each end widened by
    25 % of its value or of the span, clipped to the generator's bounds. Lloyd steps, splines, Perlin
    wavelength, blur and any other dimension keep the generator's ranges. Use the file
    with `loop start --space FILE` or `loop compare --space FILE`.

    Several REAL_DIRs are several kinds of micrograph (dark-line optical, colour-etched...):
    each is fitted on its own and the space is the union of their ranges, so that a kind with
    one image is not left out by the percentiles of a kind with thirty. Images outside the
    fitted ranges are listed.

    Lengths are pixels of the real images as they are: real images are scored at their
    native resolution (tiled inference, tiles of the evaluation tile size, nothing
    resized), so the fitted grain_diameter and boundary_thickness are the generator's at
    the training render size, whatever that size is.
    """
    from generators import grains
    from generators.grain_fit import fit_groups, save_space_file

    fit = fit_groups((f"real folder {d}", real_folder_pairs(d)) for d in real_dirs)
    path = save_space_file(fit, out)
    if as_json:
        echo_json({**fit.to_dict(), "out": str(path)})
        return
    from rich.table import Table

    table = Table(title=f"grain space fitted on {', '.join(real_dirs)} ({len(fit.measures)} images)")
    for column in ("dimension", "unit", "fitted low", "fitted high", "median", "default bounds"):
        table.add_column(column)
    for dim in fit.space:
        default = grains.SPACE[dim.name]
        fitted = dim.name in fit.fitted
        low, high = (f"{dim.low:.4g}", f"{dim.high:.4g}") if hasattr(dim, "low") else (dim.bounds_text(), "")
        table.add_row(dim.name, dim.unit, low, high, f"{fit.medians[dim.name]:.4g}" if fitted else "(default)",
                      f"[{default.low:.4g}, {default.high:.4g}]" if hasattr(default, "low") else default.bounds_text())
    table_console(table, 100).print(table)
    grains_total = sum(m.n_grains for m in fit.measures)
    click.echo(f"{grains_total} grains in {len(fit.measures)} images; wrote {path}")
    outside = fit.outside()
    if outside:
        shown = [f"{Path(source).stem} ({', '.join(f'{k} {v:.3g}' for k, v in dims.items())})"
                 for source, dims in list(outside.items())[:5]]
        more = f" and {len(outside) - 5} more" if len(outside) > 5 else ""
        click.echo(f"{len(outside)} of {len(fit.measures)} images lie outside the fitted ranges: "
                   f"{'; '.join(shown)}{more}. A kind of micrograph with few images is left out by the "
                   "percentiles of the many: give each kind its own folder (loop fit-grains DIR1 DIR2 ...).")
