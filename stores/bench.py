"""Throughput of the store: writing, reading for training, and querying.

``bench_store`` measures, on the disk of ``workdir``:

* writing 512 x 512 uint8 images and masks with 2 writer processes, against ``numpy.save``
  of the same bytes (uncompressed) with 2 processes; both flush to disk (fsync) per batch;
* reading samples (image + target) in random order from one process, at 128 and 512 px;
* a GROUP BY over the ``samples`` view of 1,000,000 parameter rows with 1,000,000 metric rows.

Images come from the ``grains`` generator when it is registered, else from a local stand-in
(Voronoi grains with dark boundaries, blurred, with textured noise): compressible like a
micrograph, neither zeros nor pure noise.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from typing import Any

import numpy as np
import pyarrow as pa
from scipy import ndimage
from scipy.spatial import cKDTree

from generators.space import Choice, Continuous, Integer, LogRange, ParamSpace
from stores.query import query
from stores.store import RunStore
from stores.tables import METRICS_DIR, PARAMS_DIR, build_metrics_table, build_params_table, now, \
    params_fragment_name, to_parquet_bytes

TARGETS = {"write_ratio": 0.7, "read_128px_samples_per_s": 1500.0, "read_512px_samples_per_s": 300.0,
           "query_1m_rows_s": 2.0}
STAND_IN_SPACE = ParamSpace([
    Continuous("boundary_thickness", "px", "width of grain boundaries", 0.5, 4.0),
    LogRange("grain_size", "px", "mean grain diameter", 8.0, 128.0),
    Integer("n_phases", "", "number of phases", 1, 3),
    Choice("texture", "", "surface texture", ("smooth", "rough")),
])


def stand_in_sample(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A micrograph-like (image, boundary mask) pair: Voronoi grains, dark boundaries, blur, noise."""
    n_grains = int(rng.integers(20, 60))
    seeds = rng.random((n_grains, 2)) * size
    yy, xx = np.mgrid[0:size, 0:size]
    _, label = cKDTree(seeds).query(np.stack([yy.ravel(), xx.ravel()], axis=1))
    label = label.reshape(size, size)
    boundary = (np.diff(label, axis=0, prepend=label[:1]) != 0) | (np.diff(label, axis=1, prepend=label[:, :1]) != 0)
    boundary = ndimage.binary_dilation(boundary, iterations=max(1, size // 256))
    levels = rng.uniform(90, 200, n_grains)
    image = levels[label] - 70 * boundary
    texture = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), size / 64)
    image = ndimage.gaussian_filter(image, 1.0) + 12 * texture / (texture.std() + 1e-9)
    image += rng.normal(0, 3, (size, size))
    return np.clip(image, 0, 255).astype(np.uint8), boundary.astype(np.uint8)


def _source(size: int, count: int, seed: int) -> tuple[np.ndarray, np.ndarray, ParamSpace, str]:
    """``count`` (images, masks) of ``size`` px, the space their rows use, and where they came from."""
    from generators.registry import available, get_generator

    try:
        import generators.grains  # noqa: F401  (registers "grains" when that module exists)
    except ModuleNotFoundError as exc:
        if exc.name != "generators.grains":
            raise
    rng = np.random.default_rng(seed)
    if "grains" in available():
        gen = get_generator("grains")
        params = gen.space.sample(rng, count)
        samples = [gen.render(p, int(s), size) for p, s in zip(params, rng.integers(0, 2**31, count))]
        masks = [s.mask if s.mask is not None else np.zeros((size, size), np.uint8) for s in samples]
        return np.stack([s.image for s in samples]), np.stack(masks), gen.space, "grains"
    pairs = [stand_in_sample(rng, size) for _ in range(count)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]), STAND_IN_SPACE, "stand-in"


def _rows(space: ParamSpace, ids: np.ndarray, rng: np.random.Generator, cycle: int = 0) -> pa.Table:
    """A parameter table for ``ids`` (columns drawn uniformly from ``space``, vectorised)."""
    n = len(ids)
    u = rng.random((n, len(space)))
    columns: dict[str, Any] = {"sample_id": ids, "cycle": np.full(n, cycle, np.int32),
                               "split": np.where(ids % 5 == 0, "val", "train"), "policy": ["random"] * n,
                               "seed": ids + 1}
    for j, dim in enumerate(space):
        columns[dim.name] = dim.from_unit(u[:, j])
    return pa.table(columns)


def _create(path: str, space: ParamSpace) -> RunStore:
    return RunStore.create(path, generator_name="bench", generator_version="0", task="segmentation",
                           space=space, config={"purpose": "bench"})


# --- write ------------------------------------------------------------------------------------

def _store_writer(uri: str, pool_path: str, batches: list[int], per_batch: int, barrier: Any, out: Any) -> None:
    store = RunStore.open(uri)
    pool = np.load(pool_path)
    images, masks = pool[0], pool[1]
    rng = np.random.default_rng(batches[0])
    work = []
    for b in batches:
        pick = rng.integers(0, len(images), per_batch)
        work.append((b, _rows(store.space, np.arange(b * per_batch, (b + 1) * per_batch), rng),
                     images[pick], masks[pick]))
    barrier.wait(timeout=300)
    start = time.perf_counter()
    for b, rows, im, ma in work:
        store.write_batch(b, rows, im, ma)
    out.put(time.perf_counter() - start)


def _numpy_writer(folder: str, pool_path: str, batches: list[int], per_batch: int, barrier: Any, out: Any) -> None:
    pool = np.load(pool_path)
    images, masks = pool[0], pool[1]
    rng = np.random.default_rng(batches[0])
    work = []
    for b in batches:
        pick = rng.integers(0, len(images), per_batch)
        work.append((b, images[pick], masks[pick]))
    barrier.wait(timeout=300)
    start = time.perf_counter()
    for b, im, ma in work:
        for name, array in (("image", im), ("mask", ma)):
            with open(os.path.join(folder, f"{name}{b:06d}.npy"), "wb") as f:
                np.save(f, array)
                f.flush()
                os.fsync(f.fileno())
    out.put(time.perf_counter() - start)


def _two_processes(target: Any, first_arg: str, pool_path: str, n_batches: int, per_batch: int) -> float:
    """Run ``target`` in 2 spawned processes on interleaved batches; the slower one's seconds."""
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=target, args=(first_arg, pool_path, list(range(w, n_batches, 2)), per_batch,
                                              barrier, out)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"bench writer process exited with {p.exitcode}")
    return max(out.get(timeout=10) for _ in procs)


def bench_write(workdir: str, quick: bool = False) -> dict[str, float]:
    """MB/s (of uncompressed image + mask bytes) of the store and of ``numpy.save``, 2 processes each."""
    size, per_batch = 512, 16
    n_batches = 4 if quick else 12
    images, masks, space, source = _source(size, 8, seed=1)
    pool_path = os.path.join(workdir, "pool.npy")
    np.save(pool_path, np.stack([images, masks]))
    megabytes = 2 * n_batches * per_batch * size * size / 1e6
    best_store = best_numpy = float("inf")
    for attempt in range(1 if quick else 2):
        folder = os.path.join(workdir, f"npy{attempt}")
        os.makedirs(folder)
        best_numpy = min(best_numpy, _two_processes(_numpy_writer, folder, pool_path, n_batches, per_batch))
        store = _create(os.path.join(workdir, f"write{attempt}"), space)
        best_store = min(best_store, _two_processes(_store_writer, store.uri, pool_path, n_batches, per_batch))
    return {"write_mb_per_s": megabytes / best_store, "numpy_save_mb_per_s": megabytes / best_numpy,
            "write_ratio": best_numpy / best_store, "image_source": source}


# --- read -------------------------------------------------------------------------------------

def bench_read(workdir: str, size: int, n_samples: int) -> float:
    """Samples/s reading (image, mask) in random order from one process, ``size`` px."""
    per_batch = 64
    images, masks, space, _ = _source(size, 16, seed=2)
    store = _create(os.path.join(workdir, f"read{size}"), space)
    rng = np.random.default_rng(3)
    for b in range(-(-n_samples // per_batch)):
        ids = np.arange(b * per_batch, min((b + 1) * per_batch, n_samples))
        pick = rng.integers(0, len(images), len(ids))
        store.write_batch(b, _rows(space, ids, rng), images[pick], masks[pick])
    view = RunStore.open(store.uri).view()
    order = rng.permutation(len(view))
    start = time.perf_counter()
    for i in order:
        view[int(i)]
    return len(order) / (time.perf_counter() - start)


# --- query ------------------------------------------------------------------------------------

def bench_query(workdir: str, n_rows: int = 1_000_000, per_fragment: int = 50_000) -> float:
    """Seconds for ``query`` (open, views, GROUP BY) over ``n_rows`` parameter rows and as many metric rows."""
    _, _, space, _ = _source(32, 1, seed=4)
    store = _create(os.path.join(workdir, "query"), space)
    rng = np.random.default_rng(5)
    created = now()
    for b in range(-(-n_rows // per_fragment)):
        ids = np.arange(b * per_fragment, min((b + 1) * per_fragment, n_rows))
        # Parameter fragments only: the query does not read images.
        table = build_params_table(_rows(space, ids, rng), batch=b, space=space, task="segmentation",
                                   generator_name="bench", generator_version="0", created_at=created)
        store._location.commit_bytes(f"{PARAMS_DIR}/{params_fragment_name(b)}", to_parquet_bytes(table))
        metrics = build_metrics_table(pa.table({"sample_id": ids, "cycle": np.zeros(len(ids), np.int32),
                                                "checkpoint": ["final"] * len(ids), "iou": rng.random(len(ids))}),
                                      reserved=store.params_schema.names, created_at=created)
        store._location.commit_bytes(f"{METRICS_DIR}/m{b:04d}.parquet", to_parquet_bytes(metrics))
    column = next(d.name for d in space if isinstance(d, Continuous))
    sql = f"SELECT round({column}, 1) AS bin, avg(iou) AS iou, count(*) AS n FROM samples GROUP BY 1 ORDER BY 2"
    start = time.perf_counter()
    result = query(store.uri, sql)
    elapsed = time.perf_counter() - start
    if sum(result["n"].to_pylist()) != n_rows:
        raise RuntimeError(f"bench query counted {sum(result['n'].to_pylist())} rows, expected {n_rows}")
    return elapsed


def bench_store(workdir: str | None = None, quick: bool = False) -> dict[str, Any]:
    """Measure the store's write, read and query throughput; keys name the figure and its unit.

    ``workdir`` is where the temporary runs go (the disk measured; default: the system's
    temporary folder). ``quick`` shrinks the write and read sizes (the query always covers
    1,000,000 rows). ``targets`` holds the design targets for comparison.
    """
    with tempfile.TemporaryDirectory(prefix="synthloop-bench-", dir=workdir) as tmp:
        result: dict[str, Any] = bench_write(tmp, quick)
        result["read_128px_samples_per_s"] = bench_read(tmp, 128, 500 if quick else 3000)
        result["read_512px_samples_per_s"] = bench_read(tmp, 512, 128 if quick else 600)
        result["query_1m_rows_s"] = bench_query(tmp)
    result["targets"] = dict(TARGETS)
    return result


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(bench_store(quick="--quick" in sys.argv), indent=2))
