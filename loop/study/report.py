"""The report of a comparison: ``OUT/report.md``, ``OUT/report.json`` and ``OUT/plots/*.png``.

Everything is read back from the run directories (``loop status``'s per-cycle scores, which
the driver computed from the runs' metric tables, and SQL over the runs for the failure
analysis), so ``loop compare --report OUT`` re-renders the same numbers without running
anything, and works on a comparison that is still going (only seeds whose every policy run
has finished enter the statistics).

The report opens with the one **primary endpoint** frozen in compare.toml before any run
(``SOURCE:METRIC``, e.g. ``real:miou``): each policy's paired difference to the reference
policy with a 95 % t-interval, the paired t-test and the Wilcoxon signed-rank test (t's
p-values Holm-adjusted over those comparisons), and a one-line verdict. Then the final
scores of every source side by side (synthetic validation, held-out synthetic test, real
images pooled and per named group). With ``--real-val`` images, the primary endpoint at the
checkpoint each run's real validation images pick (:mod:`loop.study.selection`), what a user
who keeps the best cycle on their own images gets.

Everything else is **secondary**: tables after the paper's Tables 1–2, per source — per
policy and metric the mean ± standard deviation over the seeds of the final cycle's score and
a 99 % confidence interval (Agresti–Coull for the error rate with the paper's n = N²
convention, t for the others; :mod:`loop.study.statistics`), then a paired two-tailed t-test
for every pair of policies over the same seeds, with p-values Holm-adjusted over the whole
secondary family (every such test of every source and metric).
"""

from __future__ import annotations

import json
import math
import posixpath
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from stores.location import Location
from loop.study.compare_settings import (
    BASE, ENDPOINT_METRICS, CompareConfig, CompareError, read_settings, run_dir,
)
from loop.study.plots import figure_png, panel_grid
from loop.study.scores import score_at
from loop.study.selection import checkpoint_selection
from loop.study.statistics import (
    CONFIDENCE, PRIMARY_CONFIDENCE, RATE_METRICS, SIGNIFICANCE, compare_to_reference, holm, pairwise_tests,
    summarize,
)

REPORT_METRICS = ENDPOINT_METRICS
SOURCES = {"val": "synthetic validation set", "test": "held-out synthetic test set", "real": "real images"}
"""The sources every comparison may have; each real group ``NAME`` adds ``real/NAME``."""
METRIC_NAMES = {"miou": "mIoU", "error": "error", "boundary_f1": "boundary F1",
                "grain_count_rel_error": "grain-count relative error",
                "mean_intercept_rel_error": "mean-intercept relative error",
                "boundary_intercept_rel_error": "boundary-map intercept relative error",
                "balanced_error": "balanced error", "miss_rate": "miss rate", "false_alarm_rate": "false-alarm rate"}
PLOTS_DIR = "plots"


def source_label(source: str) -> str:
    """How the report names a score source: ``real/iron`` -> ``real images, group iron``."""
    if source.startswith("real/"):
        return f"real images, group {source.split('/', 1)[1]}"
    return SOURCES[source] + (" (all groups pooled)" if source == "real" else "")


def _status_scores(cycle: Mapping[str, Any], source: str) -> dict[str, Any] | None:
    """The scores of ``source`` in one cycle of :func:`loop.run.lifecycle.run_status`."""
    if source.startswith("real/"):
        groups = cycle.get("real_groups")
        if groups is None and cycle.get("real") is not None:
            return None  # a run scored before groups existed: pooled only
        return (groups or {}).get(source.split("/", 1)[1])
    return cycle.get(source)


def collect(out: str, at_cycle: int | None = None) -> dict[str, Any]:
    """Per run and cycle, the scores of a comparison's run directories.

    Returns ``{"config", "cycle", "runs": {label: {"seed", "policy", "run", "state", "cycles":
    {source: [per-cycle dict or None]}}}, "complete_seeds"}``; a seed is complete when every
    policy run has done cycle ``cycle``: ``at_cycle`` (1..the comparison's cycles), by default
    the comparison's last. Scores of later cycles are left out. A policy run's cycle 0 is its
    base's (also before the run is forked).
    """
    from loop.run.lifecycle import run_status
    from stores import RunStore

    config = read_settings(out)
    if config is None:
        raise CompareError(f"{out}: not a comparison (no compare.toml there); run `loop compare {out} "
                           "--policies ... --seeds N` first")
    cycle = config.cycles if at_cycle is None else at_cycle
    if isinstance(cycle, bool) or not isinstance(cycle, int) or not 1 <= cycle <= config.cycles:
        raise CompareError(f"at_cycle: expected a cycle 1..{config.cycles} of {out}, got {at_cycle!r}")
    runs: dict[str, dict[str, Any]] = {}
    complete = []
    for seed in range(1, config.seeds + 1):
        seed_complete = True
        for policy in (None, *config.policies):
            run = run_dir(out, seed, policy)
            entry: dict[str, Any] = {"seed": seed, "policy": policy or BASE, "run": run, "state": "absent",
                                     "cycles": {source: [] for source in config.sources}}
            last = cycle if policy else 0
            if RunStore.exists(run):
                status = run_status(run)
                for source in config.sources:
                    entry["cycles"][source] = [_status_scores(c, source) if c["state"] == "done" else None
                                               for c in status["cycles"][:cycle + 1]]
                done = [c["cycle"] for c in status["cycles"][:cycle + 1] if c["state"] == "done"]
                entry["state"] = ("finished" if last in done else
                                  f"cycles 0..{max(done)} of 0..{last} done" if done else "cycle 0 not done yet")
                own = range(1, cycle + 1) if policy else range(0, 1)  # a fork's cycle 0 is its base's
                entry["wall_s"] = sum(float((c.get("wall_s") or {}).get("cycle_done", 0.0))
                                      for c in status["cycles"] if c["cycle"] in own and c["state"] == "done")
                entry["span"] = _own_span(run, own)
                entry["real_val"] = [c.get("real_val") if c["state"] == "done" else None
                                     for c in status["cycles"][:cycle + 1]]
            if policy is None:
                start = {source: scores[0] for source, scores in entry["cycles"].items() if scores and scores[0]}
            else:
                _share_cycle0(entry, start)
            if policy and entry["state"] != "finished":
                seed_complete = False
            runs[f"seed{seed:02d}/{policy or BASE}"] = entry
        if seed_complete:
            complete.append(seed)
    return {"config": config, "cycle": cycle, "runs": runs, "complete_seeds": complete}


def _share_cycle0(entry: dict[str, Any], start: Mapping[str, Any]) -> None:
    """Give a policy run that is not forked yet (or not past the fork) its base's cycle-0 scores
    ``start``: a fork's cycle 0 is its base's, so the per-cycle tables count every seed whose
    base has finished, not only those whose policy runs have begun."""
    for source, scores in entry["cycles"].items():
        if source not in start:
            continue
        if not scores:
            entry["cycles"][source] = [start[source]]
        elif scores[0] is None:
            scores[0] = start[source]


def _own_span(run: str, cycles: range) -> tuple[float, float] | None:
    """:func:`cycle_span` of ``run``'s journal."""
    from loop.run.journal import Journal
    from loop.run.names import JOURNAL
    from stores import RunStore

    return cycle_span(Journal(RunStore.open(run).path(JOURNAL)).events(), cycles)


def cycle_span(events: Sequence[Mapping[str, Any]], cycles: range) -> tuple[float, float] | None:
    """Unix times of the first journal event in ``cycles`` and of the last end among them, a
    cycle's end being its ``cycle_done`` (its last event while under way); ``None`` if none.
    Events a later resume adds to a finished cycle (real-val scores filled in) are not part of the
    time the cycles took."""
    own = [e for e in events if e.get("cycle") in cycles and isinstance(e.get("time"), (int, float))]
    if not own:
        return None
    ends = []
    for cycle in {e["cycle"] for e in own}:
        times = [e["time"] for e in own if e["cycle"] == cycle]
        done = [e["time"] for e in own if e["cycle"] == cycle and e.get("event") == "cycle_done"]
        ends.append(max(done) if done else max(times))
    return min(e["time"] for e in own), max(ends)


def time_taken(data: Mapping[str, Any]) -> dict[str, Any]:
    """How long the reported cycles of a comparison took: from the first run's start to the last
    run's end (``wall_s``), the runs' own times summed (``run_s``, a fork's cycle 0 counted once,
    in its base) and averaged per base and per policy run."""
    entries = [e for e in data["runs"].values() if e.get("span")]
    if not entries:
        return {"wall_s": None, "run_s": 0.0, "base_mean_s": None, "policy_mean_s": None, "runs": 0}
    base = [e["wall_s"] for e in entries if e["policy"] == BASE]
    policy = [e["wall_s"] for e in entries if e["policy"] != BASE]
    return {"wall_s": max(e["span"][1] for e in entries) - min(e["span"][0] for e in entries),
            "run_s": float(sum(base) + sum(policy)), "runs": len(entries),
            "base_mean_s": float(np.mean(base)) if base else None,
            "policy_mean_s": float(np.mean(policy)) if policy else None}


def _time_line(taken: Mapping[str, Any]) -> str:
    if not taken["runs"]:
        return "Time: no run has started yet."
    parts = [f"Time: {taken['wall_s'] / 60:.1f} min from the first run's start to the last run's end "
             f"({taken['runs']} runs, {taken['run_s'] / 60:.1f} run-minutes in all"]
    if taken["base_mean_s"] is not None:
        parts.append(f"{taken['base_mean_s']:.0f} s per base run")
    if taken["policy_mean_s"] is not None:
        parts.append(f"{taken['policy_mean_s']:.0f} s per policy run")
    return ", ".join(parts) + "; several runs at once overlap)."


def _metrics(data: Mapping[str, Any], source: str) -> list[str]:
    present: set[str] = set()
    for entry in data["runs"].values():
        for cycle in entry["cycles"][source]:
            present |= set(cycle or ())
    return [m for m in REPORT_METRICS if m in present]


def statistics(data: Mapping[str, Any]) -> dict[str, Any]:
    """Summaries and paired tests of the final cycle (``data["cycle"]``) over the complete seeds, per source and metric,
    plus per-cycle mean ± sd and each seed's final values (for the plots). Every test but the
    primary endpoint's comparisons with the reference gets its Holm-adjusted p (``p_holm``) over
    that secondary family."""
    config: CompareConfig = data["config"]
    last = data["cycle"]
    seeds = data["complete_seeds"]
    runs = data["runs"]
    out: dict[str, Any] = {}
    for source in config.sources:
        metrics = _metrics(data, source)
        if not metrics:
            continue
        block: dict[str, Any] = {"metrics": metrics, "final": {}, "summary": {}, "tests": {}, "cycle0": {},
                                 "per_cycle": {}}
        for metric in metrics:
            final = {p: [score_at(runs[f"seed{s:02d}/{p}"], source, last, metric) for s in seeds]
                     for p in config.policies}
            final = {p: v for p, v in final.items() if v and all(x is not None for x in v)}
            block["final"][metric] = final
            block["summary"][metric] = {p: summarize(metric, v).to_dict() for p, v in final.items()}
            start = [score_at(runs[f"seed{s:02d}/{BASE}"], source, 0, metric) for s in seeds]
            if start and all(x is not None for x in start):
                block["cycle0"][metric] = summarize(metric, start).to_dict()
            block["tests"][metric] = [t.to_dict() for t in pairwise_tests(final)] if len(final) > 1 else []
            curves = {}
            for p in config.policies:
                rows = []
                for cycle in range(last + 1):
                    values = [score_at(runs[f"seed{s:02d}/{p}"], source, cycle, metric)
                              for s in range(1, config.seeds + 1)]
                    values = [v for v in values if v is not None]
                    rows.append({"cycle": cycle, "n": len(values),
                                 "mean": float(np.mean(values)) if values else None,
                                 "sd": float(np.std(values, ddof=1)) if len(values) > 1 else None})
                curves[p] = rows
            block["per_cycle"][metric] = curves
        out[source] = block
    primary_source, primary_metric = config.primary.split(":")
    secondary = []
    for source, block in out.items():
        for metric, tests in block["tests"].items():
            for t in tests:
                t["primary"] = (source, metric) == (primary_source, primary_metric) and config.reference in (t["a"], t["b"])
                if not t["primary"]:
                    secondary.append(t)
    for t, p in zip(secondary, holm([t["p_value"] for t in secondary])):
        t["p_holm"] = p
    return out


def primary_endpoint(config: CompareConfig, stats: Mapping[str, Any], seeds: Sequence[int]) -> dict[str, Any]:
    """The primary endpoint's comparisons: each policy against the reference on ``config.primary``
    over the complete seeds (:func:`loop.study.statistics.compare_to_reference`), and the verdict."""
    source, metric = config.primary.split(":")
    final = stats.get(source, {}).get("final", {}).get(metric, {})
    result: dict[str, Any] = {"endpoint": config.primary, "source": source, "metric": metric,
                              "reference": config.reference, "confidence": PRIMARY_CONFIDENCE, "n": len(seeds),
                              "comparisons": []}
    if config.reference in final and len(final) > 1:
        result["comparisons"] = [c.to_dict() for c in compare_to_reference(final, config.reference)]
    result["verdict"] = _primary_verdict(result)
    return result


def _primary_verdict(primary: Mapping[str, Any]) -> str:
    from policies import METRIC_HIGHER_IS_BETTER

    name = f"{source_label(primary['source'])} {METRIC_NAMES.get(primary['metric'], primary['metric'])}"
    if not primary["comparisons"]:
        return (f"no verdict yet: no complete seed has {name} for {primary['reference']} and another policy.")
    higher = METRIC_HIGHER_IS_BETTER.get(primary["metric"], True)
    parts = []
    for c in primary["comparisons"]:
        diff = c["mean_difference"]
        better = "better" if (diff > 0) == higher else "worse"
        ci = f"{int(c['confidence'] * 100)} % CI [{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}]"
        if c["significant"]:
            parts.append(f"{c['a']} is {better} than {c['b']} by {abs(diff):.4f} ({ci}, Holm p = {_p(c['p_holm'])})")
        elif not math.isfinite(c["p_holm"]):
            parts.append(f"{c['a']} − {c['b']} {diff:+.4f}: untestable with these seeds (N = {c['n']})")
        else:
            parts.append(f"{c['a']} does not differ significantly from {c['b']} ({diff:+.4f}, {ci}, "
                         f"Holm p = {_p(c['p_holm'])})")
    return f"on {name} after N = {primary['n']} seeds: " + "; ".join(parts) + "."


def _primary_table(primary: Mapping[str, Any]) -> list[str]:
    confidence = int(primary["confidence"] * 100)
    lines = [f"| policy − {primary['reference']} | mean difference | {confidence} % CI (paired t) | t | p (paired t) "
             f"| p (Holm) | p (Wilcoxon) | seeds |", "|---|---|---|---|---|---|---|---|"]
    for c in primary["comparisons"]:
        lines.append(f"| {c['a']} − {c['b']} | {c['mean_difference']:+.4f} | [{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}] "
                     f"| {_fmt(c['t_statistic'], '.3f')} | {_p(c['p_t'])} | {_p(c['p_holm'])} | {_p(c['p_wilcoxon'])} "
                     f"| {c['n']} |")
    return lines


def _selection_section(selection: Mapping[str, Any], reference: str) -> list[str]:
    """The primary endpoint at the checkpoint each run's real validation images pick
    (:func:`loop.study.selection.checkpoint_selection`)."""
    name = f"{source_label(selection['source'])} {METRIC_NAMES.get(selection['metric'], selection['metric'])}"
    lines = ["## The checkpoint the real validation images pick", "",
             f"What a user keeps: per run, the cycle 0..{selection['cycle']} whose model scored best on the "
             f"`--real-val` images ({METRIC_NAMES.get(selection['criterion'] or '', selection['criterion'])}, ties "
             f"to the earlier cycle), and {name} there. Secondary: the primary endpoint stays the last cycle's.", ""]
    if selection["unscored"]:
        shown = ", ".join(selection["unscored"][:3]) + (" ..." if len(selection["unscored"]) > 3 else "")
        lines += [f"Left out: runs with a cycle not scored on the real validation images (made before every "
                  f"cycle was): {shown}.", ""]
    if not selection["summary"]:
        return lines
    lines += [f"| policy | at the picked cycle (mean ± sd) | at cycle {selection['cycle']} | cycles picked (cycle: runs) |",
              "|---|---|---|---|"]
    for policy, row in selection["summary"].items():
        picked = ", ".join(f"{cycle}: {n}" for cycle, n in row["cycles"].items())
        lines.append(f"| {policy} | {_fmt(row['mean'])} ± {_fmt(row['sd'])} | {_fmt(row['last_mean'])} | {picked} |")
    if selection["comparisons"]:
        lines += ["", f"Paired over the N = {selection['n']} complete seeds, at the picked cycles:", ""]
        lines += _primary_table({"reference": reference, "confidence": PRIMARY_CONFIDENCE,
                                 "comparisons": selection["comparisons"]})
    return lines


def _side_by_side(stats: Mapping[str, Any], policies: Sequence[str], metric: str) -> list[str]:
    """One metric's final mean ± sd per policy, one column per source (val, test, real, groups)."""
    sources = [s for s, block in stats.items() if metric in block["metrics"]]
    if not sources:
        return []
    lines = ["| policy | " + " | ".join(sources) + " |", "|---|" + "---|" * len(sources)]
    for name in [*policies, None]:
        cells = []
        for source in sources:
            block = stats[source]
            summary = block["cycle0"].get(metric) if name is None else block["summary"][metric].get(name)
            cells.append(f"{_fmt(summary['mean'])} ± {_fmt(summary['sd'])}" if summary else "n/a")
        lines.append(f"| {name or 'cycle 0 (common start)'} | " + " | ".join(cells) + " |")
    return lines


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def _p(value: float) -> str:
    return "n/a" if not math.isfinite(value) else (f"{value:.3g}" if value >= 1e-3 else f"{value:.2e}")


def _interval_note(metric: str, n: int) -> str:
    if metric in RATE_METRICS:
        return f"Agresti–Coull with n = N² = {n * n} (the paper's convention; see loop/study/statistics.py)"
    return f"Student t over the N = {n} seeds"


def _summary_table(block: Mapping[str, Any], policies: Sequence[str]) -> list[str]:
    metrics = block["metrics"]
    lines = ["| policy | | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    rows = [(p, {m: block["summary"][m].get(p) for m in metrics}) for p in policies]
    if block["cycle0"]:
        rows.append(("cycle 0 (common start)", {m: block["cycle0"].get(m) for m in metrics}))
    for name, summaries in rows:
        mean_sd = [f"{_fmt(s['mean'])} ± {_fmt(s['sd'])}" if s else "n/a" for s in summaries.values()]
        ci = [f"[{_fmt(s['ci_low'])}, {_fmt(s['ci_high'])}]" if s else "n/a" for s in summaries.values()]
        lines.append(f"| {name} | μ ± σ | " + " | ".join(mean_sd) + " |")
        lines.append(f"| | {int(CONFIDENCE * 100)} % CI | " + " | ".join(ci) + " |")
    return lines


def _tests_table(block: Mapping[str, Any]) -> list[str]:
    lines = ["| metric | difference | mean difference | t | p | p < 0.05 | p (Holm) | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for metric in block["metrics"]:
        for t in block["tests"][metric]:
            holm_p = t.get("p_holm", math.nan)
            lines.append(f"| {metric} | {t['a']} − {t['b']} | {t['mean_difference']:+.4f} | "
                         f"{_fmt(t['t_statistic'], '.3f')} | {_p(t['p_value'])} | "
                         f"{'yes' if t['significant'] else 'no'} | "
                         f"{'primary (above)' if t.get('primary') else _p(holm_p)} | {t['n']} |")
    return lines


def _verdicts(block: Mapping[str, Any]) -> list[str]:
    from policies import METRIC_HIGHER_IS_BETTER

    lines = []
    for metric in block["metrics"]:
        higher = METRIC_HIGHER_IS_BETTER.get(metric, True)
        for t in block["tests"][metric]:
            diff = t["mean_difference"]
            if diff == 0:
                lines.append(f"- {metric}: {t['a']} and {t['b']} are equal on average.")
                continue
            better, worse = (t["a"], t["b"]) if (diff > 0) == higher else (t["b"], t["a"])
            holm_p = t.get("p_holm", math.nan)
            if t.get("primary"):
                continue  # the primary endpoint's verdict opens the report
            if math.isfinite(holm_p):
                verdict = f"Holm p = {_p(holm_p)}, {'significant' if holm_p < SIGNIFICANCE else 'not significant'} " \
                          f"at 0.05 after Holm"
            else:
                verdict = f"{'significant' if t['significant'] else 'not significant'} at 0.05"
            lines.append(f"- {metric}: {better} is better than {worse} by {abs(diff):.4f} on average "
                         f"(p = {_p(t['p_value'])}, {verdict}).")
    return lines


def _per_cycle_table(block: Mapping[str, Any], policies: Sequence[str]) -> list[str]:
    metrics = block["metrics"]
    lines = ["| cycle | policy | " + " | ".join(metrics) + " | seeds |", "|---|---|" + "---|" * (len(metrics) + 1)]
    cycles = len(next(iter(block["per_cycle"][metrics[0]].values())))
    for cycle in range(cycles):
        for p in policies:
            cells, n = [], 0
            for m in metrics:
                row = block["per_cycle"][m][p][cycle]
                n = max(n, row["n"])
                cells.append(f"{_fmt(row['mean'])} ± {_fmt(row['sd'])}" if row["n"] else "–")
            lines.append(f"| {cycle} | {p} | " + " | ".join(cells) + f" | {n} |")
    return lines


def plot_primary(primary: Mapping[str, Any], final: Mapping[str, Sequence[float]]) -> bytes:
    """PNG: the primary endpoint at a glance — per policy, its seeds' paired differences to the
    reference (dots) and their mean with the 95 % interval (bar), against the zero line."""
    from policies import METRIC_HIGHER_IS_BETTER

    comparisons = primary["comparisons"]
    fig, (ax,) = panel_grid(1, 7.0, 1.2 + 0.55 * len(comparisons))
    reference = np.asarray(final[primary["reference"]], dtype=np.float64)
    for y, c in enumerate(comparisons):
        diffs = np.asarray(final[c["a"]], dtype=np.float64) - reference
        ax.scatter(diffs, np.full(len(diffs), y) + np.linspace(-0.15, 0.15, len(diffs)), s=12, color="grey",
                   alpha=0.7, zorder=2)
        colour = "C3" if c["significant"] else "black"
        ax.errorbar(c["mean_difference"], y, xerr=[[c["mean_difference"] - c["ci_low"]], [c["ci_high"] - c["mean_difference"]]],
                    fmt="D", color=colour, capsize=4, lw=2, zorder=3)
    ax.axvline(0.0, color="C0", lw=1)
    ax.set_yticks(range(len(comparisons)), [c["a"] for c in comparisons], fontsize=8)
    ax.set_ylim(len(comparisons) - 0.5, -0.5)
    better = "higher" if METRIC_HIGHER_IS_BETTER.get(primary["metric"], True) else "lower"
    ax.set_xlabel(f"{primary['metric']} − {primary['reference']} ({source_label(primary['source'])}; "
                  f"{better} is better)", fontsize=8)
    ax.grid(alpha=0.3, axis="x")
    fig.suptitle(f"Primary endpoint {primary['endpoint']}: paired difference to {primary['reference']}, N = "
                 f"{primary['n']} seeds\n(dots: seeds; bar: mean and {int(primary['confidence'] * 100)} % CI, "
                 "red where Holm p < 0.05)", fontsize=9)
    return figure_png(fig)


def plot_per_cycle(stats: Mapping[str, Any], policies: Sequence[str]) -> bytes:
    """PNG: each metric per cycle, one line per policy (mean over seeds) with a mean ± sd band."""
    panels = [(source, m) for source, block in stats.items() if source in SOURCES for m in block["metrics"]]
    fig, axes = panel_grid(len(panels), 4.2, 3.4)
    for ax, (source, metric) in zip(axes, panels):
        for i, p in enumerate(policies):
            rows = stats[source]["per_cycle"][metric][p]
            x = np.array([r["cycle"] for r in rows])
            mean = np.array([np.nan if r["mean"] is None else r["mean"] for r in rows])
            sd = np.array([0.0 if r["sd"] is None else r["sd"] for r in rows])
            ax.plot(x, mean, marker="o", color=f"C{i}", label=p)
            ax.fill_between(x, mean - sd, mean + sd, color=f"C{i}", alpha=0.2)
        ax.set_xlabel("cycle")
        ax.set_xticks(x)
        ax.set_title(f"{metric} ({source_label(source)})", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Metric per cycle: mean over seeds ± sd (cycle 0 is the common start)", fontsize=10)
    return figure_png(fig)


def plot_paired(stats: Mapping[str, Any], policies: Sequence[str], seeds: Sequence[int]) -> bytes:
    """PNG: the final values per seed, one grey line per seed joining the policies, and the mean."""
    panels = [(source, m) for source, block in stats.items() if source in SOURCES for m in block["metrics"]]
    fig, axes = panel_grid(len(panels), max(3.2, 1.1 * len(policies) + 1.5), 3.8)
    for ax, (source, metric) in zip(axes, panels):
        final = stats[source]["final"][metric]
        names = [p for p in policies if p in final]
        x = np.arange(len(names))
        for j, seed in enumerate(seeds):
            ax.plot(x, [final[p][j] for p in names], marker="o", color="grey", alpha=0.6, lw=1)
            ax.annotate(str(seed), (x[-1], final[names[-1]][j]), xytext=(4, 0), textcoords="offset points",
                        fontsize=6, color="grey", va="center")
        ax.plot(x, [np.mean(final[p]) for p in names], marker="D", color="black", lw=2.5, label="mean")
        ax.set_xticks(x, names, rotation=25, ha="right", fontsize=7)
        ax.set_xlim(-0.4, len(names) - 0.6)
        ax.set_title(f"final {metric} ({source_label(source)})", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Per seed (grey lines, seed number at the right), final cycle; seeds {', '.join(map(str, seeds))}",
                 fontsize=10)
    return figure_png(fig)


def _write(folder: Location, root: str, path: str, data: bytes) -> None:
    """Write ``data`` at ``path`` (``root/...``) through the comparison folder's location."""
    folder.write_bytes(path[len(root):].lstrip("/"), data)


def json_ready(value: Any) -> Any:
    """``value`` with NaN and infinities as ``None`` and numpy scalars as Python numbers (for JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def report_dir(out: str, cycle: int, cycles: int) -> str:
    """Folder of the report after ``cycle`` of a comparison of ``cycles`` cycles: ``OUT`` for the
    last cycle, ``OUT/cycle_NN`` for an earlier one (e.g. the report a comparison had before
    it was extended to more cycles)."""
    root = out.rstrip("/")
    return root if cycle == cycles else posixpath.join(root, f"cycle_{cycle:02d}")


def write_report(out: str, *, at_cycle: int | None = None, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Render ``report.md``, ``report.json`` and the plots from the run directories.

    The report is of the comparison's last cycle, in ``OUT``; with ``at_cycle`` an earlier
    cycle's (every score, test and the failure analysis as they stood after that cycle) in
    ``OUT/cycle_NN`` (:func:`report_dir`). Returns the report's data (what ``report.json``
    holds), with ``files`` naming what was written.
    """
    from loop.study.failures import collect_failures, failures_markdown, plot_failures
    from stores import RunStore

    data = collect(out, at_cycle)
    config: CompareConfig = data["config"]
    last = data["cycle"]
    seeds = data["complete_seeds"]
    stats = statistics(data)
    root = report_dir(out, last, config.cycles)
    folder = Location(root)
    files = {"report": posixpath.join(root, "report.md"), "json": posixpath.join(root, "report.json")}
    policies = list(config.policies)

    primary = primary_endpoint(config, stats, seeds)
    selection = checkpoint_selection(data) if seeds else None
    taken = time_taken(data)
    metric_name = METRIC_NAMES.get(primary["metric"], primary["metric"])
    real = "; ".join(f"{name} = {path}" for name, path in config.real)
    lines = [f"# Policy comparison: {', '.join(policies)}", "",
             f"Generator {config.generator}, preset {config.preset}; seeds 1..{config.seeds}; cycle 0 "
             f"({config.n_train} training, {config.n_val} validation, {config.n_test} held-out test samples of "
             f"{config.size} px, initial policy {config.initial_policy}) shared by all policies, then "
             f"{config.cycles} cycles of {config.n_per_cycle} new samples each"
             + (f" (this report: after cycle {last})" if last != config.cycles else "") + ", fine-tuned on "
             f"{'all samples so far' if config.finetune_on == 'all' else 'the new samples only'}"
             + (f"; encoder weights {config.encoder_weights}" if config.encoder_weights else "")
             + (f"; real images: {real} (predicted in {config.real_tile} px tiles)" if real else "")
             + (f"; real validation images (`--real-val`, never the real test images): {config.real_val}"
                if config.real_val else "") + ".",
             f"Complete seeds (every policy run finished): {len(seeds)} of {config.seeds}"
             + (f" ({', '.join(map(str, seeds))})" if seeds else "") + f". Rendered {time.strftime('%Y-%m-%d %H:%M:%S')}.",
             _time_line(taken), "",
             f"## Primary endpoint: {source_label(primary['source'])}, {metric_name} (`{config.primary}`), "
             f"against {config.reference}", "",
             f"Declared in compare.toml before any run. Per policy, the paired difference policy − "
             f"{config.reference} of the final cycle's {metric_name} over the same seeds, its "
             f"{int(PRIMARY_CONFIDENCE * 100)} % t-interval, the paired t-test (its p Holm-adjusted over the "
             f"{len(primary['comparisons']) or len(policies) - 1} comparison(s) with {config.reference}) and the "
             f"Wilcoxon signed-rank test"
             + (f" (with N = {len(seeds)} seeds its two-sided p cannot go below 2/2^N = {2 / 2 ** len(seeds):.3g})"
                if seeds and 2 / 2 ** len(seeds) >= SIGNIFICANCE else "") + ".", ""]
    if primary["comparisons"]:
        lines += _primary_table(primary) + [""]
        files["primary_plot"] = posixpath.join(root, PLOTS_DIR, "primary.png")
        final = stats[primary["source"]]["final"][primary["metric"]]
        _write(folder, root, files["primary_plot"], plot_primary(primary, final))
        lines += [f"![primary endpoint]({PLOTS_DIR}/primary.png)", ""]
    lines += [f"**Verdict:** {primary['verdict']}", ""]
    if not seeds:
        lines += ["No seed is complete yet: no statistics. Run `loop compare` on this folder to go on.", ""]
    if seeds and stats:
        lines += [f"## Final scores side by side, after cycle {last} (mean ± sd over N = {len(seeds)} seeds)",
                  "", f"{metric_name} of each source: " + "; ".join(f"{s} = {source_label(s)}" for s in stats) + ".",
                  ""]
        lines += _side_by_side(stats, policies, primary["metric"]) + [""]
        if selection is not None:
            lines += _selection_section(selection, config.reference) + [""]
        lines += ["## Secondary endpoints", "",
                  f"Every other metric and source. The paired t-tests' p-values are Holm-adjusted over all "
                  f"{sum(1 for b in stats.values() for ts in b['tests'].values() for t in ts if not t.get('primary'))} "
                  f"secondary tests together (column p (Holm)); the 99 % intervals follow the paper "
                  f"(Agresti–Coull for the error rate with the paper's n = N² convention).", ""]
    for source, block in stats.items():
        if not seeds:
            break
        lines += [f"### {source_label(source)[0].upper() + source_label(source)[1:]}, after cycle {last} "
                  f"(N = {len(seeds)} seeds)", ""]
        lines += _summary_table(block, policies) + [""]
        lines += ["Intervals: " + "; ".join(f"{m}: {_interval_note(m, len(seeds))}" for m in block["metrics"]) + ".", ""]
        if any(block["tests"].values()):
            lines += [f"Paired two-tailed t-tests over the same seeds (difference = first − second policy; "
                      f"significant when p < {SIGNIFICANCE}; p (Holm) over the secondary family):", ""]
            lines += _tests_table(block) + [""] + _verdicts(block) + [""]
    if stats:  # per cycle: every seed that reached the cycle, complete or not
        files["per_cycle_plot"] = posixpath.join(root, PLOTS_DIR, "metric_per_cycle.png")
        _write(folder, root, files["per_cycle_plot"], plot_per_cycle(stats, policies))
        lines += ["## Plots", "", f"![metric per cycle]({PLOTS_DIR}/metric_per_cycle.png)", ""]
        if seeds:
            files["paired_plot"] = posixpath.join(root, PLOTS_DIR, "paired_final.png")
            _write(folder, root, files["paired_plot"], plot_paired(stats, policies, seeds))
            lines += [f"![final values per seed]({PLOTS_DIR}/paired_final.png)", ""]
        for source, block in stats.items():
            lines += [f"## Per cycle, {source_label(source)} (mean ± sd over the seeds that reached the cycle)", ""]
            lines += _per_cycle_table(block, policies) + [""]

    failures = None
    if seeds:
        base = RunStore.open(run_dir(out, seeds[0]))
        failures = collect_failures(base.space, base.task, [run_dir(out, s) for s in seeds],
                                    {p: [run_dir(out, s, p) for s in seeds] for p in policies}, cycle=last)
        files["failure_plot"] = posixpath.join(root, PLOTS_DIR, "failures.png")
        _write(folder, root, files["failure_plot"], plot_failures(failures))
        lines += ["## Failure analysis", "", failures_markdown(failures, f"{PLOTS_DIR}/failures.png")]

    lines += ["## Runs", "", "| run | state |", "|---|---|"]
    lines += [f"| {entry['run']} | {entry['state']} |" for entry in data["runs"].values()]
    _write(folder, root, files["report"], ("\n".join(lines) + "\n").encode("utf-8"))

    result = {"out": out, "settings": config.to_dict(), "complete_seeds": seeds, "time": taken, "primary": primary,
              "statistics": stats, "selection": selection,
              "failures": failures, "runs": {k: {"run": v["run"], "state": v["state"]} for k, v in data["runs"].items()},
              "files": files}
    _write(folder, root, files["json"], json.dumps(json_ready(result), indent=1).encode("utf-8"))
    say(f"wrote {files['report']}" + (f" and {len(files) - 2} plots" if len(files) > 2 else ""))
    return result
