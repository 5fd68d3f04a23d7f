"""``near:k=0.1,m=10,radius=0.05[,dims=a|b][,metric=iou][,split=val]``: vary random validation samples.

The control of the paper's adaptive sampling (alias ``near-random``): the same variations as
:mod:`policies.worst` — ``ceil(k·N)`` parents among the ``N`` scored validation rows, ``m``
variations each within ``radius`` of each dimension's range, along ``dims`` only — but the
parents are drawn **uniformly at random** (without replacement, from the ``rng``) instead of
being the worst. Comparing ``worst`` with ``near`` at equal settings separates *targeting the
worst* from *densifying near the validation set*.

Everything but the choice of parents is :class:`~policies.worst.WorstPolicy`'s: the settings
and their checks, the pool of parents (the ``split`` rows with a finite ``metric`` score, so
both policies choose from the same rows and :meth:`suggested_n` is the same), and the
variation step (:func:`~policies.worst.vary_around`). Like ``worst`` it needs an evaluated
cycle: with no metrics it raises :class:`~policies.base.PolicyError`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from policies.base import PolicyView
from policies.worst import WorstPolicy


class NearPolicy(WorstPolicy):
    """Variations around randomly chosen scored validation samples (settings as :class:`WorstPolicy`)."""

    kind = "near"
    varies = "randomly chosen scored"

    def parents(self, view: PolicyView, rng: np.random.Generator) -> pa.Table:
        """``ceil(k·N)`` of the ``N`` scored rows, drawn uniformly without replacement, in draw order."""
        pool = self.scored(view).sort_by([("sample_id", "ascending")])  # a join's row order is not fixed
        picked = rng.choice(pool.num_rows, size=self.count(pool.num_rows), replace=False)
        return pool.take(pa.array(picked))
