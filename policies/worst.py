"""``worst:k=0.1,m=10,radius=0.05[,dims=a|b][,metric=iou][,split=val]``: vary the worst samples.

The paper's adaptive sampling (§3.3, alias ``worst10``): score the validation set, take the
worst fraction ``k`` by the metric, and generate ``m`` variations of each within a fixed
interval around its stored parameters — optionally along named dimensions only (the paper
varied grain colour and boundary thickness).

How a cycle's ``n`` proposals are made:

* **Worst set.** Rows of ``view.params`` with ``split == split`` are joined on ``sample_id``
  with ``view.metrics``; rows whose metric is null or NaN are left out. Of the ``N`` scored
  rows, the ``ceil(k·N)`` worst are taken (lowest first for a higher-is-better metric such
  as ``iou``, highest first for a lower-is-better one such as ``error``; ties by ascending
  ``sample_id``), so the choice is deterministic. Without a ``metric`` setting the metric
  is ``iou``, or ``loss`` when the metrics are classification scores (no IoU there).
* **Counts.** ``n`` is the caller's. With ``n == ceil(k·N)·m`` (see
  :meth:`WorstPolicy.suggested_n`) every parent gets ``m`` variations. Otherwise ``n`` is
  dealt round-robin over the worst, worst first: each gets ``n // W`` and the ``n % W``
  worst get one more (so with ``n < W`` only the ``n`` worst get a variation). Proposals
  are grouped by parent, worst parent first; each has ``parent_id`` = the parent's
  ``sample_id``.
* **Variation.** In unit-cube coordinates (:meth:`ParamSpace.to_unit`; a log range in its
  logarithm), each varied dimension moves by a uniform offset in ``[-radius, radius]``,
  is clipped to ``[0, 1]`` and mapped back with ``from_unit``. ``radius`` is thus a fraction
  of each dimension's range. Integer and choice dimensions are cells of equal width: the
  value changes only when the offset carries the coordinate into another cell, so a small
  radius often keeps the parent's integer or option. Dimensions not in ``dims`` keep the
  parent's stored value exactly.

Cycle 0 has no metrics: the policy raises :class:`PolicyError` then (start with ``random`` or
``sobol``).

The variation step is :func:`vary_around`, shared with :mod:`policies.near` (the same
variations around randomly chosen validation samples, the control that tells "targeting the
worst" from "densifying near the validation set").
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from policies.settings import choice, fmt, integer, number
from policies.settings import names as dimension_names
from generators.space import ParamSpace
from policies.base import Policy, PolicyError, PolicyView, Proposal

#: Metric name -> True when higher is better. The evaluator's per-sample metric columns.
METRIC_HIGHER_IS_BETTER: dict[str, bool] = {
    "iou": True, "miou": True, "boundary_f1": True, "p_true": True, "accuracy": True,
    "error": False, "loss": False, "grain_count_rel_error": False, "grain_size_distance": False,
    "mean_intercept_rel_error": False, "boundary_intercept_rel_error": False, "balanced_error": False,
    "miss_rate": False, "false_alarm_rate": False,
}

# k·N computed in floating point may land a hair above a whole number (0.7 * 10 = 7.000000000000001).
_CEIL_SLACK = 1e-9


class WorstPolicy(Policy):
    """Variations around the worst-scored validation samples.

    Parameters
    ----------
    k
        Fraction of the scored validation set to vary, in (0, 1] (default 0.1).
    m
        Variations per worst sample, an integer >= 1 (default 10); the nominal count, see
        :meth:`suggested_n`.
    radius
        Half-width of the variation interval as a fraction of each dimension's range, in
        (0, 1] (default 0.05).
    dims
        Dimensions to vary, ``"a|b"`` or a sequence of names; default all. Checked against
        the space when proposing.
    metric
        Metric column to rank by; one of :data:`METRIC_HIGHER_IS_BETTER`. Default ``"iou"``,
        or ``"loss"`` when the view's metrics are classification scores (see
        :meth:`metric_for`), so ``worst10`` works for either task.
    split
        Which rows of the parameter table are scored (default ``"val"``).
    """

    kind = "worst"
    varies = "the worst scored"
    """What the parents are, for messages."""

    def __init__(self, k: float | str = 0.1, m: int | str = 10, radius: float | str = 0.05,
                 dims: str | tuple[str, ...] | None = None, metric: str | None = None, split: str = "val"):
        self.k = number(self.kind, "k", k, low=0.0, high=1.0, low_open=True)
        self.m = integer(self.kind, "m", m, low=1)
        self.radius = number(self.kind, "radius", radius, low=0.0, high=1.0, low_open=True)
        self.dims = None if dims is None else dimension_names(self.kind, "dims", dims)
        self._metric_given = metric is not None
        self.metric = choice(self.kind, "metric", "iou" if metric is None else metric,
                                      sorted(METRIC_HIGHER_IS_BETTER))
        self.split = str(split).strip()
        if not self.split or any(c in self.split for c in ",=:"):
            raise PolicyError(f"policy {self.kind!r}: setting split={split} is not a split name; expected e.g. val")

    @property
    def name(self) -> str:
        """``"worst:k=..,m=..,radius=.."`` plus ``dims``, ``metric``, ``split`` when not default."""
        text = f"{self.kind}:k={fmt(self.k)},m={self.m},radius={fmt(self.radius)}"
        if self.dims is not None:
            text += ",dims=" + "|".join(self.dims)
        if self.metric != "iou":
            text += f",metric={self.metric}"
        if self.split != "val":
            text += f",split={self.split}"
        return text

    def suggested_n(self, view: PolicyView) -> int | None:
        """``ceil(k·N)·m`` for the ``N`` scored validation rows of ``view``."""
        return self.count(self.scored(view).num_rows) * self.m

    def count(self, n_scored: int) -> int:
        """How many parents of ``n_scored`` scored rows: ``ceil(k·n_scored)``, at least 1."""
        return max(1, math.ceil(self.k * n_scored - _CEIL_SLACK))

    def check_space(self, space: ParamSpace) -> None:
        """Every dimension named in ``dims`` must be one of ``space``'s."""
        unknown = [d for d in (self.dims or ()) if d not in space.names]
        if unknown:
            raise PolicyError(
                f"policy {self.name!r}: setting dims names unknown dimension(s) {', '.join(map(repr, unknown))}; "
                f"the space has: {', '.join(space.names)}"
            )

    def metric_for(self, view: PolicyView) -> str:
        """The metric ranked by: the one set, else ``iou`` — or ``loss`` when ``view.metrics`` holds
        classification scores (a ``p_true`` column and no ``iou``), which have no IoU."""
        columns = view.metrics.column_names
        if not self._metric_given and "iou" not in columns and "p_true" in columns:
            return "loss"
        return self.metric

    def scored(self, view: PolicyView) -> pa.Table:
        """The ``split`` rows of ``view`` with a finite score (the parents are chosen among them), in no
        particular order: ``sample_id``, the parameters, the metric."""
        names = list(view.space.names)
        metric = self.metric_for(view)
        if view.metrics.num_rows == 0:
            raise PolicyError(
                f"policy {self.name!r}: no validation metrics yet (cycle {view.cycle}); it varies {self.varies} "
                f"samples, so it needs an evaluated cycle — use random or sobol for the initial set"
            )
        view.require_columns("metrics", ("sample_id", metric), self.name)
        view.require_columns("params", ("sample_id", "split", *names), self.name)
        rows = view.params.filter(pc.equal(view.params["split"], self.split)).select(["sample_id", *names])
        scores = view.metrics.select(["sample_id", metric])
        for label, table in (("view.params", rows), ("view.metrics", scores)):
            if pc.count_distinct(table["sample_id"]).as_py() != table.num_rows:
                raise PolicyError(f"policy {self.name!r}: {label} repeats a sample_id; expected one row per sample")
        scores = scores.set_column(1, metric, pc.cast(scores[metric], pa.float64()))
        joined = rows.join(scores, "sample_id", join_type="inner")
        joined = joined.filter(pc.invert(pc.fill_null(pc.is_nan(joined[metric]), True)))
        if joined.num_rows == 0:
            raise PolicyError(
                f"policy {self.name!r}: no {self.split!r} row of view.params has a {metric!r} score "
                f"({rows.num_rows} {self.split!r} rows, {view.metrics.num_rows} metric rows)"
            )
        return joined

    def worst(self, view: PolicyView) -> pa.Table:
        """The worst ``ceil(k·N)`` scored rows, worst first: ``sample_id``, the metric, the parameters."""
        joined = self.scored(view)
        metric = self.metric_for(view)
        order = "ascending" if METRIC_HIGHER_IS_BETTER[metric] else "descending"
        idx = pc.sort_indices(joined, sort_keys=[(metric, order), ("sample_id", "ascending")])
        return joined.take(idx[:self.count(joined.num_rows)])

    def parents(self, view: PolicyView, rng: np.random.Generator) -> pa.Table:
        """The samples to vary, in the order their variations are dealt: here :meth:`worst`."""
        return self.worst(view)

    def _propose(self, view: PolicyView, n: int, rng: np.random.Generator) -> list[Proposal]:
        self.check_space(view.space)
        return vary_around(view.space, self.parents(view, rng), n, rng, radius=self.radius, dims=self.dims)


def vary_around(space: ParamSpace, parents: pa.Table, n: int, rng: np.random.Generator, *, radius: float,
                dims: tuple[str, ...] | None = None) -> list[Proposal]:
    """``n`` variations of the rows of ``parents`` (``sample_id`` and one column per dimension).

    The ``n`` are dealt round-robin in the rows' order (each gets ``n // P``, the first
    ``n % P`` one more), grouped by parent, each with ``parent_id`` = its parent's
    ``sample_id``. Each dimension of ``dims`` (default: all) moves by a uniform offset in
    ``[-radius, radius]`` in unit-cube coordinates, clipped to ``[0, 1]``; every other
    dimension keeps the parent's stored value exactly (module docstring).
    """
    dims = dims if dims is not None else space.names
    rows_of = parents.select(list(space.names)).to_pylist()
    parent_ids = parents["sample_id"].to_pylist()
    counts = np.full(len(rows_of), n // len(rows_of))
    counts[: n % len(rows_of)] += 1
    rows = np.repeat(np.arange(len(rows_of)), counts)

    cols = [space.names.index(d) for d in dims]
    unit = space.to_unit(rows_of)[rows]
    offsets = rng.uniform(-radius, radius, size=(n, len(cols)))
    unit[:, cols] = np.clip(unit[:, cols] + offsets, 0.0, 1.0)
    varied = space.from_unit(unit)
    out = []
    for row, moved in zip(rows, varied):
        params = dict(rows_of[row])
        params.update({d: moved[d] for d in dims})
        out.append(Proposal(params=params, parent_id=int(parent_ids[row])))
    return out
