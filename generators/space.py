"""Declared parameter spaces of the generators.

A :class:`ParamSpace` is an ordered tuple of named dimensions. Each dimension knows its
bounds, its unit and a one-line meaning, and can sample, validate, clip and map values to
and from the unit interval. The store, the policies and the CLI read parameter names,
types and bounds from here; nothing outside a generator hard-codes a parameter name.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import tomli_w
from loop.errors import InputError


class ParamSpaceError(InputError):
    """A parameter set or a space declaration does not fit the space."""


@dataclass(frozen=True)
class Dimension:
    """One named axis of a parameter space (abstract; use a concrete subclass)."""

    name: str
    unit: str
    description: str

    kind: ClassVar[str] = "abstract"

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` values uniformly (in this dimension's own scale)."""
        return self.from_unit(rng.random(n))

    def to_unit(self, values: np.ndarray) -> np.ndarray:
        """Map values to [0, 1]."""
        raise NotImplementedError

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        """Map unit-interval coordinates back to values (clipped into the bounds)."""
        raise NotImplementedError

    def validate(self, value: Any) -> Any:
        """Return ``value`` as this dimension's Python type, or raise :class:`ParamSpaceError`."""
        raise NotImplementedError

    def clip(self, value: Any) -> Any:
        """Return the nearest value inside the bounds."""
        raise NotImplementedError

    @property
    def arrow_type(self) -> pa.DataType:
        """Arrow type of this dimension's column in the parameter table."""
        raise NotImplementedError

    def bounds_text(self) -> str:
        """Human-readable bounds for error messages."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form, for ``run.toml`` and parameter-space files."""
        raise NotImplementedError

    def _error(self, value: Any, problem: str) -> ParamSpaceError:
        return ParamSpaceError(
            f"parameter {self.name!r}: {problem} (got {value!r}; expected {self.bounds_text()})"
        )


def _check_range(name: str, low: float, high: float) -> None:
    if not (math.isfinite(low) and math.isfinite(high)) or not low <= high:
        raise ParamSpaceError(f"dimension {name!r}: bounds must be finite with low <= high, got [{low}, {high}]")


@dataclass(frozen=True)
class _Range(Dimension):
    low: float = 0.0
    high: float = 1.0

    def __post_init__(self) -> None:
        _check_range(self.name, self.low, self.high)

    def bounds_text(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.kind} in [{self.low}, {self.high}]{unit}"

    def _number(self, value: Any) -> float:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise self._error(value, f"wrong type {type(value).__name__}")
        value = float(value)
        if not math.isfinite(value):
            raise self._error(value, "not a finite number")
        if not self.low <= value <= self.high:
            raise self._error(value, "out of bounds")
        return value

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "low": self.low, "high": self.high,
                "unit": self.unit, "description": self.description}

    # Real-valued by default; Integer overrides these three.
    def validate(self, value: Any) -> float:
        return self._number(value)

    def clip(self, value: Any) -> float:
        return float(min(max(float(value), self.low), self.high))

    @property
    def arrow_type(self) -> pa.DataType:
        return pa.float64()


@dataclass(frozen=True)
class Continuous(_Range):
    """A real-valued range, uniform on a linear scale (low == high: a fixed value)."""

    kind: ClassVar[str] = "continuous"

    def to_unit(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        if self.high == self.low:  # a fixed dimension sits in the middle of its unit interval
            return np.full(values.shape, 0.5)
        return (values - self.low) / (self.high - self.low)

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        return np.clip(self.low + np.asarray(u, dtype=float) * (self.high - self.low), self.low, self.high)



@dataclass(frozen=True)
class LogRange(_Range):
    """A positive real-valued range, uniform on a log scale."""

    kind: ClassVar[str] = "log"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.low <= 0:
            raise ParamSpaceError(f"dimension {self.name!r}: a log range needs low > 0, got {self.low}")

    def to_unit(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        if self.high == self.low:
            return np.full(values.shape, 0.5)
        lo, hi = math.log(self.low), math.log(self.high)
        return (np.log(values) - lo) / (hi - lo)

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        lo, hi = math.log(self.low), math.log(self.high)
        return np.clip(np.exp(lo + np.asarray(u, dtype=float) * (hi - lo)), self.low, self.high)



@dataclass(frozen=True)
class Integer(_Range):
    """An integer range (inclusive bounds), uniform over its integers."""

    kind: ClassVar[str] = "integer"

    def __post_init__(self) -> None:
        super().__post_init__()
        if int(self.low) != self.low or int(self.high) != self.high:
            raise ParamSpaceError(f"dimension {self.name!r}: integer bounds must be whole numbers")

    def to_unit(self, values: np.ndarray) -> np.ndarray:
        # Integers sit at the centres of equal-width cells, so that from_unit(to_unit(v)) == v.
        n = self.high - self.low + 1
        return (np.asarray(values, dtype=float) - self.low + 0.5) / n

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        n = self.high - self.low + 1
        idx = np.floor(np.asarray(u, dtype=float) * n)
        return np.clip(self.low + idx, self.low, self.high).astype(np.int64)

    def validate(self, value: Any) -> int:
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise self._error(value, f"wrong type {type(value).__name__}")
        self._number(value)
        return int(value)

    def clip(self, value: Any) -> int:
        return int(min(max(round(float(value)), self.low), self.high))

    @property
    def arrow_type(self) -> pa.DataType:
        return pa.int64()


@dataclass(frozen=True)
class Choice(Dimension):
    """A categorical dimension over a fixed tuple of string options."""

    options: tuple[str, ...] = ()

    kind: ClassVar[str] = "choice"

    def __post_init__(self) -> None:
        if len(self.options) < 1 or len(set(self.options)) != len(self.options):
            raise ParamSpaceError(f"dimension {self.name!r}: needs distinct options, got {self.options!r}")
        object.__setattr__(self, "options", tuple(str(o) for o in self.options))

    def bounds_text(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.options)

    def to_unit(self, values: np.ndarray) -> np.ndarray:
        index = {o: i for i, o in enumerate(self.options)}
        idx = np.array([index[str(v)] for v in np.atleast_1d(values)], dtype=float)
        return (idx + 0.5) / len(self.options)

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        idx = np.clip(np.floor(np.asarray(u, dtype=float) * len(self.options)), 0, len(self.options) - 1)
        return np.array([self.options[int(i)] for i in np.atleast_1d(idx)], dtype=object)

    def validate(self, value: Any) -> str:
        if not isinstance(value, str):
            raise self._error(value, f"wrong type {type(value).__name__}")
        if value not in self.options:
            raise self._error(value, "not an option")
        return value

    def clip(self, value: Any) -> str:
        return self.validate(value)

    @property
    def arrow_type(self) -> pa.DataType:
        return pa.string()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "options": list(self.options),
                "unit": self.unit, "description": self.description}


_KINDS: dict[str, type[Dimension]] = {c.kind: c for c in (Continuous, LogRange, Integer, Choice)}


def dimension_from_dict(data: Mapping[str, Any]) -> Dimension:
    """Rebuild a dimension from :meth:`Dimension.to_dict` output."""
    kind = data.get("kind")
    if kind not in _KINDS:
        raise ParamSpaceError(f"dimension kind {kind!r} unknown; expected one of {sorted(_KINDS)}")
    common = {"name": str(data["name"]), "unit": str(data.get("unit", "")),
              "description": str(data.get("description", ""))}
    if kind == "choice":
        return Choice(**common, options=tuple(data["options"]))
    return _KINDS[kind](**common, low=data["low"], high=data["high"])


class ParamSpace:
    """An ordered set of named dimensions.

    Examples
    --------
    >>> space = ParamSpace([Continuous("sigma", "px", "blur", 0.0, 2.0), Integer("n", "", "count", 1, 5)])
    >>> rows = space.sample(np.random.default_rng(0), 3)
    >>> space.validate(rows[0]) == rows[0]
    True
    """

    def __init__(self, dimensions: Sequence[Dimension]):
        names = [d.name for d in dimensions]
        if len(set(names)) != len(names):
            raise ParamSpaceError(f"duplicate dimension names in {names}")
        if not names:
            raise ParamSpaceError("a parameter space needs at least one dimension")
        self._dims: tuple[Dimension, ...] = tuple(dimensions)
        self._by_name = {d.name: d for d in self._dims}

    @property
    def names(self) -> tuple[str, ...]:
        """Dimension names in declaration order."""
        return tuple(d.name for d in self._dims)

    @property
    def dimensions(self) -> tuple[Dimension, ...]:
        """The dimensions in declaration order."""
        return self._dims

    def __len__(self) -> int:
        return len(self._dims)

    def __iter__(self) -> Iterator[Dimension]:
        return iter(self._dims)

    def __getitem__(self, name: str) -> Dimension:
        try:
            return self._by_name[name]
        except KeyError:
            raise ParamSpaceError(f"unknown parameter {name!r}; known: {', '.join(self.names)}") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ParamSpace) and self._dims == other._dims

    def __hash__(self) -> int:
        return hash(self._dims)

    def __repr__(self) -> str:
        return f"ParamSpace({', '.join(self.names)})"

    def sample(self, rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
        """Draw ``n`` parameter sets uniformly (each dimension in its own scale)."""
        return self.from_unit(rng.random((n, len(self._dims))))

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Check a parameter set and return it with canonical Python types and order.

        Raises :class:`ParamSpaceError` (a ``ValueError``) for an unknown name, a missing
        name, a value of the wrong type or out of bounds; the message names the parameter,
        the value and the bounds.
        """
        unknown = [k for k in params if k not in self._by_name]
        if unknown:
            raise ParamSpaceError(
                f"unknown parameter {unknown[0]!r} (value {params[unknown[0]]!r}); known: {', '.join(self.names)}"
            )
        out = {}
        for dim in self._dims:
            if dim.name not in params:
                raise ParamSpaceError(f"missing parameter {dim.name!r}; expected {dim.bounds_text()}")
            out[dim.name] = dim.validate(params[dim.name])
        return out

    def clip(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Return the parameter set with every value moved to the nearest point inside the bounds."""
        return {d.name: d.clip(params[d.name]) for d in self._dims}

    def to_unit(self, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Map one parameter set to a vector in [0, 1]^d, or many to an (n, d) array."""
        if isinstance(params, Mapping):
            return self.to_unit([params])[0]
        cols = [d.to_unit(np.array([p[d.name] for p in params], dtype=object if isinstance(d, Choice) else float))
                for d in self._dims]
        return np.stack(cols, axis=1) if cols and len(params) else np.zeros((0, len(self._dims)))

    def from_unit(self, u: np.ndarray) -> list[dict[str, Any]]:
        """Map an (n, d) array in the unit cube back to n parameter sets (clipped into the space)."""
        u = np.atleast_2d(np.asarray(u, dtype=float))
        if u.shape[1] != len(self._dims):
            raise ParamSpaceError(f"unit-cube points have {u.shape[1]} coordinates; the space has {len(self._dims)}")
        cols = [d.from_unit(u[:, j]) for j, d in enumerate(self._dims)]
        return [{d.name: _python(cols[j][i]) for j, d in enumerate(self._dims)} for i in range(u.shape[0])]

    def arrow_schema(self) -> pa.Schema:
        """Arrow schema of the parameter columns, one typed field per dimension."""
        return pa.schema([
            pa.field(d.name, d.arrow_type, nullable=False,
                     metadata={"unit": d.unit, "description": d.description, "kind": d.kind})
            for d in self._dims
        ])

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (a list of dimension dicts), for TOML/JSON files."""
        return {"dimensions": [d.to_dict() for d in self._dims]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ParamSpace":
        """Rebuild a space from :meth:`to_dict` output."""
        return cls([dimension_from_dict(d) for d in data["dimensions"]])


def _python(value: Any) -> Any:
    """Numpy scalar to the matching Python scalar."""
    return value.item() if isinstance(value, np.generic) else value


def load_space_file(path: str | Path) -> ParamSpace:
    """Read a parameter-space TOML file (``ParamSpace.to_dict()`` form, as ``loop fit-grains`` and
    ``loop fit-cracks`` write); raises :class:`ParamSpaceError` naming the file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ParamSpaceError(f"space file {path}: not found") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ParamSpaceError(f"space file {path}: cannot be read as TOML ({exc})") from exc
    return space_from_data(data, f"space file {path}")


def space_from_data(data: Any, where: str) -> ParamSpace:
    """A space from its :meth:`ParamSpace.to_dict` form (a table with a ``dimensions`` array), as
    read from a file or a run.toml; raises :class:`ParamSpaceError` starting with ``where``."""
    if not isinstance(data, Mapping) or not isinstance(data.get("dimensions"), list):
        raise ParamSpaceError(f"{where}: expected a parameter space (a table with a [[dimensions]] array), "
                              f"got {type(data).__name__}")
    try:
        return ParamSpace.from_dict(data)
    except (KeyError, TypeError) as exc:
        raise ParamSpaceError(f"{where}: a dimension lacks or mistypes a field ({exc})") from None
    except ParamSpaceError as exc:
        raise ParamSpaceError(f"{where}: {exc}") from None


def save_space_file(space: ParamSpace, path: str | Path, comment: str = "",
                    extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``space`` as a TOML space file (readable by :func:`load_space_file`), ``comment``
    lines first as ``#`` comments and ``extra`` tables (e.g. a fit summary) after the
    dimensions; creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    path.write_text(header + tomli_w.dumps({**space.to_dict(), **(extra or {})}))
    return path


def complete_space(space: ParamSpace, limits: ParamSpace, defaults: Mapping[str, Any]) -> ParamSpace:
    """``space`` with every dimension of ``limits`` it lacks but ``defaults`` names added, fixed
    at its default (low == high), in ``limits``' order. So a space file or a run written before
    a generator gained dimensions keeps meaning what it meant; other differences are left for
    :func:`check_subspace` to report."""
    from dataclasses import replace

    have = set(space.names)
    if not any(d.name not in have and d.name in defaults for d in limits):
        return space
    def fixed(dim: Dimension) -> Dimension:
        value = defaults[dim.name]
        return replace(dim, options=(value,)) if isinstance(dim, Choice) else replace(dim, low=value, high=value)

    dims = [space[d.name] if d.name in have else fixed(d) for d in limits if d.name in have or d.name in defaults]
    dims += [d for d in space if d.name not in limits.names]
    return ParamSpace(dims)


def with_defaults(params: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with the ``defaults`` of the names it lacks (a parameter set of a run that
    began before its generator gained dimensions)."""
    return {**{k: v for k, v in defaults.items() if k not in params}, **params}


def check_subspace(space: ParamSpace, limits: ParamSpace, source: str = "space") -> None:
    """Raise :class:`ParamSpaceError` (naming ``source`` and the dimension) unless ``space`` has
    exactly the dimensions of ``limits``, each of the same kind and inside its bounds (a
    choice: a subset of its options). Dimensions may be fixed (low == high)."""
    if set(space.names) != set(limits.names):
        missing = sorted(set(limits.names) - set(space.names))
        extra = sorted(set(space.names) - set(limits.names))
        raise ParamSpaceError(f"{source}: dimensions do not match the generator's (missing {missing}, "
                              f"unknown {extra}); expected {', '.join(limits.names)}")
    for dim in space:
        limit = limits[dim.name]
        if dim.kind != limit.kind:
            raise ParamSpaceError(f"{source}: dimension {dim.name!r} is {dim.kind}; expected {limit.kind}")
        if isinstance(dim, Choice):
            unknown = [o for o in dim.options if o not in limit.options]
            if unknown:
                raise ParamSpaceError(f"{source}: dimension {dim.name!r} has option(s) {unknown}; "
                                      f"expected among {', '.join(limit.options)}")
        elif dim.low < limit.low or dim.high > limit.high:
            raise ParamSpaceError(f"{source}: dimension {dim.name!r} has bounds [{dim.low}, {dim.high}]; "
                                  f"expected within [{limit.low}, {limit.high}] {dim.unit}".rstrip())
