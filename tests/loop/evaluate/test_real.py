"""Loading real labelled folders: conversions, the binary / label-image rule, and every bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loop.evaluate.real import RealDataError, RealFolder, load_boundary_mask, load_grey_image, load_real, mask_to_boundary


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def stripes(height: int = 12, width: int = 12, ids=(1, 2, 3)) -> np.ndarray:
    """Label image: vertical bands of width 4 with the given ids."""
    return np.repeat(np.asarray(ids), width // len(ids))[None, :].repeat(height, axis=0)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "real"
    grey = rng.integers(0, 256, size=(12, 12), dtype=np.uint8)
    binary = np.zeros((12, 12), np.uint8)
    binary[4, :] = 255
    save(root / "images" / "a.png", grey)
    save(root / "masks" / "a.png", binary)
    save(root / "images" / "b.png", np.stack([grey, grey, grey], axis=2))          # RGB image
    save(root / "masks" / "b.tif", stripes().astype(np.uint16))                    # 16-bit label TIFF
    save(root / "images" / "c.tif", (grey.astype(np.uint16) * 16 + 1000))          # 16-bit TIFF image
    save(root / "masks" / "c.png", (binary // 255).astype(np.uint8))               # 0/1 mask
    (root / "images" / ".DS_Store").write_bytes(b"ignored")
    return root


def test_folder_loads_all_pairs_with_conversions(folder: Path):
    pairs = load_real(folder)
    assert [p.name for p in pairs] == ["a", "b", "c"]
    a, b, c = pairs
    assert a.image.dtype == np.uint8 and a.image.shape == (12, 12)
    expected_boundary = np.zeros((12, 12), np.uint8)
    expected_boundary[4, :] = 1
    assert np.array_equal(a.mask, expected_boundary) and a.mask_kind == "binary"
    assert np.array_equal(c.mask, expected_boundary)
    # RGB with equal channels converts to the same grey.
    assert np.abs(b.image.astype(int) - a.image.astype(int)).max() <= 1
    # Label image: a boundary on each side where the ids change (columns 3|4 and 7|8).
    assert b.mask_kind == "labels"
    assert np.array_equal(np.flatnonzero(b.mask[0]), [3, 4, 7, 8]) and np.all(b.mask == b.mask[0])
    # 16-bit image stretched from its own min-max to 0..255, order preserved.
    assert c.image.min() == 0 and c.image.max() == 255
    assert np.array_equal(np.argsort(c.image, axis=None, kind="stable"), np.argsort(a.image, axis=None, kind="stable"))


def test_colour_label_mask_and_palette_are_label_images(tmp_path: Path):
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    rgb = colours[stripes(ids=(0, 1, 2))]
    mask, kind = load_boundary_mask(save(tmp_path / "colour.png", rgb))
    assert kind == "labels" and np.array_equal(np.flatnonzero(mask[5]), [3, 4, 7, 8])
    palette = Image.new("P", (12, 12))
    palette.putpalette([0, 0, 0, 200, 10, 10, 10, 200, 10, 10, 10, 200])
    palette.putdata(stripes(ids=(1, 2, 3)).ravel().tolist())
    palette.save(tmp_path / "palette.png")
    mask, kind = load_boundary_mask(tmp_path / "palette.png")
    assert kind == "labels" and np.array_equal(np.flatnonzero(mask[5]), [3, 4, 7, 8])


def test_mask_rule_on_arrays():
    assert mask_to_boundary(np.zeros((4, 4), np.uint8))[0].sum() == 0
    assert mask_to_boundary(np.full((4, 4), 255, np.uint8))[0].sum() == 16
    m, kind = mask_to_boundary(np.array([[True, False], [False, False]]))
    assert kind == "binary" and m.tolist() == [[1, 0], [0, 0]]
    # Two grain ids only: by the rule that is binary, the higher id taken as boundary.
    assert mask_to_boundary(stripes(ids=(7, 9, 9)))[1] == "binary"


def test_grey_photo_as_mask_is_refused(tmp_path: Path):
    photo = np.random.default_rng(1).integers(0, 256, size=(64, 64), dtype=np.uint8)
    path = save(tmp_path / "photo.png", photo)
    with pytest.raises(RealDataError, match=r"photo\.png: mask is neither binary nor a label image"):
        load_boundary_mask(path)


def test_float_and_too_many_ids_are_refused():
    with pytest.raises(RealDataError, match="neither binary nor a label image"):
        mask_to_boundary(stripes().astype(np.float32))
    # 16 distinct ids on 16 pixels: more than one id per 16 px.
    with pytest.raises(RealDataError, match="neither binary nor a label image"):
        mask_to_boundary(np.arange(16).reshape(4, 4))


def test_image_without_mask(folder: Path):
    save(folder / "images" / "lonely.png", np.zeros((12, 12), np.uint8))
    with pytest.raises(RealDataError, match=r"images/lonely\.png: image without a mask"):
        RealFolder(folder)


def test_mask_without_image(folder: Path):
    save(folder / "masks" / "orphan.png", np.zeros((12, 12), np.uint8))
    with pytest.raises(RealDataError, match=r"masks/orphan\.png: mask without an image"):
        RealFolder(folder)


def test_size_mismatch_names_both_files(folder: Path):
    save(folder / "masks" / "a.png", np.zeros((12, 13), np.uint8))
    with pytest.raises(RealDataError, match=r"masks/a\.png: mask size 13×12 differs from image .*images/a\.png"):
        load_real(folder)


def test_bad_mask_file_in_folder_names_it(folder: Path):
    save(folder / "masks" / "a.png", np.random.default_rng(2).integers(0, 256, (12, 12), dtype=np.uint8))
    with pytest.raises(RealDataError, match=r"masks/a\.png: mask is neither"):
        load_real(folder)


def test_empty_and_missing_folders(tmp_path: Path):
    with pytest.raises(RealDataError, match="real data folder not found"):
        RealFolder(tmp_path / "nope")
    (tmp_path / "images").mkdir()
    with pytest.raises(RealDataError, match=r"masks: folder not found"):
        RealFolder(tmp_path)
    (tmp_path / "masks").mkdir()
    with pytest.raises(RealDataError, match="no image/mask pairs"):
        RealFolder(tmp_path)


def test_unsupported_duplicate_and_unreadable_files(folder: Path):
    (folder / "images" / "notes.txt").write_text("hello")
    with pytest.raises(RealDataError, match=r"notes\.txt: unsupported entry"):
        RealFolder(folder)
    (folder / "images" / "notes.txt").unlink()
    save(folder / "images" / "a.tif", np.zeros((12, 12), np.uint8))
    with pytest.raises(RealDataError, match=r"a\.tif: same name as .*a\.png"):
        RealFolder(folder)
    (folder / "images" / "a.tif").unlink()
    (folder / "images" / "a.png").write_bytes(b"not a png")
    with pytest.raises(RealDataError, match=r"images/a\.png: cannot be read as an image"):
        load_grey_image(folder / "images" / "a.png")


def test_shared_grain_images_all_load(shared_data: Path):
    grains = shared_data / "grains"
    if not grains.is_dir():
        pytest.skip(f"{grains} not present (../shared/data/grains)")
    folder = RealFolder(grains)
    assert len(folder) == len(list((grains / "images").glob("*.png")))
    for pair in folder:
        assert pair.image.dtype == np.uint8 and pair.image.shape == pair.mask.shape
        assert pair.mask_kind == "binary" and set(np.unique(pair.mask)) <= {0, 1}
        assert 0 < pair.mask.mean() < 0.5, pair.name   # boundaries are the minority class
