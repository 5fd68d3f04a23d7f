"""The policy contract: what a sampling policy receives, what it returns, what it must not do.

A policy decides *where in parameter space* the next cycle's training images are generated.
The loop hands it a read-only :class:`PolicyView` of the run (the space, the parameter
table, the latest validation metrics, the cycle being proposed for), a count ``n`` and a
seeded ``numpy.random.Generator``; the policy returns exactly ``n`` :class:`Proposal` s.

Rules every policy keeps (the loop's resume depends on them):

* **No I/O, no global state.** A policy reads only its view, its settings and the ``rng``
  it is given. It never opens files, never touches ``numpy.random``'s global state, and
  keeps nothing between calls.
* **State is derived from the view.** If a policy needs a position (the Sobol sequence
  needs to know how many of its points were drawn before), it recomputes it from
  ``view.params`` — e.g. the number of rows whose ``policy`` column is this policy's
  :attr:`Policy.name` and whose ``cycle`` is before ``view.cycle``. A resumed run rebuilds
  the same view, so it gets the same proposals; counting only earlier cycles keeps a
  re-proposal of a half-finished cycle identical to the first one.
* **Deterministic.** The same view, ``n`` and ``rng`` seed give the same proposals.

The loop writes each proposal's :attr:`Proposal.policy` into the parameter table's
``policy`` column and its :attr:`Proposal.parent_id` into ``parent_id``.

See :mod:`policies.random` for the reference implementation.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from generators.space import ParamSpace, ParamSpaceError
from loop.errors import InputError


class PolicyError(InputError):
    """A policy name or setting is invalid, or a policy cannot propose from the view it got."""


@dataclass(frozen=True)
class Proposal:
    """One parameter set to generate.

    Attributes
    ----------
    params
        Parameter values keyed by dimension name, validated in the space (canonical Python
        types, the space's order).
    parent_id
        ``sample_id`` of the sample this one varies (worst-k neighbourhoods), or ``None``
        for a fresh draw.
    policy
        Canonical name of the policy that made it (inside ``mix``, the sub-policy's name).
        :meth:`Policy.propose` fills it in; the loop stores it in the ``policy`` column.
    """

    params: dict[str, Any]
    parent_id: int | None = None
    policy: str | None = None


@dataclass(frozen=True)
class PolicyView:
    """Read-only view of a run, as a policy sees it.

    Attributes
    ----------
    space
        The generator's parameter space.
    params
        The run's parameter table: ``sample_id``, ``cycle``, ``split``, ``policy``,
        ``parent_id``, ``seed``, ..., one column per parameter. May have no rows (and then
        may lack columns) before anything was generated.
    metrics
        The latest validation metrics, one row per scored sample: ``sample_id`` plus one
        column per metric (``iou``, ``error``, ``loss``...). No rows before the first
        evaluation.
    cycle
        The cycle the proposals are for (0 for the initial set).
    anchors
        Where the run's real validation images (``loop start --real-val DIR``) sit in the
        space, as placed after the cycle before: one row per image, ``name``, its scores
        (``miou``, ``error``, ``loss``; null without masks) and per located dimension
        ``unit_<dim>`` (the estimate in unit-cube coordinates) and ``spread_<dim>`` (its
        uncertainty); see :func:`policies.anchored.anchors_table`. No rows in a run without
        real validation images.
    """

    space: ParamSpace
    params: pa.Table
    metrics: pa.Table
    cycle: int
    anchors: pa.Table = field(default_factory=lambda: pa.table({}))

    def __post_init__(self) -> None:
        if not isinstance(self.space, ParamSpace):
            raise PolicyError(f"PolicyView.space: expected a ParamSpace, got {type(self.space).__name__}")
        for name in ("params", "metrics", "anchors"):
            value = getattr(self, name)
            if not isinstance(value, pa.Table):
                raise PolicyError(f"PolicyView.{name}: expected a pyarrow.Table, got {type(value).__name__}")
        if isinstance(self.cycle, bool) or not isinstance(self.cycle, (int, np.integer)) or self.cycle < 0:
            raise PolicyError(f"PolicyView.cycle: expected an integer >= 0, got {self.cycle!r}")

    def require_columns(self, table: str, columns: list[str] | tuple[str, ...], who: str) -> None:
        """Raise :class:`PolicyError` naming ``who`` if ``self.<table>`` lacks any of ``columns``."""
        have = getattr(self, table).column_names
        missing = [c for c in columns if c not in have]
        if missing:
            raise PolicyError(
                f"policy {who!r}: view.{table} lacks column(s) {', '.join(map(repr, missing))}; "
                f"it has: {', '.join(have) or '(none)'}"
            )


class Policy(abc.ABC):
    """Base class of sampling policies.

    Subclasses set :attr:`kind` (the name they are registered under), validate their
    settings in ``__init__`` (accepting typed values or the strings of a spec such as
    ``worst:k=0.1``, raising :class:`PolicyError` that names the setting, the value and the
    allowed range), return their canonical spec from :attr:`name`, and implement
    :meth:`_propose`. Callers use :meth:`propose`, which checks the contract around it.
    """

    kind: ClassVar[str] = ""

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """Canonical spec string, e.g. ``"worst:k=0.1,m=10,radius=0.05"``.

        ``get_policy(p.name)`` builds an equal policy. Stored in the ``policy`` column.
        """

    @abc.abstractmethod
    def _propose(self, view: PolicyView, n: int, rng: np.random.Generator) -> list[Proposal]:
        """Return ``n`` proposals (``n >= 1``); :meth:`propose` validates them."""

    def check_space(self, space: ParamSpace) -> None:
        """Raise :class:`PolicyError` when this policy cannot propose in ``space``.

        The loop calls it when a run starts, before anything is generated, so a policy that
        names dimensions the generator's space lacks (``paper`` on the crack generator) fails
        then, not after cycle 0's training. The default accepts every space.
        """

    def uses_anchors(self) -> bool:
        """Whether this policy proposes from :attr:`PolicyView.anchors` (a run must then have real
        validation images: ``loop start --real-val DIR``). The default: no."""
        return False

    def suggested_n(self, view: PolicyView) -> int | None:
        """How many proposals this policy would make by itself for ``view``, or ``None`` if any n suits.

        ``worst`` returns ``ceil(k·N_val)·m`` (the paper's 100 worst × 10 = 1000).
        """
        return None

    def propose(self, view: PolicyView, n: int, rng: np.random.Generator) -> list[Proposal]:
        """Propose exactly ``n`` parameter sets for ``view.cycle``.

        Parameters
        ----------
        view
            Read-only state of the run.
        n
            Number of proposals, ``>= 0``.
        rng
            The only source of randomness the policy may use.

        Returns
        -------
        list[Proposal]
            ``n`` proposals whose ``params`` are validated in ``view.space`` and whose
            ``policy`` is set.

        Raises
        ------
        PolicyError
            Bad arguments, a view the policy cannot work from (e.g. no metrics yet for
            ``worst``), or a policy that broke its contract.
        """
        if not isinstance(view, PolicyView):
            raise PolicyError(f"policy {self.name!r}: view must be a PolicyView, got {type(view).__name__}")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise PolicyError(f"policy {self.name!r}: n must be an integer >= 0, got {n!r}")
        if not isinstance(rng, np.random.Generator):
            raise PolicyError(f"policy {self.name!r}: rng must be a numpy.random.Generator, got {type(rng).__name__}")
        if n == 0:
            return []
        proposals = self._propose(view, int(n), rng)
        if len(proposals) != n:
            raise PolicyError(f"policy {self.name!r} returned {len(proposals)} proposals; {n} were asked for")
        return [self._checked(view.space, p) for p in proposals]

    def _checked(self, space: ParamSpace, proposal: Proposal) -> Proposal:
        if not isinstance(proposal, Proposal):
            raise PolicyError(f"policy {self.name!r} returned {type(proposal).__name__}, expected Proposal")
        try:
            params = space.validate(proposal.params)
        except ParamSpaceError as err:
            raise PolicyError(f"policy {self.name!r} proposed parameters outside the space: {err}") from err
        parent = proposal.parent_id
        if parent is not None:
            if isinstance(parent, bool) or not isinstance(parent, (int, np.integer)):
                raise PolicyError(f"policy {self.name!r}: parent_id must be an int or None, got {parent!r}")
            parent = int(parent)
        return Proposal(params=params, parent_id=parent, policy=proposal.policy or self.name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Policy) and type(other) is type(self) and other.name == self.name

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.name))
