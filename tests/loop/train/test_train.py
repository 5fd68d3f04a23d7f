"""Training with the smoke preset on tiny synthetic grain images (CPU, a few seconds each)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from generators import get_generator
from generators.grains import ARTEFACTS_OFF
from loop.bench.train import synthetic_view
from loop.train.data import ArrayView
from loop.train.checkpoints import CheckpointError, load_checkpoint
from loop.config.training import Stage, get_preset
from loop.train.model import model_from_checkpoint
from loop.train.fit import PairDataset, TrainError, make_loader, stage_generator, train


SMOKE = get_preset("smoke")


@pytest.fixture(scope="module")
def grains() -> ArrayView:
    # Easy grains (dark 3-px boundaries, little noise): the tests check the training mechanics.
    generator = get_generator("grains")
    easy = dict(grain_diameter=20.0, lloyd_iterations=1, spline_points=1, spline_displacement=0.2,
                boundary_thickness=3.0, boundary_contrast=-0.5, mean_grey=0.65, grain_contrast=0.15,
                perlin_amplitude=0.02, perlin_wavelength=0.4, noise_sigma=0.02, blur_sigma=0.5, **ARTEFACTS_OFF)
    samples = [generator.render(easy, seed, 64) for seed in range(24)]
    return ArrayView(np.stack([s.image for s in samples]), np.stack([s.mask for s in samples]),
                     sample_ids=np.arange(100, 124))


@pytest.fixture(scope="module")
def trained(grains, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ckpt") / "first.pt")
    events = []
    result = train(grains, SMOKE.train, SMOKE.model, out=out, device="cpu", progress=events.append)
    return result, out, events


def test_smoke_training_lowers_the_loss(trained):
    result, _, events = trained
    steps = result.step_losses
    assert len(steps) == 2 * (24 // 4) and all(np.isfinite(steps))
    assert np.mean(steps[-3:]) < 0.9 * np.mean(steps[:2])
    assert result.epoch_losses[-1] < result.epoch_losses[0]
    assert result.epoch_stage == [0, 1] and result.n_images == 48 and result.device == "cpu"
    assert result.images_per_s > 0 and 0 <= result.data_wait_fraction < 1
    assert [(e["stage"], e["epoch"], e["freeze_encoder"]) for e in events] == [(0, 0, True), (1, 0, False)]


def test_checkpoint_holds_the_trained_model_and_its_configs(trained, grains):
    result, out, _ = trained
    state, meta = load_checkpoint(out)
    assert meta["model"] == SMOKE.model.to_dict() and meta["train"] == SMOKE.train.to_dict()
    assert meta["n_samples"] == 24 and meta["result"]["epoch_losses"] == result.epoch_losses
    assert result.digest and result.out == out
    model, _ = model_from_checkpoint(out)
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), result.model(x))
    assert all(p.requires_grad for p in result.model.parameters())  # handed back unfrozen


def test_fine_tune_starts_from_the_checkpoint(trained, grains):
    first, out, _ = trained
    cfg = dataclasses.replace(SMOKE.train, seed=1)
    second = train(grains, cfg, SMOKE.model, init=out, device="cpu")
    fresh = train(grains, cfg, SMOKE.model, device="cpu")
    end_of_first = np.mean(first.step_losses[-3:])
    # The first fine-tune step is scored before any update: the checkpoint's weights, not new ones.
    assert abs(second.step_losses[0] - end_of_first) < 0.5 * abs(fresh.step_losses[0] - end_of_first)
    assert second.step_losses[0] < fresh.step_losses[0]
    assert second.init == out


def test_same_seed_same_weights_other_seed_other_weights(grains):
    view = ArrayView(grains.images[:8], grains.targets[:8])
    small = tuple(dataclasses.replace(s, size=32) for s in SMOKE.train.stages)  # both stages, at 32 px
    cfg = dataclasses.replace(SMOKE.train, stages=small, deterministic=True, seed=3)
    a = train(view, cfg, SMOKE.model, device="cpu").model.state_dict()
    b = train(view, cfg, SMOKE.model, device="cpu").model.state_dict()
    c = train(view, dataclasses.replace(cfg, seed=4), SMOKE.model, device="cpu").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["net.decoder.blocks.0.conv1.0.weight"], c["net.decoder.blocks.0.conv1.0.weight"])


def test_progress_events_per_epoch_and_the_weights_unchanged(grains):
    view = ArrayView(grains.images[:8], grains.targets[:8])
    stages = (Stage(size=32, epochs=2, freeze_encoder=True, lr_max=3e-3, batch_size=4),
              Stage(size=64, epochs=1, freeze_encoder=False, lr_max=1e-3, batch_size=4))
    cfg = dataclasses.replace(SMOKE.train, stages=stages, deterministic=True, seed=5)
    plain = train(view, cfg, SMOKE.model, device="cpu").model.state_dict()
    epochs, everything = [], []
    watched = train(view, cfg, SMOKE.model, device="cpu", progress=epochs.append).model.state_dict()
    batched = train(view, cfg, SMOKE.model, device="cpu", progress=everything.append,
                    progress_every_s=0).model.state_dict()
    for other in (watched, batched):  # reporting changes no weight, to the byte
        assert all(plain[k].numpy().tobytes() == other[k].numpy().tobytes() for k in plain)

    assert [(e["stage"], e["epoch"], e["epochs"], e["kind"]) for e in epochs] == [
        (0, 0, 2, "epoch"), (0, 1, 2, "epoch"), (1, 0, 1, "epoch")]
    assert [e["stage_name"] for e in epochs] == ["head @32px", "head @32px", "all @64px"]
    for e in epochs:
        assert e["stages"] == 2 and e["step"] == e["steps"] == 2
        assert np.isfinite(e["loss"]) and e["images_per_s"] > 0 and e["elapsed_s"] > 0
        assert e["eta_s"] >= 0 and 0 < e["fraction"] <= 1
    assert [e["elapsed_s"] for e in epochs] == sorted(e["elapsed_s"] for e in epochs)
    # ETAs come from measured speeds (they need not fall on a loaded machine); only the last is fixed.
    assert [e["fraction"] for e in epochs] == sorted({e["fraction"] for e in epochs})
    assert epochs[2]["eta_s"] == 0 and epochs[2]["fraction"] == 1
    # Mid-epoch events come before each epoch's own, never in its place.
    assert [(e["kind"], e["step"]) for e in everything[:2]] == [("batch", 1), ("epoch", 2)]
    assert [e for e in everything if e["kind"] == "epoch"] != [] and len(everything) == 6
    with pytest.raises(TrainError, match="progress_every_s"):
        train(view, cfg, SMOKE.model, device="cpu", progress=print, progress_every_s=-1)


def test_batches_do_not_depend_on_the_number_of_loader_workers(grains):
    stage = Stage(size=32, epochs=1, freeze_encoder=False, lr_max=1e-3, batch_size=6)
    dev = torch.device("cpu")
    batches = []
    for workers in (0, 2):
        cfg = dataclasses.replace(SMOKE.train, num_workers=workers)
        loader = make_loader(grains, "segmentation", stage, cfg, dev, stage_generator(7, 0))
        batches.append([(x.clone(), y.clone()) for x, y in loader])
    assert len(batches[0]) == 4
    for (x0, y0), (x1, y1) in zip(*batches):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)


def test_samples_are_resized_to_the_stage_size(grains):
    ds = PairDataset(grains, "segmentation", 32)
    x, y = ds[(0, 0)]
    assert x.shape == y.shape == (1, 32, 32) and x.dtype == y.dtype == torch.float32
    # Shrinking keeps the boundary as a fraction per pixel instead of dropping thin lines.
    assert ((y > 0) & (y < 1)).any()
    assert y.mean().item() == pytest.approx(grains.targets[0].mean(), rel=1e-5)


def test_classification_trains():
    pc = get_preset("smoke", "classification")
    view = synthetic_view({"task": "classification", "n": 8, "size": 64, "seed": 0})
    result = train(view, pc.train, pc.model, device="cpu")
    assert len(result.step_losses) == 4 and all(np.isfinite(result.step_losses))
    with torch.no_grad():
        assert result.model(torch.rand(3, 1, 64, 64)).shape == (3, 2)


def test_bad_inputs_are_refused(trained, grains, tmp_path):
    _, out, _ = trained
    with pytest.raises(TrainError, match="empty view"):
        train(ArrayView(grains.images[:0], grains.targets[:0]), SMOKE.train, SMOKE.model)
    pc = get_preset("smoke", "classification")
    with pytest.raises(CheckpointError, match=r"first\.pt does not fit.*(missing|unexpected) key"):
        train(synthetic_view({"task": "classification", "n": 4, "size": 64, "seed": 0}), pc.train, pc.model, init=out, device="cpu")
    with pytest.raises(TrainError, match="int class label"):
        train(grains, pc.train, pc.model, device="cpu")


def test_bench_train_reports_its_figures():
    from loop.bench.train import bench_train

    report = bench_train("smoke", n_images=8, epochs=1, device="cpu")
    for key in ("train_images_per_s", "eval_images_per_s", "bare_train_images_per_s"):
        assert report[key] > 0, key
    assert 0 <= report["data_wait_fraction"] < 1
    assert report["data_path_efficiency"] == pytest.approx(
        report["train_images_per_s"] / report["bare_train_images_per_s"])
    assert report["size_px"] == 64 and report["n_images"] == 8 and np.isfinite(report["final_loss"])


def test_a_stage_is_one_stream_of_epochs(grains):
    stage = Stage(size=32, epochs=3, freeze_encoder=False, lr_max=1e-3, batch_size=6)
    cfg = SMOKE.train
    dev = torch.device("cpu")
    one = [x.clone() for x, _ in make_loader(grains, "segmentation", stage, cfg, dev, stage_generator(7, 0))]
    loader = make_loader(grains, "segmentation", stage, cfg, dev, stage_generator(7, 0), epochs=3)
    three = [x.clone() for x, _ in loader]
    assert len(loader) == len(three) == 3 * len(one)
    # The first epoch of the stream is the single-epoch loader's; later epochs are reshuffled.
    assert all(torch.equal(a, b) for a, b in zip(one, three[: len(one)]))
    assert not all(torch.equal(a, b) for a, b in zip(one, three[len(one): 2 * len(one)]))


def test_a_random_encoder_is_frozen_only_when_asked(grains):
    from loop.train.fit import effective_stages
    from loop.train.model import build_model

    view = ArrayView(grains.images[:8], grains.targets[:8])
    head = (Stage(size=32, epochs=1, freeze_encoder=True, lr_max=3e-3, batch_size=4),)
    frozen = dataclasses.replace(SMOKE.train, stages=head, seed=5)
    trained = dataclasses.replace(frozen, freeze_random_encoder=False)
    assert effective_stages(trained, random_encoder=True)[0].freeze_encoder is False
    assert effective_stages(trained, random_encoder=False)[0].freeze_encoder is True  # fine-tuning or ImageNet
    start = build_model(SMOKE.model, seed=5).state_dict()
    key = next(k for k in start if k.startswith("net.encoder.") and k.endswith("conv1.weight"))
    events = []
    after_frozen = train(view, frozen, SMOKE.model, device="cpu").model.state_dict()
    after_trained = train(view, trained, SMOKE.model, device="cpu", progress=events.append).model.state_dict()
    assert torch.equal(after_frozen[key], start[key])
    assert not torch.equal(after_trained[key], start[key])
    assert [e["freeze_encoder"] for e in events] == [False]
