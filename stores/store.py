"""``RunStore``: one run's dataset store (images, parameter table, metric tables).

Layout below the run's root::

    run.toml              frozen config (generator, space, caller's config)
    images.zarr/bNNNNNN/  image (and mask) arrays of batch NNNNNN, its sample ids and attributes
    params/bNNNNNN.parquet   parameter fragment of a committed batch
    metrics/NAME.parquet     metric fragments

Writing a batch: validate everything, claim the batch, write and flush the arrays, check the
claim is still this writer's, then commit the parameter fragment (link-or-fail). A batch is
visible only once its fragment is committed. Several processes may write different batches
at once.

Claims. A claim is a file ``params/.bNNNNNN.claim`` (generation 0) or ``.bNNNNNN-G.claim``
(generation G), created exclusively and holding its writer's pid, host, process start time
and a random token. The batch belongs to the writer of its highest generation. A retry takes
over the batch of a writer that died on this host by creating the next generation: two
retries cannot both create it, and nothing is deleted to take over. A writer removes only its
own claim (after checking its token), deletes arrays only while it owns an uncommitted batch,
and never deletes the arrays of a committed batch; the writer that commits removes the
batch's claims. Claims of uncommitted batches are otherwise removed only by recovery.

Recovery (``open(recover=True)``) removes what killed writers left behind: the arrays of
uncommitted batches, their claims and stray temporary files. Only the run's owner runs it,
holding the run lock (``loop.run.lock.RunLock``), so that no other writer runs meanwhile; even
so it leaves alone a batch whose claim's writer is alive on this host.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import socket
import threading
import uuid
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from generators.space import ParamSpace
from stores.dataset import DatasetView
from stores.describe import batch_attributes, consolidate, root_attributes
from stores.errors import StoreError
from stores.images import IMAGE, MASK, ZARR_DIR, ImageArrays, check_stack
from stores.location import Location, process_start, writer_alive
from stores.runfile import RUNFILE, RunInfo, read_runfile, write_runfile
from stores.tables import (
    METRIC_KEY_FIELDS, METRICS_DIR, PARAMS_DIR, SPLITS, build_metrics_table, build_params_table,
    check_space_names,
    check_metrics_name, check_metrics_schema, check_params_schema, now, params_fragment_name,
    params_schema, parse_params_fragment, read_fragment, to_parquet_bytes,
)

logger = logging.getLogger(__name__)

_CLAIM = re.compile(r"^\.b(\d+)(?:-(\d+))?\.claim$")


def claim_name(batch: int, generation: int = 0) -> str:
    """File name (in ``params/``) of generation ``generation`` of the claim of ``batch``."""
    return f".b{batch:06d}.claim" if generation == 0 else f".b{batch:06d}-{generation}.claim"


def parse_claim_name(name: str) -> tuple[int, int] | None:
    """``(batch, generation)`` of a claim file name, else ``None``."""
    match = _CLAIM.match(name)
    return (int(match.group(1)), int(match.group(2) or 0)) if match else None


class _Claim:
    """This writer's claim of a batch: the file's path and what it holds."""

    def __init__(self, batch: int, generation: int):
        self.batch = batch
        self.generation = generation
        self.rel = f"{PARAMS_DIR}/{claim_name(batch, generation)}"
        self.token = uuid.uuid4().hex
        self.record = {"pid": os.getpid(), "host": socket.gethostname(), "started": process_start(os.getpid()),
                       "token": self.token}

    def data(self) -> bytes:
        return json.dumps(self.record).encode()


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
        ImageArrays(location).create(root_attributes(info))
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
        claims = self._claims()
        live = {b for b, gens in claims.items()
                if b not in committed and _holder_alive(self._read_claim(f"{PARAMS_DIR}/{gens[max(gens)]}"))}
        for batch in sorted(live):
            logger.warning("run %s: batch %d is claimed by a live writer (%s); recovery leaves it alone",
                           self.uri, batch, self._claim_holder(batch, claims[batch]))
        partial = set(b for b in self._images.present() if b not in committed and b not in live)
        partial |= {b for b in claims if b not in committed and b not in live}
        stray = []
        for folder in (PARAMS_DIR, METRICS_DIR):
            for name in self._location.listdir(folder):
                if not name.startswith("."):
                    continue
                claimed = parse_claim_name(name) if folder == PARAMS_DIR else None
                if claimed is not None and claimed[0] in live:
                    continue
                if name.endswith(".tmp") or name.endswith(".claim"):
                    stray.append(f"{folder}/{name}")
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
            raise self._already_committed(batch, table)
        self._check_new_ids(table["sample_id"].to_numpy(), where)
        data = to_parquet_bytes(table)

        claim = self._claim(batch)
        wrote = committed = False
        try:
            if self.has_batch(batch):  # committed by another writer between the check and the claim
                raise self._already_committed(batch, table)
            wrote = True
            self._images.write(batch, arrays, table["sample_id"].to_numpy(),
                               batch_attributes(self._info, batch, table, images.shape, list(arrays)))
            self._check_still_owner(claim)
            try:
                self._location.commit_bytes(f"{PARAMS_DIR}/{params_fragment_name(batch)}", data)
            except FileExistsError:
                raise self._already_committed(batch, table) from None
            committed = True
        finally:
            if committed:
                self._remove_claims(claim)
            else:
                self._give_up(claim, delete_arrays=wrote)
        with self._lock:
            self._fragments[batch] = table

    def consolidate(self) -> list[int]:
        """Refresh ``images.zarr``'s consolidated metadata; the run's owner calls it when a cycle ends.

        Committed batches written before batch groups named their samples get their
        ``sample_id`` array and attributes first (from the parameter table); returns those
        batches. Only the run's owner calls it, holding the run lock, while no writer runs.
        """
        table, _ = self._params_with_rows()
        with self._lock:
            batches = {b: self._fragments[b] for b in np.unique(table["batch"].to_numpy()).tolist()}
        return consolidate(self._location, self._info, batches)

    def has_batch_of(self, batch: int, sample_ids: Sequence[int]) -> bool:
        """Whether ``batch`` is committed holding exactly ``sample_ids`` (a writer's own earlier
        attempt at it); ``False`` when it is not committed.

        Raises :class:`StoreError` naming both when the batch is committed with other samples:
        another writer took that batch number, and its batch is not this writer's.
        """
        batch = _check_batch(batch)
        if not self.has_batch(batch):
            return False
        theirs = self._read_params_fragment(batch)
        wanted = [int(i) for i in sample_ids]
        if theirs["sample_id"].to_pylist() == wanted:
            return True
        raise StoreError(f"batch {batch}: already committed by another writer ({_describe(theirs)}), "
                         f"not the {_describe_ids(wanted)} this writer planned; is another process writing "
                         f"run {self.uri}?")

    def _already_committed(self, batch: int, mine: pa.Table) -> StoreError:
        try:
            theirs = _describe(self._read_params_fragment(batch))
        except StoreError as exc:
            theirs = f"its fragment cannot be read: {exc}"
        return StoreError(f"batch {batch}: already committed by another writer ({theirs}); this writer's "
                          f"batch holds {_describe(mine)}; is another process writing run {self.uri}?")

    # --- claims --------------------------------------------------------------------------------

    def _claims(self, batch: int | None = None) -> dict[int, dict[int, str]]:
        """Claim file names by batch and generation (only ``batch``'s when given)."""
        found: dict[int, dict[int, str]] = {}
        for name in self._location.listdir(PARAMS_DIR):
            parsed = parse_claim_name(name)
            if parsed is not None and (batch is None or parsed[0] == batch):
                found.setdefault(parsed[0], {})[parsed[1]] = name
        return found

    def _read_claim(self, rel: str) -> dict[str, Any] | None:
        """A claim's record; ``None`` when the file is gone; ``{}`` when it is not a claim record."""
        try:
            record = json.loads(self._location.read_bytes(rel))
        except FileNotFoundError:
            return None
        except ValueError:
            return {}
        return record if isinstance(record, dict) else {}

    def _claim_holder(self, batch: int, generations: dict[int, str]) -> str:
        record = self._read_claim(f"{PARAMS_DIR}/{generations[max(generations)]}") or {}
        return f"pid {record.get('pid', '?')} on {record.get('host', '?')}, claim {generations[max(generations)]}"

    def _claim(self, batch: int) -> _Claim:
        """Claim ``batch``: generation 0, or the next one when the holder of the last died on this host."""
        where = f"batch {batch}"
        for _ in range(5):  # the claims may change under us: the holder finishes, another retry takes over
            claim = _Claim(batch, 0)
            try:
                self._location.create_exclusive(claim.rel, claim.data())
                return claim
            except FileExistsError:
                pass
            generations = self._claims(batch).get(batch)
            if not generations:
                continue  # its holder finished meanwhile
            top = max(generations)
            holder = self._read_claim(f"{PARAMS_DIR}/{generations[top]}")
            if holder is None:
                continue
            if not _holder_dead(holder):
                who = (f"pid {holder.get('pid')} on {holder.get('host')}" if holder else "an unreadable claim")
                raise StoreError(f"{where}: another writer holds it ({who}: {self._location.url(PARAMS_DIR, generations[top])}); "
                                 "if that writer was killed on another host, the run's owner must recover the run") from None
            claim = _Claim(batch, top + 1)
            try:
                self._location.create_exclusive(claim.rel, claim.data())
            except FileExistsError:
                raise StoreError(f"{where}: another writer holds it (it took the batch over from dead writer pid "
                                 f"{holder.get('pid')} first)") from None
            logger.warning("batch %d: taking over the claim of dead writer pid %s", batch, holder.get("pid"))
            return claim
        raise StoreError(f"{where}: another writer holds it (its claim kept changing; several writers race for it)")

    def _owns(self, claim: _Claim) -> bool:
        """Whether ``claim`` is still this writer's and the batch's highest generation."""
        record = self._read_claim(claim.rel)
        if not record or record.get("token") != claim.token:
            return False
        return not self._location.exists(PARAMS_DIR, claim_name(claim.batch, claim.generation + 1))

    def _check_still_owner(self, claim: _Claim) -> None:
        if not self._owns(claim):
            raise StoreError(f"batch {claim.batch}: this writer lost its claim ({self._location.url(claim.rel)}) "
                             "while writing: another process removed or took it over; its arrays are left to "
                             "the batch's owner")

    def _give_up(self, claim: _Claim, *, delete_arrays: bool) -> None:
        """After a failed write: delete the arrays if this writer still owns the uncommitted batch,
        and remove its own claim (compare-and-delete: only if it still holds this writer's token)."""
        owner = self._owns(claim)
        if owner and delete_arrays and not self.has_batch(claim.batch):
            self._images.delete(claim.batch)
        record = self._read_claim(claim.rel)
        if record and record.get("token") == claim.token:
            self._location.remove(claim.rel)

    def _remove_claims(self, claim: _Claim) -> None:
        """After the commit: every claim of the batch is spent (a later writer sees it committed).

        They are this writer's and those of the dead writers it took over from (the lower
        generations); none above it exists, as this writer was alive all along.
        """
        for generation in range(claim.generation, -1, -1):
            self._location.remove(f"{PARAMS_DIR}/{claim_name(claim.batch, generation)}")

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


def _holder_alive(record: dict[str, Any] | None) -> bool:
    """Whether a claim's writer runs on this host (a claim of another host counts as not alive here)."""
    if not record or record.get("host") != socket.gethostname():
        return False
    try:
        return writer_alive(int(record.get("pid", -1)), record.get("started"))
    except (TypeError, ValueError):
        return False


def _holder_dead(record: dict[str, Any]) -> bool:
    """Whether a claim's writer is known to be gone: a process of this host that no longer runs."""
    return bool(record) and record.get("host") == socket.gethostname() and not _holder_alive(record)


def _describe_ids(ids: Sequence[int]) -> str:
    ids = list(ids)
    if not ids:
        return "no samples"
    span = f"{ids[0]}" if len(ids) == 1 else f"{ids[0]}..{ids[-1]}"
    return f"sample{'s' if len(ids) > 1 else ''} {span} ({len(ids)})"


def _describe(table: pa.Table) -> str:
    """What a batch holds, for messages: its samples, cycles and policies, and when it was made."""
    cycles = sorted(set(table["cycle"].to_pylist()))
    policies = sorted(set(table["policy"].to_pylist()))
    text = (f"{_describe_ids(table['sample_id'].to_pylist())}, cycle {'/'.join(map(str, cycles))}, "
            f"policy {'/'.join(policies)}")
    created = table["created_at"][0].as_py() if table.num_rows else None
    return text + (f", made {created:%Y-%m-%d %H:%M:%S} UTC" if created is not None else "")
