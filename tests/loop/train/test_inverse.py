"""The inverse model (image -> unit-cube parameters): it recovers what is visible, deterministically."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from generators import get_generator
from generators.space import ParamSpace
from loop.train.inverse import (
    InverseConfig, InverseError, load_inverse, r2_scores, save_inverse, target_dims, tile_grid, train_inverse,
)

VARIED = ("grain_diameter", "mean_grey")
N_TRAIN, N_HELD_OUT, SIZE = 240, 80, 64


def _test_space() -> ParamSpace:
    """The grain space at 64 px with grain_diameter and mean_grey varied and the rest fixed.

    grain_diameter is narrowed to 12-28 px: above ~32 px the generator caps it so that 5 grains
    fit a 64 px image, so larger values render alike and no model could tell them apart. The
    other dimensions sit at their range's middle (artefacts off, as in grains 1.0), so the
    test measures the regressor, not how far other settings can hide the grains.
    """
    gen = get_generator("grains")
    dims = []
    for d in gen.space:
        if d.name == "grain_diameter":
            d = dataclasses.replace(d, low=12.0, high=28.0)
        elif d.name not in VARIED:
            mid = gen.defaults.get(d.name, d.from_unit(np.array([0.5]))[0])
            d = dataclasses.replace(d, low=mid, high=mid)
        dims.append(d)
    return ParamSpace(dims)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One torch thread (the package conftest sets two): on a busy 2-core machine two threads of
    these tiny convolutions wait on each other far longer than they compute."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def renders():
    gen, space = get_generator("grains"), _test_space()
    params = space.sample(np.random.default_rng(0), N_TRAIN + N_HELD_OUT)
    images = np.stack([gen.render(p, 1000 + i, SIZE).image for i, p in enumerate(params)])
    dims = target_dims(space)
    unit = space.to_unit(params)[:, [space.names.index(d) for d in dims]]
    return images, unit, dims


def test_target_dims_leave_out_fixed_dimensions() -> None:
    assert target_dims(_test_space()) == list(VARIED)
    assert "grain_diameter" in target_dims(get_generator("grains").space)


def test_the_ensemble_recovers_grain_diameter_and_mean_grey(renders, tmp_path) -> None:
    """Floors: mean_grey >= 0.8 (the tile's mean grey nearly is the parameter; ~0.96 seen) and
    grain_diameter >= 0.3 (0.55 seen after this short training; with 80 held-out renders the R²
    estimate has a standard error of about 0.08, so 0.3 is well clear of "no better than the
    mean" while leaving room for the spread between seeds of a 12-epoch training)."""
    images, unit, dims = renders
    cfg = InverseConfig(members=2, epochs=12, batch_size=16, width=16, seed=3)
    result = train_inverse(images[:N_TRAIN], unit[:N_TRAIN], dims, cfg,
                           held_out=(images[N_TRAIN:], unit[N_TRAIN:]), held_out_split="test", device="cpu")
    r2 = result.r2
    print(f"held-out R²: {r2}, training {result.meta['train_s']} s")
    assert r2["mean_grey"] >= 0.8, r2
    assert r2["grain_diameter"] >= 0.3, r2
    assert result.meta["r2_split"] == "test" and result.meta["n_held_out"] == N_HELD_OUT
    assert result.meta["input_size"] == SIZE

    # Saved with save_checkpoint, loaded weights-only: the same predictions.
    uri = str(tmp_path / "inverse.pt")
    save_inverse(uri, result, {"cycle": 0})
    loaded = load_inverse(uri)
    assert loaded.meta["cycle"] == 0 and loaded.meta["r2"] == r2
    a = result.model.predict(list(images[:3]))
    b = loaded.model.predict(list(images[:3]))
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)
    assert a[1].shape == (3, 2) and (a[1] >= 0).all()


def test_same_seed_same_weights(renders) -> None:
    images, unit, dims = renders
    cfg = InverseConfig(members=2, epochs=1, batch_size=16, width=8, seed=5)
    one = train_inverse(images[:48], unit[:48], dims, cfg).model.state_dict()
    two = train_inverse(images[:48], unit[:48], dims, cfg).model.state_dict()
    other = train_inverse(images[:48], unit[:48], dims, dataclasses.replace(cfg, seed=6)).model.state_dict()
    assert one.keys() == two.keys()
    assert all(torch.equal(one[k], two[k]) for k in one)
    assert not all(torch.equal(one[k], other[k]) for k in one if one[k].is_floating_point())
    # the members differ from each other (own seeds)
    assert not torch.equal(one["members.0.features.0.weight"], one["members.1.features.0.weight"])


def test_tiles_and_sizes() -> None:
    image = np.zeros((100, 150), np.uint8)
    assert tile_grid(image, 64, 3).shape == (6, 64, 64)  # 2 rows × 3 columns of 64 px
    assert tile_grid(image[:64, :64], 64, 3).shape == (1, 64, 64)
    with pytest.raises(InverseError, match=r"50×40 px is smaller than the inverse model's input of 64×64 px"):
        tile_grid(np.zeros((40, 50), np.uint8), 64, 3, where="image")


def test_r2_scores() -> None:
    truth = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
    assert r2_scores(truth, truth) == [1.0, None]
    assert r2_scores(truth, np.full_like(truth, 1.0))[0] == 0.0
