"""The inverse model: image -> generator parameters, as a small ensemble of regressors.

Every synthetic sample of a run carries the parameters that made it, so the inverse map is
plain supervised regression: an image is mapped to the sample's parameters in unit-cube
coordinates of the run's space (``space.to_unit``) with an MSE loss. An ensemble of
:attr:`InverseConfig.members` members, each with its own seed, is trained on the same
samples; the mean of the members is the estimate and their spread (standard deviation) its
uncertainty. ``loop locate`` uses it to show where real micrographs sit in the run's
parameter space.

Two models, chosen by :attr:`InverseConfig.model`:

- ``features`` (the default, arch ``features-mlp``): each image is reduced to 162
  physically motivated statistics (:mod:`loop.train.image_features`: grey quantiles,
  variograms, noise estimates, radial power spectrum, autocorrelation length, top-hats,
  ridges, gradients, local orientation, patch covariance spectrum, shading) and a small MLP
  per member maps them to the parameters (:mod:`loop.train.inverse_features`: bootstrap
  members, an out-of-bag shrinkage per dimension so a dimension the features cannot tell
  returns its mean rather than noise).
- ``cnn`` (arch ``cnn5-stats``, the first model): a small CNN per member reads grey tiles.

Why the feature model is the default: on a ``cpu``-preset run (300 stored train samples of
128 px, a narrow fitted grain space) the CNN ensemble reached a held-out R² of 0.18 for
grain diameter, 0.82 mean grey, 0.79 blur, -0.03 noise after ~600 s on two cores; it is
starved of samples and CPU. The features put the physics in by hand (lengths in pixels,
grey levels, noise and blur each have statistics that answer to them directly), so an MLP
learns the map from a few thousand samples in seconds: with 3000 fresh renders of the run's
own space (:mod:`loop.run.inverse_renders`) it reaches 0.83 grain diameter, 0.88 mean grey,
0.97 blur, 0.85 illumination on the same test split in ~200 CPU-seconds, most of them
feature extraction (~40 ms per 128 px tile). A CNN fed the same renders would need many
times that CPU time (it trains on 45 samples/s); a gradient-boosted regressor
(scikit-learn's HistGradientBoostingRegressor, one per dimension) on an earlier version of
these features reached 0.57 on grain diameter where the MLP reached 0.72, and it would need
a pickle or a refit on load. Combining the CNN with the features was not tried: the CNN
scores below the features on every dimension of that run and of the default-space test set
(``tests/loop/train/test_inverse.py``), and it would bring its CPU cost back. What stays out of reach
is physics, not the model: boundary lines of a few hundredths
of grey under a texture ten times stronger (that fitted space's boundary contrast is
±0.02), white noise under a blur of a pixel or more; the held-out R² in the meta tells those
dimensions apart. A value the renderer caps (grain diameter above the 5-grain limit,
boundary thickness above 0.15 grain diameters) is learnt as rendered, not as drawn
(:func:`loop.run.inverse_renders.rendered_targets`): on the default grain space that lifts the
held-out R² of boundary thickness from 0.09 to 0.58 (3300 renders of 128 px).

Inputs are **at native resolution**, never resized: lengths in pixels (grain diameter,
boundary thickness, blur) are parameters, and resizing a tile would change them. The tile side
is ``min(InverseConfig.input_size, smallest sample side)``; an image of any size is located
from up to ``tiles × tiles`` tiles on an even grid (the feature model averages their feature
vectors, the CNN its predictions), so an image smaller than the tile side cannot be located
(:class:`InverseError` says both sizes). The CNN trains on random crops and the eight
flips/90° rotations (the parameters do not depend on orientation; the features are
orientation-free by construction).

Targets: every range dimension (continuous, log, integer: integers regress like continuous
values, in their unit-cube cell centres); choice dimensions and fixed dimensions (low == high,
nothing to learn) are left out and listed in the checkpoint's meta.

Why a plain ensemble regressor and not neural posterior estimation (the ``sbi`` library):
NPE learns a full, possibly multi-modal posterior p(θ | x) and needs an embedding of the
image anyway (these features, or the CNN) plus a normalising flow on top, trained on many
more simulations for a calibrated density; ``sbi`` is not installed here and pulls in a large
dependency tree (pyro/nflows/zuko, ...). What ``loop locate`` needs is a point estimate with
an honest "how sure" signal and a per-dimension "can this be read off an image at all"
(held-out R²), which an ensemble gives with plain torch, deterministically and in a
checkpoint loaded weights-only. Its limits: the ensemble spread is epistemic (members
disagree) rather than a posterior width, and for a non-identifiable dimension the regressor
returns the conditional mean (mid-range) instead of a flat posterior — the R² in the meta is
what tells those dimensions apart.

Determinism: each member's initial weights, bootstrap rows, crops, flips and batch order come
from torch generators seeded from ``(seed, member)``; the same seed, samples and threads give
the same weights. The ensemble is saved with :func:`loop.train.checkpoints.save_checkpoint`
(state dict + plain meta: arch, dimensions, tile side, config, feature names, held-out R²) and
loaded weights-only: nothing is pickled, nothing is refitted on load. A checkpoint of an arch
or a feature set this version does not know is refused with a "delete it to retrain" line.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from loop.train.checkpoints import DIGEST_SUFFIX, load_checkpoint, load_state_into, save_checkpoint
from loop.train import inverse_features
from loop.train.device import resolve_device
from loop.train.image_features import FEATURE_NAMES
from loop.train.inverse_tiles import InverseError, tile_grid
from loop.train.inverse_features import FeatureEnsemble, MlpSettings, image_feature_matrix, train_feature_members

KIND = "inverse-ensemble"
"""``meta["kind"]`` of an inverse checkpoint (a segmentation checkpoint has none)."""
ARCH = "cnn5-stats"
"""``meta["arch"]`` of a CNN inverse checkpoint (the first inverse model)."""
CNN_ARCH = ARCH
FEATURES_ARCH = inverse_features.ARCH
"""``meta["arch"]`` of a feature-MLP inverse checkpoint (the default model)."""
MODELS = ("features", "cnn")
"""Values of :attr:`InverseConfig.model`."""
RENDERS_MAX = 3000
RENDERS_PER_STORED = 10
"""Fresh renders per stored train sample (at most :data:`RENDERS_MAX`) when ``InverseConfig.renders`` is None."""
INPUT_MEAN, INPUT_STD = 0.5, 0.25
"""Grey tiles in [0, 1] are normalised with these fixed statistics (absolute grey is a parameter)."""
IDENTIFIABLE_R2 = 0.5
"""A dimension counts as identifiable from an image when its held-out R² is at least this."""


@dataclass(frozen=True)
class InverseConfig:
    """How the inverse ensemble is trained and applied.

    ``model``: ``features`` (the default) or ``cnn`` (see the module docstring). ``renders``:
    how many fresh samples of the run's own space and generator ``loop locate`` renders to
    train on besides the stored train samples (:mod:`loop.run.inverse_renders`; 0 = stored
    samples only); ``None`` (the default) = :meth:`renders_for` the run. ``epochs``,
    ``batch_size``, ``lr``, ``weight_decay``, ``width`` are the CNN's; ``hidden``, ``mlp_*``
    and ``dropout`` the feature MLP's.
    """

    model: str = "features"
    renders: int | None = None
    members: int = 3
    epochs: int = 30
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    input_size: int = 128
    """Tile side in px (capped at the samples' smallest side)."""
    width: int = 16
    """Channels of the first block; each later block doubles them (at most 4 × width)."""
    tiles: int = 3
    """Up to ``tiles × tiles`` tiles per image at prediction time."""
    max_samples: int = 4000
    """At most this many stored train samples are read (a seeded random subset beyond it)."""
    seed: int = 0
    hidden: int = 192
    mlp_epochs: int = 150
    mlp_batch_size: int = 128
    mlp_lr: float = 2e-3
    mlp_weight_decay: float = 0.05
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise InverseError(f"inverse config model: expected one of {', '.join(MODELS)}, got {self.model!r}")
        for name in ("members", "epochs", "batch_size", "width", "tiles", "max_samples", "hidden", "mlp_epochs",
                     "mlp_batch_size"):
            if int(getattr(self, name)) < 1:
                raise InverseError(f"inverse config {name}: expected an integer >= 1, got {getattr(self, name)!r}")
        if self.renders is not None and int(self.renders) < 0:
            raise InverseError(f"inverse config renders: expected an integer >= 0 (or None: automatic), "
                               f"got {self.renders!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise InverseError(f"inverse config dropout: expected a value in [0, 1), got {self.dropout!r}")
        if self.input_size < 16:
            raise InverseError(f"inverse config input_size: expected >= 16 px, got {self.input_size}")
        if not (self.lr > 0 and self.mlp_lr > 0):
            raise InverseError(f"inverse config lr, mlp_lr: expected > 0, got {self.lr}, {self.mlp_lr}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the checkpoint's ``meta["config"]``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "InverseConfig":
        """The config of plain ``data``; unknown keys are ignored, missing ones take their defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def renders_for(self, n_stored: int) -> int:
        """How many fresh samples to render for a run with ``n_stored`` train samples: ``renders`` when
        set, else ``min(RENDERS_MAX, RENDERS_PER_STORED × n_stored)``: 3000 for a ``cpu``-preset run
        (300 stored), 160 for a smoke run (16), whose inverse model then costs seconds."""
        if self.renders is not None:
            return int(self.renders)
        return int(min(RENDERS_MAX, RENDERS_PER_STORED * n_stored))

    def mlp_settings(self) -> MlpSettings:
        """The feature MLP's training settings."""
        return MlpSettings(hidden=self.hidden, epochs=self.mlp_epochs, batch_size=self.mlp_batch_size, lr=self.mlp_lr,
                           weight_decay=self.mlp_weight_decay, dropout=self.dropout)


def target_dims(space: Any) -> list[str]:
    """The dimensions of ``space`` (a :class:`generators.space.ParamSpace`) that the inverse model
    regresses: range dimensions that are not fixed (choices have no ``low``/``high``)."""
    return [d.name for d in space if hasattr(d, "low") and d.high != d.low]


def member_generator(seed: int, member: int) -> torch.Generator:
    """The torch generator of ensemble member ``member`` of an ensemble seeded ``seed``."""
    state = np.random.SeedSequence([seed, member, 0x1A7E]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


SCALES = (1, 2, 4, 8)
"""Average-pooling factors at which the tile's mean gradient magnitude is fed to the head."""


def _gradient_energy(x: torch.Tensor, scale: int) -> torch.Tensor:
    """(n, 1): mean |dx| + |dy| of ``x`` average-pooled by ``scale`` (times ``10 scale``: edges weigh alike, values near 1)."""
    if scale > 1:
        x = F.avg_pool2d(x, scale)
    return 10.0 * scale * ((x[..., :, 1:] - x[..., :, :-1]).abs().mean(dim=(2, 3))
                    + (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(2, 3)))


class InverseNet(nn.Module):
    """A small CNN: five conv blocks (the last four halve the size), mean and max pooling, an MLP head."""

    def __init__(self, outputs: int, width: int = 32):
        super().__init__()
        chans = [width // 2, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        c_in = 1
        for i, c in enumerate(chans):
            layers += [nn.Conv2d(c_in, c, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                       nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(2 * c_in + len(SCALES) + 2, 128), nn.ReLU(inplace=True),
                                  nn.Linear(128, outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (n, 1, s, s) grey tiles in [0, 1]; returns (n, outputs) unit-cube estimates."""
        # Plain tile statistics go to the head directly: the grey mean and spread (grey levels are
        # parameters) and the mean gradient magnitude at a few scales (boundary density, noise, blur).
        stats = torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3)), *(_gradient_energy(x, s) for s in SCALES)], dim=1)
        h = self.features((x - INPUT_MEAN) / INPUT_STD)
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3)), stats], dim=1)
        return self.head(pooled)


class InverseEnsemble(nn.Module):
    """The members, and what is needed to apply them: dimension names and tile side."""

    def __init__(self, dims: Sequence[str], input_size: int, members: int = 3, width: int = 32):
        super().__init__()
        self.dims = list(dims)
        self.input_size = int(input_size)
        self.members = nn.ModuleList(InverseNet(len(self.dims), width) for _ in range(members))

    @torch.no_grad()
    def predict_tiles(self, tiles: torch.Tensor) -> torch.Tensor:
        """(members, n, d) predictions of (n, 1, s, s) tiles."""
        self.eval()
        return torch.stack([m(tiles) for m in self.members])

    def predict(self, images: Sequence[np.ndarray], tiles: int = 3) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, spread)``, each (n, d) in unit-cube coordinates, of uint8 H×W ``images``.

        Each member's estimate of an image is its mean over the image's tiles (see
        :func:`tile_grid`); the estimate is the members' mean, the spread their standard
        deviation (0 for a single member). Raises :class:`InverseError` for an image smaller
        than the tile side.
        """
        device = next(self.parameters()).device
        per_member = []
        for k, image in enumerate(images):
            stack = tile_grid(image, self.input_size, tiles, where=f"image {k}")
            x = torch.from_numpy(stack).to(device)[:, None]
            per_member.append(self.predict_tiles(x).mean(dim=1).cpu().numpy())
        if not per_member:
            d = len(self.dims)
            return np.zeros((0, d)), np.zeros((0, d))
        est = np.stack(per_member, axis=1)  # (members, n, d)
        spread = est.std(axis=0) if est.shape[0] > 1 else np.zeros(est.shape[1:])
        return est.mean(axis=0), spread


def _random_crops(images: np.ndarray, size: int, gen: torch.Generator) -> torch.Tensor:
    """One random crop and one of the eight flips/rotations per image of a (n, H, W) uint8 stack."""
    n, h, w = images.shape
    ys = torch.randint(0, h - size + 1, (n,), generator=gen).tolist()
    xs = torch.randint(0, w - size + 1, (n,), generator=gen).tolist()
    ops = torch.randint(0, 8, (n,), generator=gen).tolist()
    out = np.empty((n, size, size), dtype=np.uint8)
    for i in range(n):
        tile = images[i, ys[i]:ys[i] + size, xs[i]:xs[i] + size]
        tile = np.rot90(tile, ops[i] % 4)
        out[i] = tile[:, ::-1] if ops[i] >= 4 else tile
    return torch.from_numpy(out).float().div_(255.0)[:, None]


def r2_scores(truth: np.ndarray, estimate: np.ndarray) -> list[float | None]:
    """Per-column coefficient of determination ``1 - SSE / SST`` (None where the truth is constant)."""
    out: list[float | None] = []
    for j in range(truth.shape[1]):
        sst = float(((truth[:, j] - truth[:, j].mean()) ** 2).sum())
        sse = float(((truth[:, j] - estimate[:, j]) ** 2).sum())
        out.append(None if sst <= 1e-12 or len(truth) < 2 else 1.0 - sse / sst)
    return out


@dataclass
class InverseResult:
    """A trained ensemble (CNN or feature MLP: both have ``dims``, ``input_size``, ``members`` and
    ``predict``) with its held-out scores (``r2``: dimension -> R² or None)."""

    model: InverseEnsemble | FeatureEnsemble
    meta: dict[str, Any]

    @property
    def r2(self) -> dict[str, float | None]:
        """Held-out R² per dimension (None where the held-out truth is constant)."""
        return dict(self.meta.get("r2", {}))


def train_inverse(
    images: np.ndarray,
    targets: np.ndarray,
    dims: Sequence[str],
    cfg: InverseConfig = InverseConfig(),
    *,
    held_out: tuple[np.ndarray, np.ndarray] | None = None,
    held_out_split: str | None = None,
    device: str | torch.device | None = "cpu",
    progress: Callable[[str], None] | None = None,
) -> InverseResult:
    """Train the ensemble of ``cfg.model`` on ``images`` (uint8 (n, H, W)) and ``targets`` ((n, d) unit-cube values).

    ``held_out``: ``(images, targets)`` scored after training: per-dimension R² of the
    ensemble mean, stored in the meta as ``r2`` (with ``held_out_split`` naming them).
    ``device`` places the CNN (the feature MLP is tiny and trains on the CPU).
    """
    images = np.asarray(images)
    targets = np.asarray(targets, dtype=np.float32)
    if images.ndim != 3 or images.dtype != np.uint8 or len(images) == 0:
        raise InverseError(f"inverse training images: expected a non-empty uint8 (n, H, W) stack, "
                           f"got {images.dtype} {images.shape}")
    if targets.shape != (len(images), len(dims)):
        raise InverseError(f"inverse training targets: expected shape {(len(images), len(dims))}, got {targets.shape}")
    if not dims:
        raise InverseError("inverse model: the space has no dimension to regress (all fixed or choices)")
    size = min(cfg.input_size, *images.shape[1:])
    if size < 16:
        raise InverseError(f"inverse model: samples of {images.shape[2]}×{images.shape[1]} px are too small (16 px at least)")
    t0 = time.perf_counter()
    if cfg.model == "features":
        ensemble, final_mse = _train_features(images, targets, dims, size, cfg, progress)
    else:
        ensemble, final_mse = _train_cnn(images, targets, dims, size, cfg, device, progress)
    arch = FEATURES_ARCH if cfg.model == "features" else CNN_ARCH
    meta: dict[str, Any] = {
        "kind": KIND, "arch": arch, "dims": list(dims), "input_size": size, "members": cfg.members,
        "config": cfg.to_dict(), "n_train": int(len(images)), "final_mse": final_mse,
        "train_s": round(time.perf_counter() - t0, 3), "r2": {}, "r2_split": held_out_split, "n_held_out": 0,
    }
    if arch == FEATURES_ARCH:
        meta["feature_names"] = list(FEATURE_NAMES)
    if held_out is not None and len(held_out[0]):
        est, _ = ensemble.predict(list(held_out[0]), tiles=cfg.tiles)
        meta["r2"] = dict(zip(dims, r2_scores(np.asarray(held_out[1], dtype=float), est)))
        meta["n_held_out"] = int(len(held_out[0]))
    return InverseResult(ensemble.cpu(), meta)


def _train_features(images: np.ndarray, targets: np.ndarray, dims: Sequence[str], size: int, cfg: InverseConfig,
                    progress: Callable[[str], None] | None) -> tuple[FeatureEnsemble, float]:
    """The feature-MLP ensemble trained on the images' feature vectors, and the members' mean last training MSE."""
    t0 = time.perf_counter()
    features = image_feature_matrix(images, size, cfg.tiles)
    if progress is not None:
        progress(f"inverse model: image features of {len(images)} samples, {time.perf_counter() - t0:.0f} s")
    settings = cfg.mlp_settings()
    ensemble = FeatureEnsemble(dims, size, members=cfg.members, hidden=settings.hidden, dropout=settings.dropout)
    losses = train_feature_members(ensemble, features, targets, [member_generator(cfg.seed, k) for k in range(cfg.members)],
                                   settings, progress=progress)
    return ensemble.eval(), float(np.mean(losses))


def _train_cnn(images: np.ndarray, targets: np.ndarray, dims: Sequence[str], size: int, cfg: InverseConfig,
               device: str | torch.device | None, progress: Callable[[str], None] | None,
               ) -> tuple[InverseEnsemble, float | None]:
    """The CNN ensemble trained on random crops of the images, and the last member's last-epoch training MSE."""
    dev = resolve_device(device)
    t0 = time.perf_counter()
    ensemble = InverseEnsemble(dims, size, members=0, width=cfg.width)
    y_all = torch.from_numpy(targets)
    losses: list[float] = []
    for k in range(cfg.members):
        gen = member_generator(cfg.seed, k)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))
            net = InverseNet(len(dims), cfg.width)
        net.to(dev).train()
        steps_per_epoch = math.ceil(len(images) / cfg.batch_size)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                    pct_start=0.2)
        for epoch in range(cfg.epochs):
            order = torch.randperm(len(images), generator=gen)
            total = 0.0
            for s in range(steps_per_epoch):
                idx = order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
                if len(idx) < 2 and len(images) >= 2:  # a batch of one has no batch statistics
                    continue
                x = _random_crops(images[idx.numpy()], size, gen).to(dev)
                y = y_all[idx].to(dev)
                loss = F.mse_loss(net(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(idx)
            losses.append(total / len(images))
        if progress is not None:
            progress(f"inverse member {k + 1}/{cfg.members}: {cfg.epochs} epochs, last train mse {losses[-1]:.4f}, "
                     f"{time.perf_counter() - t0:.0f} s")
        ensemble.members.append(net.eval())
    return ensemble.to(dev), (losses[-1] if losses else None)


def save_inverse(uri: str, result: InverseResult, extra_meta: dict[str, Any] | None = None) -> str:
    """Write the ensemble and its meta (plus ``extra_meta``) with :func:`save_checkpoint`; return the digest."""
    return save_checkpoint(uri, result.model.state_dict(), {**result.meta, **(extra_meta or {})})


def load_inverse(uri: str, device: str | torch.device | None = "cpu") -> InverseResult:
    """The ensemble saved at ``uri`` (verified and loaded weights-only) with its meta.

    A CNN checkpoint (arch ``cnn5-stats``, also those written before the feature model) loads
    as the CNN it is; an arch this version does not know, or a feature model computed with
    other image features, is an :class:`InverseError` saying to delete it and retrain.
    """
    state, meta = load_checkpoint(uri)
    if meta.get("kind") != KIND:
        raise InverseError(f"checkpoint {uri}: not an inverse-model checkpoint (kind {meta.get('kind')!r})")
    retrain = f"delete it and its {DIGEST_SUFFIX} file, and `loop locate` trains a new one"
    arch = meta.get("arch", CNN_ARCH)
    config = {k: v for k, v in meta.get("config", {}).items() if k != "model"}
    cfg = InverseConfig.from_dict(config)
    if arch == CNN_ARCH:
        model: InverseEnsemble | FeatureEnsemble = InverseEnsemble(meta["dims"], meta["input_size"],
                                                                   members=int(meta["members"]), width=cfg.width)
    elif arch == FEATURES_ARCH:
        if list(meta.get("feature_names", [])) != list(FEATURE_NAMES):
            raise InverseError(f"inverse checkpoint {uri}: made with other image features than this version "
                               f"computes; {retrain}")
        model = FeatureEnsemble(meta["dims"], meta["input_size"], members=int(meta["members"]), hidden=cfg.hidden)
    else:
        raise InverseError(f"inverse checkpoint {uri}: model arch {arch!r} is unknown to this version "
                           f"(known: {FEATURES_ARCH}, {CNN_ARCH}); {retrain}")
    load_state_into(model, state, f"inverse checkpoint {uri}")
    return InverseResult(model.to(resolve_device(device)).eval(), meta)


def identifiable(r2: dict[str, float | None], floor: float = IDENTIFIABLE_R2) -> list[str]:
    """The dimensions whose held-out R² reaches ``floor``."""
    return [name for name, value in r2.items() if value is not None and value >= floor]
