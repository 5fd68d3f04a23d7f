"""Batch and tiled inference: padding, tile layout, and tiled == whole-image results."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from evaluator_helpers import ConstantNet, DilatedNet, MeanClassifier, ThresholdNet
from loop.evaluate.infer import (
    input_channels,
    model_device,
    model_task,
    pad_to_multiple,
    predict_batch,
    predict_image,
    predict_image_logits,
    predict_logits,
    tile_starts,
)
from loop.evaluate.metrics import EvaluationError


def random_image(seed: int, h: int, w: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w), dtype=np.uint8)


def test_tile_starts_cover_with_overlap():
    assert tile_starts(256, 256, 64) == [0]
    assert tile_starts(96, 256, 64) == [0]
    assert tile_starts(320, 256, 64) == [0, 64]
    assert tile_starts(512, 256, 64) == [0, 192, 256]
    assert tile_starts(512, 256, 0) == [0, 256]


def test_pad_to_multiple_reflects_bottom_right():
    img = random_image(0, 37, 70)
    padded = pad_to_multiple(img)
    assert padded.shape == (64, 96)
    assert np.array_equal(padded[:37, :70], img)
    assert np.array_equal(padded[37, :70], img[35])        # reflection without repeating the edge
    assert pad_to_multiple(random_image(1, 64, 32)).shape == (64, 32)
    assert pad_to_multiple(random_image(2, 5, 3)).shape == (32, 32)  # pad longer than the side


@pytest.mark.parametrize("shape", [(150, 230), (64, 300), (97, 97)])
def test_tiled_equals_whole_image_when_receptive_field_fits_half_overlap(shape):
    model = DilatedNet(seed=1)
    img = random_image(3, *shape)
    whole = predict_batch(model, img[None], "cpu")[0]
    tiled = predict_image(model, img, tile=64, overlap=2 * DilatedNet.RADIUS + 6, device="cpu", batch_size=3)
    assert tiled.shape == shape and tiled.dtype == np.float32
    np.testing.assert_allclose(tiled, whole, atol=1e-5, rtol=0)


def test_tiled_without_overlap_shows_seams():
    # The control for the test above: with no overlap the tile edges see zero padding.
    model = DilatedNet(seed=1)
    img = random_image(3, 150, 230)
    whole = predict_batch(model, img[None], "cpu")[0]
    tiled = predict_image(model, img, tile=64, overlap=0, device="cpu")
    assert np.abs(tiled - whole).max() > 1e-2


def test_pointwise_model_is_exact_for_any_tiling():
    model = ThresholdNet()
    img = random_image(4, 131, 77)
    whole = predict_image_logits(model, img, tile=256, overlap=0)
    expected = 0.2 * (75.0 - img.astype(np.float32))
    np.testing.assert_allclose(whole, expected, atol=1e-4)
    for tile, overlap in [(32, 0), (64, 16), (96, 90)]:
        assert np.array_equal(predict_image_logits(model, img, tile=tile, overlap=overlap), whole)


def test_predict_batch_crops_padding_and_returns_probabilities():
    probs = predict_batch(ConstantNet(np.log(3.0)), np.zeros((2, 40, 50), np.uint8), "cpu")
    assert probs.shape == (2, 40, 50)
    np.testing.assert_allclose(probs, 0.75, atol=1e-6)


def test_classification_batch_is_not_padded():
    images = np.stack([np.full((40, 50), 255, np.uint8), np.zeros((40, 50), np.uint8)])
    logits = predict_logits(MeanClassifier(), images, "cpu", task="classification")
    np.testing.assert_allclose(logits, [[0.0, 4.0], [0.0, -4.0]], atol=1e-5)
    probs = predict_batch(MeanClassifier(), images, "cpu", task="classification")
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


def test_inference_runs_where_the_model_is():
    assert model_device(ThresholdNet()).type == "cpu"
    with pytest.raises(EvaluationError, match="asked for meta but the model's weights are on cpu"):
        predict_image(ThresholdNet(), random_image(0, 40, 40), device="meta")


def test_model_task_and_input_channels():
    assert model_task(ThresholdNet(), "cpu") == "segmentation"
    assert model_task(MeanClassifier(), "cpu") == "classification"
    rgb = nn.Conv2d(3, 1, kernel_size=1)
    assert input_channels(rgb) == 3
    # A 3-channel model gets the grey channel repeated.
    with torch.no_grad():
        rgb.weight.copy_(torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1))
        rgb.bias.zero_()
    out = predict_logits(rgb, np.full((1, 32, 32), 255, np.uint8), "cpu")
    np.testing.assert_allclose(out, 6.0, atol=1e-6)


def test_inference_uses_eval_mode_and_restores_training_flag():
    model = nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1), nn.Dropout(0.9))
    model.train()
    img = random_image(5, 64, 64)
    first = predict_image(model, img, tile=32, overlap=8)
    assert model.training
    np.testing.assert_array_equal(first, predict_image(model, img, tile=32, overlap=8))
    model.eval()
    with torch.no_grad():
        expected = torch.sigmoid(model(torch.from_numpy(img).float()[None, None] / 255))[0, 0].numpy()
    np.testing.assert_allclose(first, expected, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"tile": 100}, "tile: expected a positive multiple of 32"),
     ({"tile": 64, "overlap": 64}, "overlap: expected an integer in"),
     ({"batch_size": 0}, "batch_size")],
)
def test_bad_tiling_settings(kwargs, match):
    with pytest.raises(EvaluationError, match=match):
        predict_image(ThresholdNet(), random_image(0, 40, 40), **kwargs)


def test_bad_inputs_and_outputs():
    with pytest.raises(EvaluationError, match="image: expected a non-empty grey uint8"):
        predict_image(ThresholdNet(), np.zeros((40, 40), np.float32))
    with pytest.raises(EvaluationError, match=r"expected segmentation logits \(N, 1, H, W\)"):
        predict_image(nn.Conv2d(1, 2, 1), random_image(0, 40, 40))
    with pytest.raises(EvaluationError, match="task"):
        predict_logits(ThresholdNet(), np.zeros((1, 32, 32), np.uint8), task="detection")


def test_unet_from_the_model_factory_tiles_any_size():
    from loop.config.training import ModelConfig
    from loop.train.model import build_model

    model = build_model(ModelConfig(encoder="resnet18"))
    prob = predict_image(model, random_image(6, 100, 70), tile=64, overlap=32, device="cpu")
    assert prob.shape == (100, 70) and np.all((prob >= 0) & (prob <= 1))
