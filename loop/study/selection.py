"""The checkpoint a user would keep: each run's cycle picked on its ``--real-val`` images.

A comparison reports every policy after its last cycle. A user with a few labelled micrographs of
their own does better than take the last cycle: more cycles fit the generator better and may fit
real images worse (issue 12 saw real mIoU fall with every cycle while the synthetic scores rose),
so they keep the cycle that scored best on those images (``loop status`` names it,
``loop evaluate --checkpoint best`` scores it). This module asks the comparison's question of
that checkpoint: per policy and complete seed, the cycle (0..the reported one) whose model scored
best on the real validation images (:func:`loop.run.lifecycle.best_real_val`), the primary
endpoint there, and each policy against the reference, paired over the seeds, as the primary
endpoint is (:func:`loop.study.statistics.compare_to_reference`). A secondary analysis: the
primary endpoint stays the last cycle's, declared before any run.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping

import numpy as np

from loop.study.compare_settings import CompareConfig
from loop.study.scores import score_at
from loop.study.statistics import compare_to_reference


def checkpoint_selection(data: Mapping[str, Any]) -> dict[str, Any] | None:
    """The primary endpoint at each run's cycle picked on the real validation images.

    ``data`` is :func:`loop.study.report.collect`'s; each run entry's ``real_val`` lists its
    per-cycle real-val scores. ``None`` when the comparison has no ``--real-val`` folder. Runs
    with a cycle not scored there (made before every cycle was) leave their policy out, named in
    ``unscored``. Returns ``{"source", "metric", "criterion", "picks": {policy: [{"seed", "cycle",
    "value", "last"}]}, "summary": {policy: {"mean", "sd", "last_mean", "cycles": {cycle: runs}}},
    "comparisons", "unscored"}``.
    """
    from loop.run.lifecycle import best_real_val

    config: CompareConfig = data["config"]
    if not config.real_val:
        return None
    last = data["cycle"]
    seeds = data["complete_seeds"]
    source, metric = config.primary.split(":")
    picks: dict[str, list[dict[str, Any]]] = {}
    unscored: list[str] = []
    criterion = None
    for policy in config.policies:
        rows = []
        for seed in seeds:
            entry = data["runs"][f"seed{seed:02d}/{policy}"]
            scored = entry.get("real_val", [])[:last + 1]
            if len(scored) < last + 1 or any(s is None for s in scored):
                unscored.append(entry["run"])
                break
            best = best_real_val([{"cycle": c, "state": "done", "real_val": s} for c, s in enumerate(scored)])
            if best is None:
                unscored.append(entry["run"])
                break
            criterion = best["metric"]
            rows.append({"seed": seed, "cycle": best["cycle"], "value": score_at(entry, source, best["cycle"], metric),
                         "last": score_at(entry, source, last, metric)})
        else:
            if rows and all(r["value"] is not None for r in rows):
                picks[policy] = rows
    summary = {policy: {"mean": float(np.mean([r["value"] for r in rows])),
                        "sd": float(np.std([r["value"] for r in rows], ddof=1)) if len(rows) > 1 else None,
                        "last_mean": (float(np.mean([r["last"] for r in rows]))
                                      if all(r["last"] is not None for r in rows) else None),
                        "cycles": dict(sorted(Counter(r["cycle"] for r in rows).items()))}
               for policy, rows in picks.items()}
    comparisons = []
    if config.reference in picks and len(picks) > 1:
        values = {policy: [r["value"] for r in rows] for policy, rows in picks.items()}
        comparisons = [c.to_dict() for c in compare_to_reference(values, config.reference)]
    return {"source": source, "metric": metric, "criterion": criterion, "cycle": last, "n": len(seeds),
            "picks": picks, "summary": summary, "comparisons": comparisons, "unscored": unscored}

