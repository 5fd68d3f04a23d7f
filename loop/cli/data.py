"""Commands on a run's samples: generate, show, query."""

from __future__ import annotations

import click
import numpy as np

from loop.cli.options import generator_choice_help
from loop.errors import InputError


class ShowError(InputError):
    """``loop show`` cannot write its contact sheet where asked."""


@click.command()
@click.argument("run")
@click.option("--generator", "generator_name", default="grains", show_default=True, help=generator_choice_help())
@click.option("--n", "n", type=click.IntRange(min=1), required=True, help="Number of samples to add.")
@click.option("--size", type=int, default=256, show_default=True, help="Image side in pixels.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the parameter draws and sample seeds.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Parallel generator workers (more than 1 uses Ray).")
@click.option("--split", type=click.Choice(["train", "val"]), default="train", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="Samples per committed batch.")
@click.option("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or an embedded local Ray).")
def generate(run: str, generator_name: str, n: int, size: int, seed: int, workers: int, split: str,
             batch_size: int, address: str | None) -> None:
    """Draw N random parameter sets and write the rendered samples into RUN's store.

    Holds RUN's lock while it writes: it fails at once while a driver (`loop start`/`loop resume`)
    or another `loop generate` works on RUN.
    """
    from rich.progress import Progress

    import generators
    from loop.run.adding import add_random_samples, check_arguments

    generators.check_size(size)
    generators.get_generator(generator_name)  # bad input fails before the progress bar shows
    check_arguments(n, seed=seed, split=split, batch_size=batch_size, workers=workers)
    with Progress(transient=False) as progress:
        task = progress.add_task(f"generating {generator_name} {size}px", total=n)
        store = add_random_samples(run, generator_name, n, size=size, seed=seed, split=split, batch_size=batch_size,
                                   workers=workers, address=address,
                                   on_done=lambda plan: progress.advance(task, len(plan)))
    click.echo(f"wrote {n} samples to {store.uri} ({len(store.params())} in the run)")


@click.command()
@click.argument("run")
@click.option("--n", "n", type=click.IntRange(min=1), default=16, show_default=True, help="Samples on the sheet.")
@click.option("--out", default=None, help="PNG file to write (default: RUN/reports/contact_sheet.png).")
@click.option("--split", type=click.Choice(["train", "val"]), default=None, help="Only samples of this split.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the choice of samples.")
def show(run: str, n: int, out: str | None, split: str | None, seed: int) -> None:
    """Write a contact sheet of RUN: each image beside its mask overlay, parameters as captions."""
    from loop.evaluate.contact_sheet import render_contact_sheet
    from stores import RunStore

    store = RunStore.open(run)
    view = store.view(split=split)
    if len(view) == 0:
        raise click.UsageError(f"run {run} has no samples{' in split ' + split if split else ''}; run `loop generate` first")
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(view), size=min(n, len(view)), replace=False))
    rows = view.params.to_pylist()
    names = store.space.names
    images, masks, captions = [], [], []
    for i in picks:
        image, target = view[int(i)]
        images.append(image)
        is_mask = isinstance(target, np.ndarray)
        masks.append(target if is_mask else view.mask(int(i)))
        row = rows[int(i)]
        captions.append((row["sample_id"], {k: row[k] for k in names}, None if is_mask else target))
    png = render_contact_sheet(images, masks, captions)
    if out is None:
        out = store.path("reports", "contact_sheet.png")
        try:
            store.location.write_bytes("reports/contact_sheet.png", png)
        except OSError as exc:
            raise ShowError(f"cannot write the contact sheet into run {run} ({out}: {exc.strerror or exc}); "
                            "the run is read-only here: pass --out FILE") from None
    else:
        try:
            with open(out, "wb") as fh:
                fh.write(png)
        except OSError as exc:
            raise ShowError(f"--out {out}: cannot write the contact sheet ({exc.strerror or exc})") from None
    click.echo(f"wrote {out} ({len(picks)} samples)")


@click.command()
@click.argument("run")
@click.argument("sql")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
def query(run: str, sql: str, fmt: str) -> None:
    """Run a read-only SQL query over RUN's tables: params, metrics, samples (params + latest metrics)."""
    from stores import format_table
    from stores import query as run_query

    click.echo(format_table(run_query(run, sql), fmt=fmt))




@click.command("split-real")
@click.argument("src")
@click.argument("out")
@click.option("--check-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.5, show_default=True,
              help="Share of each family's source micrographs put in the check half.")
@click.option("--seed", type=int, default=None,
              help="Shuffle sources within each family with this seed (default: name order).")
def split_real(src: str, out: str, check_fraction: float, seed: int | None) -> None:
    """Split the real folder SRC by source micrograph into OUT/dev and OUT/check.

    Crops of one micrograph (NAME-<y>-<x>) stay together; each family of micrographs (the
    name before its first `_`) is split on its own. The halves are folders of links to the
    original files, ready for `--real dev=OUT/dev --real check=OUT/check`; OUT/split.json
    lists the sources of each.
    """
    from loop.evaluate.real_split import write_split

    split = write_split(src, out, check_fraction=check_fraction, seed=seed)
    for half in ("dev", "check"):
        sources = getattr(split, half)
        click.echo(f"{half}: {len(split.names(half))} images from {len(sources)} sources "
                   f"({', '.join(sources)}) -> {out}/{half}")
