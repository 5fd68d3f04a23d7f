"""The README's "Open a run without synthloop" recipes, run as written against a small run.

The code blocks are taken from README.md and executed with only the run's path replaced, so the
README cannot drift from what works. Each recipe's ``print`` is caught so its result can be
checked against what the store itself reads.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from loop.run.adding import add_random_samples
from stores import RunStore

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Open a run without synthloop"
RUN = "runs/demo"


def recipes() -> list[str]:
    """The python code blocks of the README section, in order."""
    text = README.read_text()
    start = text.index(SECTION) + len(SECTION)
    end = text.find("\n## ", start)
    return re.findall(r"```python\n(.*?)```", text[start:end if end >= 0 else None], flags=re.S)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> RunStore:
    """A run made as ``loop generate`` makes one: two 128 px train batches, one 64 px val batch
    (a batch of another size), and validation scores of two cycles."""
    run = str(tmp_path_factory.mktemp("recipes") / "run")
    add_random_samples(run, "grains", 6, size=128, seed=1, batch_size=3)
    store = add_random_samples(run, "grains", 3, size=64, seed=2, batch_size=3, split="val")
    val = store.params(split="val")["sample_id"].to_pylist()
    for cycle in (0, 1):
        store.append_metrics([{"sample_id": sid, "cycle": cycle, "checkpoint": cycle, "iou": 0.5 + 0.1 * k + cycle / 10}
                              for k, sid in enumerate(val)], name=f"val_c{cycle:03d}")
    return store


def run_recipe(index: int, store: RunStore) -> tuple[dict, list]:
    """Execute recipe ``index`` on ``store``; its namespace and what it printed (the objects)."""
    code = recipes()[index]
    assert f'run = "{RUN}"' in code
    printed: list = []
    namespace = {"print": lambda *args: printed.append(args[0] if len(args) == 1 else args)}
    exec(compile(code.replace(RUN, store.uri), f"README.md recipe {index + 1}", "exec"), namespace)
    assert printed, "the recipe printed nothing"
    return namespace, printed


def test_the_section_has_the_four_recipes_each_short() -> None:
    found = recipes()
    assert len(found) == 4
    for code, library in zip(found, ("zarr", "xarray", "dask", "duckdb")):
        assert f"import {library}" in code or f"{library} as" in code or f", {library}" in code
        assert len(code.strip().splitlines()) <= 8


def test_zarr_and_pyarrow_recipe_finds_a_samples_image_and_mask(demo) -> None:
    ns, printed = run_recipe(0, demo)
    sid = ns["p"]["sample_id"]
    image, mask = demo.view(sample_ids=[sid])[0]
    assert np.array_equal(ns["batch"]["image"][ns["i"]], image)
    assert np.array_equal(ns["batch"]["mask"][ns["i"]], mask)
    assert printed[0][0] == sid and printed[0][2] == image.shape


def test_xarray_recipe_gives_one_array_of_a_size_indexed_by_sample_id(demo) -> None:
    ns, printed = run_recipe(1, demo)
    ds = ns["ds"]
    train = demo.view(split="train")  # the 128 px samples; the 64 px batch is left out
    assert ds.sample.values.tolist() == train.sample_ids.tolist()
    assert ds.image.dims == ("sample", "y", "x") and ds.image.shape == (6, 128, 128)
    for i in (0, 4):
        sid = int(train.sample_ids[i])
        image, mask = train[i]
        assert np.array_equal(ds.image.sel(sample=sid).values, image)
        assert np.array_equal(ds.mask.sel(sample=sid).values, mask)
    assert ds.attrs["generator"] == "grains" and ds.attrs["size"] == 128 and ds.attrs["split"] == "train"
    assert "batch" not in ds.attrs  # it differs between the batches
    assert printed == [ds]


def test_dask_recipe_gives_the_mean_grey_of_every_training_image(demo) -> None:
    _, printed = run_recipe(2, demo)
    train = demo.view(split="train")
    expected = {int(sid): round(float(train[i][0].mean()), 1) for i, sid in enumerate(train.sample_ids)}
    assert printed == [expected]


def test_duckdb_recipe_joins_parameters_and_scores(demo) -> None:
    _, printed = run_recipe(3, demo)
    rows = printed[0].fetchall()
    params = demo.params(split="val")
    thickness = dict(zip(params["sample_id"].to_pylist(), params["boundary_thickness"].to_pylist()))
    metrics = demo.metrics()
    expected = {}
    for sid, cycle, iou in zip(*(metrics[c].to_pylist() for c in ("sample_id", "cycle", "iou"))):
        expected.setdefault((cycle, float(np.floor(thickness[sid] + 0.5))), []).append(iou)  # SQL rounds half up
    assert sorted((c, bt, n) for c, bt, _, n in rows) == sorted((c, bt, len(v)) for (c, bt), v in expected.items())
    for cycle, bt, iou, _ in rows:
        assert iou == pytest.approx(np.mean(expected[(cycle, bt)]), abs=5e-4)
