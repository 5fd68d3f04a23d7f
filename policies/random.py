"""``random``: uniform draws over the whole parameter space — the reference policy.

Read this module first when writing a policy. A policy is one short module holding one
:class:`~policies.base.Policy` subclass, plus one line in :mod:`policies.registry`:

1. **Name it.** Set ``kind`` to the registry name. :attr:`name` returns the canonical spec:
   the kind, then every setting as ``key=value`` (``"worst:k=0.1,m=10,radius=0.05"``), so
   that ``get_policy(policy.name)`` rebuilds an equal policy. ``random`` has no settings,
   so its name is just ``"random"``.
2. **Validate settings in** ``__init__``. Settings arrive typed or as spec text; type them
   with :mod:`policies.settings`, which raises :class:`~policies.base.PolicyError` naming
   the setting, the value and the allowed range. A bad spec fails when the run is
   configured, not cycles later.
3. **Implement** ``_propose(view, n, rng)``. Return ``n`` :class:`~policies.base.Proposal` s.
   Draw randomness only from ``rng``; read the run only through ``view``; do no I/O and keep
   no state between calls (derive any position from ``view.params``, see
   :mod:`policies.sobol`). Set ``parent_id`` when a proposal varies an existing sample.
   :meth:`~policies.base.Policy.propose` wraps the call: it checks ``n``, that exactly ``n``
   proposals came back, validates each parameter set in the space and records the policy
   name on each, so ``_propose`` can stay short.
4. **Register it**: ``register_policy("random", RandomPolicy)`` in :mod:`policies.registry`.
5. **Test it** in ``tests/policies/``: the contract (count, validity, determinism), what
   makes the policy different, and every bad setting.

Examples
--------
>>> import numpy as np, pyarrow as pa
>>> from generators.space import Continuous, ParamSpace
>>> from policies.base import PolicyView
>>> space = ParamSpace([Continuous("sigma", "px", "blur", 0.0, 2.0)])
>>> view = PolicyView(space, pa.table({}), pa.table({}), cycle=0)
>>> [p.parent_id for p in RandomPolicy().propose(view, 2, np.random.default_rng(0))]
[None, None]
"""

from __future__ import annotations

import numpy as np

from policies.base import Policy, PolicyView, Proposal


class RandomPolicy(Policy):
    """Independent uniform draws over the space (each dimension uniform in its own scale).

    Integer and choice dimensions are uniform over their values; log ranges are uniform in
    the logarithm. No settings; the view is not read beyond its space, so every cycle is a
    fresh draw from ``rng``. This is the paper's "random data" baseline.
    """

    kind = "random"

    @property
    def name(self) -> str:
        """``"random"`` (no settings)."""
        return self.kind

    def _propose(self, view: PolicyView, n: int, rng: np.random.Generator) -> list[Proposal]:
        return [Proposal(params=p) for p in view.space.sample(rng, n)]
