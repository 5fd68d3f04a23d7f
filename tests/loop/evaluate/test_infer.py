"""Batch and tiled inference: padding, tile layout, blending windows, tiled == whole-image results, no seams."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from evaluator_helpers import ConstantNet, DilatedNet, MeanClassifier, ThresholdNet
from loop.evaluate.infer import (
    BLEND_FLOOR,
    blend_weights,
    images_to_tensor,
    input_channels,
    model_device,
    model_task,
    pad_to_multiple,
    predict_batch,
    predict_image,
    predict_image_logits,
    predict_logits,
    sigmoid,
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


@pytest.mark.parametrize("starts, tile", [([0, 192, 256], 256), ([0, 64], 256), ([0, 8, 16, 24], 16), ([0, 32], 32)])
def test_blend_weights_partition_unity_and_never_vanish(starts, tile):
    windows = blend_weights(starts, tile)
    length = starts[-1] + tile
    total = np.zeros(length)
    for s, w in zip(starts, windows):
        assert w.shape == (tile,) and np.all(w >= BLEND_FLOOR) and w.max() == 1.0
        total[s:s + tile] += w
    # Where at most two tiles overlap, the raised-cosine ramps sum to 1 (up to the floor).
    np.testing.assert_allclose(total, 1.0, atol=3 * BLEND_FLOOR)
    assert windows[0][0] == 1.0 and windows[-1][-1] == 1.0        # image sides are not tapered


def test_blend_weights_fade_over_the_middle_half_of_an_overlap():
    first, second = blend_weights([0, 192], 256)                 # overlap 64: floor 16, ramp 32, floor 16
    assert np.all(first[:208] == 1.0) and np.all(first[240:] == BLEND_FLOOR)
    assert np.all(second[:16] == BLEND_FLOOR) and np.all(second[48:] == 1.0)
    ramp = second[16:48]
    assert np.all(np.diff(ramp) > 0) and ramp[0] == pytest.approx(np.sin(np.pi / 128) ** 2)
    np.testing.assert_allclose(first[208:240], ramp[::-1])
    assert blend_weights([0], 64)[0].tolist() == [1.0] * 64     # one tile: no blending


@pytest.mark.parametrize("shape", [(150, 230), (64, 300), (200, 97)])
def test_tiled_equals_whole_image_when_receptive_field_fits_a_quarter_overlap(shape):
    # DilatedNet is translation equivariant with a 13-px receptive field: with overlap 56 each
    # tile's weight is (almost) zero within 14 px of its cut edges, where it sees padding.
    model = DilatedNet(seed=1)
    img = random_image(3, *shape)
    whole = predict_batch(model, img[None], "cpu")[0]
    tiled = predict_image(model, img, tile=128, overlap=4 * DilatedNet.RADIUS + 4, device="cpu", batch_size=3)
    assert tiled.shape == shape and tiled.dtype == np.float32
    np.testing.assert_allclose(tiled, whole, atol=1e-5, rtol=0)


def test_tiled_without_overlap_shows_seams():
    # The control for the test above: with no overlap the tile edges see zero padding.
    model = DilatedNet(seed=1)
    img = random_image(3, 150, 230)
    whole = predict_batch(model, img[None], "cpu")[0]
    tiled = predict_image(model, img, tile=64, overlap=0, device="cpu")
    assert np.abs(tiled - whole).max() > 1e-2


def _crop_stitched(model, img, tile, overlap):
    """The former stitching, as a control: each tile writes up to halfway through each overlap."""
    def owned(starts, length):
        cuts = [0] + [(a + b + tile) // 2 for a, b in zip(starts[:-1], starts[1:])] + [length]
        return list(zip(cuts[:-1], cuts[1:]))

    out = np.empty(img.shape, np.float32)
    rows, cols = tile_starts(img.shape[0], tile, overlap), tile_starts(img.shape[1], tile, overlap)
    with torch.no_grad():
        for r, (r0, r1) in zip(rows, owned(rows, img.shape[0])):
            for c, (c0, c1) in zip(cols, owned(cols, img.shape[1])):
                z = model(images_to_tensor(img[None, r:r + tile, c:c + tile], input_channels(model)))[0, 0].numpy()
                out[r0:r1, c0:c1] = z[r0 - r:r1 - r, c0 - c:c1 - c]
    return sigmoid(out)


def _border_to_inside_gradient(prob, tile, overlap, band=16):
    """Largest |difference of neighbouring pixels| where tiles overlap, over the largest elsewhere.

    Both along rows and along columns, ``band`` px from the image border left out (the
    whole-image map has its own padding effects there).
    """
    border_max = inside_max = 0.0
    for axis in (0, 1):
        length = prob.shape[axis]
        in_overlap = np.zeros(length - 1, dtype=bool)              # pair (i, i + 1) touches an overlap
        starts = tile_starts(length, tile, overlap)
        for a, b in zip(starts[:-1], starts[1:]):
            in_overlap[b - 1:a + tile] = True
        inside = ~in_overlap
        inside[:band] = inside[-band:] = False
        grad = np.moveaxis(np.abs(np.diff(prob, axis=axis)), axis, 0)[:, band:-band]
        border_max = max(border_max, grad[in_overlap].max())
        inside_max = max(inside_max, grad[inside].max())
    return border_max / inside_max


def test_unet_tiles_blend_without_seams():
    # A U-Net's receptive field is wider than any tile, so tiles disagree near their edges.
    # Blended, the tile borders are no steeper than the map inside the tiles; cut at the
    # middle of each overlap (the control), they are 30 % steeper.
    from loop.config.training import ModelConfig
    from loop.train.model import build_model

    model = build_model(ModelConfig(encoder="resnet18")).eval()
    yy, xx = np.mgrid[:192, :320]
    img = np.round(128 + 60 * np.sin(xx / 11.0) * np.cos(yy / 17.0)).astype(np.uint8)   # smooth: seams stand out
    tile, overlap = 128, 32
    blended = predict_image(model, img, tile=tile, overlap=overlap, device="cpu")
    assert _border_to_inside_gradient(blended, tile, overlap) < 1.0
    assert _border_to_inside_gradient(_crop_stitched(model, img, tile, overlap), tile, overlap) > 1.2


def test_pointwise_model_is_exact_for_any_tiling():
    model = ThresholdNet()
    img = random_image(4, 131, 77)
    whole = predict_image_logits(model, img, tile=256, overlap=0)
    expected = 0.2 * (75.0 - img.astype(np.float32))
    np.testing.assert_allclose(whole, expected, atol=1e-4)
    for tile, overlap in [(32, 0), (64, 16), (96, 90)]:
        np.testing.assert_allclose(predict_image_logits(model, img, tile=tile, overlap=overlap), whole,
                                   rtol=1e-6, atol=1e-6)


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
