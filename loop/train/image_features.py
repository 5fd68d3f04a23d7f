"""Hand-made image statistics for the inverse model: what a grey micrograph says about its generator parameters.

Each statistic answers one physical question about a grey tile (values in [0, 1], lengths in
the tile's own pixels, never resized):

- **grey levels** (mean, standard deviation, quantiles): mean grey, grain contrast, the tails
  that boundaries and inclusions add;
- **variogram** (RMS and median absolute difference of pixels ``lag`` px apart, for lags of 1
  to 32 px): noise (the lag-1 floor), blur (how fast it rises over the first pixels), grain
  size (the lag where the grain-to-grain steps saturate it);
- **noise** (the median absolute value of the finest diagonal wavelet band and of the
  Laplacian, Donoho's robust noise estimate): white noise, damped by blur;
- **radial power spectrum** in log-spaced frequency bins: grain size (the knee), Perlin and
  etch texture (bumps at their wavelengths), blur (the high-frequency fall-off);
- **autocorrelation length** (where the radially averaged autocorrelation falls to 1/2,
  1/4, 1/10): grain size;
- **granulometry** (black and white top-hats, ``closing - image`` and ``image - opening``, with
  square windows of 3 to 13 px (odd: centred)): thin dark or bright lines and spots narrower than the window,
  i.e. boundary thickness and contrast (its sign: dark or bright), inclusions;
- **ridges** (the Hessian's eigenvalues at scales of 1 to 6 px, scale-normalised; their means and
  high quantiles): line width (the scale of the strongest response) and contrast;
- **gradients** (magnitude quantiles, raw and after a 1 px smoothing, and edge density above
  fixed grey thresholds): boundary density and sharpness;
- **local orientation** (the structure tensor of 1 px gradients, averaged over 2 and 4 px): its
  coherence, and how fast the orientation field decorrelates with distance (lags of 4 to 32
  px): within a grain the etch striations keep one orientation, so this measures grain size
  apart from the Perlin texture;
- **smoothed-grey variogram** (the tile blurred by 2 px, normalised by its variance, and the
  tail ratio of its differences): the piecewise-constant grain greys without the striations
  and the noise, i.e. grain size and grain contrast;
- **patch spectrum** (eigenvalues of the covariance of 5 × 5 patches, of all of them and of the
  10 % and 30 % flattest): white noise lifts the smallest eigenvalues of the flat patches
  (smooth texture and edges span few dimensions), blur lowers the high-order ones;
- **local standard deviation** (5 × 5 windows, quantiles): within-grain texture (low
  quantiles) versus boundaries (high ones);
- **shading** (a quadratic surface fitted by least squares, and a heavily smoothed copy):
  low-frequency illumination, and the offset it adds to the mean grey.

Spread-like statistics (energies, lengths) enter as logarithms, since the parameters behind
them act multiplicatively. An image larger than the tile side is described by the mean of its
tiles' vectors (:func:`image_features`); the regressor on top of these numbers lives in
:mod:`loop.train.inverse_features`.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
LAGS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
TOPHAT_SIZES = (3, 5, 7, 9, 13)
RIDGE_SCALES = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
RIDGE_QUANTILES = (0.9, 0.97)
EDGE_THRESHOLDS = (0.02, 0.05, 0.1, 0.2)
SPECTRUM_EDGES = tuple(float(f) for f in np.geomspace(1.0 / 128.0, 0.5, 11)) + (0.75,)
"""Radial frequency bins (cycles per px) of the power spectrum; the last one holds the corners."""
ACF_LEVELS = (0.5, 0.25, 0.1)
ORIENTATION_SCALES = (2.0, 4.0)
ORIENTATION_LAGS = (4, 8, 16, 32)
SMOOTH_SIGMA = 2.0
SMOOTH_LAGS = (2, 4, 8, 16, 32)
PATCH = 5
PATCH_EIGEN = (0, 1, 2, 4, 8, 12, 16, 20, 24)
"""Which eigenvalues (ascending) of the all-patch covariance are kept; the flat patches keep the first five."""
FLAT_FRACTIONS = (0.1, 0.3)
EPS = 1e-6


def _names() -> tuple[str, ...]:
    names = ["grey_mean", "grey_std", *(f"grey_q{round(100 * q):02d}" for q in QUANTILES)]
    for lag in LAGS:
        names += [f"variogram_rms_{lag}", f"variogram_mad_{lag}"]
    names += ["noise_wavelet", "noise_laplace"]
    names += [f"spectrum_{i}" for i in range(len(SPECTRUM_EDGES) - 1)]
    names += [f"acf_length_{round(100 * a)}" for a in ACF_LEVELS]
    for k in TOPHAT_SIZES:
        names += [f"tophat_black_mean_{k}", f"tophat_black_q90_{k}", f"tophat_white_mean_{k}", f"tophat_white_q90_{k}"]
    for s in RIDGE_SCALES:
        names += [f"ridge_dark_{s:g}", f"ridge_bright_{s:g}"]
        names += [f"ridge_{sign}_q{round(100 * q)}_{s:g}" for sign in ("dark", "bright") for q in RIDGE_QUANTILES]
    for which in ("raw", "smooth"):
        names += [f"gradient_{which}_{q}" for q in ("mean", "q50", "q90", "q99")]
    names += [f"edge_density_{t:g}" for t in EDGE_THRESHOLDS]
    for s in ORIENTATION_SCALES:
        names += [f"coherence_mean_{s:g}", f"coherence_q90_{s:g}"]
        names += [f"orientation_variogram_{s:g}_{lag}" for lag in ORIENTATION_LAGS]
    for lag in SMOOTH_LAGS:
        names += [f"smooth_variogram_{lag}", f"smooth_tail_{lag}"]
    names += [f"patch_eigen_{i}" for i in PATCH_EIGEN]
    for f in FLAT_FRACTIONS:
        names += [f"flat_patch_eigen_{round(100 * f)}_{i}" for i in PATCH_EIGEN[:5]]
    names += ["local_std_q10", "local_std_q50", "local_std_q90"]
    names += ["shading_quadratic_ptp", "shading_offset", "shading_linear", "shading_bowl", "shading_smooth_std"]
    return tuple(names)


FEATURE_NAMES = _names()
"""Names of the entries of a feature vector, in order."""


def _log(x: float | np.ndarray) -> float | np.ndarray:
    return np.log(np.asarray(x, dtype=np.float64) + EPS)


def tile_features(tile: np.ndarray) -> np.ndarray:
    """The feature vector (float64, ``len(FEATURE_NAMES)``) of one grey tile (H×W, values in [0, 1])."""
    x = np.asarray(tile, dtype=np.float64)
    if x.ndim != 2 or min(x.shape) < 4:
        raise ValueError(f"tile_features: expected a 2-D tile of at least 4×4 px, got {x.shape}")
    out: list[float] = [float(x.mean()), float(_log(x.std()))]
    out += [float(v) for v in np.quantile(x, QUANTILES)]
    out += _variogram(x)
    out += _noise(x)
    power, freq = _power_spectrum(x)
    out += _spectrum_bins(power, freq)
    out += _acf_lengths(power)
    out += _tophats(x)
    out += _ridges(x)
    out += _gradients(x)
    out += _orientation(x)
    out += _smooth_variogram(x)
    out += _patch_spectrum(x)
    out += _local_std(x)
    out += _shading(x)
    return np.asarray(out, dtype=np.float64)


def image_features(tiles: np.ndarray) -> np.ndarray:
    """The mean feature vector of a stack of tiles ``(n, H, W)`` in [0, 1] (one image's :func:`loop.train.inverse_tiles.tile_grid`)."""
    return np.mean([tile_features(t) for t in tiles], axis=0)


def _variogram(x: np.ndarray) -> list[float]:
    """Per lag: log RMS and log median absolute difference of horizontal and vertical pixel pairs."""
    out = []
    h, w = x.shape
    for lag in LAGS:
        lag = min(lag, h - 1, w - 1)
        dx = (x[:, lag:] - x[:, :-lag]).ravel()
        dy = (x[lag:, :] - x[:-lag, :]).ravel()
        d = np.concatenate([dx, dy])
        out += [float(_log(np.sqrt(np.mean(d * d)))), float(_log(np.median(np.abs(d))))]
    return out


def _noise(x: np.ndarray) -> list[float]:
    """Log robust noise levels: the finest diagonal (HH) wavelet band's and the Laplacian's MAD / 0.6745."""
    h, w = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
    a, b, c, d = x[0:h:2, 0:w:2], x[0:h:2, 1:w:2], x[1:h:2, 0:w:2], x[1:h:2, 1:w:2]
    hh = (a - b - c + d) / 2.0
    lap = 4.0 * x[1:-1, 1:-1] - x[:-2, 1:-1] - x[2:, 1:-1] - x[1:-1, :-2] - x[1:-1, 2:]
    return [float(_log(np.median(np.abs(hh)) / 0.6745)), float(_log(np.median(np.abs(lap)) / 0.6745 / math.sqrt(20.0)))]


def _power_spectrum(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Hann-windowed power spectrum of the mean-removed tile (per pixel) and each bin's radial frequency."""
    h, w = x.shape
    window = np.outer(np.hanning(h), np.hanning(w))
    y = (x - x.mean()) * window
    power = np.abs(np.fft.fft2(y)) ** 2 / float((window ** 2).sum())
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    return power, np.sqrt(fy * fy + fx * fx)


def _spectrum_bins(power: np.ndarray, freq: np.ndarray) -> list[float]:
    """Log mean power in each :data:`SPECTRUM_EDGES` bin (an empty bin takes its nearest filled neighbour's value)."""
    values: list[float | None] = []
    for lo, hi in zip(SPECTRUM_EDGES[:-1], SPECTRUM_EDGES[1:]):
        sel = (freq >= lo) & (freq < hi)
        values.append(float(_log(power[sel].mean())) if sel.any() else None)
    filled = [i for i, v in enumerate(values) if v is not None]
    return [v if v is not None else values[min(filled, key=lambda j: abs(j - i))]  # type: ignore[misc]
            for i, v in enumerate(values)]


def _acf_lengths(power: np.ndarray) -> list[float]:
    """Log radii (px) where the radially averaged autocorrelation (from ``power``) first falls to :data:`ACF_LEVELS`."""
    acf = np.fft.ifft2(power).real
    acf = acf / max(acf[0, 0], 1e-12)
    h, w = acf.shape
    dy = np.minimum(np.arange(h), h - np.arange(h))[:, None]
    dx = np.minimum(np.arange(w), w - np.arange(w))[None, :]
    r = np.rint(np.sqrt(dy * dy + dx * dx)).astype(int).ravel()
    n = min(h, w) // 2 + 1
    keep = r < n
    profile = np.bincount(r[keep], acf.ravel()[keep], n) / np.maximum(np.bincount(r[keep], minlength=n), 1)
    out = []
    for level in ACF_LEVELS:
        below = np.flatnonzero(profile < level)
        if len(below) == 0:
            out.append(float(_log(n)))
            continue
        i = int(below[0])
        a, b = profile[i - 1], profile[i]
        step = min(max((a - level) / max(a - b, 1e-12), 0.0), 1.0)  # linear between radii i - 1 and i
        out.append(float(_log(max(i - 1 + step, 0.0))))
    return out


def _tophats(x: np.ndarray) -> list[float]:
    """Per window size: log mean and log 90 % quantile of the black and white top-hats."""
    out = []
    for k in TOPHAT_SIZES:
        size = (min(k, x.shape[0]), min(k, x.shape[1]))
        black = ndimage.minimum_filter(ndimage.maximum_filter(x, size, mode="reflect"), size, mode="reflect") - x
        white = x - ndimage.maximum_filter(ndimage.minimum_filter(x, size, mode="reflect"), size, mode="reflect")
        out += [float(_log(black.mean())), float(_log(np.quantile(black, 0.9))),
                float(_log(white.mean())), float(_log(np.quantile(white, 0.9)))]
    return out


def _ridges(x: np.ndarray) -> list[float]:
    """Per scale σ: mean positive part of the Hessian's larger eigenvalue (dark lines) and of minus its
    smaller one (bright lines), times σ² (scale-normalised), then their :data:`RIDGE_QUANTILES`
    (the boundaries are the strongest ridges when they have contrast), all as logs."""
    out = []
    for s in RIDGE_SCALES:
        hxx = ndimage.gaussian_filter(x, s, order=(0, 2), mode="reflect")
        hyy = ndimage.gaussian_filter(x, s, order=(2, 0), mode="reflect")
        hxy = ndimage.gaussian_filter(x, s, order=(1, 1), mode="reflect")
        half_trace = 0.5 * (hxx + hyy)
        root = np.sqrt(0.25 * (hxx - hyy) ** 2 + hxy * hxy)
        dark = np.maximum(half_trace + root, 0.0) * (s * s)
        bright = np.maximum(root - half_trace, 0.0) * (s * s)
        out += [float(_log(dark.mean())), float(_log(bright.mean()))]
        q = np.quantile(np.stack([dark.ravel(), bright.ravel()]), RIDGE_QUANTILES, axis=1)  # (quantile, sign)
        out += [float(v) for v in _log(q.T.ravel())]
    return out


def _gradients(x: np.ndarray) -> list[float]:
    """Log gradient-magnitude mean and quantiles, raw and after a 1 px Gaussian; edge densities of the raw one."""
    out = []
    raw = None
    for smooth in (0.0, 1.0):
        y = ndimage.gaussian_filter(x, smooth, mode="reflect") if smooth else x
        g = np.hypot(ndimage.sobel(y, 0, mode="reflect"), ndimage.sobel(y, 1, mode="reflect")) / 8.0
        raw = g if raw is None else raw
        out += [float(_log(g.mean())), *(float(_log(v)) for v in np.quantile(g, (0.5, 0.9, 0.99)))]
    out += [float((raw > t).mean()) for t in EDGE_THRESHOLDS]
    return out


def _pairs(x: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal and vertical differences of pixels ``lag`` px apart (capped by the tile side)."""
    lag = max(1, min(lag, x.shape[-2] - 1, x.shape[-1] - 1))
    return x[..., :, lag:] - x[..., :, :-lag], x[..., lag:, :] - x[..., :-lag, :]


def _orientation(x: np.ndarray) -> list[float]:
    """Per averaging scale: mean and 90 % quantile of the structure tensor's coherence, and the log
    normalised variogram of its orientation field (double-angle unit vector times coherence)."""
    gx = ndimage.gaussian_filter(x, 1.0, order=(0, 1), mode="reflect")
    gy = ndimage.gaussian_filter(x, 1.0, order=(1, 0), mode="reflect")
    jxx, jyy, jxy = gx * gx, gy * gy, gx * gy
    out = []
    for s in ORIENTATION_SCALES:
        energy = ndimage.gaussian_filter(jxx + jyy, s, mode="reflect") + 1e-9
        field = np.stack([ndimage.gaussian_filter(jxx - jyy, s, mode="reflect"),
                          ndimage.gaussian_filter(2.0 * jxy, s, mode="reflect")]) / energy
        coherence = np.hypot(field[0], field[1])
        out += [float(coherence.mean()), float(np.quantile(coherence, 0.9))]
        var0 = 2.0 * float(field.var(axis=(1, 2)).sum()) + 1e-12
        for lag in ORIENTATION_LAGS:
            dx, dy = _pairs(field, lag)
            out.append(float(_log(((dx * dx).sum(axis=0).mean() + (dy * dy).sum(axis=0).mean()) / 2.0 / var0)))
    return out


def _smooth_variogram(x: np.ndarray) -> list[float]:
    """Per lag, of the tile smoothed by :data:`SMOOTH_SIGMA` px: the log variogram over twice the
    variance, and the log ratio of the 90 % quantile to the median absolute difference (steps
    between grains make it heavy-tailed)."""
    y = ndimage.gaussian_filter(x, SMOOTH_SIGMA, mode="reflect")
    var0 = 2.0 * float(y.var()) + 1e-12
    out = []
    for lag in SMOOTH_LAGS:
        d = np.abs(np.concatenate([part.ravel() for part in _pairs(y, lag)]))
        q50, q90 = np.quantile(d, (0.5, 0.9))
        out += [float(_log(np.mean(d * d) / var0)), float(_log(q90 / (q50 + 1e-9)))]
    return out


def _patch_spectrum(x: np.ndarray) -> list[float]:
    """Log eigenvalues of the covariance of mean-removed :data:`PATCH`² patches (every other
    position): :data:`PATCH_EIGEN` of all patches, the five smallest of the flattest fractions."""
    from numpy.lib.stride_tricks import sliding_window_view

    k = min(PATCH, *x.shape)
    patches = sliding_window_view(x, (k, k))[::2, ::2].reshape(-1, k * k)
    patches = patches - patches.mean(axis=1, keepdims=True)
    energy = (patches * patches).sum(axis=1)
    need = k * k + 1

    def eigen(rows: np.ndarray, which: Sequence[int]) -> list[float]:
        values = np.linalg.eigvalsh(np.cov(rows.T)) if len(rows) > 1 else np.zeros(k * k)
        idx = [min(i, len(values) - 1) for i in which]
        return [float(np.log(max(values[i], 0.0) + 1e-9)) for i in idx]

    out = eigen(patches, PATCH_EIGEN)
    order = np.argsort(energy, kind="stable")
    for fraction in FLAT_FRACTIONS:
        out += eigen(patches[order[:max(need, int(fraction * len(patches)))]], PATCH_EIGEN[:5])
    return out


def _local_std(x: np.ndarray) -> list[float]:
    """Log quantiles (10, 50, 90 %) of the standard deviation in 5 × 5 windows."""
    size = min(5, *x.shape)
    m = ndimage.uniform_filter(x, size, mode="reflect")
    v = np.maximum(ndimage.uniform_filter(x * x, size, mode="reflect") - m * m, 0.0)
    return [float(_log(np.sqrt(q))) for q in np.quantile(v, (0.1, 0.5, 0.9))]


def _shading(x: np.ndarray) -> list[float]:
    """Low-frequency shading: peak-to-peak of a fitted quadratic surface (without its constant), the
    mid-range of that surface, the RMS of its linear and quadratic parts, and the standard deviation
    of the tile smoothed by a Gaussian of 1/8 its side.

    The mid-range is the shading's offset of the mean grey: the generator's shading spans exactly
    ``±illumination`` over the image and is a quadratic surface, so its image mean is minus the
    mid-range of its zero-mean part (exact for a whole rendered image, a hint for a tile).
    """
    h, w = x.shape
    v, u = np.meshgrid(np.linspace(-1.0, 1.0, h), np.linspace(-1.0, 1.0, w), indexing="ij")
    basis = np.stack([np.ones_like(u), u, v, u * u - (u * u).mean(), u * v, v * v - (v * v).mean()],
                     axis=-1).reshape(-1, 6)
    coef, *_ = np.linalg.lstsq(basis, x.ravel(), rcond=None)
    surface = basis[:, 1:] @ coef[1:]
    linear = basis[:, 1:3] @ coef[1:3]
    bowl = basis[:, 3:] @ coef[3:]
    smooth = ndimage.gaussian_filter(x, max(1.0, min(h, w) / 8.0), mode="reflect")
    return [float(_log(np.ptp(surface))), float(0.5 * (surface.max() + surface.min())),
            float(_log(np.sqrt(np.mean(linear ** 2)))),
            float(_log(np.sqrt(np.mean(bowl ** 2)))), float(_log(smooth.std()))]
