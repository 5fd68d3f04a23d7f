"""Training losses: Dice + BCE for boundary segmentation, cross-entropy for classification."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from loop.config.training import TrainConfig
from loop.errors import InputError


class DiceBCELoss(nn.Module):
    """``dice_weight * soft Dice loss + bce_weight * binary cross-entropy`` on boundary logits.

    Why both: grain boundaries are a small fraction of the pixels (typically 5-15 %). Plain
    BCE averages over pixels, so predicting "no boundary" everywhere already scores well and
    boundaries come out thin and broken. The Dice loss (1 - soft Dice of the boundary class,
    over the whole batch, via ``smp.losses.DiceLoss``) depends only on the overlap of
    predicted and true boundary, not on how much background there is, so the imbalance does not
    hide it. Dice alone gives noisy gradients when few boundary pixels are present (early in
    training, sparse images); BCE gives every pixel a steady gradient. Targets may be soft
    (boundary fraction per pixel after downsizing a mask); both terms accept them.

    ``logits``: (N, 1, H, W); ``target``: (N, 1, H, W) or (N, H, W) in [0, 1].
    """

    def __init__(self, dice_weight: float = 1.0, bce_weight: float = 1.0):
        super().__init__()
        from segmentation_models_pytorch.losses import DiceLoss

        self.dice_weight = dice_weight
        self.bce_weight = bce_weight
        self.dice = DiceLoss(mode="binary", from_logits=True)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # Computed in float32 even under autocast: the sums over all pixels lose precision in half.
        logits = logits.float()
        target = target.float().reshape(logits.shape)
        loss = logits.new_zeros(())
        if self.dice_weight:
            loss = loss + self.dice_weight * self.dice(logits, target)
        if self.bce_weight:
            loss = loss + self.bce_weight * F.binary_cross_entropy_with_logits(logits, target)
        return loss


class CrossEntropy(nn.Module):
    """Cross-entropy on class logits (N, C) against integer labels (N,), in float32."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target.long())


def build_loss(task: str, cfg: TrainConfig) -> nn.Module:
    """The training loss for ``task`` ("segmentation" or "classification") with ``cfg``'s weights."""
    if task == "segmentation":
        return DiceBCELoss(cfg.dice_weight, cfg.bce_weight)
    if task == "classification":
        return CrossEntropy()
    raise InputError(f"task: expected 'segmentation' or 'classification', got {task!r}")
