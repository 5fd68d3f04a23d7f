"""Real crack imagery as tiles: tiling and labels on hand-made masks, physical groups, grouped splits, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from loop.cli import main
from loop.evaluate.real import RealDataError
from loop.evaluate.real_tiles import CLEAN_OF_CRACK_IMAGE, CRACK, FEW_CRACK_PX, NO_CRACK, TilingError, tile_image, tile_starts
from loop.study.crack_tiles import (
    PARTS,
    balanced_draw,
    capture_groups,
    grouped_split,
    load_tiles,
    oversampled,
    physical_groups,
)


def write_pairs(folder: Path, pairs: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    """DIR/images/NAME.png + DIR/masks/NAME.png (mask 0/255) from ``{name: (image, mask 0/1)}``."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for name, (image, mask) in pairs.items():
        Image.fromarray(image.astype(np.uint8)).save(folder / "images" / f"{name}.png")
        Image.fromarray((mask > 0).astype(np.uint8) * 255).save(folder / "masks" / f"{name}.png")
    return folder


def textured(shape: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(60, 200, size=shape).astype(np.uint8)


def test_tile_starts_cover_the_axis_with_least_overlap() -> None:
    assert tile_starts(128, 128) == [0]
    assert tile_starts(129, 128) == [0, 1]
    assert tile_starts(256, 128) == [0, 128]
    assert tile_starts(300, 128) == [0, 86, 172]
    assert tile_starts(300, 128, stride=64) == [0, 57, 115, 172]
    for length in range(128, 700, 7):
        starts = tile_starts(length, 128)
        assert starts[0] == 0 and starts[-1] == length - 128
        assert all(0 < b - a <= 128 for a, b in zip(starts, starts[1:]))  # no gap between tiles
    with pytest.raises(TilingError, match="shorter than a 128 px tile"):
        tile_starts(100, 128)


def test_tiling_a_hand_made_mask_gives_the_known_tiles_and_labels() -> None:
    image = np.arange(200 * 256, dtype=np.int64).reshape(200, 256) % 251
    mask = np.zeros((200, 256), np.uint8)
    mask[10:20, 140:150] = 1     # 100 px, only in the tile at (0, 128)
    mask[190:195, 10:11] = 1     # 5 px, in the tile at (72, 0) only
    tiles, masks, positions = tile_image(image, mask, 128)
    assert positions.tolist() == [[0, 0], [0, 128], [72, 0], [72, 128]]
    for (y, x), tile, tile_mask in zip(positions, tiles, masks):
        assert np.array_equal(tile, image[y:y + 128, x:x + 128])
        assert np.array_equal(tile_mask, mask[y:y + 128, x:x + 128])
    assert masks.reshape(4, -1).sum(axis=1).tolist() == [0, 100, 5, 0]


def test_tile_labels_from_a_folder(tmp_path) -> None:
    crack_mask = np.zeros((200, 256), np.uint8)
    crack_mask[10:20, 140:150] = 1      # 100 px in tile (0, 128)
    crack_mask[190:195, 10:11] = 1      # 5 px in tile (72, 0): too few
    folder = write_pairs(tmp_path / "real", {
        "a": (textured((200, 256), 0), crack_mask),
        "b": (textured((128, 256), 1), np.zeros((128, 256), np.uint8)),
    })
    tiles = load_tiles(folder, 128, min_crack_px=20)
    assert tiles.names == ("a", "b")
    assert [tiles.tile_name(i) for i in range(len(tiles))] == ["a@0,0", "a@0,128", "a@72,0", "a@72,128",
                                                               "b@0,0", "b@0,128"]
    assert tiles.kind.tolist() == [CLEAN_OF_CRACK_IMAGE, CRACK, FEW_CRACK_PX, CLEAN_OF_CRACK_IMAGE, NO_CRACK, NO_CRACK]
    assert tiles.crack_px.tolist() == [0, 100, 5, 0, 0, 0]
    assert tiles.usable.tolist() == [1, 4, 5]
    view = tiles.view(tiles.usable)
    assert view.labels.tolist() == [1, 0, 0] and view.sample_ids.tolist() == [1, 4, 5]
    assert view.images.shape == (3, 128, 128)
    with pytest.raises(TilingError, match="kept apart"):
        tiles.view([0])
    # The crack image's clean tiles as negatives, on request; the grazing one stays apart.
    loose = load_tiles(folder, 128, min_crack_px=20, crack_image_negatives=True)
    assert loose.kind.tolist() == [NO_CRACK, CRACK, FEW_CRACK_PX, NO_CRACK, NO_CRACK, NO_CRACK]
    # A lower threshold makes the grazing tile a crack tile.
    assert load_tiles(folder, 128, min_crack_px=5).kind.tolist()[2] == CRACK
    counts = tiles.counts()
    assert counts["crack"] == 1 and counts["no_crack"] == 2 and counts["too_few_crack_pixels"] == 1
    assert counts["crack_image_no_crack_pixel"] == 2 and counts["groups"] == 2


def test_small_images_are_padded_or_skipped_with_a_count(tmp_path) -> None:
    mask = np.zeros((150, 150), np.uint8)
    mask[40:50, 40:60] = 1
    folder = write_pairs(tmp_path / "real", {
        "big": (textured((150, 150), 0), mask),
        "small": (textured((100, 300), 1), np.zeros((100, 300), np.uint8)),
        "clean": (textured((128, 128), 2), np.zeros((128, 128), np.uint8)),
    })
    padded = load_tiles(folder, 128)
    assert padded.padded == ("small",) and padded.skipped == ()
    small = [i for i in range(len(padded)) if padded.names[padded.source[i]] == "small"]
    assert len(small) == 3 and padded.images[small[0]].shape == (128, 128)
    # Reflection: row 100 of the padded image is row 98 of the original.
    image = np.asarray(Image.open(folder / "images" / "small.png"))
    assert np.array_equal(padded.images[small[0]][100], image[98, :128])
    skipped = load_tiles(folder, 128, pad=False)
    assert skipped.skipped == ("small",) and skipped.counts()["skipped_images"] == 1
    assert not any(skipped.names[s] == "small" for s in skipped.source)
    with pytest.raises(TilingError, match=r"^small: 300×100 px is smaller than a 128 px tile"):
        tile_image(image, np.zeros_like(image), 128, pad=False, source="small")


def test_bad_folders_give_one_line_errors(tmp_path) -> None:
    no_masks = tmp_path / "no_masks"
    (no_masks / "images").mkdir(parents=True)
    Image.fromarray(textured((64, 64), 0)).save(no_masks / "images" / "a.png")
    with pytest.raises(RealDataError, match="masks: folder not found"):
        load_tiles(no_masks, 32)
    empty = write_pairs(tmp_path / "empty", {n: (textured((64, 64), i), np.zeros((64, 64), np.uint8))
                                             for i, n in enumerate("abc")})
    with pytest.raises(TilingError, match="every mask is empty: no crack to learn from"):
        load_tiles(empty, 32)
    faint = np.zeros((64, 64), np.uint8)
    faint[5, 5:10] = 1
    few = write_pairs(tmp_path / "few", {"a": (textured((64, 64), 0), faint),
                                         "b": (textured((64, 64), 1), np.zeros((64, 64), np.uint8))})
    with pytest.raises(TilingError, match=r"no 32 px tile has >= 20 crack pixels; lower min_crack_px \(largest count 5\)"):
        load_tiles(few, 32)
    small = write_pairs(tmp_path / "small", {"a": (textured((60, 90), 0), np.ones((60, 90), np.uint8))})
    with pytest.raises(TilingError, match=r"a 128 px tile is larger than every image \(largest 90×60 px\) and "
                                          r"padding is off"):
        load_tiles(small, 128, pad=False)
    only_cracks = write_pairs(tmp_path / "only", {"a": (textured((64, 64), 0), np.ones((64, 64), np.uint8))})
    with pytest.raises(TilingError, match="every image has a crack: no crack-free image"):
        load_tiles(only_cracks, 32)
    for error in (TilingError, RealDataError):
        assert issubclass(error, ValueError)


def test_cli_errors_are_one_line(tmp_path) -> None:
    small = write_pairs(tmp_path / "small", {"a": (textured((60, 90), 0), np.ones((60, 90), np.uint8)),
                                             "b": (textured((60, 90), 1), np.zeros((60, 90), np.uint8))})
    for args in (["experiment", "cracks", "--real", str(small), "--preset", "smoke", "--no-pad",
                  "--out", str(tmp_path / "out")],
                 ["fit-cracks", str(small), "--tile-size", "128", "--no-pad"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "tile is larger than every image" in lines[0], lines


def test_capture_groups_follow_the_documented_rule() -> None:
    names = ["mt_exp1_num_100", "mt_exp3_num_140", "mt_exp6_num_205",   # one tile, three exposures
             "mt_exp2_num_900",                                         # a step of 695 <= 1500: same chain
             "mt_exp1_num_5000", "mt_exp4_num_5012",                    # > 1500 after 900: a new group
             "xy_exp1_num_130"]                                         # another series
    keys = capture_groups(names)
    assert keys == ["mt_@100"] * 4 + ["mt_@5000"] * 2 + ["xy_@130"]
    assert capture_groups(names, max_gap=100) == ["mt_@100"] * 3 + ["mt_@900"] + ["mt_@5000"] * 2 + ["xy_@130"]
    assert capture_groups(["mt_exp1_num_1", "other"]) is None
    ids, rule = physical_groups(names)
    assert ids.tolist() == [0, 0, 0, 0, 1, 1, 2] and rule.startswith("capture")


def test_grouping_falls_back_to_one_group_per_image_and_takes_a_regex() -> None:
    ids, rule = physical_groups(["b.png", "a.png", "c"])
    assert ids.tolist() == [0, 1, 2] and rule.startswith("image")
    ids, _ = physical_groups(["mt_exp1_num_1", "mt_exp2_num_5"], "image")
    assert ids.tolist() == [0, 1]
    ids, rule = physical_groups(["tile7_exp1", "tile7_exp2", "tile8_exp1"], r"^(?P<key>.+)_exp\d+$")
    assert ids.tolist() == [0, 0, 1] and "regular expression" in rule
    with pytest.raises(TilingError, match="does not match image name 'odd'"):
        physical_groups(["tile7_exp1", "odd"], r"^(.+)_exp\d+$")
    with pytest.raises(TilingError, match="groups 'capture': name 'odd' does not follow"):
        physical_groups(["mt_exp1_num_1", "odd"], "capture")
    with pytest.raises(TilingError, match=r"groups: expected one of auto, capture, image or a regular expression"):
        physical_groups(["a"], "(")


def random_groups(rng: np.random.Generator, n_groups: int = 40, n_crack_groups: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Tiles in groups of 1..12; the first ``n_crack_groups`` groups hold crack tiles and no-crack tiles."""
    groups, labels = [], []
    for g in range(n_groups):
        k = int(rng.integers(1, 13))
        groups += [g] * k
        labels += (rng.random(k) < 0.5).astype(int).tolist() if g < n_crack_groups else [0] * k
        if g < n_crack_groups:
            labels[-1] = 1
    order = rng.permutation(len(groups))
    return np.asarray(groups)[order], np.asarray(labels)[order]


def test_no_physical_group_straddles_a_split_over_many_seeds() -> None:
    for seed in range(300):
        rng = np.random.default_rng(seed)
        n_crack = int(rng.integers(3, 9))  # >= 3 groups per stratum: each part gets one of each
        groups, labels = random_groups(rng, n_groups=n_crack + int(rng.integers(3, 50)), n_crack_groups=n_crack)
        split = grouped_split(groups, labels, (0.7, 0.175, 0.125), np.random.default_rng([seed, 0]))
        everything = np.concatenate([split[p] for p in PARTS])
        assert sorted(everything.tolist()) == list(range(len(groups)))     # every tile once
        sides = [set(groups[split[p]].tolist()) for p in PARTS]
        assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2]), seed
        for p in PARTS:  # stratified: every part has crack tiles and no-crack tiles
            assert set(labels[split[p]].tolist()) == {0, 1}, (seed, p)


def test_grouped_split_is_seeded_and_near_its_fractions() -> None:
    groups, labels = random_groups(np.random.default_rng(0), n_groups=200, n_crack_groups=60)
    a = grouped_split(groups, labels, (0.7, 0.175, 0.125), np.random.default_rng(1))
    b = grouped_split(groups, labels, (0.7, 0.175, 0.125), np.random.default_rng(1))
    c = grouped_split(groups, labels, (0.7, 0.175, 0.125), np.random.default_rng(2))
    assert all(np.array_equal(a[p], b[p]) for p in PARTS)
    assert not all(np.array_equal(a[p], c[p]) for p in PARTS)
    cracks = (labels == 1).sum()
    for p, fraction in zip(PARTS, (0.7, 0.175, 0.125)):
        assert (labels[a[p]] == 1).sum() / cracks == pytest.approx(fraction, abs=0.06)


def test_balanced_draw_and_oversampling() -> None:
    labels = np.array([1] * 10 + [0] * 50)
    rng = np.random.default_rng(0)
    chosen = balanced_draw(labels, rng)
    assert len(chosen) == 20 and labels[chosen].sum() == 10 and np.all(np.diff(chosen) > 0)
    order, repeat = oversampled(labels, rng, max_repeat=4)
    assert repeat == 4 and len(order) == 80 and labels[order].sum() == 40
    assert np.bincount(order[labels[order] == 1]).max() == 4      # each crack sample 4 times
    assert len(set(order[labels[order] == 0].tolist())) == 40     # no-crack ones drawn without repeats
    order, repeat = oversampled(labels, rng, max_repeat=100)
    assert repeat == 5 and labels[order].sum() * 2 == len(order) == 100
    order, repeat = oversampled(np.array([0, 1, 1]), rng, max_repeat=4)
    assert repeat == 2 and sorted(order.tolist()) == [0, 0, 1, 2]


def test_the_shared_magnetic_tiles_group_by_physical_tile(shared_data) -> None:
    names = sorted(p.stem for p in (shared_data / "cracks" / "images").iterdir())
    ids, rule = physical_groups(names)
    assert rule.startswith("capture")
    by_name = dict(zip(names, ids.tolist()))
    # Eight captures of one cracked tile, exposures repeating (seen on the images).
    same = ["mt_exp5_num_85642", "mt_exp2_num_85846", "mt_exp6_num_86064", "mt_exp1_num_86828",
            "mt_exp2_num_86854", "mt_exp4_num_88149", "mt_exp5_num_88170", "mt_exp6_num_88201"]
    assert len({by_name[n] for n in same}) == 1
    assert len({by_name[n] for n in ("mt_exp1_num_32128", "mt_exp3_num_32171", "mt_exp6_num_32235")}) == 1
    assert by_name["mt_exp1_num_32128"] != by_name["mt_exp2_num_3211"]
