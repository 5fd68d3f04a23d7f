"""The adaptive crack loop (`loop start --generator cracks --space FILE --exemplars DIR`): a run renders
with its own exemplars and samples from a fitted space outside the default one (inside the limits)."""

from __future__ import annotations

import json
import pickle
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from generators import GeneratorError, get_generator
from generators.cracks import LIMITS, SPACE, TEXTURE_DIM, CrackSpaceError
from generators.space import Choice, ParamSpace, save_space_file
from generators.textures import exemplars_digest, load_exemplars
from loop.cli import main
from loop.config.fields import ConfigError
from loop.config.run import RunConfig, run_config_from
from loop.errors import InputError
from loop.config.training import PRESETS, get_preset, steps_per_epoch
from loop.run.lifecycle import resolved_preset, resume_run, run_space, run_status
from loop.study.compare_settings import CompareConfig, CompareError
from stores import RunStore

SMALL = ["--preset", "smoke", "--n-train", "4", "--n-val", "4", "--n-test", "2", "--n-per-cycle", "2",
         "--size", "64", "--workers", "1", "--finetune-on", "new"]
# One worker renders inline: a Ray task gets the same arguments (run_plans -> write_plan), pickled.


def write_exemplars(folder: Path, names=("speckle", "streaks")) -> Path:
    """Small noise textures (64 px, the smallest an exemplar may be)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    for k, name in enumerate(names):
        noise = rng.random((64, 64))
        if k % 2:
            noise = np.cumsum(noise, axis=1) % 1.0  # streaks along the rows
        Image.fromarray((noise * 255).astype(np.uint8)).save(folder / f"{name}.png")
    return folder


def fitted_space() -> ParamSpace:
    """A space as `loop fit-cracks` writes it: no texture, wider cracks than the default space allows
    (inside the generator's limits), a narrow segment count."""
    dims = []
    for dim in SPACE:
        if dim.name == TEXTURE_DIM:
            continue
        if dim.name == "width":
            dim = replace(dim, low=0.045, high=0.08)
        elif dim.name == "segments_mean":
            dim = replace(dim, low=2.0, high=3.0)
        elif dim.name == "crack_probability":
            dim = replace(dim, low=0.5, high=0.5)
        dims.append(dim)
    space = ParamSpace(dims)
    assert space["width"].high > SPACE["width"].high and space["width"].high <= LIMITS["width"][1]
    return space


@pytest.fixture
def exemplars(tmp_path) -> Path:
    return write_exemplars(tmp_path / "textures")


def test_generator_options_are_checked_and_frozen(exemplars):
    config = RunConfig.for_preset("smoke", generator="cracks", generator_options={"exemplars": str(exemplars)})
    assert config.generator_options == {"exemplars": str(exemplars.resolve())}
    assert run_config_from(config.to_dict()) == config
    assert RunConfig(generator="cracks", generator_options={}).generator_options is None
    assert "generator_options" not in RunConfig().to_dict()
    with pytest.raises(ConfigError, match=r"^run.generator_options: unknown option 'texture' for the cracks "
                                          r"generator; known: exemplars$"):
        RunConfig(generator="cracks", generator_options={"texture": "x"})
    with pytest.raises(ConfigError, match=r"^run.generator_options: the grains generator takes no options"):
        RunConfig(generator="grains", generator_options={"exemplars": str(exemplars)})
    with pytest.raises(GeneratorError, match="the grains generator takes no options"):
        get_generator("grains", {"exemplars": str(exemplars)})


def test_the_run_space_is_the_fitted_one_with_the_exemplars_as_textures(exemplars):
    config = RunConfig.for_preset("smoke", generator="cracks", space=fitted_space(),
                                  generator_options={"exemplars": str(exemplars)})
    space = run_space(config)
    assert space[TEXTURE_DIM] == Choice(TEXTURE_DIM, SPACE[TEXTURE_DIM].unit, SPACE[TEXTURE_DIM].description,
                                        ("speckle", "streaks"))
    assert space["width"] == fitted_space()["width"]
    # The default space with these exemplars; a texture option that is not one of them is refused.
    assert run_space(replace(config, space=None))[TEXTURE_DIM].options == ("speckle", "streaks")
    with pytest.raises(CrackSpaceError, match=r"'texture' has option\(s\) \['speckle', 'streaks'\] that are "
                                              r"not exemplars; the exemplars are: brick, gravel, grass"):
        run_space(replace(config, generator_options=None, space=space))
    with pytest.raises(CrackSpaceError, match=r"^space: .*\['brick', 'gravel', 'grass'\] that are not exemplars"):
        get_generator("cracks", {"exemplars": str(exemplars)}, space=run_space(replace(config, generator_options=None)))


def test_a_worker_builds_the_runs_generator_from_the_plan_call(exemplars):
    from loop.run.generation import plan_batches, render_plan
    from policies import Proposal

    space = run_space(RunConfig(generator="cracks", space=fitted_space(),
                                generator_options={"exemplars": str(exemplars)}))
    options = {"exemplars": str(exemplars)}
    assert pickle.loads(pickle.dumps((options, space))) == (options, space)  # as a Ray task gets them
    params = space.sample(np.random.default_rng(0), 2)
    assert all(p["width"] > SPACE["width"].high for p in params)
    plan, = plan_batches(proposals=[Proposal(params=p) for p in params], first_sample_id=0, first_batch=0,
                         batch_size=2, seed=0, cycle=0, split="train", size=64)
    rows, images, _ = render_plan("cracks", plan, options=options, space=space)
    assert images.shape == (2, 64, 64) and [r["texture"] for r in rows] == [p["texture"] for p in params]
    with pytest.raises(InputError, match="texture"):  # the default exemplars are not these textures
        render_plan("cracks", plan, space=fitted_space())
    with pytest.raises(InputError, match=r"width.*expected"):  # outside the default space
        render_plan("cracks", plan, options=options)


def test_compare_freezes_the_exemplars(exemplars, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = CompareConfig(policies=("random", "worst10"), seeds=1, preset="smoke", generator="cracks",
                           generator_options={"exemplars": "textures"}, space=fitted_space().to_dict())
    assert config.generator_options == {"exemplars": str(exemplars)}
    assert CompareConfig.from_dict(config.to_dict()) == config
    assert config.run_config(1, "worst10").generator_options == {"exemplars": str(exemplars)}
    with pytest.raises(CompareError, match="^generator_options: the grains generator takes no options"):
        CompareConfig(policies=("random",), seeds=1, preset="smoke", generator_options={"exemplars": "textures"})


def start(tmp_path: Path, *args: str):
    return CliRunner().invoke(main, ["start", "--run", str(tmp_path / "run"), "--policy", "worst10", *SMALL, *args])


def test_bad_crack_inputs_are_one_line_and_write_nothing(exemplars, tmp_path):
    space_file = save_space_file(fitted_space(), tmp_path / "fit.toml")
    brick = ParamSpace([*fitted_space(), Choice(TEXTURE_DIM, "", "exemplar", ("brick", "speckle"))])
    brick_file = save_space_file(brick, tmp_path / "brick.toml")
    cases = [
        (["--generator", "cracks", "--exemplars", str(tmp_path / "none"), "--space", str(space_file)],
         "exemplar folder", "not found"),
        (["--generator", "cracks", "--exemplars", str(exemplars), "--space", str(brick_file)],
         "option(s) ['brick'] that are not exemplars", "speckle, streaks"),
        (["--exemplars", str(exemplars)], "the grains generator takes no options", "exemplars"),
    ]
    for args, *expected in cases:
        result = start(tmp_path, *args)
        assert result.exit_code == 1, result.output
        error = [line for line in result.output.splitlines() if line.strip() and not line.startswith("run ")]
        assert len(error) == 1 and all(e in error[0] for e in expected), result.output
        assert not (tmp_path / "run").exists()


def write_real_cracks(folder: Path) -> Path:
    """Two 96 px crack images and two crack-free ones (images/ + masks/), standing in for real ones:
    at the run's 64 px, four tiles each."""
    gen = get_generator("cracks")
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for i, p in enumerate(gen.space.sample(np.random.default_rng(4), 4)):
        sample = gen.render({**p, "crack_probability": float(i < 2), "width": 0.03}, 70 + i, 96)
        Image.fromarray(sample.image).save(folder / "images" / f"t{i}.png")
        Image.fromarray(sample.mask * 255).save(folder / "masks" / f"t{i}.png")
    return folder


def test_a_crack_run_samples_its_fitted_space_and_renders_its_exemplars(ray_local, exemplars, tmp_path):
    space_file = save_space_file(fitted_space(), tmp_path / "fit.toml")
    real = write_real_cracks(tmp_path / "real")
    result = start(tmp_path, "--generator", "cracks", "--cycles", "1", "--space", str(space_file),
                   "--exemplars", str(exemplars), "--real", f"tiles={real}")
    assert result.exit_code == 0, result.output
    run = str(tmp_path / "run")
    resume_run(run, cycles=2, say=lambda line: None)

    # Real crack images are scored tile by tile at the run's size, each class apart.
    real_scores = run_status(run)["cycles"][2]["real"]
    assert real_scores["balanced_error"] == pytest.approx(
        0.5 * (real_scores["miss_rate"] + real_scores["false_alarm_rate"]))
    status = CliRunner().invoke(main, ["status", run])
    assert status.exit_code == 0 and "real bal. error" in status.output, status.output
    assert "tiles bal. error" in status.output and "tiles miou" not in status.output  # the group's column
    scored = CliRunner().invoke(main, ["evaluate", run, "--real", str(real), "--json"])
    assert scored.exit_code == 0, scored.output
    report = json.loads(scored.output)
    assert report["n_negative"] == 8 and {r["height"] for r in report["images"]} == {64}  # 2 images × 4 tiles
    assert all("@" in r["name"] for r in report["images"]) and 1 <= report["n_positive"] <= 8
    assert report["balanced_error"] == real_scores["balanced_error"]

    store = RunStore.open(run)
    config = run_config_from(store.config["run"])
    assert config.generator_options == {"exemplars": str(exemplars)}
    frozen = tomllib.loads((tmp_path / "run" / "run.toml").read_text())
    assert frozen["config"]["run"]["generator_options"] == {"exemplars": str(exemplars)}
    digest = exemplars_digest(load_exemplars(exemplars))
    assert store.generator_version.endswith("+x" + digest[:12])
    space = store.space
    assert space == config.space and space[TEXTURE_DIM].options == ("speckle", "streaks")
    rows = store.params().to_pylist()
    assert {r["split"] for r in rows} >= {"train", "val", "test"} and max(r["cycle"] for r in rows) == 2
    assert any(r["policy"] != "random" for r in rows)  # worst10's children
    for row in rows:
        space.validate({k: row[k] for k in space.names})  # inside the run's space, adaptive children too
    assert max(r["width"] for r in rows) > SPACE["width"].high  # outside the default space
    assert {r["texture"] for r in rows} <= {"speckle", "streaks"}

    # The exemplar folder changed since the start: resuming refuses before anything is written.
    write_exemplars(exemplars, names=("gravelish",))
    journal = (tmp_path / "run" / "journal.jsonl").read_text()
    with pytest.raises(InputError, match="changed since"):
        resume_run(run, cycles=3, say=lambda line: None)
    assert (tmp_path / "run" / "journal.jsonl").read_text() == journal


@pytest.mark.parametrize("preset", ["cpu", "paper"])
def test_a_run_classifier_gets_the_presets_minimum_of_steps_per_stage(preset):
    """A crack run's few hundred images at the preset's epochs gave a classifier 90 steps (it
    stayed at chance); its schedule is sized to its training set instead, frozen in run.toml."""
    p = get_preset(preset, task="classification")
    assert p.classification_min_steps > 0
    for n_train in (40, 300, 3200):
        config = RunConfig.for_preset(preset, generator="cracks", n_train=n_train)
        stages = resolved_preset(config).train.stages
        assert len(stages) == len(p.train.stages)
        for stage, base in zip(stages, p.train.stages):
            assert stage.epochs * steps_per_epoch(n_train, stage.batch_size) >= p.classification_min_steps
            assert stage.epochs >= base.epochs and stage.size == base.size
            assert stage.freeze_encoder == base.freeze_encoder and stage.lr_max == base.lr_max
    cpu = resolved_preset(RunConfig.for_preset("cpu", generator="cracks")).train.stages
    assert [(s.size, s.epochs, s.batch_size) for s in cpu] == [(128, 14, 16), (128, 14, 16)]


def test_a_segmentation_run_keeps_the_presets_epochs():
    for preset in PRESETS:
        config = RunConfig.for_preset(preset)
        assert resolved_preset(config).train.stages == get_preset(preset).train.stages
