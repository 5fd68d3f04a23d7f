"""Failure analysis of a comparison: where in parameter space each policy's model fails most.

For each parameter of the generator's space, the synthetic validation samples are cut into
quantile bins of that parameter (a bin per value for a choice parameter, or an integer one
with at most as many values as bins), and each bin
gets the mean per-sample score (IoU for segmentation, error for classification) of

* the cycle-0 model (the common start of every policy, from the base runs),
* each policy's final model,

pooled over the seeds, and the share of each policy's new training samples (cycles ≥ 1)
that fell in the bin — which shows whether a policy sent its samples where the start
failed. Rows come from SQL over the run's ``samples`` and ``params`` views
(:func:`stores.query`, as ``loop query`` runs it); the ``samples`` view holds each
validation sample's latest score, i.e. the final cycle's.

For segmentation the same is done over one property of the images rather than of the
parameters: **boundary visibility** (:func:`loop.evaluate.metrics.boundary_visibility`, about 1
where the boundary is not in the image at all), with each policy's mean *gain* per bin (its
final score minus the cycle-0 score of the same validation sample, paired within each seed)
and the share of its new samples per bin. It tells whether a policy that sends its samples to
the worst-scored samples is chasing failures no model can fix (no gain where it sampled), or
fixes them there and loses elsewhere.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from generators.space import Choice, Integer, ParamSpace
from loop.evaluate.metrics import boundary_visibility
from loop.study.plots import figure_png, panel_grid

DEFAULT_BINS = 5
WORST_REGIONS = 3


def task_metric(task: str) -> tuple[str, bool]:
    """The per-sample score the analysis bins, and whether higher is better."""
    return ("iou", True) if task == "segmentation" else ("error", False)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def validation_scores(run: str, space: ParamSpace, metric: str, cycle: int | None = None) -> dict[str, np.ndarray]:
    """Parameter values and latest ``metric`` of the validation samples of ``run`` (SQL over
    ``samples``), or with ``cycle`` their latest score up to that cycle (SQL over ``metrics``)."""
    from stores import query

    columns = ", ".join(_quote(n) for n in space.names)
    if cycle is None:
        sql = (f"SELECT sample_id, {columns}, {_quote(metric)} AS score FROM samples "
               f"WHERE split = 'val' AND {_quote(metric)} IS NOT NULL ORDER BY sample_id")
    else:
        sql = (f"SELECT sample_id, {', '.join('p.' + _quote(n) for n in space.names)}, m.{_quote(metric)} AS score "
               f"FROM params AS p JOIN (SELECT * FROM metrics WHERE cycle <= {int(cycle)} "
               f"QUALIFY row_number() OVER (PARTITION BY sample_id ORDER BY cycle DESC, created_at DESC) = 1) AS m "
               f"USING (sample_id) WHERE p.split = 'val' AND m.{_quote(metric)} IS NOT NULL ORDER BY sample_id")
    table = query(run, sql)
    return {name: table[name].to_numpy(zero_copy_only=False) for name in table.column_names}


def new_samples(run: str, space: ParamSpace, up_to: int | None = None) -> dict[str, np.ndarray]:
    """Parameter values of the training samples ``run`` added after cycle 0 (and by cycle ``up_to``;
    SQL over ``params``)."""
    from stores import query

    columns = ", ".join(_quote(n) for n in space.names)
    until = "" if up_to is None else f" AND cycle <= {int(up_to)}"
    table = query(run, f"SELECT {columns} FROM params WHERE split = 'train' AND cycle > 0{until} ORDER BY sample_id")
    return {name: table[name].to_numpy(zero_copy_only=False) for name in table.column_names}


def sample_visibility(run: str, split: str = "val", cycles: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """``sample_id`` and :func:`~loop.evaluate.metrics.boundary_visibility` of the segmentation
    samples of ``run`` in ``split`` (and ``cycles``), read from its image store."""
    from stores import RunStore

    store = RunStore.open(run)
    if cycles is not None and not len(cycles):
        return {"sample_id": np.zeros(0, np.int64), "visibility": np.zeros(0)}
    view = store.view(split=split, cycles=None if cycles is None else list(cycles))
    values = [boundary_visibility(np.asarray(image), np.asarray(mask)) for image, mask in
              (view[i] for i in range(len(view)))]
    return {"sample_id": np.asarray(view.sample_ids, dtype=np.int64), "visibility": np.asarray(values, dtype=np.float64)}


def visibility_gains(base_visibility: Sequence[Mapping[str, np.ndarray]], base_rows: Sequence[Mapping[str, np.ndarray]],
                     policy_rows: Mapping[str, Sequence[Mapping[str, np.ndarray]]],
                     policy_new: Mapping[str, Sequence[Mapping[str, np.ndarray]]],
                     n_bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """Validation scores and each policy's gains per quantile bin of boundary visibility (pure).

    Per seed (same order in every argument): ``base_visibility`` and the policies' new samples'
    visibility (:func:`sample_visibility`), ``base_rows`` / ``policy_rows`` the cycle-0 and final
    scores (:func:`validation_scores`, with ``sample_id``). A sample's gain is its final score
    minus its cycle-0 score, paired by ``sample_id`` within the seed. Bin edges are the quantiles
    of the pooled validation visibility (NaN left out).
    """
    def scores_by_id(rows: Mapping[str, np.ndarray]) -> dict[int, float]:
        return dict(zip(np.asarray(rows["sample_id"]).tolist(), np.asarray(rows["score"], np.float64).tolist()))

    pooled_vis = np.concatenate([np.asarray(v["visibility"]) for v in base_visibility]) if base_visibility else np.zeros(0)
    labels, to_bin = _quantile_bins(pooled_vis, n_bins)
    k = len(labels)

    vis, start, gains = [], [], {p: [] for p in policy_rows}
    finals: dict[str, list[float]] = {p: [] for p in policy_rows}
    for j, seen in enumerate(base_visibility):
        base = scores_by_id(base_rows[j])
        final_by_id = {p: scores_by_id(rows[j]) for p, rows in policy_rows.items()}  # once per seed, not per sample
        for sid, v in zip(np.asarray(seen["sample_id"]).tolist(), np.asarray(seen["visibility"]).tolist()):
            after = {p: scores.get(sid) for p, scores in final_by_id.items()}
            if sid not in base or any(a is None for a in after.values()):
                continue
            vis.append(v)
            start.append(base[sid])
            for p, a in after.items():
                finals[p].append(a)
                gains[p].append(a - base[sid])
    index = to_bin(np.asarray(vis, np.float64))

    def by_bin(values: Sequence[float]) -> list[float | None]:
        return _mean_by_bin(index, np.asarray(values, np.float64), k)

    new_share = {}
    for p, runs in policy_new.items():
        pooled = np.concatenate([np.asarray(r["visibility"]) for r in runs]) if runs else np.zeros(0)
        new_index = to_bin(pooled)
        total = max(len(new_index), 1)
        new_share[p] = [float(np.sum(new_index == b) / total) for b in range(k)]
    return {"bins": labels, "n_val": [int(np.sum(index == b)) for b in range(k)], "cycle0": by_bin(start),
            "final": {p: by_bin(v) for p, v in finals.items()}, "gain": {p: by_bin(v) for p, v in gains.items()},
            "new_share": new_share}


def _pool(parts: Sequence[Mapping[str, np.ndarray]], names: Sequence[str]) -> dict[str, np.ndarray]:
    return {n: np.concatenate([p[n] for p in parts]) if parts else np.zeros(0) for n in names}


def _bins(dim: Any, values: np.ndarray, n_bins: int) -> tuple[list[str], Any]:
    """Labels of the bins of one parameter and a function mapping values to bin indices."""
    if isinstance(dim, Choice) or (isinstance(dim, Integer) and dim.high - dim.low + 1 <= n_bins):
        options = list(dim.options) if isinstance(dim, Choice) else list(range(int(dim.low), int(dim.high) + 1))
        lookup = {o: i for i, o in enumerate(options)}
        return [str(o) for o in options], lambda x: np.array([lookup.get(v, -1) for v in x], dtype=np.int64)
    return _quantile_bins(values, n_bins)


def _quantile_bins(values: np.ndarray, n_bins: int) -> tuple[list[str], Any]:
    """Labels of ``n_bins`` quantile bins of the finite ``values`` (fewer where quantiles tie) and a
    function mapping values to bin indices (-1 for NaN)."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    edges = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, n_bins + 1))) if finite.size else np.zeros(1)
    if len(edges) < 2:
        edges = np.array([edges[0], edges[0]])
    labels = [f"{_num(lo)}–{_num(hi)}" for lo, hi in zip(edges[:-1], edges[1:])]
    inner = edges[1:-1]

    def to_bin(x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return np.where(np.isfinite(x), np.searchsorted(inner, x, side="right"), -1)

    return labels, to_bin


def _num(x: float) -> str:
    return f"{x:.3g}"


def _mean_by_bin(index: np.ndarray, scores: np.ndarray, n: int) -> list[float | None]:
    return [float(scores[index == b].mean()) if np.any(index == b) else None for b in range(n)]


def analyse(space: ParamSpace, task: str, base_rows: Sequence[Mapping[str, np.ndarray]],
            policy_rows: Mapping[str, Sequence[Mapping[str, np.ndarray]]],
            policy_new: Mapping[str, Sequence[Mapping[str, np.ndarray]]], n_bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """Bin the pooled validation scores per parameter (pure: rows in, tables out).

    ``base_rows``: per seed, :func:`validation_scores` of the base run (cycle 0);
    ``policy_rows``: per policy, per seed, the same for its final model; ``policy_new``:
    per policy, per seed, :func:`new_samples`. Bin edges are the quantiles of the pooled
    base validation values, so every policy is binned alike.
    """
    metric, higher_is_better = task_metric(task)
    names = list(space.names)
    base = _pool(base_rows, [*names, "score"])
    pooled = {p: _pool(rows, [*names, "score"]) for p, rows in policy_rows.items()}
    new = {p: _pool(rows, names) for p, rows in policy_new.items()}
    parameters = []
    for dim in space:
        labels, to_bin = _bins(dim, base[dim.name], n_bins)
        k = len(labels)
        base_index = to_bin(base[dim.name])
        entry: dict[str, Any] = {
            "parameter": dim.name, "unit": dim.unit, "bins": labels,
            "n_val": [int(np.sum(base_index == b)) for b in range(k)],
            "cycle0": _mean_by_bin(base_index, base["score"], k),
            "final": {}, "new_share": {},
        }
        for policy, rows in pooled.items():
            entry["final"][policy] = _mean_by_bin(to_bin(rows[dim.name]), rows["score"], k)
        for policy, rows in new.items():
            index = to_bin(rows[dim.name]) if len(rows[dim.name]) else np.zeros(0, np.int64)
            total = max(len(index), 1)
            entry["new_share"][policy] = [float(np.sum(index == b) / total) for b in range(k)]
        parameters.append(entry)
    worst: dict[str, list[dict[str, Any]]] = {}
    for policy in ["cycle 0", *pooled]:
        cells = []
        for entry in parameters:
            means = entry["cycle0"] if policy == "cycle 0" else entry["final"][policy]
            cells += [{"parameter": entry["parameter"], "bin": entry["bins"][b], "mean": m, "n": entry["n_val"][b]}
                      for b, m in enumerate(means) if m is not None]
        cells.sort(key=lambda c: c["mean"], reverse=not higher_is_better)
        worst[policy] = cells[:WORST_REGIONS]
    return {"metric": metric, "higher_is_better": higher_is_better, "n_bins": n_bins,
            "n_val_samples": int(len(base["score"])), "parameters": parameters, "worst": worst}


def collect_failures(space: ParamSpace, task: str, base_runs: Sequence[str], policy_runs: Mapping[str, Sequence[str]],
                     n_bins: int = DEFAULT_BINS, cycle: int | None = None) -> dict[str, Any]:
    """:func:`analyse` on run directories: the base runs and, per policy, its runs (same seeds, same order);
    with ``cycle``, the policy runs as they stood after that cycle (its scores, the samples added by then)."""
    metric, _ = task_metric(task)
    base_rows = [validation_scores(run, space, metric) for run in base_runs]
    policy_rows = {p: [validation_scores(run, space, metric, cycle) for run in runs] for p, runs in policy_runs.items()}
    result = analyse(space, task, base_rows, policy_rows,
                     {p: [new_samples(run, space, cycle) for run in runs] for p, runs in policy_runs.items()}, n_bins)
    if task == "segmentation":
        def new_cycles(run: str) -> list[int]:
            from stores import query

            done = query(run, "SELECT DISTINCT cycle FROM params WHERE split = 'train' AND cycle > 0")["cycle"]
            return sorted(c for c in done.to_pylist() if cycle is None or c <= cycle)

        result["visibility"] = visibility_gains(
            [sample_visibility(run) for run in base_runs], base_rows, policy_rows,
            {p: [sample_visibility(run, "train", new_cycles(run)) for run in runs] for p, runs in policy_runs.items()},
            n_bins)
    return result


def _cell(value: float | None, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def failures_markdown(analysis: Mapping[str, Any], plot: str | None = None) -> str:
    """The failure analysis as Markdown: the worst regions per model, then one table per parameter."""
    metric = analysis["metric"]
    policies = list(next(iter(analysis["parameters"]))["final"]) if analysis["parameters"] else []
    word = "lowest" if analysis["higher_is_better"] else "highest"
    lines = [f"Mean validation {metric} per quantile bin of each parameter, pooled over the seeds "
             f"({analysis['n_val_samples']} validation samples); *new %*: share of a policy's new training "
             f"samples (cycles ≥ 1) in the bin.", ""]
    if plot:
        lines += [f"![failure analysis]({plot})", ""]
    lines += [f"Regions with the {word} mean {metric}:", "", "| model | parameter | bin | mean " + metric + " | n |",
              "|---|---|---|---|---|"]
    for model, cells in analysis["worst"].items():
        label = "cycle 0 (common start)" if model == "cycle 0" else model
        for cell in cells:
            lines.append(f"| {label} | {cell['parameter']} | {cell['bin']} | {cell['mean']:.3f} | {cell['n']} |")
    for entry in analysis["parameters"]:
        unit = f" ({entry['unit']})" if entry["unit"] else ""
        head = ["bin" + unit, "n val", "cycle 0"] + [f"{p} final" for p in policies] + [f"{p} new %" for p in policies]
        lines += ["", f"**{entry['parameter']}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for b, label in enumerate(entry["bins"]):
            row = [label, str(entry["n_val"][b]), _cell(entry["cycle0"][b])]
            row += [_cell(entry["final"][p][b]) for p in policies]
            row += [_cell(100 * entry["new_share"][p][b], ".0f") for p in policies]
            lines.append("| " + " | ".join(row) + " |")
    if analysis.get("visibility"):
        lines += ["", _visibility_markdown(analysis["visibility"], metric, policies)]
    return "\n".join(lines) + "\n"


VISIBILITY_LABEL = "boundary visibility (image)"


def _visibility_markdown(vis: Mapping[str, Any], metric: str, policies: Sequence[str]) -> str:
    """The boundary-visibility table: per bin the validation score at cycle 0, each policy's
    final score and paired gain, and its share of new samples."""
    head = ["visibility", "n val", "cycle 0"] + [f"{p} final" for p in policies] + [f"{p} gain" for p in policies]
    head += [f"{p} new %" for p in policies]
    lines = [f"**{VISIBILITY_LABEL}**: mean Sobel gradient on the true boundary ÷ in the grain interiors (about 1: "
             f"the boundary is not in the image). Per bin the mean validation {metric}, each policy's *gain* (final − "
             f"cycle 0 of the same sample, pooled over the seeds) and its share of new samples (their own images).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for b, label in enumerate(vis["bins"]):
        row = [label, str(vis["n_val"][b]), _cell(vis["cycle0"][b])]
        row += [_cell(vis["final"][p][b]) for p in policies]
        row += [_cell(vis["gain"][p][b], "+.4f") for p in policies]
        row += [_cell(100 * vis["new_share"][p][b], ".0f") for p in policies]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot_failures(analysis: Mapping[str, Any]) -> bytes:
    """PNG: one panel per parameter, mean score per bin for the cycle-0 model and each policy's
    final model (lines), and each policy's share of new samples per bin (bars, right axis)."""
    params = list(analysis["parameters"])
    if analysis.get("visibility"):
        params.append({"parameter": VISIBILITY_LABEL, "unit": "", **analysis["visibility"]})
    fig, axes = panel_grid(len(params), 4.2, 3.2)
    policies = list(params[0]["final"]) if params else []
    colours = {p: f"C{i}" for i, p in enumerate(policies)}
    for ax, entry in zip(axes, params):
        x = np.arange(len(entry["bins"]))
        share_ax = ax.twinx()
        width = 0.8 / max(1, len(policies))
        for i, p in enumerate(policies):
            share_ax.bar(x - 0.4 + (i + 0.5) * width, [100 * s for s in entry["new_share"][p]], width,
                         color=colours[p], alpha=0.18)
        share_ax.set_ylabel("new samples %", fontsize=7, color="grey")
        share_ax.tick_params(labelsize=7, colors="grey")
        ax.set_zorder(share_ax.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.plot(x, [np.nan if v is None else v for v in entry["cycle0"]], "k--", marker=".", label="cycle 0")
        for p in policies:
            ax.plot(x, [np.nan if v is None else v for v in entry["final"][p]], marker="o", color=colours[p], label=p)
        ax.set_title(entry["parameter"] + (f" ({entry['unit']})" if entry["unit"] else ""), fontsize=9)
        ax.set_xticks(x, entry["bins"], rotation=30, ha="right", fontsize=7)
        ax.set_ylabel(f"mean {analysis['metric']}", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    if params:
        axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(f"Where the models fail: validation {analysis['metric']} per parameter bin "
                 f"(bars: share of each policy's new samples)", fontsize=10)
    return figure_png(fig)
