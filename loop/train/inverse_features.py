"""The feature-based inverse model: hand-made image statistics -> generator parameters, by an MLP ensemble.

Each image (or each tile of a larger one, averaged) is reduced to the physically motivated
statistics of :mod:`loop.train.image_features`; a small MLP per ensemble member maps the
standardised vector to the parameters in unit-cube coordinates of the run's space. The
members differ in their seed (initial weights, dropout masks, batch order) and each sees its own
bootstrap resample of the training set, so their spread reflects both initialisation and data.
Each member is then calibrated on its out-of-bag samples (:func:`calibrate`): a dimension the
features cannot tell is shrunk to its mean instead of returning noise.

Everything is a torch module, so the ensemble (with the feature standardisation as buffers)
is saved as a plain state dict through :func:`loop.train.checkpoints.save_checkpoint` and
loaded weights-only; nothing is pickled and nothing is refitted on load.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from loop.train.image_features import FEATURE_NAMES, image_features
from loop.train.inverse_tiles import tile_grid

ARCH = "features-mlp"
"""``meta["arch"]`` of a feature-based inverse checkpoint."""
FEATURE_CLIP = 8.0
"""Standardised features are clipped to ± this, so an image unlike every training sample
cannot drive the MLP far outside what it learnt."""


@dataclass(frozen=True)
class MlpSettings:
    """How each member's MLP is shaped and trained (the defaults are
    :class:`loop.train.inverse.InverseConfig`'s, given by its ``mlp_settings``)."""

    hidden: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    dropout: float
    bootstrap: bool = True
    calibrate: bool = True


class FeatureNet(nn.Module):
    """Two hidden layers (SiLU) from a standardised feature vector to the unit-cube parameters,
    then a per-output affine calibration (``out_shift + out_scale · raw``; identity while training)."""

    def __init__(self, n_features: int, outputs: int, hidden: int = 192, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.SiLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden), nn.SiLU(), nn.Dropout(dropout), nn.Linear(hidden, outputs))
        self.register_buffer("out_scale", torch.ones(outputs))
        self.register_buffer("out_shift", torch.zeros(outputs))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``z``: (n, n_features) standardised features; returns (n, outputs)."""
        return self.out_shift + self.out_scale * self.net(z)


class FeatureEnsemble(nn.Module):
    """The members, the feature standardisation, and what is needed to apply them: dimension names and tile side.

    Same interface as the CNN ensemble (:class:`loop.train.inverse.InverseEnsemble`):
    ``dims``, ``input_size``, ``members`` and :meth:`predict`.
    """

    def __init__(self, dims: Sequence[str], input_size: int, members: int = 3, hidden: int = 192,
                 n_features: int = len(FEATURE_NAMES), dropout: float = 0.0):
        super().__init__()
        self.dims = list(dims)
        self.input_size = int(input_size)
        self.register_buffer("feature_mean", torch.zeros(n_features, dtype=torch.float64))
        self.register_buffer("feature_scale", torch.ones(n_features, dtype=torch.float64))
        self.members = nn.ModuleList(FeatureNet(n_features, len(self.dims), hidden, dropout) for _ in range(members))

    def standardise(self, features: np.ndarray) -> torch.Tensor:
        """(n, n_features) raw features -> float32 standardised and clipped tensor."""
        z = (torch.as_tensor(np.asarray(features, dtype=np.float64)) - self.feature_mean) / self.feature_scale
        return z.clamp_(-FEATURE_CLIP, FEATURE_CLIP).float()

    @torch.no_grad()
    def predict_features(self, features: np.ndarray) -> np.ndarray:
        """(members, n, d) predictions of (n, n_features) raw feature vectors."""
        self.eval()
        z = self.standardise(features)
        return torch.stack([m(z) for m in self.members]).numpy().astype(np.float64)

    def predict(self, images: Sequence[np.ndarray], tiles: int = 3) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, spread)``, each (n, d) in unit-cube coordinates, of uint8 H×W ``images``.

        Each image is described by the mean feature vector of up to ``tiles × tiles`` tiles
        (:func:`image_feature_matrix`); the estimate is the members' mean, the spread their
        standard deviation (0 for one member). Raises :class:`loop.train.inverse.InverseError`
        for an image smaller than the tile side.
        """
        if len(images) == 0:
            d = len(self.dims)
            return np.zeros((0, d)), np.zeros((0, d))
        est = self.predict_features(image_feature_matrix(images, self.input_size, tiles))
        spread = est.std(axis=0) if est.shape[0] > 1 else np.zeros(est.shape[1:])
        return est.mean(axis=0), spread


def image_feature_matrix(images: Sequence[np.ndarray], size: int, tiles: int) -> np.ndarray:
    """(n, n_features): each uint8 image's mean feature vector over its ``tile_grid`` tiles of side ``size``."""
    return np.stack([image_features(tile_grid(image, size, tiles, where=f"image {k}"))
                     for k, image in enumerate(images)])


def fit_standardisation(model: FeatureEnsemble, features: np.ndarray) -> None:
    """Set ``model``'s feature mean and scale from the training ``features`` (a constant feature gets scale 1)."""
    x = torch.as_tensor(np.asarray(features, dtype=np.float64))
    mean, std = x.mean(dim=0), x.std(dim=0)
    model.feature_mean.copy_(mean)
    model.feature_scale.copy_(torch.where(std > 1e-9, std, torch.ones_like(std)))


def train_feature_members(model: FeatureEnsemble, features: np.ndarray, targets: np.ndarray,
                          generators: Sequence[torch.Generator], settings: MlpSettings, *,
                          progress: Callable[[str], None] | None = None) -> list[float]:
    """Fit ``model``'s standardisation and train each member (its own ``generators[k]``) on ``features``
    -> ``targets`` ((n, d) unit-cube values) with an MSE loss; returns each member's last training MSE."""
    fit_standardisation(model, features)
    z_all = model.standardise(features)
    y_all = torch.as_tensor(np.asarray(targets, dtype=np.float32))
    n = len(z_all)
    losses: list[float] = []
    t0 = time.perf_counter()
    for k, (net, gen) in enumerate(zip(model.members, generators)):
        # Initial weights and dropout masks draw from torch's global generator: seeded from the
        # member's own generator inside a fork, so the caller's global state neither matters nor changes.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))
            for layer in net.modules():
                if isinstance(layer, nn.Linear):
                    layer.reset_parameters()
            rows = torch.randint(0, n, (n,), generator=gen) if settings.bootstrap and n > 1 else torch.arange(n)
            last = _fit_member(net, z_all[rows], y_all[rows], gen, settings)
        if settings.calibrate:
            out_of_bag = torch.ones(n, dtype=torch.bool)
            out_of_bag[rows] = False
            calibrate(net, z_all[out_of_bag], y_all[out_of_bag])
        losses.append(last)
        if progress is not None:
            progress(f"inverse member {k + 1}/{len(model.members)}: {settings.epochs} epochs on {n} feature "
                     f"vectors, last train mse {last:.4f}, {time.perf_counter() - t0:.0f} s")
    return losses


def _fit_member(net: FeatureNet, z: torch.Tensor, y: torch.Tensor, gen: torch.Generator,
                settings: MlpSettings) -> float:
    """Train ``net`` on ``z`` -> ``y`` with AdamW and a one-cycle schedule (batch order from ``gen``);
    returns the last epoch's training MSE."""
    n = len(z)
    steps = math.ceil(n / settings.batch_size)
    opt = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings.lr, total_steps=settings.epochs * steps,
                                                pct_start=0.1)
    net.train()
    last = float("nan")
    for _ in range(settings.epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for s in range(steps):
            idx = order[s * settings.batch_size:(s + 1) * settings.batch_size]
            loss = F.mse_loss(net(z[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        last = total / n
    net.eval()
    return last


@torch.no_grad()
def calibrate(net: FeatureNet, z: torch.Tensor, y: torch.Tensor, min_rows: int = 20) -> None:
    """Set ``net``'s output calibration from held-out rows (its out-of-bag samples): per output, the
    least-squares line ``y ≈ a + b · prediction`` with ``b`` in [0, 1] (shrinkage towards the mean of
    ``y``, never amplification). A dimension the features cannot tell gets ``b ≈ 0``: it returns the
    mean instead of noise (held-out R² near 0 rather than below it). Fewer than ``min_rows`` rows:
    left as it is."""
    if len(z) < min_rows:
        return
    net.out_scale.fill_(1.0)
    net.out_shift.fill_(0.0)
    p = net(z).double()
    y = y.double()
    pc, yc = p - p.mean(dim=0), y - y.mean(dim=0)
    b = ((pc * yc).sum(dim=0) / (pc * pc).sum(dim=0).clamp_min(1e-12)).clamp(0.0, 1.0)
    net.out_scale.copy_(b.float())
    net.out_shift.copy_((y.mean(dim=0) - b * p.mean(dim=0)).float())
