"""``sobol[:scramble=true,seed=0]``: a Sobol' sequence over the space, continued across cycles.

Systematic sampling: a low-discrepancy sequence fills the unit cube far more evenly than
independent uniform draws, and later points fill the gaps left by earlier ones. Points are
mapped into the space with :meth:`ParamSpace.from_unit` (log ranges in the logarithm,
integers and choices by equal cells).

The sequence is the same in every cycle and every run (its own ``seed`` setting, not the
``rng`` of the call), and each cycle continues it: the policy skips as many points as
``view.params`` holds rows with ``policy`` equal to this policy's name and ``cycle`` before
``view.cycle``. That count is its whole state, so a resumed run — or a second proposal for
a half-finished cycle — gets exactly the points the first attempt got. Because the sequence
does not depend on the run seed, runs with different seeds share their Sobol' training
parameters; what varies between them is the validation set, the image seeds and training.
"""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
from scipy.stats import qmc

from policies.settings import boolean, fmt, integer
from policies.base import Policy, PolicyView, Proposal

_MAX_SEED = 2**63 - 1  # numpy seeds are unbounded; keep the setting a signed 64-bit integer


def drawn_before(view: PolicyView, policy_name: str) -> int:
    """Rows of ``view.params`` drawn by ``policy_name`` in cycles before ``view.cycle``."""
    if view.params.num_rows == 0:
        return 0
    view.require_columns("params", ("policy", "cycle"), policy_name)
    mine = pc.and_(pc.equal(view.params["policy"], policy_name), pc.less(view.params["cycle"], view.cycle))
    return int(pc.sum(pc.cast(pc.fill_null(mine, False), "int64")).as_py() or 0)


class SobolPolicy(Policy):
    """Scrambled (or plain) Sobol' points, continuing the sequence from cycle to cycle.

    Parameters
    ----------
    scramble
        Owen-scramble the sequence (default true). Unscrambled, the first point is the
        cube's corner (every dimension at its lower bound).
    seed
        Seed of the scrambling, an integer >= 0 (default 0). Fixed per policy so that the
        sequence continues across cycles whatever ``rng`` the loop passes.
    """

    kind = "sobol"

    def __init__(self, scramble: bool | str = True, seed: int | str = 0):
        self.scramble = boolean(self.kind, "scramble", scramble)
        self.seed = integer(self.kind, "seed", seed, low=0, high=_MAX_SEED)

    @property
    def name(self) -> str:
        """``"sobol:scramble=<bool>,seed=<int>"``."""
        return f"{self.kind}:scramble={fmt(self.scramble)},seed={self.seed}"

    def _propose(self, view: PolicyView, n: int, rng: np.random.Generator) -> list[Proposal]:
        engine = qmc.Sobol(len(view.space), scramble=self.scramble, rng=self.seed)
        skip = drawn_before(view, self.name)
        if skip:
            engine.fast_forward(skip)
            unit = engine.random(n)
        else:
            # scipy warns when a sequence *starts* with a non-power-of-2 batch. Continuing
            # across cycles is the point here, so draw the first point alone (same points).
            unit = np.vstack([engine.random(1), engine.random(n - 1)])
        return [Proposal(params=p) for p in view.space.from_unit(unit)]
