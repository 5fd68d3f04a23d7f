"""Model factory: shapes, seeded init, local ImageNet weights, freezing, checkpoint rebuild."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
import torchvision

from loop.train.checkpoints import save_checkpoint
from loop.config.training import ModelConfig
from loop.train.model import INPUT_MEAN, ModelError, build_model, model_from_checkpoint, set_encoder_frozen


SEG = ModelConfig(encoder="resnet18")
CLS = ModelConfig(task="classification", encoder="resnet18", classes=3)


def test_segmentation_gives_one_boundary_logit_per_pixel():
    model = build_model(SEG).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 1, 64, 96))
    assert out.shape == (2, 1, 64, 96) and torch.isfinite(out).all()


def test_classification_gives_class_logits():
    model = build_model(CLS).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 1, 64, 64))
    assert out.shape == (2, 3)


def test_seeded_initialisation_without_touching_the_global_rng():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = build_model(SEG, seed=1).state_dict()
    assert torch.equal(torch.random.get_rng_state(), before)
    b = build_model(SEG, seed=1).state_dict()
    c = build_model(SEG, seed=2).state_dict()
    key = "net.encoder.conv1.weight"
    assert torch.equal(a[key], b[key]) and not torch.equal(a[key], c[key])
    assert torch.equal(a["net.decoder.blocks.0.conv1.0.weight"], b["net.decoder.blocks.0.conv1.0.weight"])


def test_random_init_is_said_once(caplog):
    with caplog.at_level(logging.INFO, logger="loop.train.model"):
        build_model(SEG)
    said = [r for r in caplog.records if "randomly initialised" in r.getMessage()]
    assert len(said) == 1 and "resnet18" in said[0].getMessage()


def test_local_imagenet_weights_are_loaded_with_the_first_conv_summed(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).state_dict()  # stands in for the ImageNet file
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(reference, path)
    for cfg in (ModelConfig(encoder="resnet18", encoder_weights=str(path)),
                ModelConfig(task="classification", encoder="resnet18", encoder_weights=str(path))):
        enc = build_model(cfg).encoder.state_dict()
        assert torch.equal(enc["conv1.weight"], reference["conv1.weight"].sum(1, keepdim=True))
        assert torch.equal(enc["layer4.1.conv2.weight"], reference["layer4.1.conv2.weight"])
        assert torch.equal(enc["bn1.running_var"], reference["bn1.running_var"])


def test_weights_file_that_does_not_fit_names_the_file(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(ModelError, match=r"resnet34\.pth does not fit.*unexpected key"):
        build_model(ModelConfig(encoder="resnet18", encoder_weights=str(path)))
    missing = tmp_path / "absent.pth"
    with pytest.raises(ModelError, match=r"absent\.pth not found"):
        build_model(ModelConfig(encoder="resnet18", encoder_weights=str(missing)))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"junk")
    with pytest.raises(ModelError, match=r"cannot read .*junk\.pth"):
        build_model(ModelConfig(encoder="resnet18", encoder_weights=str(junk)))


def test_a_non_resnet_encoder_loads_its_own_3_channel_weights(tmp_path):
    import segmentation_models_pytorch as smp
    from safetensors.torch import save_file

    torch.manual_seed(0)
    rgb = smp.encoders.get_encoder("mobilenet_v2", in_channels=3, depth=5, weights=None)  # the "ImageNet" file
    reference = {k: v.clone() for k, v in rgb.state_dict().items()}
    reference["classifier.1.weight"] = torch.zeros(1000, 1280)  # the ImageNet head, ignored as smp ignores it
    reference["classifier.1.bias"] = torch.zeros(1000)
    path = tmp_path / "mobilenet_v2.safetensors"
    save_file(reference, str(path))
    first = "features.0.0.weight"
    for cfg in (ModelConfig(encoder="mobilenet_v2", encoder_weights=str(path)),
                ModelConfig(task="classification", encoder="mobilenet_v2", encoder_weights=str(path))):
        model = build_model(cfg)
        enc = model.encoder.state_dict()
        assert torch.equal(enc[first], reference[first].sum(1, keepdim=True))  # smp's grey adaptation
        assert all(torch.equal(enc[k], reference[k]) for k in enc if k != first)
        with torch.no_grad():
            assert model.eval()(torch.rand(1, 1, 64, 64)).shape[0] == 1
    # A file already made for grey input loads as it is; one of another encoder names the file.
    grey = tmp_path / "grey.pth"
    torch.save(build_model(ModelConfig(encoder="mobilenet_v2"), seed=3).encoder.state_dict(), grey)
    again = build_model(ModelConfig(encoder="mobilenet_v2", encoder_weights=str(grey))).encoder.state_dict()
    assert torch.equal(again[first], torch.load(grey)[first])
    with pytest.raises(ModelError, match=r"mobilenet_v2\.safetensors does not fit the EfficientNetEncoder "
                                         r"\(efficientnet-b0, 3 input channels\): .*missing key"):
        build_model(ModelConfig(encoder="efficientnet-b0", encoder_weights=str(path)))


def test_freezing_keeps_batchnorm_and_decoder_trainable():
    model = build_model(SEG)
    total = sum(p.numel() for p in model.parameters())
    n_frozen = set_encoder_frozen(model, True)
    assert n_frozen < total
    assert not model.encoder.conv1.weight.requires_grad and not model.encoder.layer4[1].conv2.weight.requires_grad
    assert model.encoder.bn1.weight.requires_grad
    assert all(p.requires_grad for p in model.net.decoder.parameters())
    assert all(p.requires_grad for p in model.net.segmentation_head.parameters())
    assert set_encoder_frozen(model, False) == total


def test_input_is_scaled_inside_the_model():
    model = build_model(SEG).eval()
    with torch.no_grad():
        a = model(torch.full((1, 1, 64, 64), INPUT_MEAN))
        b = model.net(torch.zeros(1, 1, 64, 64))
    assert torch.allclose(a, b)


def test_model_from_checkpoint_rebuilds_the_same_function(tmp_path):
    model = build_model(CLS, seed=5).eval()
    uri = str(tmp_path / "m.pt")
    # A weights file that is absent here must not matter: the checkpoint replaces it.
    cfg = dict(CLS.to_dict(), encoder_weights=str(tmp_path / "gone.pth"))
    save_checkpoint(uri, model.state_dict(), {"model": cfg})
    again, meta = model_from_checkpoint(uri)
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        # The same weights; the rebuilt model runs channels-last, so equal within float tolerance.
        assert torch.allclose(model(x), again(x), rtol=1e-4, atol=1e-5)
    assert again.net.encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert meta["model"]["classes"] == 3 and not again.training
    save_checkpoint(uri, model.state_dict(), {})
    with pytest.raises(ModelError, match="no 'model' config"):
        model_from_checkpoint(uri)


def test_per_image_normalisation_sees_a_bright_and_a_dark_copy_alike(tmp_path):
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0)) * 0.5
    darker = 0.4 * x + 0.05  # another exposure and contrast of the same images
    per_image = build_model(ModelConfig(encoder="resnet18", input_norm="per_image"), seed=1).eval()
    fixed = build_model(ModelConfig(encoder="resnet18"), seed=1).eval()
    assert set(per_image.state_dict()) == set(fixed.state_dict())  # no weights of its own
    with torch.no_grad():
        assert torch.allclose(per_image(x), per_image(darker), atol=1e-4)
        assert not torch.allclose(fixed(x), fixed(darker), atol=1e-2)
        # A flat image is not blown up to unit spread: its noise stays small.
        flat = torch.full((1, 1, 64, 64), 0.5) + 1e-4 * torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(1))
        assert torch.isfinite(per_image(flat)).all()
    path = str(tmp_path / "m.pt")
    save_checkpoint(path, per_image.state_dict(), {"model": ModelConfig(encoder="resnet18", input_norm="per_image").to_dict()})
    rebuilt, _ = model_from_checkpoint(path)
    assert rebuilt.per_image
    with pytest.raises(Exception, match="model.input_norm"):
        ModelConfig(input_norm="zscore")


def test_preset_overrides_reach_their_part_and_unknown_ones_are_named():
    from loop.config.run import RunConfig
    from loop.run.lifecycle import RunError, resolved_preset

    preset = resolved_preset(RunConfig.for_preset("smoke"), {"input_norm": "per_image", "freeze_random_encoder": False,
                                                            "encoder_weights": None})
    assert preset.model.input_norm == "per_image" and preset.train.freeze_random_encoder is False
    assert preset.model.encoder_weights is None
    # --augment sets some augmentation fields over the preset's, keeping the rest.
    base = resolved_preset(RunConfig.for_preset("smoke")).train.augment
    turned = resolved_preset(RunConfig.for_preset("smoke"), {"augment": {"rotate": 30.0, "flip": False}}).train.augment
    assert turned == dataclasses.replace(base, rotate=30.0, flip=False)
    with pytest.raises(RunError, match="override 'lr': unknown; expected some of encoder_weights"):
        resolved_preset(RunConfig.for_preset("smoke"), {"lr": 1.0})
