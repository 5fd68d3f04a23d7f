"""What ``images.zarr`` says about itself, for readers that know nothing of synthloop.

The root group's attributes say whose images these are and how they are laid out; each batch
group's attributes say which batch it is (generator, version, cycle, split, size, ...) and
its ``sample_id`` array names the sample of each row. The root's consolidated metadata (one
read gives every group's and array's metadata) is refreshed by :func:`consolidate` when a
cycle ends; it lists the batches present then, so a reader that must see a running cycle's
batches opens the groups by path, as the README's recipes do.

Batches written before groups described themselves get their ``sample_id`` array and
attributes from the parameter table the next time the run's owner consolidates.
"""

from __future__ import annotations

import warnings
from typing import Any

import pyarrow as pa
import zarr
from zarr.errors import ZarrUserWarning

from stores.errors import StoreError
from stores.images import IMAGE, MASK, SAMPLE_ID, ZARR_DIR, batch_group, write_sample_ids
from stores.location import Location, fsync_path
from stores.runfile import FORMAT_VERSION, RunInfo
from stores.tables import METRICS_DIR, PARAMS_DIR, params_fragment_name

FORMAT_KEY = "synthloop_format"
"""Attribute holding the store's format version; a batch group without it predates the attributes."""

_ARRAYS = {
    SAMPLE_ID: "int64 (sample): the sample id of each row; the key of the parameter and metric tables",
    IMAGE: "uint8 (sample, y, x): the synthetic image",
    MASK: "uint8 (sample, y, x): the pixel mask (class per pixel)",
}


def root_attributes(info: RunInfo) -> dict[str, Any]:
    """Attributes of the ``images.zarr`` root group of a run described by ``info``."""
    return {
        FORMAT_KEY: FORMAT_VERSION,
        "generator": info.generator_name,
        "generator_version": info.generator_version,
        "task": info.task,
        "description": (
            "Images of a synthloop run: one group per batch (bNNNNNN), each with a sample_id array and "
            f"image{' and mask' if info.task == 'segmentation' else ''} arrays along 'sample'. A batch is "
            f"committed only when ../{PARAMS_DIR}/bNNNNNN.parquet exists (a group without it is an "
            f"unfinished write); the parameters of each sample are in ../{PARAMS_DIR}/*.parquet and its "
            f"scores in ../{METRICS_DIR}/*.parquet, both keyed by sample_id."),
    }


def batch_attributes(info: RunInfo, batch: int, table: pa.Table, shape: tuple[int, ...],
                     arrays: list[str]) -> dict[str, Any]:
    """Attributes of batch ``batch``'s group: ``table`` is its parameter rows, ``shape`` (n, H, W)
    its images' shape and ``arrays`` the names of its image arrays.

    ``cycle``, ``split`` and ``policy`` are single values when the batch has one (as every batch
    the loop writes does), else lists of the distinct values; ``size`` is the image side in
    pixels, or ``[height, width]`` for images that are not square.
    """
    n, h, w = shape
    return {
        FORMAT_KEY: FORMAT_VERSION,
        "batch": int(batch),
        "generator": info.generator_name,
        "generator_version": info.generator_version,
        "task": info.task,
        "cycle": _one_or_all(table["cycle"]),
        "split": _one_or_all(table["split"]),
        "policy": _one_or_all(table["policy"]),
        "size": int(h) if h == w else [int(h), int(w)],
        "params": f"{PARAMS_DIR}/{params_fragment_name(batch)}",
        "arrays": {name: _ARRAYS[name] for name in (SAMPLE_ID, *arrays) if name in _ARRAYS},
        "description": (
            f"Batch {batch} of a synthloop run: {n} synthetic {info.generator_name} samples; row i of every "
            f"array is the sample sample_id[i], whose parameters are the row of {PARAMS_DIR}/"
            f"{params_fragment_name(batch)} (relative to the run) with that sample_id."),
    }


def _one_or_all(column: pa.ChunkedArray) -> Any:
    values = sorted(set(column.to_pylist()))
    return values[0] if len(values) == 1 else values


def consolidate(location: Location, info: RunInfo, batches: dict[int, pa.Table]) -> list[int]:
    """Describe every committed batch and refresh the consolidated metadata of ``images.zarr``.

    ``batches`` maps each committed batch to its parameter rows. A batch group without its
    ``sample_id`` array or attributes (written before they existed) gets them from its rows;
    the root's attributes are set; then the root's consolidated metadata is rewritten. Only the
    run's owner calls it, while no writer runs. Returns the batches it described anew.
    """
    store = location.zarr_store(ZARR_DIR)
    root = zarr.open_group(store, mode="r+", zarr_format=3, use_consolidated=False)
    described = []
    for batch, table in sorted(batches.items()):
        try:
            group = zarr.open_group(store, path=batch_group(batch), mode="r+", zarr_format=3,
                                    use_consolidated=False)
        except FileNotFoundError:
            raise StoreError(f"{location.url(ZARR_DIR, batch_group(batch))}: batch {batch} is committed but "
                             "its image group is missing; the image data is damaged") from None
        if FORMAT_KEY in group.attrs and SAMPLE_ID in group.array_keys():
            continue
        arrays = [name for name in (IMAGE, MASK) if name in group.array_keys()]
        write_sample_ids(group, table["sample_id"].to_numpy())
        shape = tuple(group[IMAGE].shape)
        group.update_attributes(batch_attributes(info, batch, table, shape, arrays))
        location.sync_tree(f"{ZARR_DIR}/{batch_group(batch)}")
        described.append(batch)
    wanted = root_attributes(info)
    if dict(root.attrs) != wanted:
        root.update_attributes(wanted)
    with warnings.catch_warnings():
        # zarr notes that consolidated metadata is not (yet) part of the v3 spec; zarr and xarray read it.
        warnings.filterwarnings("ignore", category=ZarrUserWarning, message="Consolidated metadata")
        zarr.consolidate_metadata(store)
    if location.local:
        fsync_path(location.join(ZARR_DIR, "zarr.json"))
        fsync_path(location.join(ZARR_DIR))
    return described

