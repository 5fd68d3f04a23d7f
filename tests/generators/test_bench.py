"""The generation benchmark's report (its numbers are measured, not asserted)."""

from __future__ import annotations

import pytest

from generators import GeneratorError
from generators.bench import bench_generate
from generators.grains import STAGES


def test_reports_throughput_stages_and_memory() -> None:
    result = bench_generate("grains", size=64, n=3, seed=1)
    assert (result["generator"], result["size"], result["n"]) == ("grains", 64, 3)
    assert result["images_per_s"] > 0 and result["ms_per_image"] > 0
    assert set(result["stage_ms"]) == set(STAGES)
    assert all(v > 0 for v in result["stage_ms"].values())
    assert sum(result["stage_ms"].values()) <= result["ms_per_image"]
    assert result["peak_rss_mb"] > 10


def test_bad_arguments() -> None:
    with pytest.raises(GeneratorError, match="unknown generator"):
        bench_generate("nope", size=64, n=1)
    with pytest.raises(GeneratorError, match="size"):
        bench_generate("grains", size=8, n=1)
    with pytest.raises(ValueError, match="n: "):
        bench_generate("grains", size=64, n=0)
