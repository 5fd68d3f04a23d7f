"""Segmentation and classification metrics on hand-made masks with values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loop.evaluate.metrics import (
    SEGMENTATION_KEYS,
    EvaluationError,
    binary_cross_entropy,
    boundary_f1,
    boundary_visibility,
    classification_metrics,
    classification_metrics_batch,
    equivalent_diameters,
    grain_areas,
    grain_labels,
    grain_size_distance,
    iou_per_class,
    mean_iou,
    pixel_error,
    segmentation_metrics,
)


def cross(row: int, col: int, n: int = 10) -> np.ndarray:
    """An n×n 0/1 mask whose boundary is one full row and one full column."""
    m = np.zeros((n, n), dtype=np.uint8)
    m[row, :] = 1
    m[:, col] = 1
    return m


TRUE = cross(5, 5)   # 19 boundary px; grains 5×5, 5×4, 4×5, 4×4 = 25, 20, 20, 16
PRED = cross(6, 5)   # 19 boundary px; grains 6×5, 6×4, 3×5, 3×4 = 30, 24, 15, 12


def test_cross_gives_four_grains_with_their_areas():
    assert grain_areas(TRUE, min_area=1).tolist() == [25, 20, 20, 16]
    assert grain_areas(PRED, min_area=1).tolist() == [30, 24, 15, 12]
    labels = grain_labels(TRUE, min_area=1)
    assert labels.max() == 4 and np.all(labels[TRUE == 1] == 0)


def test_pixel_error_and_iou_of_shifted_cross():
    # Boundaries share column 5 (10 px): union 19 + 19 - 10 = 28, differing pixels 28 - 10 = 18.
    assert pixel_error(PRED, TRUE) == pytest.approx(18 / 100)
    iou_b, iou_bg = iou_per_class(PRED, TRUE)
    assert iou_b == pytest.approx(10 / 28)
    # Background: both background in 100 - 28 = 72 px; background in either: 100 - 10 = 90 px.
    assert iou_bg == pytest.approx(72 / 90)
    assert mean_iou(PRED, TRUE) == pytest.approx((10 / 28 + 72 / 90) / 2)


def test_boundary_f1_tolerance():
    # Row 6 is 1 px from row 5: every pixel is a hit at tol 1 ...
    assert boundary_f1(PRED, TRUE, tol=1) == pytest.approx((1.0, 1.0, 1.0))
    # ... and only the shared column at tol 0.
    assert boundary_f1(PRED, TRUE, tol=0) == pytest.approx((10 / 19, 10 / 19, 10 / 19))


@pytest.mark.parametrize("tol", [0, 1, 1.5, 2, 2.9, 3, 8, 9.5])
def test_boundary_f1_matches_the_distance_transform_definition(tol):
    from scipy.ndimage import distance_transform_edt

    rng = np.random.default_rng(int(tol * 10))
    pred = rng.random((40, 50)) < 0.05
    true = rng.random((40, 50)) < 0.05
    precision = np.mean(distance_transform_edt(~true)[pred] <= tol)
    recall = np.mean(distance_transform_edt(~pred)[true] <= tol)
    assert boundary_f1(pred, true, tol)[:2] == pytest.approx((precision, recall), abs=1e-12)


def test_boundary_f1_asymmetric_counts():
    true = np.zeros((8, 8), dtype=np.uint8)
    true[2, :] = 1                              # 8 px
    pred = np.zeros_like(true)
    pred[2, :4] = 1                             # 4 px on the true line
    pred[7, :] = 1                              # 8 px, 5 px away
    precision, recall, f1 = boundary_f1(pred, true, tol=2)
    assert precision == pytest.approx(4 / 12)
    # True pixels in columns 0..3 are hits; columns 4 and 5 are 1 and 2 px from (2, 3): hits; 6 and 7 are not.
    assert recall == pytest.approx(6 / 8)
    assert f1 == pytest.approx(2 * (1 / 3) * (3 / 4) / (1 / 3 + 3 / 4))


def test_segmentation_metrics_of_shifted_cross():
    m = segmentation_metrics(PRED, TRUE, tol=1, min_grain_area=13)
    assert tuple(m) == SEGMENTATION_KEYS
    assert m["iou"] == m["miou"] == pytest.approx((10 / 28 + 72 / 90) / 2)
    assert m["error"] == pytest.approx(0.18)
    assert m["boundary_f1"] == pytest.approx(1.0)
    # min area 13 drops PRED's 12-px grain: 3 predicted grains against 4.
    assert (m["grain_count_pred"], m["grain_count_true"]) == (3.0, 4.0)
    assert m["grain_count_rel_error"] == pytest.approx(0.25)
    assert all(isinstance(v, float) for v in m.values())


def test_grain_size_distance_on_log_diameters():
    # ln d = ln A / 2 + const; sorted areas pair 12-16, 15-20, 24-20, 30-25:
    # W1 = mean |ln ratio| / 2 = (2 ln(4/3) + 2 ln(6/5)) / 4 / 2 = ln(1.6) / 4.
    d = grain_size_distance(grain_areas(PRED, 1), grain_areas(TRUE, 1))
    assert d == pytest.approx(math.log(1.6) / 4)
    # Uniformly s times wider grains are |ln s| away.
    assert grain_size_distance(np.array([4.0, 9.0]) * 4, np.array([4.0, 9.0])) == pytest.approx(math.log(2))
    assert grain_size_distance(np.array([]), np.array([])) == 0.0
    assert math.isnan(grain_size_distance(np.array([]), np.array([5])))


def test_equivalent_diameter():
    assert equivalent_diameters(np.array([math.pi])).tolist() == pytest.approx([2.0])


def test_diagonal_boundary_separates_grains_and_small_grains_are_dropped():
    diag = np.eye(6, dtype=np.uint8)            # 4-connected grains cannot cross a diagonal line
    assert grain_areas(diag, min_area=1).tolist() == [15, 15]
    assert grain_areas(diag, min_area=16).tolist() == []
    assert grain_labels(diag, min_area=16).max() == 0


def test_identical_masks_are_perfect():
    m = segmentation_metrics(TRUE, TRUE.astype(bool))
    assert m["error"] == 0.0 and m["iou"] == 1.0 and m["boundary_f1"] == 1.0
    assert m["grain_count_rel_error"] == 0.0 and m["grain_size_distance"] == 0.0


def test_empty_and_full_predictions():
    empty = np.zeros_like(TRUE)
    full = np.ones_like(TRUE)
    m = segmentation_metrics(empty, TRUE, min_grain_area=1)
    assert m["iou_boundary"] == 0.0 and m["iou_background"] == pytest.approx(81 / 100)
    assert (m["boundary_precision"], m["boundary_recall"], m["boundary_f1"]) == (1.0, 0.0, 0.0)
    assert m["grain_count_pred"] == 1.0 and m["grain_count_rel_error"] == pytest.approx(3 / 4)
    m = segmentation_metrics(full, TRUE, min_grain_area=1)
    assert m["iou_boundary"] == pytest.approx(19 / 100) and m["iou_background"] == 0.0
    assert m["error"] == pytest.approx(81 / 100)
    assert m["grain_count_pred"] == 0.0 and math.isnan(m["grain_size_distance"])
    # Both empty: nothing to find, nothing wrong.
    m = segmentation_metrics(empty, empty)
    assert m["iou"] == 1.0 and m["boundary_f1"] == 1.0 and m["grain_count_true"] == 1.0


@pytest.mark.parametrize(
    "pred, true, match",
    [
        (TRUE * 255, TRUE, "pred: expected values in"),
        (TRUE.astype(float), TRUE, "pred: expected a bool or integer"),
        (TRUE, TRUE[:, :5], "shapes differ"),
        (TRUE[None], TRUE, "pred: expected a 2-D"),
    ],
)
def test_bad_masks_are_refused(pred, true, match):
    with pytest.raises(EvaluationError, match=match):
        segmentation_metrics(pred, true)


def test_bad_settings_are_refused():
    with pytest.raises(EvaluationError, match="tol"):
        boundary_f1(TRUE, TRUE, tol=-1)
    with pytest.raises(EvaluationError, match="min_area"):
        grain_labels(TRUE, min_area=0)


def test_binary_cross_entropy_from_logits():
    true = np.array([[1, 0]], dtype=np.uint8)
    assert binary_cross_entropy(np.zeros((1, 2)), true) == pytest.approx(math.log(2))
    z = math.log(3)                             # p = 3/4
    assert binary_cross_entropy(np.array([[z, z]]), true) == pytest.approx((math.log(4 / 3) + math.log(4)) / 2)
    assert math.isfinite(binary_cross_entropy(np.array([[-1e4, 1e4]]), true))


def test_classification_metrics():
    logits = np.array([0.0, math.log(3)])       # softmax = (1/4, 3/4)
    right = classification_metrics(logits, 1)
    assert right == pytest.approx({"loss": math.log(4 / 3), "p_true": 0.75, "error": 0.0, "pred": 1.0})
    wrong = classification_metrics(logits, 0)
    assert wrong == pytest.approx({"loss": math.log(4), "p_true": 0.25, "error": 1.0, "pred": 1.0})
    batch = classification_metrics_batch(np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 5.0]]), np.array([0, 1]))
    assert batch["error"].tolist() == [0.0, 1.0]
    assert batch["p_true"][0] == pytest.approx(math.exp(2) / (math.exp(2) + 2))


def test_classification_labels_checked():
    with pytest.raises(EvaluationError, match=r"labels: expected classes in \[0, 1\]"):
        classification_metrics_batch(np.zeros((2, 2)), np.array([0, 2]))
    with pytest.raises(EvaluationError, match="logits"):
        classification_metrics(np.zeros((1, 2)), 0)


def test_boundary_visibility_is_high_where_the_boundary_is_drawn_and_one_where_it_is_not() -> None:
    mask = cross(8, 12, n=24)
    flat = np.full((24, 24), 120, dtype=np.uint8)
    assert boundary_visibility(flat, mask) == pytest.approx(1.0)  # nothing in the image at all
    drawn = np.where(mask == 1, 40, 160).astype(np.uint8)
    assert boundary_visibility(drawn, mask) > 1e3  # all the gradient sits on the boundary
    elsewhere = np.where(cross(2, 20, n=24) == 1, 40, 160).astype(np.uint8)  # a line, but not the true one
    assert boundary_visibility(elsewhere, mask) < 1.0
    noise = np.random.default_rng(0).integers(0, 256, size=(24, 24)).astype(np.uint8)
    assert 0.7 < boundary_visibility(noise, mask) < 1.3  # the boundary is lost in the noise
    # A grey step between two grains, with no line drawn, is a visible boundary too.
    step_mask = np.zeros((24, 24), dtype=np.uint8)
    step_mask[:, 12] = 1
    step = np.where(np.arange(24)[None, :] < 12, 90, 150).repeat(24, axis=0).astype(np.uint8)
    assert boundary_visibility(step, step_mask) > 1e3


def test_boundary_visibility_bad_input() -> None:
    mask = cross(3, 3)
    assert math.isnan(boundary_visibility(np.zeros((10, 10), np.uint8), np.zeros((10, 10), np.uint8)))  # no boundary
    assert math.isnan(boundary_visibility(np.zeros((10, 10), np.uint8), np.ones((10, 10), np.uint8)))  # no interior
    with pytest.raises(EvaluationError, match=r"image: expected a 2-D array of the mask's shape \(10, 10\), got shape \(9, 10\)"):
        boundary_visibility(np.zeros((9, 10), np.uint8), mask)
    with pytest.raises(EvaluationError, match="true: expected values in"):
        boundary_visibility(np.zeros((10, 10), np.uint8), mask * 255)
