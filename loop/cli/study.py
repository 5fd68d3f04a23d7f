"""Commands of studies: compare policies, fit the crack space, the paper's experiments."""

from __future__ import annotations

import click

from loop.cli.errors import Group
from loop.cli.output import echo_json, say


@click.command("compare")
@click.argument("out")
@click.option("--policies", default=None,
              help="Policies to compare, comma-separated, e.g. random,worst10,sobol or random,worst:k=0.1,m=10.")
@click.option("--seeds", type=int, default=None, help="Runs per policy, seeds 1..N (the paper used 50).")
@click.option("--preset", default=None, help="Training and data-size preset: paper, cpu (default), smoke.")
@click.option("--cycles", type=int, default=None, help="Adaptive cycles after the shared cycle 0 (default 3).")
@click.option("--generator", "generator_name", default=None, help="Generator (default grains).")
@click.option("--real", "real_dir", default=None, help="Folder of real labelled images scored after every cycle.")
@click.option("--n-train", type=int, default=None, help="Initial training samples (preset default).")
@click.option("--n-val", type=int, default=None, help="Validation samples (preset default).")
@click.option("--n-per-cycle", type=int, default=None, help="New samples per cycle (preset default).")
@click.option("--size", type=int, default=None, help="Image side in px (preset default).")
@click.option("--parallel", type=int, default=None,
              help="Runs driven at once (default: from the cluster's GPUs; one at a time on CPUs).")
@click.option("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else an embedded local Ray).")
@click.option("--report", "report_only", is_flag=True, help="Only re-render OUT's report and plots from its runs.")
@click.option("--json", "as_json", is_flag=True, help="Print the report's data as one JSON object.")
def compare_cmd(out: str, policies: str | None, seeds: int | None, preset: str | None, cycles: int | None,
                generator_name: str | None, real_dir: str | None, n_train: int | None, n_val: int | None,
                n_per_cycle: int | None, size: int | None, parallel: int | None, address: str | None,
                report_only: bool, as_json: bool) -> None:
    """Compare sampling policies over seeds 1..N from a shared cycle 0: statistics, t-tests, plots in OUT.

    Resumes: finished runs are kept, half-finished ones resumed. Settings are frozen in
    OUT/compare.toml; `loop compare OUT` alone goes on with them.
    """
    from loop.study.compare import compare
    from loop.study.report import write_report

    from loop.cli.progress import TrainProgressView

    view = TrainProgressView(as_json=as_json, say=say)
    progress = (lambda line: None) if as_json else view.say
    if report_only:
        given = dict(policies=policies, seeds=seeds, preset=preset, cycles=cycles, generator=generator_name,
                     real_dir=real_dir, n_train=n_train, n_val=n_val, n_per_cycle=n_per_cycle, size=size)
        named = [k for k, v in given.items() if v is not None]
        if named:
            raise click.UsageError(f"--report re-renders OUT as it is; it takes no settings (got --{named[0].replace('_', '-')})")
        result = write_report(out, say=progress)
    else:
        with view:
            result = compare(out, dict(policies=policies, seeds=seeds, preset=preset, cycles=cycles,
                                       generator=generator_name, real_dir=real_dir, n_train=n_train, n_val=n_val,
                                       n_per_cycle=n_per_cycle, size=size),
                             address=address, parallel=parallel, say=progress, train_progress=view)
    if as_json:
        from loop.study.report import json_ready

        echo_json(json_ready(result))


@click.command("fit-cracks")
@click.argument("masks_dir")
@click.option("--out", default="crack_space.toml", show_default=True, help="Parameter-space file (TOML) to write.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def fit_cracks_cmd(masks_dir: str, out: str, as_json: bool) -> None:
    """Fit the crack generator's distributions from real crack masks; print and save the space file.

    MASKS_DIR holds masks (non-zero = crack), or masks/ and images/ side by side (then the
    crack intensity and the background grey and contrast are fitted too).
    """
    from generators.crack_fit import fit_cracks, save_space_file
    from generators.cracks import SPACE

    fit = fit_cracks(masks_dir)
    path = save_space_file(fit, out)
    if as_json:
        echo_json({**fit.to_dict(), "out": str(path)})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"crack space fitted on {masks_dir}")
    for column in ("dimension", "unit", "fitted low", "fitted high", "median", "cracks", "default bounds"):
        table.add_column(column)
    for dim in fit.space:
        default = SPACE[dim.name]
        fitted = dim.name in fit.fitted
        table.add_row(dim.name, dim.unit, f"{dim.low:.4g}", f"{dim.high:.4g}",
                      f"{fit.medians[dim.name]:.4g}" if fitted else "-",
                      str(fit.counts[dim.name]) if fitted else "(default)", f"[{default.low:.4g}, {default.high:.4g}]")
    Console().print(table)
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
@click.option("--n-synthetic", type=click.IntRange(min=2), default=None,
              help="Synthetic training images (default: paper 20000, cpu 2000, smoke 48).")
@click.option("--real-epochs", type=click.IntRange(min=1), default=None,
              help="Epochs per stage on the real split, real and fine-tuned models (default 10; smoke 1).")
@click.option("--exemplars", default="real", show_default=True,
              help="Texture dictionary: 'real' (no-crack images of the real training split), 'default' "
                   "(scikit-image's brick, gravel, grass) or a folder of texture images.")
@click.option("--space", "space", default="fit", show_default=True,
              help="Crack distributions: 'fit' (fitted on the real training split's masks), 'default', "
                   "or a space file from `loop fit-cracks`.")
@click.option("--balance/--no-balance", default=True, show_default=True,
              help="Draw as many no-crack as crack images (the paper's sets were even).")
@click.option("--encoder-weights", default=None, help="Local file of ImageNet encoder weights (never downloaded).")
@click.option("--device", default=None, help="cuda or cpu (default: cuda when present).")
@click.option("--json", "as_json", is_flag=True, help="Print Table 1 as one JSON object.")
def experiment_cracks_cmd(real_dir: str, seeds: int, preset: str, out: str | None, n_synthetic: int | None,
                          real_epochs: int | None, exemplars: str, space: str, balance: bool,
                          encoder_weights: str | None, device: str | None, as_json: bool) -> None:
    """Table 1 of the paper: crack classifiers trained on synthetic, real and mixed data, over seeds 1..N."""
    from loop.study.crack_experiment import ExperimentConfig, run_experiment, table_markdown

    config = ExperimentConfig(real_dir=real_dir, seeds=tuple(range(1, seeds + 1)), preset=preset,
                              n_synthetic=n_synthetic, real_epochs=real_epochs, balance=balance,
                              exemplars=exemplars, space=space, encoder_weights=encoder_weights)
    out = out or f"runs/experiment-cracks-{preset}"
    table = run_experiment(config, out, device=device, say=(lambda line: None) if as_json else say)
    if as_json:
        echo_json(table)
        return
    click.echo(table_markdown(table))
    click.echo(f"wrote {out}/table1.md, {out}/table1.json and one seed_NNN.json per seed")


