"""``loop bench``: throughput benchmarks that print a table, or JSON."""

from __future__ import annotations

import click

import generators
from loop.cli.errors import Group
from loop.cli.options import generator_choice_help
from loop.cli.output import print_figures


@click.group(cls=Group)
def bench() -> None:
    """Throughput benchmarks: print a table, or one JSON object with --json."""


@bench.command("generate")
@click.option("--generator", "generator_name", default="grains", show_default=True, help=generator_choice_help())
@click.option("--size", type=int, default=512, show_default=True)
@click.option("--n", "n", type=click.IntRange(min=1), default=50, show_default=True, help="Images to render.")
@click.option("--space", "space_file", default=None, metavar="FILE",
              help="Parameter-space file (TOML, e.g. from `loop fit-grains`) to draw from instead of the generator's space.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_generate_cmd(generator_name: str, size: int, n: int, space_file: str | None, as_json: bool) -> None:
    """Images per second on one core, and time per generator stage."""
    from generators.bench import bench_generate
    from loop.cli.options import space_from_file

    generators.get_generator(generator_name)
    generators.check_size(size)
    space = space_from_file(space_file)
    title = f"loop bench generate ({generator_name}, {size}px" + (f", space {space_file})" if space_file else ")")
    print_figures(title, bench_generate(generator_name, size=size, n=n, space=space), as_json)


@bench.command("store")
@click.option("--dir", "workdir", default=None, help="Folder to write the benchmark data in (default: a temp dir).")
@click.option("--quick", is_flag=True, help="Fewer samples (for a smoke check).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_store_cmd(workdir: str | None, quick: bool, as_json: bool) -> None:
    """Store write/read throughput and query time against their targets."""
    from stores.bench import bench_store

    print_figures("loop bench store", bench_store(workdir, quick=quick), as_json)


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
    print_figures(f"loop bench train ({preset}, {task})", result, as_json)


@bench.command("loop")
@click.option("--preset", default="smoke", show_default=True, help="Preset of the benchmark run (cpu for the target).")
@click.option("--cycles", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_loop_cmd(preset: str, cycles: int, as_json: bool) -> None:
    """The loop's own overhead per cycle (target < 5 %) and generation scaling with workers (target >= 1.8x)."""
    from loop.bench.loop import bench_loop

    print_figures(f"loop bench loop ({preset}, {cycles} cycles)", bench_loop(preset, cycles), as_json)


