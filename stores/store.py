"""``RunStore``: one run's dataset store (images, parameter table, metric tables).

Layout below the run's root::

    run.toml              frozen config (generator, space, caller's config)
    images.zarr/bNNNNNN/  image (and mask) arrays of batch NNNNNN
    params/bNNNNNN.parquet   parameter fragment of a committed batch
    metrics/NAME.parquet     metric fragments

Writing a batch: validate everything, claim the batch (an exclusive ``params/.bNNNNNN.claim``
file, so two writers of one batch cannot both write its arrays), write and flush the arrays,
then commit the parameter fragment (link-or-fail). A batch is visible only once its fragment
is committed. Several processes may write different batches at once; the owner of the run
(the loop driver) opens it with ``recover=True`` while no writer runs, which removes what
killed writers left behind.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import socket
import threading
import uuid
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from generators.space import ParamSpace
from stores.dataset import DatasetView
from stores.errors import StoreError
from stores.images import IMAGE, MASK, ZARR_DIR, ImageArrays, check_stack
from stores.location import Location, pid_alive
from stores.runfile import RUNFILE, RunInfo, read_runfile, write_runfile
from stores.tables import (
    METRIC_KEY_FIELDS, METRICS_DIR, PARAMS_DIR, SPLITS, build_metrics_table, build_params_table,
    check_space_names,
    check_metrics_name, check_metrics_schema, check_params_schema, now, params_fragment_name,
    params_schema, parse_params_fragment, read_fragment, to_parquet_bytes,
)

logger = logging.getLogger(__name__)


class RunStore:
    """The dataset store of one run. Build it with :meth:`create` or :meth:`open`."""

    def __init__(self, location: Location, info: RunInfo):
        check_space_names(info.space)
        self._location = location
        self._info = info
        self._images = ImageArrays(location)
        self._schema = params_schema(info.space)
        self._lock = threading.RLock()
        self._fragments: dict[int, pa.Table] = {}
        self._params_cache: tuple[tuple[int, ...], pa.Table, np.ndarray] | None = None
        self._metric_fragments: dict[str, pa.Table] = {}
        self.recovered: list[int] = []
        """Batches whose partial data :meth:`open` with ``recover=True`` removed."""
        self.removed_files: list[str] = []
        """Stray temporary and claim files (relative paths) that recovery removed."""

    # --- opening -------------------------------------------------------------------------------

    @classmethod
    def create(cls, uri: str | os.PathLike[str], *, generator_name: str, generator_version: str, task: str,
               space: ParamSpace, config: Mapping[str, Any]) -> "RunStore":
        """Create a new, empty run at ``uri`` (a path or fsspec URI); :class:`StoreError` if one exists.

        ``config`` is stored as given in ``run.toml`` (it must be TOML-writable: no ``None``).
        ``run.toml`` is written last, so a half-created run is not a run.
        """
        location = Location(uri)
        info = RunInfo(generator_name=generator_name, generator_version=generator_version, task=task,
                       space=space, config=copy.deepcopy(dict(config)) if isinstance(config, Mapping) else config)
        for name in (RUNFILE, ZARR_DIR, PARAMS_DIR, METRICS_DIR):
            if location.exists(name):
                raise StoreError(f"{location.url(name)}: already exists; a new run needs an empty location")
        check_space_names(space)
        info.to_toml()  # fails early on a config that TOML cannot hold, before anything is written
        for name in ("", PARAMS_DIR, METRICS_DIR):
            location.makedirs(name)
        ImageArrays(location).create()
        write_runfile(location, info)
        return cls(location, info)

    @staticmethod
    def exists(uri: str | os.PathLike[str]) -> bool:
        """Whether ``uri`` holds a run (its ``run.toml``), whatever its state."""
        return Location(uri).exists(RUNFILE)

    @classmethod
    def open(cls, uri: str | os.PathLike[str], *, recover: bool = False) -> "RunStore":
        """Open the run at ``uri``.

        With ``recover=True`` (only the run's owner, while no writer runs), remove the arrays of
        batches that have no committed fragment and stray temporary/claim files; the batches
        are listed in :attr:`recovered` (and logged as warnings).
        """
        location = Location(uri)
        store = cls(location, read_runfile(location))
        if recover:
            store._recover()
        return store

    def _recover(self) -> None:
        committed = set(self.committed_batches())
        partial = set(b for b in self._images.present() if b not in committed)
        stray = []
        for folder in (PARAMS_DIR, METRICS_DIR):
            for name in self._location.listdir(folder):
                if name.startswith(".") and (name.endswith(".tmp") or name.endswith(".claim")):
                    stray.append(f"{folder}/{name}")
                    batch = parse_params_fragment(name[1:-len(".claim")] + ".parquet") if name.endswith(".claim") else None
                    if batch is not None and batch not in committed:
                        partial.add(batch)
        for batch in sorted(partial):
            logger.warning("run %s: batch %d was not committed (a writer stopped mid-batch); "
                           "removing its partial data", self.uri, batch)
            self._images.delete(batch)
        for rel in stray:
            logger.warning("run %s: removing stray file %s", self.uri, rel)
            self._location.remove(rel)
        self.recovered = sorted(partial)
        self.removed_files = stray

    # --- what the run is -----------------------------------------------------------------------

    @property
    def uri(self) -> str:
        """The run's location (absolute path when local, else the URI)."""
        return self._location.uri

    @property
    def space(self) -> ParamSpace:
        """The generator's parameter space, as frozen in ``run.toml``."""
        return self._info.space

    @property
    def generator_name(self) -> str:
        """Name of the run's generator."""
        return self._info.generator_name

    @property
    def generator_version(self) -> str:
        """Version of the run's generator."""
        return self._info.generator_version

    @property
    def task(self) -> str:
        """``"segmentation"`` or ``"classification"``."""
        return self._info.task

    @property
    def config(self) -> dict[str, Any]:
        """A copy of the caller's config stored in ``run.toml``."""
        return copy.deepcopy(dict(self._info.config))

    @property
    def params_schema(self) -> pa.Schema:
        """Schema of the parameter table."""
        return self._schema

    def __repr__(self) -> str:
        return f"RunStore({self.uri!r}, generator={self.generator_name!r})"

    # --- batches -------------------------------------------------------------------------------

    def has_batch(self, batch: int) -> bool:
        """Whether ``batch`` is committed."""
        return self._location.exists(PARAMS_DIR, params_fragment_name(_check_batch(batch)))

    def committed_batches(self) -> list[int]:
        """Committed batch numbers, ascending.

        A visible file in ``params/`` that is not a fragment name raises :class:`StoreError`.
        """
        batches = []
        for name in self._location.listdir(PARAMS_DIR):
            if name.startswith("."):
                continue
            batch = parse_params_fragment(name)
            if batch is None:
                raise StoreError(f"{self._location.url(PARAMS_DIR, name)}: not a fragment of this run "
                                 "(expected bNNNNNN.parquet); remove it")
            batches.append(batch)
        return sorted(batches)

    def write_batch(self, batch: int, rows: Sequence[Mapping[str, Any]] | pa.Table, images: np.ndarray,
                    masks: np.ndarray | None = None) -> None:
        """Write and commit one batch: its rows, images (n, H, W) uint8 and masks.

        ``rows`` carry ``sample_id, cycle, split, policy, parent_id, seed, label`` (the last
        two optional) and every parameter of the space; the store adds ``batch``,
        ``generator``, ``generator_version`` and ``created_at``. Everything is checked before
        anything is written; a failed write leaves the store as it was. Raises
        :class:`StoreError` if the batch or one of its sample ids is already committed, or if
        another writer holds the batch.
        """
        batch = _check_batch(batch)
        where = f"batch {batch}"
        table = build_params_table(rows, batch=batch, space=self.space, task=self.task,
                                   generator_name=self.generator_name,
                                   generator_version=self.generator_version, created_at=now())
        images = check_stack(f"{where}: images", images, n=table.num_rows)
        arrays = {IMAGE: images}
        if masks is not None:
            arrays[MASK] = check_stack(f"{where}: masks", masks, shape=images.shape)
        elif self.task == "segmentation":
            raise StoreError(f"{where}: masks: missing; a segmentation run stores a mask per image")
        if self.has_batch(batch):
            raise StoreError(f"{where}: already committed")
        self._check_new_ids(table["sample_id"].to_numpy(), where)
        data = to_parquet_bytes(table)

        claim = f"{PARAMS_DIR}/.{params_fragment_name(batch)[:-len('.parquet')]}.claim"
        token = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "token": uuid.uuid4().hex}).encode()
        try:
            self._location.create_exclusive(claim, token)
        except FileExistsError:
            if not self._take_over_stale_claim(claim, batch, token):
                raise StoreError(f"{where}: another writer holds it ({self._location.url(claim)} exists; if that "
                             "writer was killed, reopen the run with recover=True)") from None
        wrote = committed = False
        try:
            if self.has_batch(batch):  # committed by another writer between the check and the claim
                raise StoreError(f"{where}: already committed")
            wrote = True
            self._images.write(batch, arrays)
            try:
                self._location.commit_bytes(f"{PARAMS_DIR}/{params_fragment_name(batch)}", data)
            except FileExistsError:
                raise StoreError(f"{where}: already committed by another writer") from None
            committed = True
        finally:
            if wrote and not committed:
                self._images.delete(batch)
            self._location.remove(claim)
        with self._lock:
            self._fragments[batch] = table

    def _take_over_stale_claim(self, claim: str, batch: int, token: bytes) -> bool:
        """Take the claim of a writer that died on this host (its pid is gone); True on success.

        This is what lets a batch whose worker was killed be redone by a retry. Claims of
        other hosts are never taken over: only the run owner's recovery removes those.
        """
        try:
            holder = json.loads(self._location.read_bytes(claim))
        except (FileNotFoundError, ValueError):
            return False
        if holder.get("host") != socket.gethostname() or pid_alive(int(holder.get("pid", -1))):
            return False
        logger.warning("batch %d: taking over the claim of dead writer pid %s", batch, holder.get("pid"))
        self._images.delete(batch)
        self._location.remove(claim)
        try:
            self._location.create_exclusive(claim, token)
        except FileExistsError:
            return False
        return True

    def _check_new_ids(self, ids: np.ndarray, where: str) -> None:
        known = self._params_with_rows()[0]["sample_id"].to_numpy()
        clash = ids[np.isin(ids, known)]
        if len(clash):
            raise StoreError(f"{where}, column 'sample_id': id {int(clash[0])} is already committed "
                             f"({len(clash)} of the batch's ids are); expected new ids")

    # --- tables --------------------------------------------------------------------------------

    def _params_with_rows(self) -> tuple[pa.Table, np.ndarray]:
        """All committed rows in (batch, row) order, and each row's index in its batch's arrays."""
        batches = tuple(self.committed_batches())
        with self._lock:
            if self._params_cache is not None and self._params_cache[0] == batches:
                return self._params_cache[1], self._params_cache[2]
            for batch in batches:
                if batch not in self._fragments:
                    self._fragments[batch] = self._read_params_fragment(batch)
            tables = [self._fragments[b] for b in batches]
            table = pa.concat_tables(tables) if tables else self._schema.empty_table()
            rows = np.concatenate([np.arange(t.num_rows) for t in tables]) if tables else np.zeros(0, np.int64)
            self._params_cache = (batches, table, rows)
            return table, rows

    def _read_params_fragment(self, batch: int) -> pa.Table:
        rel = f"{PARAMS_DIR}/{params_fragment_name(batch)}"
        path = self._location.url(rel)
        table = read_fragment(self._location, rel)
        check_params_schema(table.schema, self._schema, path)
        if table.num_rows == 0 or not pc.all(pc.equal(table["batch"], batch)).as_py():
            raise StoreError(f"{path}: column 'batch' does not hold {batch} in every row")
        return table.cast(self._schema)

    def params(self, split: str | None = None, cycle: int | None = None) -> pa.Table:
        """The committed parameter table, optionally only one split and/or one cycle."""
        table, _ = self._params_with_rows()
        mask = _filter_mask(table, split, None if cycle is None else [cycle])
        return table if mask is None else table.filter(mask)

    def _list_metrics(self) -> list[str]:
        """Names of the committed metric fragments (file names without ``.parquet``)."""
        names = []
        for name in self._location.listdir(METRICS_DIR):
            if name.startswith("."):
                continue
            if not name.endswith(".parquet"):
                raise StoreError(f"{self._location.url(METRICS_DIR, name)}: not a metric fragment; remove it")
            names.append(name[:-len(".parquet")])
        return names

    def _metric_names(self) -> list[str]:
        """Committed metric fragment names, oldest first (by created_at, then name); loads them."""
        names = self._list_metrics()
        with self._lock:
            for name in names:
                if name not in self._metric_fragments:
                    rel = f"{METRICS_DIR}/{name}.parquet"
                    table = read_fragment(self._location, rel)
                    check_metrics_schema(table.schema, self._location.url(rel))
                    self._metric_fragments[name] = table
            return sorted(names, key=lambda n: (self._metric_fragments[n]["created_at"][0].value, n))

    def _metric_fragments_in_order(self) -> list[tuple[str, pa.Table]]:
        """``(name, table)`` of every committed metric fragment, oldest first (for queries)."""
        names = self._metric_names()
        with self._lock:
            return [(n, self._metric_fragments[n]) for n in names]

    def metric_fragment_names(self) -> list[str]:
        """Names of the committed metric fragments, oldest first."""
        return self._metric_names()

    @property
    def location(self) -> Location:
        """Where the run lives: reads and writes of the run's other files go through it."""
        return self._location

    def path(self, *parts: str) -> str:
        """URI of ``parts`` below the run (checkpoints, reports, journal): the run's other files."""
        return self._location.url(*parts)

    def metrics(self) -> pa.Table:
        """All metric rows, oldest fragment first; metric columns are the union over fragments
        (null where a fragment lacks one). With no metrics: the key columns, no rows."""
        names = self._metric_names()
        if not names:
            return pa.schema(list(METRIC_KEY_FIELDS)).empty_table()
        return pa.concat_tables([self._metric_fragments[n] for n in names], promote_options="default")

    def append_metrics(self, table: pa.Table | Sequence[Mapping[str, Any]], name: str | None = None) -> str:
        """Commit a metric fragment and return its name.

        Columns: ``sample_id``, ``cycle``, ``checkpoint`` (string or int, stored as a string)
        and any metric columns (numbers, stored as float64). Every sample id must be committed
        and appear once. ``name`` (default: time-ordered and unique) must be new.
        """
        created_at = now()
        if name is None:
            name = f"{created_at:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}"
        check_metrics_name(name)
        where = f"metrics {name!r}"
        out = build_metrics_table(table, reserved=self._schema.names, created_at=created_at, where=where)
        known = self._params_with_rows()[0]["sample_id"].to_numpy()
        ids = out["sample_id"].to_numpy()
        unknown = ids[~np.isin(ids, known)]
        if len(unknown):
            raise StoreError(f"{where}, column 'sample_id': {len(unknown)} ids are not committed samples "
                             f"(first: {unknown[:5].tolist()})")
        try:
            self._location.commit_bytes(f"{METRICS_DIR}/{name}.parquet", to_parquet_bytes(out))
        except FileExistsError:
            raise StoreError(f"{where}: a metric fragment of that name already exists") from None
        with self._lock:
            self._metric_fragments[name] = out
        return name

    # --- reading for training ------------------------------------------------------------------

    def view(self, split: str | None = None, cycles: int | Iterable[int] | None = None,
             sample_ids: Iterable[int] | None = None) -> DatasetView:
        """Committed samples for training or evaluation, with random access by index.

        Filters combine; with ``sample_ids`` the view keeps their order (an id that is not
        committed, or filtered out, raises :class:`StoreError`), else committed order.
        """
        table, rows = self._params_with_rows()
        if cycles is not None:
            cycles = [cycles] if isinstance(cycles, (int, np.integer)) else list(cycles)
        mask = _filter_mask(table, split, cycles)
        if mask is not None:
            keep = mask.to_numpy(zero_copy_only=False)
            table, rows = table.filter(mask), rows[keep]
        if sample_ids is not None:
            wanted = np.asarray(list(sample_ids), dtype=np.int64)
            have = table["sample_id"].to_numpy()
            order = np.argsort(have, kind="stable")
            pos = np.minimum(np.searchsorted(have[order], wanted), max(len(have) - 1, 0))
            found = order[pos] if len(have) else pos
            missing = wanted[have[found] != wanted] if len(have) else wanted
            if len(missing):
                raise StoreError(f"view: sample ids {missing[:5].tolist()} are not committed "
                                 f"(or not in split={split!r}, cycles={cycles!r})")
            table, rows = table.take(pa.array(found)), rows[found]
        return DatasetView(self.uri, self.task, table, rows)


def _check_batch(batch: Any) -> int:
    if isinstance(batch, (bool, np.bool_)) or not isinstance(batch, (int, np.integer)) or batch < 0:
        raise StoreError(f"batch: expected an integer >= 0, got {batch!r}")
    return int(batch)


def _filter_mask(table: pa.Table, split: str | None, cycles: list[int] | None) -> pa.ChunkedArray | None:
    mask = None
    if split is not None:
        if split not in SPLITS:
            raise StoreError(f"split: expected one of {', '.join(SPLITS)} or None, got {split!r}")
        mask = pc.equal(table["split"], split)
    if cycles is not None:
        if not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in cycles):
            raise StoreError(f"cycles: expected integers, got {cycles!r}")
        in_cycles = pc.is_in(table["cycle"], value_set=pa.array([int(c) for c in cycles], pa.int32()))
        mask = in_cycles if mask is None else pc.and_(mask, in_cycles)
    return mask
