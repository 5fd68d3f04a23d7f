"""Commands that drive a run: start, resume, status."""

from __future__ import annotations

import click

from loop.cli.options import data_and_model_options, exemplars_option, generator_choice_help, space_from_file
from loop.cli.output import echo_json, fmt, say, table_console
from loop.cli.progress import TrainProgressView, format_duration


@click.command()
@click.option("--run", "run", default=None, help="Run directory or URI (default: runs/<policy>-<time>).")
@click.option("--policy", required=True, help="Sampling policy, e.g. worst10, random, sobol, 'worst:k=0.1,m=10,radius=0.05'.")
@click.option("--preset", default="cpu", show_default=True, help="Training and data-size preset: paper, cpu, smoke.")
@click.option("--cycles", type=click.IntRange(min=0), default=None, help="Adaptive cycles after cycle 0 (default 3).")
@click.option("--generator", "generator_name", default="grains", show_default=True, help=generator_choice_help())
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of everything random in the run.")
@click.option("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else an embedded local Ray).")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="Generator workers (default: one per CPU).")
@click.option("--real", "real", multiple=True, metavar="[NAME=]DIR",
              help="Folder of real labelled images scored after every cycle; repeat for several named groups "
                   "(NAME=DIR; a bare DIR is named after its folder).")
@click.option("--encoder-weights", default=None, help="Local file of ImageNet encoder weights (never downloaded).")
@click.option("--finetune-on", type=click.Choice(["new", "all"]), default=None,
              help="Fine-tune each cycle on the new samples only or on all so far (default all).")
@click.option("--n-train", type=click.IntRange(min=1), default=None, help="Initial training samples (preset default).")
@click.option("--n-val", type=click.IntRange(min=1), default=None, help="Validation samples (preset default).")
@click.option("--n-test", type=click.IntRange(min=0), default=None,
              help="Held-out synthetic test samples, never shown to a policy (preset default; 0 = none).")
@click.option("--n-per-cycle", type=click.IntRange(min=1), default=None, help="New samples per cycle (preset default).")
@click.option("--size", type=int, default=None, help="Image side in px (preset default).")
@data_and_model_options
def start(run: str | None, policy: str, preset: str, cycles: int | None, generator_name: str, seed: int,
          address: str | None, workers: int | None, real: tuple[str, ...], encoder_weights: str | None,
          finetune_on: str | None, n_train: int | None, n_val: int | None, n_test: int | None,
          n_per_cycle: int | None, size: int | None, space_file: str | None, exemplars: str | None,
          freeze_random_encoder: bool | None, input_norm: str | None, augment: dict | None,
          real_val: str | None, real_tile: int | None) -> None:
    """Start a run: cycle 0 (initial data, training, evaluation), then the adaptive cycles."""
    import time

    from loop.config.run import RunConfig
    from loop.run.lifecycle import start_run

    config = RunConfig.for_preset(preset, generator=generator_name, policy=policy, cycles=cycles, seed=seed,
                                  workers=workers, real=real or None, finetune_on=finetune_on, n_train=n_train,
                                  n_val=n_val, n_test=n_test, n_per_cycle=n_per_cycle, size=size,
                                  space=space_from_file(space_file), generator_options=exemplars_option(exemplars),
                                  real_val=real_val, real_tile=real_tile)
    run = run or f"runs/{policy.split(':')[0]}-{time.strftime('%Y%m%d-%H%M%S')}"
    click.echo(f"run {run}: {config.generator}, policy {config.policy}, preset {config.preset}, cycles 0..{config.cycles}")
    with TrainProgressView(say=say) as view:
        overrides = dict(encoder_weights=encoder_weights, freeze_random_encoder=freeze_random_encoder,
                         input_norm=input_norm, augment=augment)
        start_run(run, config, address=address, overrides=overrides, say=view.say, train_progress=view)


@click.command()
@click.argument("run")
@click.option("--cycles", type=click.IntRange(min=0), default=None, help="New total number of adaptive cycles.")
@click.option("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else an embedded local Ray).")
def resume(run: str, cycles: int | None, address: str | None) -> None:
    """Go on with RUN after a crash or a kill, or add cycles with --cycles."""
    from loop.run.lifecycle import resume_run

    with TrainProgressView(say=say) as view:
        resume_run(run, cycles, address=address, say=view.say, train_progress=view)


@click.command()
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(run: str, as_json: bool) -> None:
    """Where RUN is: per cycle, samples by policy, validation, test and real scores, wall time per stage."""
    from loop.run.lifecycle import run_status

    info = run_status(run)
    if as_json:
        echo_json(info)
        return
    from rich.table import Table

    state = info["state"] + (f" (lock held by {info['lock_holder']})" if info["lock_holder"] else "")
    # The heading as a plain line: a long run path must not wrap the run's state away.
    click.echo(f"{info['run']} — {info['generator']}, policy {info['policy']}, preset {info['preset']}: {state}")
    table = Table()
    # The held-out test set's scores beside the validation scores, when the run has one; each real
    # group's mIoU beside the pooled real scores, when the run has groups.
    has_test = any("test" in c for c in info["cycles"])
    groups = list(dict.fromkeys(name for c in info["cycles"] for name in c.get("real_groups", {})))
    has_real_val = any("real_val" in c for c in info["cycles"])  # --real-val images, scored after each cycle
    # A classifier scored on real tiles: its error on each class and their mean (crack-free tiles dominate).
    rates = ("balanced_error", "miss_rate", "false_alarm_rate")
    has_rates = any("balanced_error" in c.get("real", {}) for c in info["cycles"])
    columns = ["cycle", "state", "samples", "val miou", "val error", *(["test miou", "test error"] if has_test else []),
               "real miou", "real error", *(["real bal. error", "real miss", "real false alarm"] if has_rates else []),
               *(f"{name} {'bal. error' if has_rates else 'miou'}" for name in groups),
               *([f"real-val {'bal. error' if has_rates else 'miou'}"] if has_real_val else []), "s gen/train/eval"]
    for column in columns:
        table.add_column(column, no_wrap=column != "samples")
    for c in info["cycles"]:
        val, test, real, wall = c.get("val", {}), c.get("test", {}), c.get("real", {}), c["wall_s"]
        table.add_row(
            str(c["cycle"]), c["state"], ", ".join(f"{k.split(':')[0]} {v}" for k, v in c["samples"].items()),
            fmt(val.get("miou")), fmt(val.get("error")),
            *([fmt(test.get("miou")), fmt(test.get("error"))] if has_test else []),
            fmt(real.get("miou")), fmt(real.get("error")),
            *([fmt(real.get(k)) for k in rates] if has_rates else []),
            *(fmt(c.get("real_groups", {}).get(name, {}).get("balanced_error" if has_rates else "miou"))
              for name in groups),
            *([fmt(c.get("real_val", {}).get("balanced_error" if has_rates else "miou"))] if has_real_val else []),
            "/".join(fmt(wall.get(k), ".0f") for k in ("generated", "trained", "evaluated")),
        )
    console = table_console(table, 100 + 14 * (len(columns) - 8))
    console.print(table)
    best = info.get("best_real_val")
    if best is not None:
        console.print(f"best on the real validation images: cycle {best['cycle']} ({best['metric']} "
                      f"{best['value']:.4f}); score it on other real images with `loop evaluate {info['run']} "
                      f"--real DIR --checkpoint {best['cycle']}`", markup=False, highlight=False)
    for c in info["cycles"]:
        if c.get("inverse_r2"):
            console.print(f"cycle {c['cycle']} inverse model, held-out R² (identifiable at >= 0.5): "
                          + ", ".join(f"{k} {fmt(v, '.2f')}" for k, v in c["inverse_r2"].items()),
                          markup=False, highlight=False)
    for c in info["cycles"]:
        if c["state"] != "done" and "train_progress" in c:
            console.print(_training_line(c), markup=False, highlight=False)


def _training_line(cycle: dict) -> str:
    """The latest training progress of an unfinished cycle, in one line."""
    import time

    record = cycle["train_progress"]
    return (f"cycle {cycle['cycle']} {cycle['state']}, training: "
            f"stage {record['stage'] + 1}/{record['stages']} {record['stage_name']}, epoch {record['epoch'] + 1}/{record['epochs']}, loss {record['loss']:.4f}, "
            f"{100 * record['fraction']:.0f}%, ETA {format_duration(record['eta_s'])} "
            f"({format_duration(time.time() - record['time'])} ago)")
