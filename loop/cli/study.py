"""Commands of studies: compare policies, fit the crack space, the paper's experiments."""

from __future__ import annotations

import click

from loop.cli.errors import Group
from loop.cli.options import data_and_model_options, exemplars_option, space_from_file
from loop.cli.output import echo_json, say, table_console


@click.command("compare")
@click.argument("out")
@click.option("--policies", default=None,
              help="Policies to compare, comma-separated, e.g. random,worst10,sobol or random,worst:k=0.1,m=10.")
@click.option("--seeds", type=int, default=None, help="Runs per policy, seeds 1..N (the paper used 50).")
@click.option("--preset", default=None, help="Training and data-size preset: paper, cpu (default), smoke.")
@click.option("--cycles", type=int, default=None,
              help="Adaptive cycles after the shared cycle 0 (default 3). On an existing comparison a larger number "
                   "extends it: every run goes on to the new last cycle, the earlier report is kept in OUT/cycle_NN.")
@click.option("--generator", "generator_name", default=None, help="Generator (default grains).")
@click.option("--real", "real", multiple=True, metavar="[NAME=]DIR",
              help="Folder of real labelled images scored after every cycle; repeat for several named groups "
                   "(NAME=DIR; a bare DIR is named after its folder), each reported alone and pooled.")
@click.option("--primary", default=None, metavar="SOURCE:METRIC",
              help="The one primary endpoint, declared up front, e.g. real:miou, test:miou, real/iron:error "
                   "(default: real:miou with --real, else test:miou).")
@click.option("--reference", default=None,
              help="Policy every other is compared with on the primary endpoint (default random).")
@click.option("--encoder-weights", default=None, help="Local file of ImageNet encoder weights (never downloaded).")
@click.option("--finetune-on", type=click.Choice(["new", "all"]), default=None,
              help="Fine-tune each cycle on the new samples only or on all so far (default all).")
@click.option("--n-train", type=int, default=None, help="Initial training samples (preset default).")
@click.option("--n-val", type=int, default=None, help="Validation samples (preset default).")
@click.option("--n-test", type=int, default=None,
              help="Held-out synthetic test samples, never shown to a policy (preset default; 0 = none).")
@click.option("--n-per-cycle", type=int, default=None, help="New samples per cycle (preset default).")
@click.option("--size", type=int, default=None, help="Image side in px (preset default).")
@data_and_model_options
@click.option("--parallel", type=int, default=None,
              help="Runs driven at once (default: one per GPU; one at a time on CPUs). Several at once share the machine: on CPUs each run's trainer and evaluator get cores / N torch threads; more runs than GPUs share the GPUs (each run reserves GPUs / N).")
@click.option("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else an embedded local Ray).")
@click.option("--report", "report_only", is_flag=True, help="Only re-render OUT's report and plots from its runs.")
@click.option("--at-cycle", type=click.IntRange(min=1), default=None,
              help="With --report: the report as it stood after this cycle, in OUT/cycle_NN (default: the last cycle, in OUT).")
@click.option("--json", "as_json", is_flag=True, help="Print the report's data as one JSON object.")
def compare_cmd(out: str, policies: str | None, seeds: int | None, preset: str | None, cycles: int | None,
                generator_name: str | None, real: tuple[str, ...], primary: str | None, reference: str | None,
                encoder_weights: str | None, finetune_on: str | None, n_train: int | None, n_val: int | None,
                n_test: int | None, n_per_cycle: int | None, size: int | None, space_file: str | None,
                exemplars: str | None, freeze_random_encoder: bool | None, input_norm: str | None,
                augment: dict | None, real_val: str | None, real_tile: int | None, parallel: int | None, address: str | None, report_only: bool,
                at_cycle: int | None, as_json: bool) -> None:
    """Compare sampling policies over seeds 1..N from a shared cycle 0: statistics, t-tests, plots in OUT.

    Resumes: finished runs are kept, half-finished ones resumed. Settings are frozen in
    OUT/compare.toml; `loop compare OUT` alone goes on with them.
    """
    from loop.study.compare import compare
    from loop.study.report import write_report

    from loop.cli.progress import TrainProgressView

    view = TrainProgressView(as_json=as_json, say=say)
    progress = (lambda line: None) if as_json else view.say
    given = dict(policies=policies, seeds=seeds, preset=preset, cycles=cycles, generator=generator_name,
                 real=real or None, primary=primary, reference=reference, encoder_weights=encoder_weights,
                 finetune_on=finetune_on, n_train=n_train, n_val=n_val, n_test=n_test, n_per_cycle=n_per_cycle,
                 size=size, space=space_from_file(space_file), generator_options=exemplars_option(exemplars),
                 freeze_random_encoder=freeze_random_encoder, input_norm=input_norm, augment=augment,
                 real_val=real_val, real_tile=real_tile)
    if report_only:
        named = [k for k, v in given.items() if v is not None]
        if named:
            raise click.UsageError(f"--report re-renders OUT as it is; it takes no settings (got --{named[0].replace('_', '-')})")
        result = write_report(out, at_cycle=at_cycle, say=progress)
    elif at_cycle is not None:
        raise click.UsageError("--at-cycle renders a report of runs already made; use it with --report")
    else:
        with view:
            result = compare(out, given, address=address, parallel=parallel, say=progress, train_progress=view)
    if as_json:
        from loop.study.report import json_ready

        echo_json(json_ready(result))


@click.command("fit-cracks")
@click.argument("masks_dir")
@click.option("--out", default="crack_space.toml", show_default=True, help="Parameter-space file (TOML) to write.")
@click.option("--tile-size", type=click.IntRange(min=8), default=None,
              help="Fit on tiles of this many px cut from MASKS_DIR/images + masks at their own resolution (the "
                   "classifier's input size, e.g. 128), not on whole masks.")
@click.option("--min-crack-px", type=click.IntRange(min=1), default=None,
              help="With --tile-size: crack pixels that make a tile a crack tile (default 20).")
@click.option("--pad/--no-pad", default=True, show_default=True,
              help="With --tile-size: reflect-pad images smaller than a tile (else leave them out).")
@click.option("--exemplars-out", default=None,
              help="With --tile-size: write crack-free tiles here as a texture folder for the generator.")
@click.option("--max-exemplars", type=click.IntRange(min=1), default=16, show_default=True,
              help="Most tiles written by --exemplars-out (a seeded draw).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def fit_cracks_cmd(masks_dir: str, out: str, tile_size: int | None, min_crack_px: int | None, pad: bool,
                   exemplars_out: str | None, max_exemplars: int, as_json: bool) -> None:
    """Fit the crack generator's distributions from real crack masks; print and save the space file.

    MASKS_DIR holds masks (non-zero = crack), or masks/ and images/ side by side (then the
    crack intensity and the background grey, contrast and shading are fitted too). With
    --tile-size, MASKS_DIR must hold images/ and masks/: the fit runs on the crack tiles
    (and as many crack-free tiles for the background), so lengths and widths are fractions
    of a tile, as the generator renders one.
    """
    from generators.crack_fit import fit_cracks, save_space_file
    from generators.cracks import SPACE

    tiled = None
    if tile_size is not None:
        from loop.study.crack_tiles import fit_real_tiles

        fit, tiled = fit_real_tiles(masks_dir, tile_size, min_crack_px=min_crack_px, pad=pad,
                                    exemplars_out=exemplars_out, max_exemplars=max_exemplars)
    elif min_crack_px is not None or exemplars_out is not None:
        raise click.UsageError("--min-crack-px and --exemplars-out work on tiles; give --tile-size too")
    else:
        fit = fit_cracks(masks_dir)
    path = save_space_file(fit, out)
    if as_json:
        echo_json({**fit.to_dict(), "out": str(path), **({"tiles": tiled} if tiled else {})})
        return
    from rich.table import Table

    table = Table(title=f"crack space fitted on {masks_dir}" + (f" ({tile_size} px tiles)" if tiled else ""))
    for column in ("dimension", "unit", "fitted low", "fitted high", "median", "cracks", "default bounds"):
        table.add_column(column)
    for dim in fit.space:
        default = SPACE[dim.name]
        fitted = dim.name in fit.fitted
        table.add_row(dim.name, dim.unit, f"{dim.low:.4g}", f"{dim.high:.4g}",
                      f"{fit.medians[dim.name]:.4g}" if fitted else "-",
                      str(fit.counts[dim.name]) if fitted else "(default)", f"[{default.low:.4g}, {default.high:.4g}]")
    table_console(table).print(table)
    if tiled:
        click.echo(f"{tiled['crack']} crack and {tiled['no_crack']} no-crack {tile_size} px tiles; "
                   + (f"wrote {tiled['exemplars_written']} exemplar tiles to {exemplars_out}; " if exemplars_out else ""))
    click.echo(f"{len(fit.measures)} cracks in {fit.n_masks} masks ({fit.n_empty} without a crack); wrote {path}")


@click.group(cls=Group)
def experiment() -> None:
    """The paper's experiments as commands."""


@experiment.command("cracks")
@click.option("--real", "real_dir", required=True, help="Real labelled crack folder (DIR/images, DIR/masks).")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Runs with seeds 1..N (the paper used 200).")
@click.option("--preset", default="cpu", show_default=True, help="Training preset: paper, cpu, smoke.")
@click.option("--out", default=None, help="Output folder (default runs/experiment-cracks-<preset>); a rerun resumes.")
@click.option("--tile-size", type=click.IntRange(min=32), default=None,
              help="Tile side in px = the model's input, a multiple of 32 (default: paper 128, the paper's; cpu 64, "
                   "affordable on a CPU; smoke 64).")
@click.option("--tile-stride", type=click.IntRange(min=1), default=None,
              help="Step between tiles in px (default: the tile size, tiles overlap only to cover the image).")
@click.option("--min-crack-px", type=click.IntRange(min=1), default=20, show_default=True,
              help="Crack pixels that make a tile a crack tile.")
@click.option("--pad/--no-pad", default=True, show_default=True,
              help="Reflect-pad images smaller than a tile; --no-pad leaves them out (counted).")
@click.option("--crack-image-negatives", is_flag=True,
              help="Use the crack-free tiles of crack images as no-crack tiles (kept apart by default).")
@click.option("--groups", default="auto", show_default=True,
              help="Physical-tile groups kept on one side of the split: auto, capture (names "
                   "<series>exp<k>_num_<n>), image (one per image) or a regular expression whose match is the key.")
@click.option("--capture-gap", type=click.IntRange(min=0), default=1500, show_default=True,
              help="Capture rule: largest step between capture numbers inside one group.")
@click.option("--n-synthetic", type=click.IntRange(min=2), default=None,
              help="Synthetic training tiles (default: paper 20000, cpu 800, smoke 48).")
@click.option("--real-epochs", type=click.IntRange(min=1), default=None,
              help="Passes over the real crack tiles per stage, real and fine-tuned models (default: paper 10, "
                   "cpu 6, smoke 1).")
@click.option("--min-steps", type=click.IntRange(min=1), default=None,
              help="Least optimiser steps per training stage, every model (default: paper 100, cpu 30, smoke 1).")
@click.option("--max-repeat", type=click.IntRange(min=1), default=4, show_default=True,
              help="Most repeats of a crack tile when balancing the real training set by sampling.")
@click.option("--exemplars", default="real", show_default=True,
              help="Texture dictionary: 'real' (crack-free tiles of the real training split), 'default' "
                   "(scikit-image's brick, gravel, grass) or a folder of texture images.")
@click.option("--max-exemplars", type=click.IntRange(min=1), default=8, show_default=True,
              help="With --exemplars real: most tiles in the dictionary (a seeded draw).")
@click.option("--space", "space", default="fit", show_default=True,
              help="Crack distributions: 'fit' (fitted on the real training split's crack tiles), 'default', "
                   "or a space file from `loop fit-cracks`.")
@click.option("--balance/--no-balance", default=True, show_default=True,
              help="Evaluate on as many no-crack as crack tiles (the paper's sets were even).")
@click.option("--encoder-weights", default=None, help="Local file of ImageNet encoder weights (never downloaded).")
@click.option("--device", default=None, help="cuda or cpu (default: cuda when present).")
@click.option("--json", "as_json", is_flag=True, help="Print Table 1 as one JSON object.")
def experiment_cracks_cmd(real_dir: str, seeds: int, preset: str, out: str | None, tile_size: int | None,
                          tile_stride: int | None, min_crack_px: int, pad: bool, crack_image_negatives: bool,
                          groups: str, capture_gap: int, n_synthetic: int | None, real_epochs: int | None,
                          min_steps: int | None, max_repeat: int, exemplars: str, max_exemplars: int, space: str,
                          balance: bool, encoder_weights: str | None, device: str | None, as_json: bool) -> None:
    """Table 1 of the paper: crack classifiers trained on synthetic, real and mixed data, over seeds 1..N.

    The real images are cut into tiles of the model's input size; splits keep every physical
    object (all exposures of one tile) on one side. Writes OUT/table1.md, table1.json and per
    seed seed_NNN.json and split_NNN.json.
    """
    from loop.study.crack_experiment import ExperimentConfig, run_experiment, table_markdown

    config = ExperimentConfig(real_dir=real_dir, seeds=tuple(range(1, seeds + 1)), preset=preset,
                              n_synthetic=n_synthetic, real_epochs=real_epochs, min_steps=min_steps,
                              balance=balance, exemplars=exemplars, max_exemplars=max_exemplars, space=space,
                              encoder_weights=encoder_weights, tile_size=tile_size, tile_stride=tile_stride,
                              min_crack_px=min_crack_px, pad=pad, crack_image_negatives=crack_image_negatives,
                              groups=groups, capture_gap=capture_gap, max_repeat=max_repeat)
    out = out or f"runs/experiment-cracks-{preset}"
    table = run_experiment(config, out, device=device, say=(lambda line: None) if as_json else say)
    if as_json:
        echo_json(table)
        return
    click.echo(table_markdown(table))
    click.echo(f"wrote {out}/table1.md, {out}/table1.json and seed_NNN.json, split_NNN.json per seed")
