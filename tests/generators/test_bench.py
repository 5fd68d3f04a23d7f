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


def test_draws_from_a_given_space_file(tmp_path, monkeypatch) -> None:
    import dataclasses

    import generators.bench
    from generators import get_generator
    from generators.space import ParamSpace, ParamSpaceError, load_space_file, save_space_file

    grains = get_generator("grains")
    narrow = ParamSpace([dataclasses.replace(d, low=20.0, high=20.0) if d.name == "grain_diameter" else d
                         for d in grains.space if d.name != "etch_texture"])  # completed: etch_texture off
    path = save_space_file(narrow, tmp_path / "space.toml")
    drawn: list[dict] = []
    render = type(grains).render

    def recording(self, params, seed, size, **kw):
        drawn.append(dict(params))
        return render(self, params, seed, size, **kw)

    monkeypatch.setattr(type(grains), "render", recording)
    result = bench_generate("grains", size=64, n=3, seed=1, space=load_space_file(path))
    assert result["space"] == "given" and len(drawn) == 4  # one warm-up render
    assert all(p["grain_diameter"] == 20.0 and p["etch_texture"] == 0.0 for p in drawn)
    assert bench_generate("grains", size=64, n=1)["space"] == "generator's"
    wide = ParamSpace([dataclasses.replace(d, high=1000.0) if d.name == "grain_diameter" else d for d in grains.space])
    with pytest.raises(ParamSpaceError, match="--space"):
        bench_generate("grains", size=64, n=1, space=wide)


def test_bad_arguments() -> None:
    with pytest.raises(GeneratorError, match="unknown generator"):
        bench_generate("nope", size=64, n=1)
    with pytest.raises(GeneratorError, match="size"):
        bench_generate("grains", size=8, n=1)
    with pytest.raises(ValueError, match="n: "):
        bench_generate("grains", size=64, n=0)
