"""``anchored:floor=0.05[,worst_share=0.3][,metric=miou]``: vary around where real images sit.

A run started with ``loop start --real-val DIR`` places a few real images in its parameter
space after every cycle (the inverse model, :mod:`loop.train.inverse`) and, when the folder
has masks, scores the cycle's model on each. The policy reads those **anchors** from
:attr:`policies.base.PolicyView.anchors` (one row per real image; its schema is
:func:`anchors_table`'s) and proposes new samples around them:

* **Counts.** ``n`` is split into an anchored part and, with ``worst_share > 0``, a worst-k
  part by largest remainder (:func:`policies.mix.largest_remainder`). The anchored part is
  split across the anchors (in the table's row order) by largest remainder too, in
  proportion to each image's *badness* under ``metric``: ``1 - miou`` for a higher-is-better
  metric, the value itself for ``error`` or ``loss``. Without scores (a folder of images
  only), with all of them 0, or with none finite, every anchor gets an equal share; an
  anchor whose score is missing gets the mean badness of the others.
* **Draws.** Around anchor ``a``, each located dimension ``d`` is drawn from a Normal with
  mean ``unit_<d>`` (the estimate in unit-cube coordinates, :meth:`ParamSpace.to_unit`) and
  standard deviation ``max(spread_<d>, floor)`` (the ensemble's disagreement, at least
  ``floor``: a fraction of the dimension's range), clipped to ``[0, 1]``. A dimension the
  anchors do not locate (a choice, a fixed dimension) is drawn uniformly, as ``random``
  would. Proposals have no parent (a real image is no sample of the run); they come grouped
  by anchor, then the worst-k ones.
* **Worst share.** ``worst_share`` of ``n`` is proposed by ``worst10``
  (:mod:`policies.worst`; those rows carry its name in the ``policy`` column, as inside
  ``mix``), so a run keeps repairing its synthetic failures while it moves toward the real
  images. That part needs validation metrics like ``worst10`` does.

Randomness: the call's ``rng`` spawns two children, the anchors' and worst-k's, whatever the
counts. The anchors are data of the run (written once per cycle, journaled; a resume reads
them, never recomputes them), so the policy keeps the contract of :mod:`policies.base`: the
same view, ``n`` and seed give the same proposals.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from policies.base import Policy, PolicyError, PolicyView, Proposal
from policies.mix import largest_remainder
from policies.registry import get_policy
from policies.settings import choice, fmt, number
from policies.worst import METRIC_HIGHER_IS_BETTER

UNIT_PREFIX = "unit_"
SPREAD_PREFIX = "spread_"
ANCHOR_SCORES = ("miou", "error", "loss")
"""Score columns of an anchors table (float64, null where the image has no mask)."""
WORST_SPEC = "worst10"
"""The policy that proposes the ``worst_share`` part."""


def unit_column(dim: str) -> str:
    """Column of an anchors table holding dimension ``dim``'s estimate in unit-cube coordinates."""
    return UNIT_PREFIX + dim


def spread_column(dim: str) -> str:
    """Column of an anchors table holding the uncertainty (unit-cube standard deviation) of ``dim``."""
    return SPREAD_PREFIX + dim


def anchors_table(names: Sequence[str], dims: Sequence[str], unit: Any, spread: Any,
                  scores: Mapping[str, Sequence[float | None]] | None = None) -> pa.Table:
    """The anchors of :attr:`PolicyView.anchors`: one row per real image.

    Columns: ``name`` (string), the :data:`ANCHOR_SCORES` (float64; ``scores`` gives any of
    them, the others are null), then per located dimension of ``dims`` its
    :func:`unit_column` and :func:`spread_column` (float64) from the ``(images, dims)``
    arrays ``unit`` and ``spread``.
    """
    unit = np.asarray(unit, dtype=float).reshape(len(names), len(dims))
    spread = np.asarray(spread, dtype=float).reshape(len(names), len(dims))
    scores = dict(scores or {})
    unknown = sorted(set(scores) - set(ANCHOR_SCORES))
    if unknown:
        raise PolicyError(f"anchors: unknown score column(s) {unknown}; expected some of {', '.join(ANCHOR_SCORES)}")
    fields = [pa.field("name", pa.string()), *(pa.field(s, pa.float64()) for s in ANCHOR_SCORES)]
    data: dict[str, Any] = {"name": list(names)}
    for s in ANCHOR_SCORES:
        values = scores.get(s, [None] * len(names))
        data[s] = [None if v is None or not np.isfinite(v) else float(v) for v in values]
    for j, dim in enumerate(dims):
        fields += [pa.field(unit_column(dim), pa.float64()), pa.field(spread_column(dim), pa.float64())]
        data[unit_column(dim)] = unit[:, j].tolist()
        data[spread_column(dim)] = spread[:, j].tolist()
    return pa.table(data, schema=pa.schema(fields))


class AnchoredPolicy(Policy):
    """Variations around real images located in the space (see the module docstring).

    Parameters
    ----------
    floor
        Smallest standard deviation of a draw, a fraction of each dimension's range in
        (0, 1] (default 0.05, worst10's radius).
    worst_share
        Fraction of ``n`` proposed by ``worst10``, in [0, 1) (default 0).
    metric
        Score that weights the anchors: ``miou``, ``error`` or ``loss``. Default: ``miou``
        when the anchors have mIoU scores, else ``loss`` (a classifier's), else ``error``.
    """

    kind = "anchored"

    def __init__(self, floor: float | str = 0.05, worst_share: float | str = 0.0, metric: str | None = None):
        self.floor = number(self.kind, "floor", floor, low=0.0, high=1.0, low_open=True)
        self.worst_share = number(self.kind, "worst_share", worst_share, low=0.0, high=1.0, high_open=True)
        self.metric = None if metric is None else choice(self.kind, "metric", metric, ANCHOR_SCORES)
        self._worst = get_policy(WORST_SPEC)

    @property
    def name(self) -> str:
        """``"anchored:floor=.."`` plus ``worst_share`` when above 0 and ``metric`` when set."""
        text = f"{self.kind}:floor={fmt(self.floor)}"
        if self.worst_share > 0:
            text += f",worst_share={fmt(self.worst_share)}"
        if self.metric is not None:
            text += f",metric={self.metric}"
        return text

    def uses_anchors(self) -> bool:
        """Always: the policy proposes around the view's anchors."""
        return True

    def counts(self, n: int) -> tuple[int, int]:
        """``(anchored, worst-k)`` parts of ``n``."""
        worst, anchored = largest_remainder([self.worst_share, 1.0 - self.worst_share], n)
        return anchored, worst

    def anchors(self, view: PolicyView) -> tuple[pa.Table, list[str]]:
        """The view's anchors and the dimensions of the space they locate; :class:`PolicyError`
        when there are none (a run without ``--real-val``) or a located estimate is missing."""
        table = view.anchors
        if table.num_rows == 0:
            raise PolicyError(
                f"policy {self.name!r}: the view has no real-val anchors (cycle {view.cycle}); it needs a run "
                f"started with --real-val DIR and an evaluated cycle (the anchors are the located real images "
                f"and their metrics)"
            )
        located = [d for d in view.space.names if unit_column(d) in table.column_names]
        if not located:
            raise PolicyError(
                f"policy {self.name!r}: the anchors locate none of the space's dimensions "
                f"({', '.join(view.space.names)}); expected columns such as {unit_column(view.space.names[0])!r}"
            )
        for d in located:
            if table[unit_column(d)].null_count or pc.any(pc.is_nan(table[unit_column(d)])).as_py():
                raise PolicyError(f"policy {self.name!r}: an anchor has no estimate of {d!r}")
        return table, located

    def metric_for(self, anchors: pa.Table) -> str:
        """The score that weights ``anchors``: the one set, else the first of miou, loss, error with a value."""
        if self.metric is not None:
            return self.metric
        for metric in ("miou", "loss", "error"):
            if metric in anchors.column_names and _finite(anchors[metric]).any():
                return metric
        return "miou"

    def weights(self, anchors: pa.Table) -> np.ndarray:
        """Each anchor's share of the anchored part (sums to 1): its badness, or equal shares (module docstring)."""
        n = anchors.num_rows
        metric = self.metric_for(anchors)
        if metric not in anchors.column_names:
            return np.full(n, 1.0 / n)
        values = np.array([np.nan if v is None else v for v in anchors[metric].to_pylist()], dtype=float)
        finite = np.isfinite(values)
        if not finite.any():
            return np.full(n, 1.0 / n)
        bad = 1.0 - values if METRIC_HIGHER_IS_BETTER[metric] else values
        bad = np.clip(np.where(finite, bad, np.mean(bad[finite])), 0.0, None)
        total = bad.sum()
        return bad / total if total > 0 else np.full(n, 1.0 / n)

    def around_anchors(self, view: PolicyView, n: int, rng: np.random.Generator) -> list[Proposal]:
        """``n`` draws around the anchors, grouped by anchor (module docstring)."""
        table, located = self.anchors(view)
        counts = largest_remainder(list(self.weights(table)), n)
        space = view.space
        mean = np.column_stack([table[unit_column(d)].to_numpy(zero_copy_only=False) for d in located])
        spread = np.column_stack([
            table[spread_column(d)].fill_null(0.0).to_numpy(zero_copy_only=False)
            if spread_column(d) in table.column_names else np.zeros(table.num_rows) for d in located
        ])
        sd = np.maximum(np.nan_to_num(spread, nan=0.0), self.floor)
        rows = np.repeat(np.arange(table.num_rows), counts)
        unit = rng.random((n, len(space)))  # dimensions the anchors do not locate: uniform
        noise = rng.standard_normal((n, len(located)))
        cols = [space.names.index(d) for d in located]
        unit[:, cols] = np.clip(mean[rows] + sd[rows] * noise, 0.0, 1.0)
        return [Proposal(params=p) for p in space.from_unit(unit)]

    def _propose(self, view: PolicyView, n: int, rng: np.random.Generator) -> list[Proposal]:
        n_anchored, n_worst = self.counts(n)
        anchor_rng, worst_rng = rng.spawn(2)
        out = self.around_anchors(view, n_anchored, anchor_rng) if n_anchored else []
        return out + self._worst.propose(view, n_worst, worst_rng)


def _finite(column: pa.ChunkedArray) -> np.ndarray:
    """Which values of a float column are finite (null counts as not)."""
    return np.array([v is not None and np.isfinite(v) for v in column.to_pylist()], dtype=bool)
