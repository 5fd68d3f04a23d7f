"""Synthetic surface cracks on synthesized textures (paper §3.1.1), for crack / no-crack classification.

A sample is a background texture (a crop of a quilted texture, :mod:`generators.textures`),
with — with probability ``crack_probability`` — one crack drawn over it. A crack is a
polyline: its number of segments is ``1 + Poisson(segments_mean - 1)``, its segment lengths
are log-normal around ``segment_length`` (log-sd ``length_spread``), the direction changes
at each bend by a normal angle of sd ``bend_sigma``, its width is log-normal around
``width`` at every vertex (log-sd ``width_variation``; linear in between), its midpoint
(halfway along it) falls uniformly in the central square of side ``centre_spread`` (a
fraction of the image side: near 1, cracks run out of the image as in tiles cut from a
larger picture) and it darkens the texture by ``intensity`` where it covers a pixel fully. These distribution parameters are the dimensions of the space, so a fitted
space (``loop fit-cracks``) or a policy moves the distributions, not single cracks. Lengths
and widths are fractions of the image side, so a space fits any rendered size.

The crack is drawn anti-aliased: each pixel is darkened by the fraction of it the crack
band covers across its width (an exact 1-D box filter of the band at the pixel's distance
from the centreline). The mask is 1 where that coverage is at least one half or where the
centreline passes (an 8-connected line), so even a sub-pixel crack has a mask; label 1
means a crack, 0 none (and an empty mask).

Randomness comes from four streams spawned from the sample seed (label, texture crop,
crack geometry, pixel noise), so moving one parameter keeps everything else of the sample.
The texture bank behind the crops is built once per process and exemplar set
(:class:`generators.textures.TextureBank`; the :data:`MAX_BANKS` most recently used sets
are kept); the first render of a process pays for it (one to two seconds on one core for
the default exemplars at 128 px, more for larger sizes).
"""

from __future__ import annotations

import copy
import functools
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from skimage.draw import line as draw_line

from generators.base import GeneratorError, Sample, StageClock, check_size
from generators.imaging import noise_blur_uint8
from generators import space as space_file
from generators.space import Choice, Continuous, LogRange, ParamSpace, ParamSpaceError, complete_space
from generators.textures import Exemplar, TextureBank, default_exemplars, exemplars_digest, load_exemplars

VERSION = "1.1"
"""Version of the rendering code; custom exemplars add ``+x<digest>`` (see :attr:`CrackGenerator.version`).
1.1 added ``centre_spread`` (1.0 placed every crack's midpoint in the middle 0.2-0.8 of the image)."""

MAX_SEGMENTS = 24
"""Most segments of one crack (the Poisson draw is capped here)."""

MAX_ZOOM_OUT = 2.0
"""Largest texture shrink (``texture_scale`` >= 1 / this): the bank is sized for it."""

PIECE_PX = 3.0
"""Length (px) of the pieces a segment is drawn as, so it can wander between its vertices."""

PIECES_PER_GROUP = 12
"""Path pieces rasterized together in one array operation."""

DEFAULTS: dict[str, float] = {"centre_spread": 0.6}
"""Dimensions added after version 1.0, at the values 1.0 rendered: a parameter set or space of
1.0 with these added renders the bytes 1.0 rendered (see :func:`generators.space.complete_space`)."""

STAGES = ("texture", "crack", "noise_blur")
"""Timed stages of :meth:`CrackGenerator.render`."""

TEXTURE_DIM = "texture"


def _space(textures: Sequence[str]) -> ParamSpace:
    return ParamSpace([
        Continuous("crack_probability", "", "probability that a sample gets a crack (label 1); 0.5 on average "
                   "over the default range, so half the samples have one", 0.0, 1.0),
        Continuous("segments_mean", "segments", "mean number of straight segments of a crack (1 + Poisson)", 1.0, 8.0),
        LogRange("segment_length", "side", "median segment length, as a fraction of the image side", 0.05, 0.5),
        Continuous("length_spread", "log", "sd of the log segment lengths", 0.0, 0.8),
        Continuous("bend_sigma", "deg", "sd of the change of direction at each bend", 0.0, 60.0),
        LogRange("width", "side", "median crack width, as a fraction of the image side", 0.006, 0.04),
        Continuous("width_variation", "log", "sd of the log width from vertex to vertex along the crack", 0.0, 0.8),
        Continuous("roughness", "side", "typical sideways wander of a segment between its two vertices, as a "
                   "fraction of the image side", 0.0, 0.015),
        Continuous("centre_spread", "side", "side of the central square the crack's midpoint (halfway along it) "
                   "falls in, uniformly, as a fraction of the image side: 0.6 = the middle 0.2-0.8 of each axis "
                   "(version 1.0's fixed placement), 1 = anywhere, so a crack may run out of the image on one side "
                   "(as in tiles cut from a larger picture)", 0.6, 1.0),
        Continuous("intensity", "grey", "darkening where the crack covers a pixel fully (0 black .. 1 white scale)",
                   0.05, 0.5),
        Choice(TEXTURE_DIM, "", "exemplar the background texture is quilted from", tuple(textures)),
        LogRange("texture_scale", "", f"zoom of the texture (> 1 magnifies; >= 1/{MAX_ZOOM_OUT:g})",
                 1.0 / MAX_ZOOM_OUT, 2.0),
        Continuous("texture_mean", "grey", "mean grey of the background", 0.2, 0.8),
        Continuous("texture_contrast", "grey", "sd of the background texture's grey", 0.02, 0.2),
        Continuous("shading", "grey", "amplitude of a linear illumination gradient across the image", 0.0, 0.15),
        Continuous("noise_sigma", "grey", "sd of the white pixel noise", 0.0, 0.04),
        Continuous("blur_sigma", "px", "sd of the final Gaussian blur at the rendered size (0 = none)", 0.0, 1.0),
    ])


SPACE = _space(("brick", "gravel", "grass"))
"""The space of the default generator (scikit-image's exemplars)."""

LIMITS: dict[str, tuple[float, float]] = {
    "crack_probability": (0.0, 1.0),
    "segments_mean": (1.0, float(MAX_SEGMENTS)),
    "segment_length": (1e-3, 2.0),
    "length_spread": (0.0, 3.0),
    "bend_sigma": (0.0, 180.0),
    "width": (1e-4, 0.5),
    "width_variation": (0.0, 3.0),
    "roughness": (0.0, 0.2),
    "centre_spread": (0.0, 1.0),
    "intensity": (-1.0, 1.0),
    "texture_scale": (1.0 / MAX_ZOOM_OUT, 16.0),
    "texture_mean": (0.0, 1.0),
    "texture_contrast": (0.0, 1.0),
    "shading": (0.0, 1.0),
    "noise_sigma": (0.0, 1.0),
    "blur_sigma": (0.0, 10.0),
}
"""Hard limits of each numeric dimension: a custom or fitted space must stay inside them."""


class CrackSpaceError(ParamSpaceError):
    """A custom or fitted crack space (or its file) does not fit the crack generator."""


@dataclass(frozen=True)
class CrackShape:
    """A crack at the rendered size, coordinates (x, y) in px with pixel centres at integers.

    ``vertices`` and ``widths`` (px, one per vertex) are the polyline the distributions
    describe; ``path`` and ``path_widths`` the drawn line: every segment cut into pieces of
    about :data:`PIECE_PX` that wander sideways by the roughness (equal to the polyline
    when the roughness is 0).
    """

    vertices: np.ndarray
    widths: np.ndarray
    path: np.ndarray
    path_widths: np.ndarray

    @property
    def segment_lengths(self) -> np.ndarray:
        """Length of each segment, px."""
        return np.hypot(*np.diff(self.vertices, axis=0).T)

    @property
    def turns(self) -> np.ndarray:
        """Change of direction at each interior vertex, degrees in (-180, 180]."""
        heading = np.arctan2(*np.diff(self.vertices, axis=0).T[::-1])
        return np.degrees(np.angle(np.exp(1j * np.diff(heading))))


def crack_shape(rng: np.random.Generator, params: Mapping[str, Any], size: int) -> CrackShape:
    """Draw one crack's polyline and widths from the distribution parameters in ``params``."""
    n = 1 + min(int(rng.poisson(params["segments_mean"] - 1.0)), MAX_SEGMENTS - 1)
    lengths = params["segment_length"] * size * np.exp(params["length_spread"] * rng.standard_normal(n))
    heading = rng.uniform(0.0, 2.0 * math.pi) + np.concatenate(
        [[0.0], np.cumsum(np.radians(params["bend_sigma"]) * rng.standard_normal(n - 1))])
    steps = lengths[:, None] * np.stack([np.cos(heading), np.sin(heading)], axis=1)
    vertices = np.concatenate([np.zeros((1, 2)), np.cumsum(steps, axis=0)])
    # Put the point halfway along the crack at a random spot of the central region.
    arc = np.concatenate([[0.0], np.cumsum(lengths)])
    half = arc[-1] / 2.0
    k = min(int(np.searchsorted(arc, half, side="right")) - 1, n - 1)
    midpoint = vertices[k] + (half - arc[k]) / lengths[k] * steps[k]
    margin = 0.5 - 0.5 * params["centre_spread"]
    centre = rng.uniform(margin, 1.0 - margin, size=2) * size
    vertices = vertices - midpoint + centre
    widths = params["width"] * size * np.exp(params["width_variation"] * rng.standard_normal(n + 1))
    path, path_widths = _wander(vertices, widths, params["roughness"] * size, rng)
    return CrackShape(vertices=vertices, widths=widths, path=path, path_widths=path_widths)


def _wander(vertices: np.ndarray, widths: np.ndarray, amplitude: float,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Cut each segment into pieces of about PIECE_PX that stray sideways along a Brownian bridge."""
    points, point_widths = [vertices[:1]], [widths[:1]]
    for a, b, wa, wb in zip(vertices[:-1], vertices[1:], widths[:-1], widths[1:]):
        chord = b - a
        length = float(np.hypot(*chord))
        m = max(1, math.ceil(length / PIECE_PX))
        t = np.arange(1, m + 1) / m
        # Drawn whatever the amplitude, so the roughness scales the wander without changing it.
        walk = np.cumsum(rng.standard_normal(m))
        bridge = (walk - t * walk[-1]) * (2.0 / math.sqrt(m))
        normal = np.array([-chord[1], chord[0]]) / length if length > 0 else np.zeros(2)
        points.append(a + t[:, None] * chord + (amplitude * bridge)[:, None] * normal)
        point_widths.append(wa + t * (wb - wa))
    return np.concatenate(points), np.concatenate(point_widths)


def rasterize_crack(shape: CrackShape, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Coverage (float32 in [0, 1]) and mask (uint8 0/1) of a crack on a ``size``×``size`` grid.

    Coverage of a pixel is the length of its 1-px extent across the band that lies inside
    the band, at the pixel centre's distance from the nearest point of the drawn path
    (pieces are unioned by the maximum, with round joins). The mask is coverage >= 0.5 or
    the 8-connected centreline.
    """
    coverage = np.zeros((size, size), dtype=np.float32)
    mask = np.zeros((size, size), dtype=bool)
    v, w = shape.path, shape.path_widths
    # Consecutive pieces are handled together (one array op per group, not per piece).
    for first in range(0, len(v) - 1, PIECES_PER_GROUP):
        a, b = v[first:first + PIECES_PER_GROUP], v[first + 1:first + PIECES_PER_GROUP + 1]
        wa, wb = w[first:first + PIECES_PER_GROUP], w[first + 1:first + PIECES_PER_GROUP + 1]
        a, wa = a[:len(b)], wa[:len(b)]
        reach = 0.5 * max(wa.max(), wb.max()) + 1.0
        lo = np.floor(np.minimum(a.min(axis=0), b.min(axis=0)) - reach).astype(int)
        hi = np.ceil(np.maximum(a.max(axis=0), b.max(axis=0)) + reach).astype(int)
        x0, y0 = max(lo[0], 0), max(lo[1], 0)
        x1, y1 = min(hi[0], size - 1), min(hi[1], size - 1)
        if x0 > x1 or y0 > y1:
            continue
        xs = np.arange(x0, x1 + 1, dtype=np.float64)[None, None, :]
        ys = np.arange(y0, y1 + 1, dtype=np.float64)[None, :, None]
        d = b - a
        dd = np.maximum((d * d).sum(axis=1), 1e-12)[:, None, None]
        ax, ay = a[:, 0, None, None], a[:, 1, None, None]
        dx, dy = d[:, 0, None, None], d[:, 1, None, None]
        t = np.clip(((xs - ax) * dx + (ys - ay) * dy) / dd, 0.0, 1.0)
        dist = np.hypot(xs - (ax + t * dx), ys - (ay + t * dy))
        half = 0.5 * (wa[:, None, None] + t * (wb - wa)[:, None, None])
        cov = np.clip(np.minimum(dist + 0.5, half) - np.maximum(dist - 0.5, -half), 0.0, 1.0).max(axis=0)
        region = coverage[y0:y1 + 1, x0:x1 + 1]
        np.maximum(region, cov.astype(np.float32), out=region)
    ends = np.round(v).astype(np.int64)
    for (c0, r0), (c1, r1) in zip(ends[:-1], ends[1:]):
        rr, cc = draw_line(r0, c0, r1, c1)
        inside = (rr >= 0) & (rr < size) & (cc >= 0) & (cc < size)
        mask[rr[inside], cc[inside]] = True
    mask |= coverage >= 0.5
    return coverage, mask.astype(np.uint8)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise GeneratorError(f"seed: expected a non-negative integer, got {seed!r}")
    return int(seed)


def check_crack_space(space: ParamSpace, textures: Sequence[str], source: str = "space") -> None:
    """Raise :class:`CrackSpaceError` (naming ``source`` and the dimension) unless ``space`` fits the generator.

    It must have the crack generator's dimension names, numeric dimensions inside
    :data:`LIMITS`, and ``texture`` options among ``textures`` (the exemplar names).
    """
    expected = set(SPACE.names)
    if set(space.names) != expected:
        missing, extra = sorted(expected - set(space.names)), sorted(set(space.names) - expected)
        raise CrackSpaceError(f"{source}: dimensions do not match the crack generator's "
                              f"(missing {missing}, unknown {extra}); expected {', '.join(SPACE.names)}")
    for dim in space:
        if dim.name == TEXTURE_DIM:
            if not isinstance(dim, Choice):
                raise CrackSpaceError(f"{source}: dimension 'texture' must be a choice of exemplar names, got {dim.kind}")
            unknown = [o for o in dim.options if o not in textures]
            if unknown:
                raise CrackSpaceError(f"{source}: dimension 'texture' has option(s) {unknown} that are not exemplars; "
                                      f"the exemplars are: {', '.join(textures)}")
            continue
        if isinstance(dim, Choice):
            raise CrackSpaceError(f"{source}: dimension {dim.name!r} must be numeric, got a choice")
        lo, hi = LIMITS[dim.name]
        if dim.low < lo or dim.high > hi:
            raise CrackSpaceError(f"{source}: dimension {dim.name!r} has bounds [{dim.low}, {dim.high}]; "
                                  f"expected within [{lo}, {hi}] {dim.unit}".rstrip())


MAX_BANKS = 4
"""Texture banks (exemplar sets) kept per process; the least recently used one goes first."""

_BANKS: OrderedDict[str, TextureBank] = OrderedDict()


def _bank(exemplars: Sequence[Exemplar]) -> TextureBank:
    """One texture bank per exemplar set and process (generator instances are cheap and many)."""
    key = exemplars_digest(exemplars)
    if key in _BANKS:
        _BANKS.move_to_end(key)
    else:
        _BANKS[key] = TextureBank(exemplars)
        while len(_BANKS) > MAX_BANKS:
            _BANKS.popitem(last=False)
    return _BANKS[key]


@functools.lru_cache(maxsize=1)
def _default_exemplars() -> tuple[Exemplar, ...]:
    return default_exemplars()


class CrackGenerator:
    """The surface-crack generator (classification): textures from exemplars, parametric cracks.

    Parameters
    ----------
    exemplars : a folder of texture images, a sequence of
        :class:`~generators.textures.Exemplar`, or ``None`` for scikit-image's ``brick``,
        ``gravel`` and ``grass``. The ``texture`` dimension's options are their names.
    space : a :class:`~generators.space.ParamSpace` (or its ``to_dict`` form) to use instead
        of the default one, e.g. fitted by ``loop fit-cracks``: its dimensions replace the
        default ones of the same name (checked by :func:`check_crack_space`).

    ``render`` returns the image (uint8), the crack mask (uint8, 1 = crack; all 0 without
    a crack) and the label (1 = crack).

    Examples
    --------
    >>> gen = CrackGenerator()
    >>> params = gen.space.sample(np.random.default_rng(0), 1)[0]
    >>> sample = gen.render(params, seed=3, size=64)
    >>> sample.image.shape, sample.label in (0, 1)
    ((64, 64), True)
    """

    name = "cracks"
    task = "classification"
    defaults = DEFAULTS
    """Values of dimensions a run's frozen space or a space file may lack, because they were
    added to the generator after it was written."""

    def __init__(self, exemplars: str | Path | Sequence[Exemplar] | None = None,
                 space: ParamSpace | Mapping[str, Any] | None = None, *, space_source: str = "space"):
        if exemplars is None:
            self._exemplars = _default_exemplars()
            self.version = VERSION
        else:
            self._exemplars = load_exemplars(exemplars) if isinstance(exemplars, (str, Path)) else tuple(exemplars)
            if not self._exemplars:
                raise GeneratorError("exemplars: expected at least one exemplar, got none")
            self.version = f"{VERSION}+x{exemplars_digest(self._exemplars)[:12]}"
        self.space = _space(self.texture_names)
        if space is not None:
            self.space = self._merged(space, space_source)

    def _merged(self, space: ParamSpace | Mapping[str, Any], source: str) -> ParamSpace:
        """``space`` with the dimensions it leaves out taken from the default space of these
        exemplars (a fitted space has no ``texture``), except those added to the generator
        after the file was written, which stay fixed at :data:`DEFAULTS`; checked by
        :func:`check_crack_space`."""
        base = _space(self.texture_names)
        given = space if isinstance(space, ParamSpace) else ParamSpace.from_dict(space)
        unknown = [n for n in given.names if n not in base.names]
        if unknown:
            raise CrackSpaceError(f"{source}: unknown dimension(s) {unknown}; "
                                  f"the crack generator has: {', '.join(base.names)}")
        given = complete_space(given, ParamSpace([d for d in base if d.name != TEXTURE_DIM]), DEFAULTS)
        merged = ParamSpace([given[n] if n in given.names else base[n] for n in base.names])
        check_crack_space(merged, self.texture_names, source)
        return merged

    @property
    def exemplars(self) -> tuple[Exemplar, ...]:
        """The exemplars the textures are quilted from."""
        return self._exemplars

    @property
    def texture_names(self) -> tuple[str, ...]:
        """The exemplars' names: the options of the ``texture`` dimension."""
        return tuple(e.name for e in self._exemplars)

    def check_space(self, space: ParamSpace, source: str = "space") -> None:
        """Raise :class:`CrackSpaceError` unless ``space`` fits this generator: :func:`check_crack_space`
        with these exemplars (the hook :func:`generators.registry.check_space` calls)."""
        check_crack_space(space, self.texture_names, source)

    def with_space(self, space: ParamSpace | Mapping[str, Any], source: str = "space") -> "CrackGenerator":
        """This generator (same exemplars, same :attr:`version`) with ``space`` as its space: the
        dimensions it leaves out from the default space, checked (the hook
        :func:`generators.registry.fit_space` calls for a run's own space)."""
        other = copy.copy(self)
        other.space = self._merged(space, source)
        return other

    def render(self, params: Mapping[str, Any], seed: int, size: int,
               timings: dict[str, float] | None = None) -> Sample:
        """Render one ``size``×``size`` sample: image, crack mask and label.

        ``timings``, when given, gets the seconds of each stage of :data:`STAGES` added.
        """
        p = self.space.validate(params)
        size = check_size(size)
        seed = _check_seed(seed)
        ss_label, ss_texture, ss_crack, ss_noise = np.random.SeedSequence(seed).spawn(4)
        clock = StageClock(timings)

        with clock("texture"):
            rng_texture = np.random.default_rng(ss_texture)
            crop = _bank(self._exemplars).crop(p[TEXTURE_DIM], size, rng_texture, zoom=p["texture_scale"],
                                               max_zoom_out=MAX_ZOOM_OUT)
            image = crop * np.float32(p["texture_contrast"])
            image += np.float32(p["texture_mean"])
            if p["shading"] > 0:
                angle = rng_texture.uniform(0.0, 2.0 * math.pi)
                ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
                image += np.float32(p["shading"]) * (np.float32(math.cos(angle)) * ramp[None, :]
                                                     + np.float32(math.sin(angle)) * ramp[:, None])

        label = int(np.random.default_rng(ss_label).random() < p["crack_probability"])
        with clock("crack"):
            if label:
                shape = crack_shape(np.random.default_rng(ss_crack), p, size)
                coverage, mask = rasterize_crack(shape, size)
                coverage *= np.float32(p["intensity"])
                image -= coverage
            else:
                mask = np.zeros((size, size), dtype=np.uint8)

        with clock("noise_blur"):
            out = noise_blur_uint8(image, p["noise_sigma"], p["blur_sigma"], ss_noise)
        return Sample(image=out, mask=mask, label=label)


def load_space_file(path: str | Path) -> ParamSpace:
    """Read a crack parameter-space TOML file (as ``loop fit-cracks`` writes); errors are :class:`CrackSpaceError`."""
    try:
        return space_file.load_space_file(path)
    except ParamSpaceError as exc:
        raise CrackSpaceError(str(exc)) from None


def crack_generator_from_file(path: str | Path, exemplars: str | Path | Sequence[Exemplar] | None = None
                              ) -> CrackGenerator:
    """A :class:`CrackGenerator` whose space comes from the space file ``path`` (e.g. fitted by ``loop fit-cracks``)."""
    return CrackGenerator(exemplars=exemplars, space=load_space_file(path), space_source=f"space file {path}")


