"""Texture synthesis by image quilting: seams, minimum cuts, the bank, exemplar folders."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import skimage.data
from PIL import Image
from scipy import ndimage

from generators.textures import (
    PATCH,
    TextureBank,
    TextureError,
    _min_cut,
    bank_side,
    default_exemplars,
    load_exemplars,
    make_exemplar,
    min_exemplar_side,
    quilt,
)


@pytest.fixture(scope="module")
def exemplars():
    return default_exemplars()


def gradient_energy(image: np.ndarray) -> np.ndarray:
    gy, gx = np.gradient(image.astype(np.float64))
    return gx * gx + gy * gy


def seam_ratio(image: np.ndarray, seams: np.ndarray) -> float:
    """Mean gradient energy on the seam pixels over that of the pixels at least 3 px from any seam."""
    energy = gradient_energy(image)
    near = ndimage.binary_dilation(seams, iterations=2)
    return float(energy[seams].mean() / energy[~near].mean())


def naive_tiling(exemplar: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random exemplar patches side by side with no overlap or cut, and its grid lines."""
    out = np.zeros((n * PATCH, n * PATCH), dtype=np.float32)
    for i, j in itertools.product(range(n), range(n)):
        y, x = rng.integers(0, exemplar.shape[0] - PATCH), rng.integers(0, exemplar.shape[1] - PATCH)
        out[i * PATCH:(i + 1) * PATCH, j * PATCH:(j + 1) * PATCH] = exemplar[y:y + PATCH, x:x + PATCH]
    grid = np.zeros(out.shape, dtype=bool)
    grid[:, PATCH::PATCH] = True
    grid[PATCH::PATCH, :] = True
    return out, grid


def test_default_exemplars_load_offline_from_the_skimage_package(exemplars) -> None:
    assert [e.name for e in exemplars] == ["brick", "gravel", "grass"]
    for e in exemplars:
        assert e.image.dtype == np.float32 and e.image.shape == (512, 512)
        assert 0.0 <= e.image.min() < e.image.max() <= 1.0
        assert e.source.startswith("skimage.data.")


@pytest.mark.parametrize("name", ["brick", "gravel", "grass"])
def test_quilted_textures_have_no_visible_seams(exemplars, name) -> None:
    """Gradient energy along the minimum-error cuts is no higher than the interior's, while a naive
    tiling of the same exemplar (the criterion's control) shows its block edges."""
    exemplar = next(e for e in exemplars if e.name == name).image
    quilted, naive = [], []
    for seed in range(3):
        q = quilt(exemplar, 160, np.random.default_rng(seed))
        assert q.seams.sum() > 500  # the cuts are there: 5x5 patches
        quilted.append(seam_ratio(q.texture, q.seams))
        tiles, grid = naive_tiling(exemplar, 5, np.random.default_rng(seed))
        naive.append(seam_ratio(tiles, grid))
    assert max(quilted) < 1.1, quilted
    assert min(naive) > 1.15, naive
    assert np.mean(naive) > np.mean(quilted) + 0.3


def test_quilting_keeps_the_exemplar_grey_levels(exemplars) -> None:
    exemplar = exemplars[1].image
    texture = quilt(exemplar, 128, np.random.default_rng(0)).texture
    assert abs(texture.mean() - exemplar.mean()) < 0.05
    assert 0.6 < texture.std() / exemplar.std() < 1.4


def test_quilt_is_deterministic_and_seed_dependent(exemplars) -> None:
    a = quilt(exemplars[0].image, 96, np.random.default_rng(7)).texture
    b = quilt(exemplars[0].image, 96, np.random.default_rng(7)).texture
    c = quilt(exemplars[0].image, 96, np.random.default_rng(8)).texture
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, c)


def test_the_seed_tile_comes_from_outside_the_dictionary() -> None:
    """The seed strip (bottom rows) is constant 1 and the dictionary 0: only the seed tile is 1."""
    exemplar = np.zeros((96, 96), dtype=np.float32)
    exemplar[-PATCH:] = 1.0
    texture = quilt(exemplar, 64, np.random.default_rng(0)).texture
    assert np.all(texture[:PATCH - 8, :PATCH - 8] == 1.0)
    assert np.all(texture[PATCH:, PATCH:] == 0.0)


def test_min_cut_is_the_cheapest_connected_path() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        error = rng.random((5, 3))
        best = min(
            (sum(error[r, c] for r, c in enumerate(path)), path)
            for path in itertools.product(range(3), repeat=5)
            if all(abs(a - b) <= 1 for a, b in zip(path, path[1:]))
        )
        path = _min_cut(error)
        assert all(abs(a - b) <= 1 for a, b in zip(path, path[1:]))
        assert error[np.arange(5), path].sum() == pytest.approx(best[0])


def test_bank_textures_are_the_same_in_every_bank_and_crops_follow_the_rng(exemplars) -> None:
    one, two = TextureBank(exemplars[:1]), TextureBank(exemplars[:1])
    side = bank_side(64, 2.0)
    assert side >= 2 * 64
    for a, b in zip(one.textures(side)["brick"], two.textures(side)["brick"]):
        assert a.tobytes() == b.tobytes()
        assert abs(float(a.mean())) < 1e-4 and float(a.std()) == pytest.approx(1.0, abs=1e-3)
    crop = one.crop("brick", 64, np.random.default_rng(3), zoom=1.3)
    assert crop.shape == (64, 64) and crop.dtype == np.float32
    assert crop.tobytes() == two.crop("brick", 64, np.random.default_rng(3), zoom=1.3).tobytes()
    assert not np.array_equal(crop, one.crop("brick", 64, np.random.default_rng(4), zoom=1.3))
    with pytest.raises(TextureError, match="texture 'marble': unknown exemplar; known: brick"):
        one.crop("marble", 64, np.random.default_rng(0))


def test_load_exemplars_reads_a_folder_of_images(tmp_path) -> None:
    Image.fromarray(skimage.data.brick()[:100, :120]).save(tmp_path / "b.png")
    rgb = np.stack([skimage.data.gravel()[:90, :90]] * 3, axis=-1)
    Image.fromarray(rgb).save(tmp_path / "a.tif")
    (tmp_path / ".hidden.png").write_bytes(b"not read")
    (tmp_path / "notes.txt").write_text("ignored")
    loaded = load_exemplars(tmp_path)
    assert [e.name for e in loaded] == ["a", "b"]
    assert loaded[0].image.shape == (90, 90) and loaded[1].image.shape == (100, 120)
    assert loaded[0].digest != loaded[1].digest


def test_an_empty_exemplar_folder_is_named_in_the_error(tmp_path) -> None:
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(TextureError, match=f"exemplar folder {tmp_path}: no images in it"):
        load_exemplars(tmp_path)
    with pytest.raises(TextureError, match="exemplar folder .*missing: not found"):
        load_exemplars(tmp_path / "missing")


def test_an_exemplar_smaller_than_two_patches_is_named_in_the_error(tmp_path) -> None:
    small = tmp_path / "small.png"
    Image.fromarray(skimage.data.brick()[:40, :200]).save(small)
    need = min_exemplar_side()
    with pytest.raises(TextureError, match=f"exemplar {small}: 200×40 px is smaller than the {need}×{need} px"):
        load_exemplars(tmp_path)


def test_unreadable_and_flat_exemplars_are_refused(tmp_path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a png")
    with pytest.raises(TextureError, match=f"exemplar {broken}: cannot be read as an image"):
        load_exemplars(tmp_path)
    with pytest.raises(TextureError, match="flat.png: the image is one flat grey"):
        make_exemplar("flat", np.full((80, 80), 7, np.uint8), "flat.png")
    with pytest.raises(TextureError, match="expected a grey uint8"):
        make_exemplar("f", np.zeros((80, 80), np.float32), "f.tif")
