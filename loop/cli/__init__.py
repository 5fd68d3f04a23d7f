"""The ``loop`` command line.

Errors are one line on stderr and a non-zero exit; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import click
import numpy as np

import generators


class _Group(click.Group):
    """A click group that turns exceptions into one line on stderr (unless ``--debug``)."""

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
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            click.echo(f"loop: error: {message}", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """synthloop: train microscopy networks on synthetic images, with adaptive sampling."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _generator_choice_help() -> str:
    return "Generator name; one of: " + ", ".join(generators.available())


@main.command()
@click.argument("run")
@click.option("--generator", "generator_name", default="grains", show_default=True, help=_generator_choice_help())
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
    """Draw N random parameter sets and write the rendered samples into RUN's store."""
    from rich.progress import Progress

    from loop.run.driver import policy_view
    from loop.run.generation import plan_batches, run_plans
    from policies import get_policy
    from loop.run.ray_session import ray_session
    from stores import RunStore

    generator = generators.get_generator(generator_name)
    generators.check_size(size)
    store = _open_or_create(run, generator, {"seed": seed, "size": size})
    params = store.params()
    first_id = int(max(params.column("sample_id").to_pylist(), default=-1)) + 1
    first_batch = max(store.committed_batches(), default=-1) + 1
    proposals = get_policy("random").propose(policy_view(store, cycle=0), n, np.random.default_rng([seed, first_id]))
    plans = plan_batches(proposals=proposals, first_sample_id=first_id, first_batch=first_batch,
                         batch_size=batch_size, seed=seed, cycle=0, split=split, size=size)
    with Progress(transient=False) as progress:
        task = progress.add_task(f"generating {generator_name} {size}px", total=n)
        advance = lambda plan: progress.advance(task, len(plan))  # noqa: E731
        if workers > 1:
            with ray_session(address, num_cpus=None if address else workers):
                run_plans(store.uri, generator_name, plans, workers=workers, on_done=advance)
        else:
            run_plans(store.uri, generator_name, plans, workers=1, on_done=advance)
    total = len(RunStore.open(store.uri).params())
    click.echo(f"wrote {n} samples to {store.uri} ({total} in the run)")


def _open_or_create(run: str, generator: generators.Generator, config: dict[str, Any]):
    from stores import RunStore, StoreError

    try:
        store = RunStore.open(run, recover=True)
    except StoreError:
        if RunStore.exists(run):
            raise
        return RunStore.create(run, generator_name=generator.name, generator_version=generator.version,
                               task=generator.task, space=generator.space, config=config)
    if store.generator_name != generator.name:
        raise click.UsageError(f"--generator {generator.name!r}: run {run} was made with generator {store.generator_name!r}")
    return store


@main.command()
@click.option("--run", "run", default=None, help="Run directory or URI (default: runs/<policy>-<time>).")
@click.option("--policy", required=True, help="Sampling policy, e.g. worst10, random, sobol, 'worst:k=0.1,m=10,radius=0.05'.")
@click.option("--preset", default="cpu", show_default=True, help="Training and data-size preset: paper, cpu, smoke.")
@click.option("--cycles", type=click.IntRange(min=0), default=None, help="Adaptive cycles after cycle 0 (default 3).")
@click.option("--generator", "generator_name", default="grains", show_default=True, help=_generator_choice_help())
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of everything random in the run.")
@click.option("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else an embedded local Ray).")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="Generator workers (default: one per CPU).")
@click.option("--real", "real_dir", default=None, help="Folder of real labelled images scored after every cycle.")
@click.option("--encoder-weights", default=None, help="Local file of ImageNet encoder weights (never downloaded).")
@click.option("--n-train", type=click.IntRange(min=1), default=None, help="Initial training samples (preset default).")
@click.option("--n-val", type=click.IntRange(min=1), default=None, help="Validation samples (preset default).")
@click.option("--n-per-cycle", type=click.IntRange(min=1), default=None, help="New samples per cycle (preset default).")
@click.option("--size", type=int, default=None, help="Image side in px (preset default).")
def start(run: str | None, policy: str, preset: str, cycles: int | None, generator_name: str, seed: int,
          address: str | None, workers: int | None, real_dir: str | None, encoder_weights: str | None,
          n_train: int | None, n_val: int | None, n_per_cycle: int | None, size: int | None) -> None:
    """Start a run: cycle 0 (initial data, training, evaluation), then the adaptive cycles."""
    import time

    from loop.config.run import RunConfig
    from loop.run.lifecycle import start_run

    config = RunConfig.for_preset(preset, generator=generator_name, policy=policy, cycles=cycles, seed=seed,
                                  workers=workers, real_dir=real_dir, n_train=n_train, n_val=n_val,
                                  n_per_cycle=n_per_cycle, size=size)
    run = run or f"runs/{policy.split(':')[0]}-{time.strftime('%Y%m%d-%H%M%S')}"
    click.echo(f"run {run}: {config.generator}, policy {config.policy}, preset {config.preset}, cycles 0..{config.cycles}")
    start_run(run, config, address=address, encoder_weights=encoder_weights, say=_say)


@main.command()
@click.argument("run")
@click.option("--cycles", type=click.IntRange(min=0), default=None, help="New total number of adaptive cycles.")
@click.option("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else an embedded local Ray).")
def resume(run: str, cycles: int | None, address: str | None) -> None:
    """Go on with RUN after a crash or a kill, or add cycles with --cycles."""
    from loop.run.lifecycle import resume_run

    resume_run(run, cycles, address=address, say=_say)


@main.command()
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(run: str, as_json: bool) -> None:
    """Where RUN is: per cycle, samples by policy, validation and real scores, wall time per stage."""
    from loop.run.lifecycle import run_status

    info = run_status(run)
    if as_json:
        _echo_json(info)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{info['run']} — {info['generator']}, policy {info['policy']}, preset {info['preset']}")
    for column in ("cycle", "state", "samples", "val miou", "val error", "real miou", "real error", "s gen/train/eval"):
        table.add_column(column, no_wrap=column != "samples")
    for c in info["cycles"]:
        val, real, wall = c.get("val", {}), c.get("real", {}), c["wall_s"]
        table.add_row(
            str(c["cycle"]), c["state"], ", ".join(f"{k.split(':')[0]} {v}" for k, v in c["samples"].items()),
            _fmt(val.get("miou")), _fmt(val.get("error")), _fmt(real.get("miou")), _fmt(real.get("error")),
            "/".join(_fmt(wall.get(k), ".0f") for k in ("generated", "trained", "evaluated")),
        )
    Console(width=max(100, Console().width)).print(table)


def _fmt(value: Any, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def _say(line: str) -> None:
    import time

    click.echo(f"[{time.strftime('%H:%M:%S')}] {line}")


@main.command()
@click.argument("run")
@click.option("--n", "n", type=click.IntRange(min=1), default=16, show_default=True, help="Samples on the sheet.")
@click.option("--out", default=None, help="PNG file to write (default: RUN/reports/contact_sheet.png).")
@click.option("--split", type=click.Choice(["train", "val"]), default=None, help="Only samples of this split.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the choice of samples.")
def show(run: str, n: int, out: str | None, split: str | None, seed: int) -> None:
    """Write a contact sheet of RUN: each image beside its mask overlay, parameters as captions."""
    import fsspec

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
    out = out or store.path("reports", "contact_sheet.png")
    with fsspec.open(out, "wb", auto_mkdir=True) as fh:
        fh.write(png)
    click.echo(f"wrote {out} ({len(picks)} samples)")


@main.command()
@click.argument("run")
@click.argument("sql")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
def query(run: str, sql: str, fmt: str) -> None:
    """Run a read-only SQL query over RUN's tables: params, metrics, samples (params + latest metrics)."""
    from stores import format_table
    from stores import query as run_query

    click.echo(format_table(run_query(run, sql), fmt=fmt))


@main.command()
@click.argument("run")
@click.option("--real", "real_dir", required=True, help="Folder of real images and masks (DIR/images, DIR/masks).")
@click.option("--checkpoint", "cycle", type=click.IntRange(min=0), default=None,
              help="Cycle whose checkpoint to score (default: the latest).")
@click.option("--tile", type=click.IntRange(min=32), default=256, show_default=True, help="Inference tile side in px.")
@click.option("--overlap", type=click.IntRange(min=0), default=64, show_default=True, help="Tile overlap in px.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def evaluate(run: str, real_dir: str, cycle: int | None, tile: int, overlap: int, as_json: bool) -> None:
    """Score a checkpoint of RUN on real labelled micrographs (tiled inference, any size)."""
    import fsspec

    from loop.run.driver import checkpoint_name
    from loop.run.evaluator_actor import Evaluator
    from stores import RunStore

    store = RunStore.open(run)
    cycle = _pick_checkpoint(store, cycle)
    name = checkpoint_name(cycle)
    reports = store.path("reports", f"real_{name.removesuffix('.pt')}")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        # Overlays are drawn on local disk; for a run on an object store they are copied there after.
        local = "://" not in reports
        result = Evaluator(tile=tile, overlap=overlap).evaluate_real(store.path("checkpoints", name), real_dir,
                                                                     overlay_dir=reports if local else tmp)
        if not local:
            fs, root = fsspec.core.url_to_fs(reports)
            fs.put(f"{tmp}/", root, recursive=True)
    with fsspec.open(f"{reports}/scores.json", "w", auto_mkdir=True) as fh:
        fh.write(json.dumps(result, indent=2, default=_json_default))
    if as_json:
        _echo_json(result)
        return
    from rich.console import Console
    from rich.table import Table

    images = result["images"]
    metrics = [k for k in ("miou", "error", "boundary_f1", "grain_count_rel_error", "grain_size_distance", "loss")
               if images and k in images[0]]
    table = Table(title=f"{run} cycle {cycle} on {real_dir} ({result['n_images']} images)")
    table.add_column("image")
    for key in metrics:
        table.add_column(key, justify="right")
    for row in images:
        table.add_row(row["name"], *(_fmt(row[k]) for k in metrics))
    table.add_row("mean ± sd", *(f"{result[k]:.4f} ± {result[k + '_std']:.4f}" for k in metrics), style="bold")
    Console().print(table)
    click.echo(f"wrote {reports}/scores.json and overlays")


def _pick_checkpoint(store: Any, cycle: int | None) -> int:
    import fsspec

    fs, root = fsspec.core.url_to_fs(store.path("checkpoints"))
    have = sorted(int(p.rsplit("cycle_", 1)[1][:3]) for p in (fs.glob(f"{root}/cycle_*.pt") if fs.exists(root) else []))
    if not have:
        raise click.UsageError(f"run {store.uri} has no checkpoint yet; train it with `loop start` / `loop resume`")
    if cycle is None:
        return have[-1]
    if cycle not in have:
        raise click.UsageError(f"--checkpoint {cycle}: run {store.uri} has checkpoints of cycles {have}")
    return cycle


@main.group(cls=_Group)
def bench() -> None:
    """Throughput benchmarks: print a table, or one JSON object with --json."""


def _print_bench(title: str, result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _echo_json(result)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in _flatten(result):
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    Console().print(table)


def _flatten(result: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in result.items():
        if isinstance(value, dict):
            rows.extend(_flatten(value, f"{prefix}{key}."))
        else:
            rows.append((prefix + key, value))
    return rows


@bench.command("generate")
@click.option("--generator", "generator_name", default="grains", show_default=True, help=_generator_choice_help())
@click.option("--size", type=int, default=512, show_default=True)
@click.option("--n", "n", type=click.IntRange(min=1), default=50, show_default=True, help="Images to render.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_generate_cmd(generator_name: str, size: int, n: int, as_json: bool) -> None:
    """Images per second on one core, and time per generator stage."""
    from generators.bench import bench_generate

    generators.get_generator(generator_name)
    generators.check_size(size)
    _print_bench(f"loop bench generate ({generator_name}, {size}px)", bench_generate(generator_name, size=size, n=n), as_json)


@bench.command("store")
@click.option("--dir", "workdir", default=None, help="Folder to write the benchmark data in (default: a temp dir).")
@click.option("--quick", is_flag=True, help="Fewer samples (for a smoke check).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_store_cmd(workdir: str | None, quick: bool, as_json: bool) -> None:
    """Store write/read throughput and query time against their targets."""
    from stores.bench import bench_store

    _print_bench("loop bench store", bench_store(workdir, quick=quick), as_json)


@bench.command("train")
@click.option("--preset", default="smoke", show_default=True, help="Training preset: paper, cpu, smoke.")
@click.option("--task", type=click.Choice(["segmentation", "classification"]), default="segmentation", show_default=True)
@click.option("--n", "n_images", type=click.IntRange(min=1), default=64, show_default=True, help="Images in the benchmark set.")
@click.option("--epochs", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--device", default=None, help="cuda or cpu (default: cuda when present).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_train_cmd(preset: str, task: str, n_images: int, epochs: int, device: str | None, as_json: bool) -> None:
    """Training and evaluation images/s, data-wait fraction, and the bare-loop baseline."""
    from loop.bench.train import bench_train

    result = bench_train(preset, n_images, task=task, epochs=epochs, device=device)
    _print_bench(f"loop bench train ({preset}, {task})", result, as_json)


@bench.command("loop")
@click.option("--preset", default="smoke", show_default=True, help="Preset of the benchmark run (cpu for the target).")
@click.option("--cycles", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_loop_cmd(preset: str, cycles: int, as_json: bool) -> None:
    """The loop's own overhead per cycle (target < 5 %) and generation scaling with workers (target >= 1.8x)."""
    from loop.bench.loop import bench_loop

    _print_bench(f"loop bench loop ({preset}, {cycles} cycles)", bench_loop(preset, cycles), as_json)


@main.command("compare")
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

    say = (lambda line: None) if as_json else _say
    if report_only:
        given = dict(policies=policies, seeds=seeds, preset=preset, cycles=cycles, generator=generator_name,
                     real_dir=real_dir, n_train=n_train, n_val=n_val, n_per_cycle=n_per_cycle, size=size)
        named = [k for k, v in given.items() if v is not None]
        if named:
            raise click.UsageError(f"--report re-renders OUT as it is; it takes no settings (got --{named[0].replace('_', '-')})")
        result = write_report(out, say=say)
    else:
        result = compare(out, dict(policies=policies, seeds=seeds, preset=preset, cycles=cycles,
                                   generator=generator_name, real_dir=real_dir, n_train=n_train, n_val=n_val,
                                   n_per_cycle=n_per_cycle, size=size),
                         address=address, parallel=parallel, say=say)
    if as_json:
        from loop.study.report import json_ready

        _echo_json(json_ready(result))


@main.command("fit-cracks")
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
        _echo_json({**fit.to_dict(), "out": str(path)})
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


@main.group(cls=_Group)
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
    table = run_experiment(config, out, device=device, say=(lambda line: None) if as_json else _say)
    if as_json:
        _echo_json(table)
        return
    click.echo(table_markdown(table))
    click.echo(f"wrote {out}/table1.md, {out}/table1.json and one seed_NNN.json per seed")


if __name__ == "__main__":  # pragma: no cover
    main()
