"""Evaluation of views and real folders, overlays, and the evaluator (in-process and as a Ray actor)."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from scipy.ndimage import binary_dilation
from skimage.morphology import disk

from evaluator_helpers import ArrayView, ConstantNet, MeanClassifier, ThresholdNet, grain_sample
from loop.evaluate.grains import astm_grain_size_number, closed_grains, grains_per_mm2
from loop.evaluate.scoring import (
    ERROR_SHEET,
    PIXEL_SIZE_FILE,
    REAL_GRAIN_KEYS,
    REAL_SEGMENTATION_COLUMNS,
    SEGMENTATION_COLUMNS,
    evaluate_real,
    evaluate_view,
    overlay_rgb,
    render_overlay,
)
from loop.evaluate.metrics import CLASSIFICATION_KEYS, EvaluationError, boundary_visibility
from loop.evaluate.real import RealFolder


@pytest.fixture(scope="module")
def grain_view() -> ArrayView:
    rng = np.random.default_rng(7)
    # Mixed sizes (64 and 96 px, one not a multiple of 32): batched by runs of equal size, padded.
    samples = [grain_sample(rng, *shape) for shape in [(64, 64), (64, 64), (96, 96), (64, 64), (70, 50)]]
    return ArrayView([s[0] for s in samples], [s[1] for s in samples], sample_ids=[5, 3, 9, 1, 7])


def write_pair(root: Path, name: str, image: np.ndarray, mask01: np.ndarray) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / "images" / f"{name}.png")
    Image.fromarray((mask01 * 255).astype(np.uint8)).save(root / "masks" / f"{name}.png")


@pytest.fixture(scope="module")
def grain_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("real_grains")
    rng = np.random.default_rng(11)
    for name, shape in [("big", (150, 230)), ("small", (45, 70))]:
        write_pair(root, name, *grain_sample(rng, *shape, n_grains=9))
    return root


def test_oracle_model_scores_perfectly(grain_view):
    table = evaluate_view(ThresholdNet(), grain_view, "cpu", batch_size=2)
    assert table.column_names == ["sample_id", *SEGMENTATION_COLUMNS]
    assert table.schema.field("sample_id").type == pa.int64()
    assert all(table.schema.field(c).type == pa.float64() for c in SEGMENTATION_COLUMNS)
    assert table["sample_id"].to_pylist() == [5, 3, 9, 1, 7]
    for row in table.to_pylist():
        assert row["error"] == 0.0 and row["iou"] == 1.0 and row["boundary_f1"] == 1.0
        assert row["grain_count_pred"] == row["grain_count_true"] >= 2
        assert row["grain_size_distance"] == 0.0
        assert 0 < row["loss"] < 0.05


def test_all_boundary_model_gives_the_hand_formulas(grain_view):
    # Logit +10 everywhere: every pixel predicted boundary.
    table = evaluate_view(ConstantNet(10.0), grain_view, "cpu", batch_size=16)
    for row, (_, mask) in zip(table.to_pylist(), (grain_view[i] for i in range(len(grain_view)))):
        frac = mask.mean()
        assert row["error"] == pytest.approx(1 - frac)
        assert row["iou_boundary"] == pytest.approx(frac)
        assert row["iou_background"] == 0.0
        # Precision: the share of all pixels within 2 px (Euclidean) of a true boundary pixel.
        near = binary_dilation(mask.astype(bool), disk(2))
        assert row["boundary_precision"] == pytest.approx(near.mean()) and row["boundary_recall"] == 1.0
        assert row["grain_count_pred"] == 0.0 and row["grain_count_rel_error"] == 1.0
        assert math.isnan(row["grain_size_distance"])
        # BCE of logit 10: boundary pixels log(1 + e^-10), background log(1 + e^10).
        expected = frac * math.log1p(math.exp(-10)) + (1 - frac) * math.log1p(math.exp(10))
        assert row["loss"] == pytest.approx(expected, rel=1e-5)


def test_classification_view():
    bright, dark = np.full((32, 32), 200, np.uint8), np.full((32, 32), 50, np.uint8)
    view = ArrayView([bright, dark, bright], [1, 1, 0])
    table = evaluate_view(MeanClassifier(), view, "cpu", batch_size=2)
    assert table.column_names == ["sample_id", *CLASSIFICATION_KEYS]
    z_bright, z_dark = 8 * (200 / 255 - 0.5), 8 * (50 / 255 - 0.5)
    p_one = [1 / (1 + math.exp(-z_bright)), 1 / (1 + math.exp(-z_dark))]
    assert table["p_true"].to_pylist() == pytest.approx([p_one[0], p_one[1], 1 - p_one[0]], rel=1e-5)
    assert table["error"].to_pylist() == [0.0, 1.0, 1.0]
    assert table["loss"].to_pylist() == pytest.approx([-math.log(p) for p in table["p_true"].to_pylist()], rel=1e-6)


def test_metrics_in_an_executor_match_in_thread(grain_view):
    sequential = evaluate_view(ThresholdNet(), grain_view, "cpu", batch_size=1)
    with ThreadPoolExecutor(2) as pool:
        pooled = evaluate_view(ThresholdNet(), grain_view, "cpu", batch_size=1, executor=pool)
    assert pooled.equals(sequential)
    # another batch size may round a float differently with more than one intra-op thread
    batched = evaluate_view(ThresholdNet(), grain_view, "cpu", batch_size=2)
    assert batched.column_names == sequential.column_names
    for name in sequential.column_names:
        np.testing.assert_allclose(batched[name].to_numpy(), sequential[name].to_numpy(), rtol=1e-6, atol=1e-7)


def test_view_task_attribute_and_bad_targets(grain_view):
    empty = ArrayView([], [])
    with pytest.raises(EvaluationError, match="pass task="):
        evaluate_view(ThresholdNet(), empty, "cpu")
    table = evaluate_view(ThresholdNet(), empty, "cpu", task="segmentation")
    assert table.num_rows == 0 and table.column_names == ["sample_id", *SEGMENTATION_COLUMNS]
    wrong = ArrayView([grain_view[0][0]], [grain_view[0][1] * 255])
    with pytest.raises(EvaluationError, match=r"view\[0\] mask: expected values in"):
        evaluate_view(ThresholdNet(), wrong, "cpu")
    with pytest.raises(EvaluationError, match="batch_size"):
        evaluate_view(ThresholdNet(), grain_view, "cpu", batch_size=0)
    cropped = ArrayView([grain_view[0][0]], [grain_view[0][1][:-1]])
    with pytest.raises(EvaluationError, match=r"view\[0\] mask: shape \(63, 64\) differs"):
        evaluate_view(ThresholdNet(), cropped, "cpu")
    with pytest.raises(EvaluationError, match=r"view\[1\] target: expected an int class label"):
        evaluate_view(MeanClassifier(), ArrayView([grain_view[0][0]] * 2, [1, 0.5]), "cpu", task="classification")


def test_evaluate_real_segmentation_with_overlays(grain_folder, tmp_path):
    table, summary = evaluate_real(ThresholdNet(), grain_folder, "cpu", tile=64, overlap=32,
                                   overlay_dir=tmp_path / "overlays")
    assert table["name"].to_pylist() == ["big", "small"]
    assert table["height"].to_pylist() == [150, 45] and table["width"].to_pylist() == [230, 70]
    assert table["iou"].to_pylist() == [1.0, 1.0]
    assert summary["task"] == "segmentation" and summary["n_images"] == 2
    assert summary["miou"] == 1.0 and summary["miou_std"] == 0.0 and summary["boundary_f1"] == 1.0
    for name in ("big", "small"):
        with Image.open(tmp_path / "overlays" / f"{name}.png") as img:
            assert img.format == "PNG" and img.width > 200


def test_evaluate_real_reports_closed_grain_statistics(grain_folder):
    table, summary = evaluate_real(ThresholdNet(), grain_folder, "cpu", tile=64, overlap=32)
    assert table.column_names == ["name", "height", "width", "pixel_size_um", *REAL_SEGMENTATION_COLUMNS]
    assert all(table.schema.field(c).type == pa.float64() for c in ("pixel_size_um", *REAL_GRAIN_KEYS))
    for row in table.to_pylist():
        # The oracle's boundaries are the true ones: same closed grains, same E112 count.
        assert row["grain_count_pred"] == row["grain_count_true"] == 9.0
        assert row["mean_grain_area_pred"] == row["mean_grain_area_true"] > 0
        assert row["mean_grain_area_rel_error"] == 0.0 and row["grain_count_rel_error"] == 0.0
        # Boundary pixels split a little differently between the grains: intercepts within 5 %.
        assert row["mean_intercept_rel_error"] < 0.05 and row["mean_intercept_true"] > 10
        assert row["boundary_intercept_rel_error"] < 0.05 and row["boundary_intercept_true"] > 10
        # No pixel size: no grains per mm², no G.
        assert math.isnan(row["pixel_size_um"]) and math.isnan(row["astm_g_true"])
        assert math.isnan(row["grains_per_mm2_pred"]) and math.isnan(row["astm_g_abs_error"])
    for row, pair in zip(table.to_pylist(), RealFolder(grain_folder)):  # a property of the image, not the model
        assert row["boundary_visibility"] == boundary_visibility(pair.image, pair.mask) > 1.5
    assert summary["mean_intercept_rel_error"] == pytest.approx(np.mean(table["mean_intercept_rel_error"].to_pylist()))
    assert math.isnan(summary["astm_g_true"])


def test_pixel_size_from_argument_or_sidecar_file(grain_folder, tmp_path):
    from loop.evaluate.real import RealFolder

    big = RealFolder(grain_folder)[0]
    expected_g = astm_grain_size_number(grains_per_mm2(closed_grains(big.mask), 0.5))
    table, _ = evaluate_real(ThresholdNet(), grain_folder, "cpu", pixel_size_um={"big": 0.5})
    big_row, small_row = table.to_pylist()
    assert big_row["pixel_size_um"] == 0.5 and big_row["astm_g_true"] == pytest.approx(expected_g)
    assert big_row["astm_g_pred"] == pytest.approx(expected_g) and big_row["astm_g_abs_error"] == pytest.approx(0.0)
    assert math.isnan(small_row["astm_g_true"])
    # The same from a sidecar file, and one size for all images.
    for name in ("big", "small"):
        write_pair(tmp_path, name, np.asarray(Image.open(grain_folder / "images" / f"{name}.png")),
                   np.asarray(Image.open(grain_folder / "masks" / f"{name}.png")) // 255)
    (tmp_path / PIXEL_SIZE_FILE).write_text('{"big": 0.5}')
    table, _ = evaluate_real(ThresholdNet(), tmp_path, "cpu")
    assert table["astm_g_true"].to_pylist()[0] == pytest.approx(expected_g)
    table, _ = evaluate_real(ThresholdNet(), tmp_path, "cpu", pixel_size_um=0.25)
    assert table["pixel_size_um"].to_pylist() == [0.25, 0.25]
    assert table["astm_g_true"].to_pylist()[0] == pytest.approx(expected_g + 2)     # 4x N_A: G + 2


@pytest.mark.parametrize(
    "sidecar, match",
    [('{"nope": 0.5}', "'nope' is not an image of"),
     ('{"big": -1}', "pixel size of 'big': expected a positive number"),
     ('"0.5"', "pixel size of 'big': expected a positive number"),
     ("{0.5", "cannot be read as JSON")],
)
def test_bad_pixel_size_file(grain_folder, tmp_path, sidecar, match):
    for name in ("big", "small"):
        write_pair(tmp_path, name, np.asarray(Image.open(grain_folder / "images" / f"{name}.png")),
                   np.asarray(Image.open(grain_folder / "masks" / f"{name}.png")) // 255)
    (tmp_path / PIXEL_SIZE_FILE).write_text(sidecar)
    with pytest.raises(EvaluationError, match=match) as info:
        evaluate_real(ThresholdNet(), tmp_path, "cpu")
    assert PIXEL_SIZE_FILE in str(info.value) and "\n" not in str(info.value)


def test_evaluate_real_summary_is_mean_over_images(grain_folder):
    table, summary = evaluate_real(ConstantNet(10.0), grain_folder, "cpu")
    assert summary["error"] == pytest.approx(np.mean(table["error"].to_pylist()))
    assert summary["error_std"] == pytest.approx(np.std(table["error"].to_pylist()))
    assert math.isnan(summary["grain_size_distance"])   # NaN in every row


def test_evaluate_real_classification_of_whole_images(tmp_path):
    crack = np.zeros((40, 60), np.uint8)
    crack[20, 5:50] = 1
    write_pair(tmp_path, "cracked", np.full((40, 60), 220, np.uint8), crack)
    write_pair(tmp_path, "clean", np.full((50, 45), 210, np.uint8), np.zeros((50, 45), np.uint8))
    table, summary = evaluate_real(MeanClassifier(), tmp_path, "cpu")
    assert summary["task"] == "classification"
    assert table["name"].to_pylist() == table["image"].to_pylist() == ["clean", "cracked"]
    assert table["label"].to_pylist() == [0, 1] and table["height"].to_pylist() == [50, 40]
    assert table["error"].to_pylist() == [1.0, 0.0] and summary["error"] == 0.5


def test_evaluate_real_classification_cuts_tiles_at_the_training_size(tmp_path):
    """40×60 px with a crack along row 20, columns 5-30, in 32 px tiles: the two left tiles hold
    26 crack px (crack), the two right ones 3 (fewer than 20: left out); the 50×45 clean image
    gives four no-crack tiles. The bright-is-crack model misses nothing and false-alarms on all."""
    crack = np.zeros((40, 60), np.uint8)
    crack[20, 5:31] = 1
    write_pair(tmp_path, "cracked", np.full((40, 60), 220, np.uint8), crack)
    write_pair(tmp_path, "clean", np.full((50, 45), 210, np.uint8), np.zeros((50, 45), np.uint8))
    table, summary = evaluate_real(MeanClassifier(), tmp_path, "cpu", class_size=32, batch_size=3,
                                   overlay_dir=tmp_path / "report")
    assert table["name"].to_pylist() == ["clean@0,0", "clean@0,13", "clean@18,0", "clean@18,13",
                                         "cracked@0,0", "cracked@8,0"]
    assert table["image"].to_pylist() == ["clean"] * 4 + ["cracked"] * 2
    assert table["label"].to_pylist() == [0, 0, 0, 0, 1, 1] and set(table["height"].to_pylist()) == {32}
    assert (summary["miss_rate"], summary["false_alarm_rate"], summary["balanced_error"]) == (0.0, 1.0, 0.5)
    assert (summary["n_positive"], summary["n_negative"]) == (2, 4)
    assert summary["error"] == pytest.approx(4 / 6)
    sheet = np.asarray(Image.open(tmp_path / "report" / ERROR_SHEET))
    assert sheet.ndim == 3 and sheet.shape[0] > 100
    few = evaluate_real(MeanClassifier(), tmp_path, "cpu", class_size=32, min_crack_px=3)[0]
    assert few["label"].to_pylist().count(1) == 4


def test_no_error_sheet_when_every_tile_is_right(tmp_path):
    write_pair(tmp_path, "clean", np.full((32, 32), 30, np.uint8), np.zeros((32, 32), np.uint8))
    _, summary = evaluate_real(MeanClassifier(), tmp_path, "cpu", class_size=32, overlay_dir=tmp_path / "report")
    assert summary["balanced_error"] != summary["balanced_error"]  # no crack tile: NaN
    assert summary["false_alarm_rate"] == 0.0 and not (tmp_path / "report" / ERROR_SHEET).exists()


def test_overlay_colours_and_render(tmp_path):
    image = np.full((4, 4), 100, np.uint8)
    pred = np.zeros((4, 4), np.uint8)
    true = np.zeros((4, 4), np.uint8)
    pred[0, 0] = pred[1, 1] = 1
    true[1, 1] = true[2, 2] = 1
    rgb = overlay_rgb(image, pred, true, alpha=1.0)
    assert rgb[0, 0].tolist() == [1.0, 0.0, 1.0]          # predicted only: magenta
    assert rgb[1, 1].tolist() == [1.0, 0.9, 0.0]          # both: yellow
    assert rgb[2, 2].tolist() == [0.0, 0.85, 1.0]         # true only: cyan
    assert rgb[3, 3].tolist() == pytest.approx([100 / 255] * 3)
    out = render_overlay(image, pred.astype(bool), true, tmp_path / "sub" / "o.png", title="t")
    assert out.is_file()
    with pytest.raises(EvaluationError, match="expected one shape"):
        render_overlay(image, pred[:3], true, tmp_path / "bad.png")


def _save_tiny_unet(uri: str, task: str = "segmentation") -> None:
    from loop.train.checkpoints import save_checkpoint
    from loop.config.training import ModelConfig
    from loop.train.model import build_model

    cfg = ModelConfig(task=task, encoder="resnet18")
    save_checkpoint(uri, build_model(cfg, seed=3).state_dict(), {"model": cfg.to_dict()})


def test_evaluator_resolves_store_view_and_caches_the_model(grain_view, grain_folder, tmp_path, monkeypatch):
    import stores
    from loop.run.evaluator_actor import Evaluator
    from loop.train.model import model_from_checkpoint

    opened = []

    class FakeStore:
        @classmethod
        def open(cls, uri):
            opened.append(uri)
            return cls()

        def view(self, split=None):
            assert split == "val"
            return grain_view

    monkeypatch.setattr(stores, "RunStore", FakeStore)
    ckpt = str(tmp_path / "ckpt" / "c0.pt")
    _save_tiny_unet(ckpt)
    # Metrics in 2 forked worker processes, the batches smaller than the view: same rows as in-process.
    evaluator = Evaluator(device="cpu", batch_size=2, tile=64, overlap=32, num_threads=1, metric_workers=2)
    rows = evaluator.evaluate("some/run", ckpt, {"split": "val"})
    evaluator.close()
    assert opened == ["some/run"]
    expected = evaluate_view(model_from_checkpoint(ckpt)[0], grain_view, "cpu")
    assert rows == expected.to_pylist()
    model = evaluator._cached[1]
    real = evaluator.evaluate_real(ckpt, str(grain_folder))
    assert evaluator._cached[1] is model                  # same checkpoint: not rebuilt
    assert real["n_images"] == 2 and [r["name"] for r in real["images"]] == ["big", "small"]
    assert real["checkpoint"] == ckpt and 0.0 <= real["miou"] <= 1.0
    _save_tiny_unet(ckpt, task="classification")          # rewritten under the same URI: reloaded
    with pytest.raises(EvaluationError, match="scored for classification but the view holds segmentation"):
        evaluator.evaluate("some/run", ckpt, {"split": "val"})


def test_evaluator_rejects_bad_settings():
    from loop.run.evaluator_actor import Evaluator

    with pytest.raises(EvaluationError, match="overlap"):
        Evaluator(tile=64, overlap=64, num_threads=1)
    with pytest.raises(EvaluationError, match="threshold"):
        Evaluator(threshold=1.5, num_threads=1)
    with pytest.raises(EvaluationError, match="metric_workers"):
        Evaluator(metric_workers=-1, num_threads=1)


def make_run(root: Path, view: ArrayView) -> tuple[str, np.ndarray, np.ndarray]:
    """A run store with 3 equal-size samples of ``view``: one train, two val (ids 10, 11, 12)."""
    from generators.space import Continuous, ParamSpace
    from stores.store import RunStore

    space = ParamSpace([Continuous("x", "", "a dummy parameter", 0.0, 1.0)])
    run = RunStore.create(root, generator_name="dummy", generator_version="1", task="segmentation",
                          space=space, config={})
    images = np.stack([view[i][0] for i in (0, 1, 3)])
    masks = np.stack([view[i][1] for i in (0, 1, 3)])
    rows = [{"sample_id": sid, "cycle": 0, "split": split, "policy": "random", "parent_id": None, "seed": sid, "x": 0.5}
            for sid, split in [(10, "train"), (11, "val"), (12, "val")]]
    run.write_batch(0, rows, images, masks)
    return str(root), images, masks


def test_evaluator_on_a_real_run_store(tmp_path, grain_view):
    from loop.run.evaluator_actor import Evaluator
    from loop.train.model import model_from_checkpoint

    run, images, masks = make_run(tmp_path / "run", grain_view)
    ckpt = str(tmp_path / "c.pt")
    _save_tiny_unet(ckpt)
    got = Evaluator(device="cpu", num_threads=1).evaluate(run, ckpt, {"split": "val"})
    assert [r["sample_id"] for r in got] == [11, 12]
    direct = evaluate_view(model_from_checkpoint(ckpt)[0], ArrayView(images[1:], masks[1:], [11, 12]), "cpu")
    assert got == direct.to_pylist()


def test_evaluator_actor_in_ray(ray_local, grain_view, grain_folder, tmp_path):
    import ray

    from loop.run.evaluator_actor import EvaluatorActor

    ckpt = str(tmp_path / "c.pt")
    _save_tiny_unet(ckpt)
    run, _, _ = make_run(tmp_path / "run", grain_view)
    # Metric workers forked inside the Ray worker process.
    actor = EvaluatorActor.options(num_gpus=0).remote(device="cpu", tile=64, overlap=32, num_threads=1,
                                                      metric_workers=2)
    rows = ray.get(actor.evaluate.remote(run, ckpt, {"split": "val"}), timeout=120)
    assert [r["sample_id"] for r in rows] == [11, 12] and all(0 <= r["iou"] <= 1 for r in rows)
    result = ray.get(actor.evaluate_real.remote(ckpt, str(grain_folder)), timeout=120)
    assert result["task"] == "segmentation" and result["n_images"] == 2
    assert ray.get(actor.device_name.remote()) == "cpu"
    ray.get(actor.close.remote())
    ray.kill(actor)


def test_a_classifier_scores_real_images_at_its_training_size(grain_folder, tmp_path, monkeypatch):
    import loop.run.evaluator_actor as actor_module
    from loop.train.checkpoints import save_checkpoint
    from loop.config.training import ModelConfig
    from loop.train.model import build_model

    cfg = ModelConfig(task="classification", encoder="resnet18")
    ckpt = str(tmp_path / "cls.pt")
    save_checkpoint(ckpt, build_model(cfg, seed=3).state_dict(), {"model": cfg.to_dict(), "input": {"size": 96}})
    seen = {}

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return evaluate_real(*args, **kwargs)

    monkeypatch.setattr(actor_module, "evaluate_real", spy)
    actor_module.Evaluator(device="cpu", num_threads=1).evaluate_real(ckpt, str(grain_folder))
    assert seen["class_size"] == 96 and seen["task"] == "classification"
