"""A run on its own parameter space (`loop start --space FILE`): every draw inside it, frozen for resume and forks."""

from __future__ import annotations

from dataclasses import replace

import pytest
from click.testing import CliRunner

from generators.grains import ARTEFACTS_OFF, SPACE
from generators.space import ParamSpace, ParamSpaceError, complete_space, save_space_file
from loop.cli import main
from loop.config.fields import ConfigError
from loop.config.run import RunConfig, run_config_from
from loop.run.lifecycle import resume_run, start_run
from loop.study.compare_settings import CompareConfig, CompareError
from stores import RunStore

SMALL = dict(n_train=8, n_val=6, n_test=4, n_per_cycle=4, size=64, batch_size=4, workers=1)


def narrow_space() -> ParamSpace:
    """The grain space with the diameter fixed and the boundary thickness narrowed."""
    dims = []
    for dim in SPACE:
        if dim.name == "grain_diameter":
            dim = replace(dim, low=30.0, high=30.0)
        elif dim.name == "boundary_thickness":
            dim = replace(dim, low=2.0, high=3.0)
        dims.append(dim)
    return ParamSpace(dims)


def test_run_config_freezes_the_space_and_reads_it_back():
    config = RunConfig.for_preset("smoke", space=narrow_space())
    again = run_config_from(config.to_dict())
    assert again.space == narrow_space() and again == config
    assert RunConfig().space is None and "space" not in RunConfig().to_dict()
    with pytest.raises(ConfigError, match="run.space: expected a parameter space"):
        RunConfig(space={"dims": []})
    with pytest.raises(ConfigError, match="run.space: .*low <= high"):
        RunConfig(space={"dimensions": [{"name": "a", "kind": "continuous", "low": 1.0, "high": 0.0}]})


def test_a_space_outside_the_generators_is_refused_before_anything_is_written(tmp_path):
    wide = ParamSpace([replace(d, high=500.0) if d.name == "grain_diameter" else d for d in SPACE])
    with pytest.raises(ParamSpaceError, match=r"run.space .*'grain_diameter' has bounds \[12.0, 500.0\]; expected within"):
        start_run(str(tmp_path / "a"), RunConfig.for_preset("smoke", space=wide, **SMALL))
    short = ParamSpace([d for d in SPACE if d.name != "blur_sigma"])
    with pytest.raises(ParamSpaceError, match=r"missing \['blur_sigma'\]"):
        start_run(str(tmp_path / "a"), RunConfig.for_preset("smoke", space=short, **SMALL))
    assert not (tmp_path / "a").exists()


def test_cli_space_file_errors_are_one_line(tmp_path):
    result = CliRunner().invoke(main, ["start", "--run", str(tmp_path / "r"), "--policy", "random",
                                       "--preset", "smoke", "--space", str(tmp_path / "none.toml")])
    assert result.exit_code == 1
    assert "space file" in result.output and "not found" in result.output
    assert not (tmp_path / "r").exists()


def test_compare_freezes_the_space_inline():
    config = CompareConfig(policies=("random", "worst10"), seeds=2, preset="smoke", space=narrow_space().to_dict())
    assert config.space == narrow_space()
    assert CompareConfig.from_dict(config.to_dict()) == config
    assert config.run_config(1, "worst10").space == narrow_space()
    with pytest.raises(CompareError, match="space: expected a parameter space"):
        CompareConfig(policies=("random",), seeds=1, preset="smoke", space="nope")


def test_every_sample_of_a_run_and_its_resume_lies_in_the_run_space(ray_local, tmp_path):
    # A space file written before the generator's realism dimensions: they are frozen off in the run.
    old = ParamSpace([d for d in narrow_space() if d.name not in ARTEFACTS_OFF])
    path = save_space_file(old, tmp_path / "space.toml")
    space = complete_space(old, SPACE, ARTEFACTS_OFF)
    assert space.names == SPACE.names and space["etch_texture"].high == 0.0
    run = str(tmp_path / "run")
    result = CliRunner().invoke(main, ["start", "--run", run, "--policy", "worst10", "--preset", "smoke",
                                       "--cycles", "1", "--n-train", "8", "--n-val", "6", "--n-test", "4",
                                       "--n-per-cycle", "4", "--size", "64", "--workers", "1",
                                       "--space", str(path)])
    assert result.exit_code == 0, result.output
    resume_run(run, cycles=2, say=lambda line: None)
    store = RunStore.open(run)
    assert store.space == space
    assert run_config_from(store.config["run"]).space == space
    rows = store.params().to_pylist()
    assert {r["split"] for r in rows} >= {"train", "val", "test"} and max(r["cycle"] for r in rows) == 2
    for row in rows:
        space.validate({k: row[k] for k in space.names})  # inside the run's space, adaptive children too
    assert {r["grain_diameter"] for r in rows} == {30.0}
