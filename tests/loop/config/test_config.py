"""Model/training configuration: presets, validation, dict round trips."""

from __future__ import annotations

import dataclasses

import pytest

from loop.config.training import (
    PRESETS, AugmentConfig, ConfigError, ModelConfig, Stage, TrainConfig, get_preset, sized_stages,
)


def _walk(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)
    else:
        yield value


def test_paper_preset_follows_section_3_2_2():
    p = get_preset("paper")
    assert p.model.encoder == "resnet50" and p.model.arch == "unet" and p.model.classes == 1
    got = [(s.size, s.epochs, s.freeze_encoder) for s in p.train.stages]
    assert got == [(128, 20, True), (256, 10, True), (512, 5, False)]


def test_paper_classification_follows_section_3_1_2():
    p = get_preset("paper", task="classification")
    assert p.model.task == "classification" and p.model.arch == "classifier" and p.model.classes == 2
    assert [(s.size, s.epochs, s.freeze_encoder) for s in p.train.stages] == [(128, 4, True), (128, 5, False)]


def test_cpu_and_smoke_presets_are_small():
    for name in ("cpu", "smoke"):
        p = get_preset(name)
        assert p.model.encoder == "resnet18"
        assert max(s.size for s in p.train.stages) <= 128
        assert p.train.stages[0].freeze_encoder and not p.train.stages[-1].freeze_encoder
    assert all(s.epochs == 1 and s.size == 64 for s in get_preset("smoke").train.stages)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ConfigError) as e:
        get_preset("huge")
    for name in PRESETS:
        assert name in str(e.value)
    assert "'huge'" in str(e.value)


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("task", ["segmentation", "classification"])
def test_dict_round_trip_is_toml_ready(name, task):
    p = get_preset(name, task)
    d = p.to_dict()
    assert ModelConfig.from_dict(d["model"]) == p.model
    assert TrainConfig.from_dict(d["train"]) == p.train
    # TOML has no null and no tuples.
    assert all(v is not None and not isinstance(v, tuple) for v in _walk(d))
    assert isinstance(d["train"]["stages"], list) and isinstance(d["train"]["stages"][0], dict)


def test_encoder_weights_survive_the_round_trip():
    m = ModelConfig(encoder="resnet18", encoder_weights="/w/resnet18.pth")
    assert ModelConfig.from_dict(m.to_dict()) == m
    assert "encoder_weights" not in ModelConfig(encoder="resnet18").to_dict()


@pytest.mark.parametrize(
    "make, field, value",
    [
        (lambda: Stage(size=100, epochs=1, freeze_encoder=True, lr_max=1e-3, batch_size=4), "stage.size", "100"),
        (lambda: Stage(size=64, epochs=0, freeze_encoder=True, lr_max=1e-3, batch_size=4), "stage.epochs", "0"),
        (lambda: Stage(size=64, epochs=1, freeze_encoder=True, lr_max=-1.0, batch_size=4), "stage.lr_max", "-1.0"),
        (lambda: Stage(size=64, epochs=1, freeze_encoder="yes", lr_max=1e-3, batch_size=4), "stage.freeze_encoder", "'yes'"),
        (lambda: TrainConfig(stages=()), "train.stages", "()"),
        (lambda: dataclasses.replace(get_preset("smoke").train, pct_start=1.5), "train.pct_start", "1.5"),
        (lambda: dataclasses.replace(get_preset("smoke").train, num_workers=-1), "train.num_workers", "-1"),
        (lambda: AugmentConfig(stretch=0.9), "augment.stretch", "0.9"),
        (lambda: ModelConfig(encoder="vgg16"), "model.encoder", "'vgg16'"),
        (lambda: ModelConfig(task="detection"), "model.task", "'detection'"),
        (lambda: ModelConfig(classes=3), "model.classes", "3"),
        (lambda: ModelConfig(task="classification", classes=1), "model.classes", "1"),
        (lambda: ModelConfig(task="classification", arch="unet"), "model.arch", "'unet'"),
    ],
)
def test_bad_values_name_field_value_and_expectation(make, field, value):
    with pytest.raises(ConfigError) as e:
        make()
    msg = str(e.value)
    assert field in msg and value in msg and "expected" in msg


def test_from_dict_rejects_unknown_and_badly_nested_fields():
    d = get_preset("smoke").train.to_dict()
    with pytest.raises(ConfigError, match="unknown field.*'epochz'"):
        TrainConfig.from_dict({**d, "epochz": 3})
    bad_stage = dict(d["stages"][0], size=65)
    with pytest.raises(ConfigError, match=r"stage\.size.*65"):
        TrainConfig.from_dict({**d, "stages": [bad_stage]})
    with pytest.raises(ConfigError, match=r"train\.augment.*unknown.*'mirror'"):
        TrainConfig.from_dict({**d, "augment": {"mirror": True}})


def test_configs_are_frozen_and_normalised():
    s = Stage(size=64, epochs=1, freeze_encoder=False, lr_max=1, batch_size=2)
    assert isinstance(s.lr_max, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.size = 128  # type: ignore[misc]
    t = TrainConfig(stages=[s])
    assert t.stages == (s,)


@pytest.mark.parametrize("batch", [4, 16, 64, 256])
def test_sized_stages_never_batch_more_than_the_set(batch: int) -> None:
    stages = (Stage(size=64, epochs=2, freeze_encoder=True, lr_max=1e-3, batch_size=batch),
              Stage(size=128, epochs=3, freeze_encoder=False, lr_max=3e-4, batch_size=batch))
    for n in list(range(1, 70)) + [100, 357, 1000, 5000]:
        for repeat in (1, 3):
            sized = sized_stages(stages, n, min_steps=25, epochs=10, repeat=repeat)
            for stage in sized:
                assert 1 <= stage.batch_size <= min(n, batch)
                assert stage.batch_size >= min(2, n)
                steps = n // stage.batch_size if n > stage.batch_size else 1
                assert stage.epochs * steps >= 25  # the minimum number of optimiser steps
                assert stage.epochs >= -(-10 // repeat)
                if n >= 8:
                    assert steps >= 4  # a batch is at most a quarter of the set
    with pytest.raises(ConfigError, match="at least one sample"):
        sized_stages(stages, 0, min_steps=1)

