"""``mix:worst10=0.7,random=0.3``: split each cycle's n between several policies.

Each setting is a sub-policy and its weight. The weights must be positive and sum to 1
(within 1e-9) — they are not normalised, so a typo such as ``worst10=0.7,random=0.2``
is an error rather than a silent re-weighting. ``n`` is split by largest remainder: each
part gets ``floor(w·n)``, and the units left over go to the largest fractional parts (ties
to the part written first), so the counts always sum to ``n``.

Limit of the syntax: a sub-policy is named without settings, since ``,`` and ``=`` already
separate the mix's own settings. Use a registered name (its defaults: ``worst``, ``sobol``)
or an alias that carries settings (``worst10``). ``mix`` cannot be nested.

Randomness: the call's ``rng`` spawns one independent child per sub-policy, in the order
written, whatever their counts — so the same rng seed gives the same proposals, and a
sub-policy's draws do not depend on how many the others made. Proposals come back
concatenated in the order written, each recording its sub-policy's name in
:attr:`Proposal.policy` (so ``sobol`` inside a mix continues its own sequence).
"""

from __future__ import annotations

import math

import numpy as np

from generators.space import ParamSpace
from policies.settings import fmt, number
from policies.base import Policy, PolicyError, PolicyView, Proposal
from policies.registry import available_policies, get_policy

_SUM_TOLERANCE = 1e-9


def largest_remainder(weights: list[float], n: int) -> list[int]:
    """Split ``n`` into integer counts proportional to ``weights`` (which sum to 1).

    >>> largest_remainder([0.7, 0.3], 11)
    [8, 3]
    """
    quotas = [w * n for w in weights]
    counts = [math.floor(q) for q in quotas]
    # Largest fractional part first; on equal parts the earlier weight wins.
    order = sorted(range(len(weights)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for j in range(n - sum(counts)):
        counts[order[j % len(order)]] += 1
    return counts


class MixPolicy(Policy):
    """Several policies at once, each proposing its share of ``n``.

    Parameters
    ----------
    **weights
        Sub-policy name (or alias) -> weight in (0, 1]; the weights sum to 1.
    """

    kind = "mix"

    def __init__(self, **weights: float | str):
        example = "e.g. mix:worst10=0.7,random=0.3"
        if not weights:
            raise PolicyError(f"policy 'mix': needs sub-policies with weights, {example}")
        self.weights: dict[str, float] = {}
        self.parts: dict[str, Policy] = {}
        for key, value in weights.items():
            if ":" in key or key not in available_policies() or key == self.kind:
                raise PolicyError(
                    f"policy 'mix': sub-policy {key!r} is not a setting-free policy name or alias; "
                    f"expected one of {', '.join(n for n in available_policies() if n != self.kind)} ({example})"
                )
            self.weights[key] = number(self.kind, key, value, low=0.0, high=1.0, low_open=True)
            self.parts[key] = get_policy(key)
        total = math.fsum(self.weights.values())
        if abs(total - 1.0) > _SUM_TOLERANCE:
            listed = ",".join(f"{k}={fmt(w)}" for k, w in self.weights.items())
            raise PolicyError(f"policy 'mix': weights {listed} sum to {total:.12g}; expected a sum of 1")

    @property
    def name(self) -> str:
        """``"mix:<name>=<weight>,..."`` in the order written."""
        return f"{self.kind}:" + ",".join(f"{k}={fmt(w)}" for k, w in self.weights.items())

    def counts(self, n: int) -> dict[str, int]:
        """How many of ``n`` proposals each sub-policy makes."""
        return dict(zip(self.weights, largest_remainder(list(self.weights.values()), n)))

    def uses_anchors(self) -> bool:
        """Whether some part proposes from the view's anchors."""
        return any(part.uses_anchors() for part in self.parts.values())

    def check_space(self, space: ParamSpace) -> None:
        """Every part must fit ``space``."""
        for part in self.parts.values():
            part.check_space(space)

    def _propose(self, view: PolicyView, n: int, rng: np.random.Generator) -> list[Proposal]:
        children = rng.spawn(len(self.parts))
        out: list[Proposal] = []
        for (key, count), child in zip(self.counts(n).items(), children, strict=True):
            out.extend(self.parts[key].propose(view, count, child))
        return out
