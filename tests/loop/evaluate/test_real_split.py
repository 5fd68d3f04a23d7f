"""Splitting a real folder by source micrograph: no source on both sides, families stratified, links not copies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from loop.cli import main
from loop.evaluate.real import RealDataError, RealFolder
from loop.evaluate.real_split import family_of, plan_split, source_of, write_split

NAMES = ([f"tbm_{s}-{y}-{x}" for s in range(10, 16) for y, x in ((0, 0), (0, 256))]
         + ["iron_001", "nist_steel_optical"])


def make_folder(root: Path, names: list[str]) -> Path:
    rng = np.random.default_rng(0)
    for name in names:
        for kind, array in (("images", rng.integers(0, 256, (8, 8), dtype=np.uint8)),
                            ("masks", np.eye(8, dtype=np.uint8) * 255)):
            (root / kind).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / kind / f"{name}.png")
    return root


def test_source_and_family_of_names():
    assert source_of("tbm_10-256-512") == "tbm_10"
    assert source_of("iron_001") == "iron_001"
    assert source_of("nist_steel_optical") == "nist_steel_optical"
    assert source_of("a-1") == "a"
    assert family_of("tbm_10") == "tbm"
    assert family_of("plain") == "plain"


def test_no_source_on_both_sides_and_each_family_on_both():
    split = plan_split(NAMES)
    assert set(split.dev).isdisjoint(split.check)
    assert sorted(split.names("dev") + split.names("check")) == sorted(NAMES)
    # 6 tbm sources: the last 3 in name order are checked; the two lone micrographs go one to each side.
    assert [s for s in split.check if s.startswith("tbm")] == ["tbm_13", "tbm_14", "tbm_15"]
    assert ("iron_001" in split.dev) and ("nist_steel_optical" in split.check)
    assert all(len(split.dev[s]) == 2 for s in split.dev if s.startswith("tbm"))


def test_seeded_split_is_reproducible_and_differs_from_name_order():
    a, b = plan_split(NAMES, seed=3), plan_split(NAMES, seed=3)
    assert a == b
    orders = {tuple(plan_split(NAMES, seed=s).check) for s in range(6)}
    assert len(orders) > 1


def test_fraction_rounds_but_keeps_both_sides_non_empty():
    split = plan_split(NAMES, check_fraction=0.01)
    assert sum(s.startswith("tbm") for s in split.check) == 1
    split = plan_split(NAMES, check_fraction=0.99)
    assert sum(s.startswith("tbm") for s in split.dev) == 1


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.2, True, "half"])
def test_bad_fraction_is_named(bad):
    with pytest.raises(RealDataError, match="check_fraction"):
        plan_split(NAMES, check_fraction=bad)


def test_one_source_cannot_be_split():
    with pytest.raises(RealDataError, match="at least two source"):
        plan_split(["tbm_10-0-0", "tbm_10-0-256"])


def test_written_halves_are_real_folders_of_links(tmp_path):
    src = make_folder(tmp_path / "src", NAMES)
    split = write_split(src, tmp_path / "out")
    for half in ("dev", "check"):
        folder = RealFolder(tmp_path / "out" / half)
        assert folder.names == split.names(half)
        image, mask = folder.paths(folder.names[0])
        assert image.is_symlink() and image.resolve().parent == (src / "images").resolve()
        assert folder[0].mask.any()
    manifest = json.loads((tmp_path / "out" / "split.json").read_text())
    assert manifest["check"] == split.check and manifest["seed"] is None
    with pytest.raises(RealDataError, match="already exists"):
        write_split(src, tmp_path / "out")


def test_cli_split_real(tmp_path):
    src = make_folder(tmp_path / "src", NAMES)
    result = CliRunner().invoke(main, ["split-real", str(src), str(tmp_path / "out"), "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "dev: " in result.output and "check: " in result.output
    result = CliRunner().invoke(main, ["split-real", str(src), str(tmp_path / "o2"), "--check-fraction", "1"])
    assert result.exit_code == 2 and "--check-fraction" in result.output
