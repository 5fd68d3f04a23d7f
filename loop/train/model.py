"""Model factory: a U-Net for boundary segmentation, a classifier, on an smp encoder (ResNets and others).

Every model built here takes a float tensor ``(N, in_channels, H, W)`` with values in
[0, 1] (``image_uint8 / 255``) and normalises it itself (:class:`ScaledInput`), so the
trainer, the evaluator and a user in a notebook feed images the same way. Segmentation
returns boundary logits ``(N, 1, H, W)`` (H and W multiples of 32); classification returns
class logits ``(N, classes)``.

Encoder weights: ImageNet weights are loaded only from a local file named in
``ModelConfig.encoder_weights`` (the encoder's 3-channel state dict as a ``.pth`` file, e.g.
torchvision's ResNet weights, or a ``.safetensors`` file); smp is always called with
``encoder_weights=None``, so nothing is downloaded. The first conv is adapted to the model's
input channels by smp itself, as smp does for its own pretrained weights (see
:func:`load_encoder_weights`). Without a file the encoder starts from random initialisation.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from loop.train.checkpoints import describe_mismatch, load_checkpoint, load_state_into
from loop.config.training import ModelConfig
from loop.errors import InputError

log = logging.getLogger(__name__)

# ImageNet's RGB mean and std, averaged over the channels: a grey image fed to a first conv
# whose 3 input channels were summed into 1 then sees the statistics the weights were trained on.
INPUT_MEAN = 0.449
INPUT_STD = 0.226


class ModelError(InputError):
    """A model cannot be built as configured (e.g. an unusable encoder weights file)."""


ENCODER_DEPTH = 5
"""Stages of every encoder built here (smp's default): features at strides 2 to 32."""

MIN_IMAGE_STD = 0.02
"""Floor of an image's own spread in per-image normalisation: a nearly flat image is not
blown up to unit spread (its noise would become its content)."""


class ScaledInput(nn.Module):
    """Wraps a network so it takes images scaled to [0, 1] and normalises them itself: with
    fixed statistics, or (``per_image``) by each image's own mean and spread (floored at
    :data:`MIN_IMAGE_STD`). Neither has weights, so a checkpoint's state dict is the same."""

    def __init__(self, net: nn.Module, mean: float = INPUT_MEAN, std: float = INPUT_STD, per_image: bool = False):
        super().__init__()
        self.net = net
        self.mean = mean
        self.std = std
        self.per_image = per_image

    @property
    def encoder(self) -> nn.Module:
        """The wrapped network's encoder (what a frozen stage keeps fixed)."""
        return self.net.encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.per_image:
            std, mean = torch.std_mean(x, dim=(1, 2, 3), keepdim=True)
            return self.net((x - mean) / std.clamp_min(MIN_IMAGE_STD))
        return self.net((x - self.mean) / self.std)


class Classifier(nn.Module):
    """An encoder, global average pooling of its deepest features, and a linear head."""

    def __init__(self, encoder: nn.Module, classes: int):
        super().__init__()
        self.encoder = encoder
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(encoder.out_channels[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)[-1]
        return self.head(self.pool(features).flatten(1))


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelError(f"model.encoder_weights: file {path} not found (expected a local ImageNet weights file)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # damaged or foreign file: several exception types
        raise ModelError(f"model.encoder_weights: cannot read {path} as a weights-only state dict ({exc})") from exc
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"model.encoder_weights: {path} does not hold a state dict of tensors")
    return dict(state)


def _load_problem(encoder: nn.Module, state: Mapping[str, torch.Tensor]) -> str | None:
    """Load ``state`` into ``encoder`` with the encoder's own ``load_state_dict`` (smp's drop the
    ImageNet classifier's keys); ``None`` when it fits, else what does not fit, in one line."""
    given = dict(state)  # smp's load_state_dict pops (and renames) keys of the dict it is given
    try:
        encoder.load_state_dict(given)
    except RuntimeError as exc:
        text = str(exc).strip()
        return describe_mismatch(encoder.state_dict(), given) or (text.splitlines()[0] if text else "does not load")
    return None


def load_encoder_weights(encoder: nn.Module, path: str | Path, in_channels: int, name: str) -> None:
    """Load ImageNet weights from the local file ``path`` into ``encoder``, the smp encoder ``name``
    built for ``in_channels`` input channels.

    The file holds the encoder's state dict as published for 3-channel input (torchvision's
    keys for a ResNet, ``conv1.weight``, ``layer1.0...``; a leading ``encoder.`` is dropped, the
    ImageNet classifier's keys are ignored as smp ignores them). As smp does with its own
    pretrained weights, they are loaded into a 3-channel encoder ``name`` whose first conv
    smp then adapts (``set_in_channels(in_channels, pretrained=True)``: the 3 channels summed
    for grey input, cycled and rescaled for more), and that encoder's weights are copied into
    ``encoder``. A file already made for ``in_channels`` channels loads as it is. Keys or shapes
    that do not fit raise :class:`ModelError` naming the file.
    """
    import segmentation_models_pytorch as smp

    path = Path(path)
    state = _read_weights(path)
    if state and all(k.startswith("encoder.") for k in state):
        state = {k[len("encoder."):]: v for k, v in state.items()}
    with torch.random.fork_rng(devices=[]):  # its random start is overwritten; the global RNG stays put
        rgb = smp.encoders.get_encoder(name, in_channels=3, depth=ENCODER_DEPTH, weights=None)
    problem = _load_problem(rgb, state)
    if problem is None:
        rgb.set_in_channels(in_channels, pretrained=True)
        # The same class and keys: nn.Module's own strict load (some smp overrides take no ``strict``).
        nn.Module.load_state_dict(encoder, rgb.state_dict(), strict=True)
    elif in_channels == 3 or _load_problem(encoder, state) is not None:
        raise ModelError(f"model.encoder_weights: {path} does not fit the {type(encoder).__name__} "
                         f"({name}, 3 input channels): {problem}")


def build_model(cfg: ModelConfig, seed: int = 0) -> nn.Module:
    """Build the network described by ``cfg`` (see the module docstring for inputs and outputs).

    Random initialisation draws from a torch generator seeded with ``seed`` (the global
    torch RNG is forked and restored), so the same ``(cfg, seed)`` gives the same weights.
    """
    import segmentation_models_pytorch as smp

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if cfg.task == "segmentation":
            net: nn.Module = smp.Unet(
                encoder_name=cfg.encoder, encoder_depth=ENCODER_DEPTH, encoder_weights=None,
                in_channels=cfg.in_channels, classes=cfg.classes,
            )
        else:
            encoder = smp.encoders.get_encoder(cfg.encoder, in_channels=cfg.in_channels, depth=ENCODER_DEPTH,
                                               weights=None)
            net = Classifier(encoder, cfg.classes)
    if cfg.encoder_weights:
        load_encoder_weights(net.encoder, cfg.encoder_weights, cfg.in_channels, cfg.encoder)
        log.info("model: %s %s encoder initialised from %s", cfg.arch, cfg.encoder, cfg.encoder_weights)
    else:
        log.info("model: %s %s encoder randomly initialised (no local encoder_weights file given)", cfg.arch, cfg.encoder)
    return ScaledInput(net, per_image=cfg.input_norm == "per_image")


def set_encoder_frozen(model: nn.Module, frozen: bool) -> int:
    """Freeze or unfreeze the encoder of a model from :func:`build_model`; return the trainable parameter count.

    As in fastai (which the paper used, ``train_bn=True``), the encoder's BatchNorm layers stay
    trainable while the rest of the encoder is frozen: with a randomly initialised encoder
    their statistics must still adapt, and with ImageNet weights this is fastai's default.
    """
    for module in model.encoder.modules():
        is_norm = isinstance(module, nn.modules.batchnorm._BatchNorm)
        for p in module.parameters(recurse=False):
            p.requires_grad = is_norm or not frozen
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def model_from_checkpoint(uri: str, device: str | torch.device | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved at ``uri`` (its config is ``meta["model"]``), load its weights; return ``(model, meta)``.

    The model is in eval mode on ``device`` (CPU by default), its weights channels-last as in
    training (faster convolutions on both devices; a contiguous input is converted by the first one).
    """
    state, meta = load_checkpoint(uri)
    if "model" not in meta:
        raise ModelError(f"checkpoint {uri}: meta has no 'model' config")
    # The saved weights replace any ImageNet initialisation, and its file may not exist here.
    cfg = dataclasses.replace(ModelConfig.from_dict(meta["model"]), encoder_weights=None)
    model = build_model(cfg)
    load_state_into(model, state, f"checkpoint {uri}")
    return model.to(device or "cpu", memory_format=torch.channels_last).eval(), meta
