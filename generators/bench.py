"""Generation throughput: images per second on one core, and where the time goes."""

from __future__ import annotations

import inspect
import resource
import sys
import time

import numpy as np

from generators.base import check_size
from generators.registry import fit_space, get_generator
from generators.space import ParamSpace
from loop.errors import InputError


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def bench_generate(generator_name: str = "grains", size: int = 512, n: int = 50, seed: int = 0,
                   space: ParamSpace | None = None) -> dict:
    """Render ``n`` images of ``size`` px in this process and time them.

    Parameter sets are drawn uniformly from ``space`` (e.g. a fitted space file's: its grain
    sizes set how much there is to draw; completed and checked as a run's is), by default the
    generator's own, with
    ``numpy.random.default_rng(seed)`` (the workload of a random-policy run); sample ``i``
    gets seed ``seed + i``. One untimed render first warms caches. Everything runs in
    this one process; the generators' numpy/scipy work is single-threaded (set
    ``OMP_NUM_THREADS=1`` when measuring to keep any BLAS call on one core too).

    Returns ``{"generator", "size", "n", "images_per_s", "ms_per_image", "stage_ms",
    "peak_rss_mb", "space"}``: ``stage_ms`` is the mean milliseconds per image of each stage the
    generator reports through ``render(..., timings=...)`` (empty if it reports none),
    ``peak_rss_mb`` the peak resident memory of the process.
    """
    size = check_size(size)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"n: expected a positive number of images, got {n!r}")
    gen = get_generator(generator_name)
    if space is not None:
        gen, space = fit_space(gen, space, f"--space (for the {generator_name} generator)")
    params = (space or gen.space).sample(np.random.default_rng(seed), n)
    gen.render(params[0], seed, size)
    timings: dict[str, float] = {}
    extra = {"timings": timings} if "timings" in inspect.signature(gen.render).parameters else {}
    start = time.perf_counter()
    for i, p in enumerate(params):
        gen.render(p, seed + i, size, **extra)
    elapsed = time.perf_counter() - start
    return {
        "generator": generator_name,
        "size": size,
        "n": int(n),
        "images_per_s": n / elapsed,
        "ms_per_image": 1e3 * elapsed / n,
        "stage_ms": {stage: 1e3 * t / n for stage, t in timings.items()},
        "peak_rss_mb": peak_rss_mb(),
        "space": "generator's" if space is None else "given",
    }
