"""The report of a comparison: ``OUT/report.md``, ``OUT/report.json`` and ``OUT/plots/*.png``.

Everything is read back from the run directories (``loop status``'s per-cycle scores, which
the driver computed from the runs' metric tables, and SQL over the runs for the failure
analysis), so ``loop compare --report OUT`` re-renders the same numbers without running
anything, and works on a comparison that is still going (only seeds whose every policy run
has finished enter the statistics).

Tables follow the paper's Tables 1–2: per policy and metric the mean ± standard deviation
over the seeds of the final cycle's score, and a 99 % confidence interval (Agresti–Coull
for the error rate, t for the others; :mod:`loop.study.statistics`); then a paired two-tailed
t-test for every pair of policies over the same seeds.
"""

from __future__ import annotations

import io
import json
import math
import posixpath
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from stores.location import Location
from loop.study.compare_settings import BASE, CompareConfig, CompareError, read_settings, run_dir
from loop.study.statistics import CONFIDENCE, RATE_METRICS, SIGNIFICANCE, pairwise_tests, summarize

REPORT_METRICS = ("miou", "error", "boundary_f1")
SOURCES = {"val": "synthetic validation set", "real": "real images"}
PLOTS_DIR = "plots"


def collect(out: str) -> dict[str, Any]:
    """Per run and cycle, the scores of a comparison's run directories.

    Returns ``{"config", "runs": {label: {"seed", "policy", "run", "state", "cycles":
    {source: [per-cycle dict or None]}}}, "complete_seeds"}``; a seed is complete when every
    policy run has done its last cycle.
    """
    from loop.run.lifecycle import run_status
    from stores import RunStore

    config = read_settings(out)
    if config is None:
        raise CompareError(f"{out}: not a comparison (no compare.toml there); run `loop compare {out} "
                           "--policies ... --seeds N` first")
    runs: dict[str, dict[str, Any]] = {}
    complete = []
    for seed in range(1, config.seeds + 1):
        seed_complete = True
        for policy in (None, *config.policies):
            run = run_dir(out, seed, policy)
            entry: dict[str, Any] = {"seed": seed, "policy": policy or BASE, "run": run, "state": "absent",
                                     "cycles": {"val": [], "real": []}}
            last = config.cycles if policy else 0
            if RunStore.exists(run):
                status = run_status(run)
                for source in SOURCES:
                    entry["cycles"][source] = [c.get(source) if c["state"] == "done" else None
                                               for c in status["cycles"]]
                done = [c["cycle"] for c in status["cycles"] if c["state"] == "done"]
                entry["state"] = ("finished" if last in done else
                                  f"cycles 0..{max(done)} of 0..{last} done" if done else "cycle 0 not done yet")
            if policy and entry["state"] != "finished":
                seed_complete = False
            runs[f"seed{seed:02d}/{policy or BASE}"] = entry
        if seed_complete:
            complete.append(seed)
    return {"config": config, "runs": runs, "complete_seeds": complete}


def _value(entry: Mapping[str, Any], source: str, cycle: int, metric: str) -> float | None:
    cycles = entry["cycles"][source]
    if cycle >= len(cycles) or cycles[cycle] is None or metric not in cycles[cycle]:
        return None
    value = cycles[cycle][metric]
    return float(value) if value is not None and math.isfinite(value) else None


def _metrics(data: Mapping[str, Any], source: str) -> list[str]:
    present: set[str] = set()
    for entry in data["runs"].values():
        for cycle in entry["cycles"][source]:
            present |= set(cycle or ())
    return [m for m in REPORT_METRICS if m in present]


def statistics(data: Mapping[str, Any]) -> dict[str, Any]:
    """Summaries and paired tests of the final cycle over the complete seeds, per source and metric,
    plus per-cycle mean ± sd and each seed's final values (for the plots)."""
    config: CompareConfig = data["config"]
    seeds = data["complete_seeds"]
    runs = data["runs"]
    out: dict[str, Any] = {}
    for source in SOURCES:
        metrics = _metrics(data, source)
        if not metrics:
            continue
        block: dict[str, Any] = {"metrics": metrics, "final": {}, "summary": {}, "tests": {}, "cycle0": {},
                                 "per_cycle": {}}
        for metric in metrics:
            final = {p: [_value(runs[f"seed{s:02d}/{p}"], source, config.cycles, metric) for s in seeds]
                     for p in config.policies}
            final = {p: v for p, v in final.items() if v and all(x is not None for x in v)}
            block["final"][metric] = final
            block["summary"][metric] = {p: summarize(metric, v).to_dict() for p, v in final.items()}
            start = [_value(runs[f"seed{s:02d}/{BASE}"], source, 0, metric) for s in seeds]
            if start and all(x is not None for x in start):
                block["cycle0"][metric] = summarize(metric, start).to_dict()
            block["tests"][metric] = [t.to_dict() for t in pairwise_tests(final)] if len(final) > 1 else []
            curves = {}
            for p in config.policies:
                rows = []
                for cycle in range(config.cycles + 1):
                    values = [_value(runs[f"seed{s:02d}/{p}"], source, cycle, metric)
                              for s in range(1, config.seeds + 1)]
                    values = [v for v in values if v is not None]
                    rows.append({"cycle": cycle, "n": len(values),
                                 "mean": float(np.mean(values)) if values else None,
                                 "sd": float(np.std(values, ddof=1)) if len(values) > 1 else None})
                curves[p] = rows
            block["per_cycle"][metric] = curves
        out[source] = block
    return out


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
    lines = ["| metric | difference | mean difference | t | p | p < 0.05 | seeds |", "|---|---|---|---|---|---|---|"]
    for metric in block["metrics"]:
        for t in block["tests"][metric]:
            lines.append(f"| {metric} | {t['a']} − {t['b']} | {t['mean_difference']:+.4f} | "
                         f"{_fmt(t['t_statistic'], '.3f')} | {_p(t['p_value'])} | "
                         f"{'yes' if t['significant'] else 'no'} | {t['n']} |")
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
            verdict = "significant" if t["significant"] else "not significant"
            lines.append(f"- {metric}: {better} is better than {worse} by {abs(diff):.4f} on average "
                         f"(p = {_p(t['p_value'])}, {verdict} at 0.05).")
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


def plot_per_cycle(stats: Mapping[str, Any], policies: Sequence[str]) -> bytes:
    """PNG: each metric per cycle, one line per policy (mean over seeds) with a mean ± sd band."""
    from matplotlib.figure import Figure

    panels = [(source, m) for source, block in stats.items() for m in block["metrics"]]
    fig = Figure(figsize=(4.2 * len(panels), 3.4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False).ravel()
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
        ax.set_title(f"{metric} ({SOURCES[source]})", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Metric per cycle: mean over seeds ± sd (cycle 0 is the common start)", fontsize=10)
    return _png(fig)


def plot_paired(stats: Mapping[str, Any], policies: Sequence[str], seeds: Sequence[int]) -> bytes:
    """PNG: the final values per seed, one grey line per seed joining the policies, and the mean."""
    from matplotlib.figure import Figure

    panels = [(source, m) for source, block in stats.items() for m in block["metrics"]]
    fig = Figure(figsize=(max(3.2, 1.4 * len(policies) + 1.5) * len(panels), 3.6), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False).ravel()
    for ax, (source, metric) in zip(axes, panels):
        final = stats[source]["final"][metric]
        names = [p for p in policies if p in final]
        x = np.arange(len(names))
        for j, seed in enumerate(seeds):
            ax.plot(x, [final[p][j] for p in names], marker="o", color="grey", alpha=0.6, lw=1)
            ax.annotate(str(seed), (x[-1], final[names[-1]][j]), xytext=(4, 0), textcoords="offset points",
                        fontsize=6, color="grey", va="center")
        ax.plot(x, [np.mean(final[p]) for p in names], marker="D", color="black", lw=2.5, label="mean")
        ax.set_xticks(x, names)
        ax.set_xlim(-0.4, len(names) - 0.6)
        ax.set_title(f"final {metric} ({SOURCES[source]})", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Per seed (grey lines, seed number at the right), final cycle; seeds {', '.join(map(str, seeds))}",
                 fontsize=10)
    return _png(fig)


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


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


def write_report(out: str, *, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Render ``OUT/report.md``, ``OUT/report.json`` and the plots from the run directories.

    Returns the report's data (what ``report.json`` holds), with ``files`` naming what was written.
    """
    from loop.study.failures import collect_failures, failures_markdown, plot_failures
    from stores import RunStore

    data = collect(out)
    config: CompareConfig = data["config"]
    seeds = data["complete_seeds"]
    stats = statistics(data)
    root = out.rstrip("/")
    folder = Location(out)
    files = {"report": posixpath.join(root, "report.md"), "json": posixpath.join(root, "report.json")}
    policies = list(config.policies)

    lines = [f"# Policy comparison: {', '.join(policies)}", "",
             f"Generator {config.generator}, preset {config.preset}; seeds 1..{config.seeds}; cycle 0 "
             f"({config.n_train} training, {config.n_val} validation samples of {config.size} px, initial policy "
             f"{config.initial_policy}) shared by all policies, then {config.cycles} cycles of {config.n_per_cycle} "
             f"new samples each" + (f"; real images: {config.real_dir}" if config.real_dir else "") + ".",
             f"Complete seeds (every policy run finished): {len(seeds)} of {config.seeds}"
             + (f" ({', '.join(map(str, seeds))})" if seeds else "") + f". Rendered {time.strftime('%Y-%m-%d %H:%M:%S')}.",
             ""]
    if not seeds:
        lines += ["No seed is complete yet: no statistics. Run `loop compare` on this folder to go on.", ""]
    for source, block in stats.items():
        if not seeds:
            break
        lines += [f"## {SOURCES[source].capitalize()}, after cycle {config.cycles} (N = {len(seeds)} seeds)", ""]
        lines += _summary_table(block, policies) + [""]
        lines += ["Intervals: " + "; ".join(f"{m}: {_interval_note(m, len(seeds))}" for m in block["metrics"]) + ".", ""]
        if any(block["tests"].values()):
            lines += [f"Paired two-tailed t-tests over the same seeds (difference = first − second policy; "
                      f"significant when p < {SIGNIFICANCE}):", ""]
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
            lines += [f"## Per cycle, {SOURCES[source]} (mean ± sd over the seeds that reached the cycle)", ""]
            lines += _per_cycle_table(block, policies) + [""]

    failures = None
    if seeds:
        base = RunStore.open(run_dir(out, seeds[0]))
        failures = collect_failures(base.space, base.task, [run_dir(out, s) for s in seeds],
                                    {p: [run_dir(out, s, p) for s in seeds] for p in policies})
        files["failure_plot"] = posixpath.join(root, PLOTS_DIR, "failures.png")
        _write(folder, root, files["failure_plot"], plot_failures(failures))
        lines += ["## Failure analysis", "", failures_markdown(failures, f"{PLOTS_DIR}/failures.png")]

    lines += ["## Runs", "", "| run | state |", "|---|---|"]
    lines += [f"| {entry['run']} | {entry['state']} |" for entry in data["runs"].values()]
    _write(folder, root, files["report"], ("\n".join(lines) + "\n").encode("utf-8"))

    result = {"out": out, "settings": config.to_dict(), "complete_seeds": seeds, "statistics": stats,
              "failures": failures, "runs": {k: {"run": v["run"], "state": v["state"]} for k, v in data["runs"].items()},
              "files": files}
    _write(folder, root, files["json"], json.dumps(json_ready(result), indent=1).encode("utf-8"))
    say(f"wrote {files['report']}" + (f" and {len(files) - 2} plots" if len(files) > 2 else ""))
    return result
