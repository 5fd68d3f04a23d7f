"""``lhs[:scramble=true]``: a Latin hypercube of the cycle's n points.

Each cycle's batch is stratified on its own: every dimension's range is cut into ``n``
equal cells (in unit coordinates) and each cell holds exactly one point, so even a small
batch covers every dimension's whole range. Unlike :mod:`policies.sobol` the batches of
successive cycles are independent (drawn from the call's ``rng``), and there is no state.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import qmc

from policies.settings import boolean, fmt
from policies.base import Policy, PolicyView, Proposal


class LatinHypercubePolicy(Policy):
    """Latin hypercube sampling (``scipy.stats.qmc.LatinHypercube``) of each batch.

    Parameters
    ----------
    scramble
        Place each point uniformly inside its cell (default true); false puts it at the
        cell's centre.
    """

    kind = "lhs"

    def __init__(self, scramble: bool | str = True):
        self.scramble = boolean(self.kind, "scramble", scramble)

    @property
    def name(self) -> str:
        """``"lhs:scramble=<bool>"``."""
        return f"{self.kind}:scramble={fmt(self.scramble)}"

    def _propose(self, view: PolicyView, n: int, rng: np.random.Generator) -> list[Proposal]:
        engine = qmc.LatinHypercube(len(view.space), scramble=self.scramble, rng=rng)
        return [Proposal(params=p) for p in view.space.from_unit(engine.random(n))]
