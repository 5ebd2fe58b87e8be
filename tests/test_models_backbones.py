"""Backbones: shapes, parameter counts vs torchvision, the TSAV layout, checkpoints."""

from __future__ import annotations

import pytest
import torch
import torchvision
from modelcheck import (
    assert_deterministic,
    assert_gradients,
    assert_round_trip,
    load_reference,
    parameter_count,
)

from avemo import models
from avemo.models import backbones, layouts

SMALL_CLIPS = (2, 3, 8, 16, 16)  # B x 3 x T x H x W, small enough for fast tests


def torchvision_without_fc(net: torch.nn.Module) -> int:
    return parameter_count(net) - parameter_count(net.fc)


@pytest.mark.parametrize("name", ["r2plus1d_18", "r3d_18"])
def test_video_resnet_matches_torchvision(name):
    """Parameter names/count are torchvision's minus fc; pooled features equal torchvision's."""
    reference = getattr(torchvision.models.video, name)().eval()
    module = models.build(name).eval()
    assert parameter_count(module) == torchvision_without_fc(reference)
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    module.load_state_dict(state, strict=True)
    reference.fc = torch.nn.Identity()
    clips = torch.randn(SMALL_CLIPS)
    with torch.inference_mode():
        assert torch.allclose(module(clips), reference(clips), atol=1e-6)
    assert module(clips).shape == (2, backbones.FEATURE_DIM)


def test_flat_mode_at_paper_size():
    module = models.build("r2plus1d_18", features="flat").eval()
    with torch.inference_mode():
        flat = module(torch.randn(1, 3, 8, backbones.CLIP_SIZE, backbones.CLIP_SIZE))
    assert flat.shape == (1, backbones.FLAT_DIM) == (1, 25088)


def test_flat_is_channel_major_layer4():
    module = models.build("r2plus1d_18", features="flat").eval()
    clips = torch.randn(1, 3, 8, 64, 64)
    with torch.inference_mode():
        x = module.stem(clips)
        for layer in (module.layer1, module.layer2, module.layer3, module.layer4):
            x = layer(x)
        flat = module(clips)
    assert torch.equal(flat, x.reshape(1, -1))
    assert torch.allclose(flat.view(1, 512, -1).mean(-1), x.mean(dim=(2, 3, 4)))


def test_unknown_feature_mode():
    with pytest.raises(ValueError, match="features"):
        models.build("r3d_18", features="max")


def test_resnet18_gru():
    module = models.build("resnet18_gru")
    frame = torchvision.models.resnet18()
    gru = torch.nn.GRU(512, 512, batch_first=True)
    assert parameter_count(module) == torchvision_without_fc(frame) + parameter_count(gru)
    small = models.build("resnet18_gru", hidden=16)
    clips = torch.randn(SMALL_CLIPS)
    out = assert_deterministic(small, clips)
    assert out.shape == (2, 16)
    # the GRU runs over the frames in order: reversing time changes the features
    with torch.inference_mode():
        assert not torch.allclose(small(clips.flip(2)), out)
    assert_gradients(small, clips)


def test_audio_resnet18():
    module = models.build("audio_resnet18")
    reference = torchvision.models.resnet18()
    rgb_conv1, mono_conv1 = 64 * 3 * 7 * 7, 64 * 1 * 7 * 7
    expected = torchvision_without_fc(reference) - rgb_conv1 + mono_conv1
    assert parameter_count(module) == expected == 11_170_240
    conv1 = module.conv1
    assert (conv1.in_channels, conv1.kernel_size, conv1.stride, conv1.padding, conv1.bias) == (
        1,
        (7, 7),
        (2, 2),
        (3, 3),
        None,
    )
    specs = torch.randn(3, *backbones.AUDIO_INPUT)
    assert assert_deterministic(module, specs).shape == (3, 512)
    assert module.avemo_config["preprocessing"]["input_shape"] == [1, 64, 107]


def test_preprocessing_recorded():
    config = models.build("r2plus1d_18").avemo_config
    assert config["component"] == "visual_backbone"
    pre = config["preprocessing"]
    assert pre["mean"] == list(backbones.KINETICS_MEAN) and pre["std"] == list(
        backbones.KINETICS_STD
    )
    assert (pre["frames"], pre["size"], pre["channel_order"]) == (8, [112, 112], "RGB")


def test_video_gradients():
    assert_gradients(models.build("r2plus1d_18"), torch.randn(SMALL_CLIPS))


def test_audio_gradients():
    assert_gradients(models.build("audio_resnet18"), torch.randn(2, *backbones.AUDIO_INPUT))


def test_round_trip(tmp_path):
    module = models.build("r2plus1d_18", features="flat")
    loaded = assert_round_trip(module, (torch.randn(SMALL_CLIPS),), tmp_path)
    assert loaded.features == "flat"
    audio = models.build("audio_resnet18")
    assert_round_trip(audio, (torch.randn(2, *backbones.AUDIO_INPUT),), tmp_path)


def tsav_shapes() -> dict[str, tuple]:
    """TSAV checkpoint names and shapes (SPEC 10): torchvision layouts under TSAV's prefixes."""
    video = {
        k: tuple(v.shape) for k, v in torchvision.models.video.r2plus1d_18().state_dict().items()
    }
    video["stem.0.weight"] = (45, 4, 1, 7, 7)  # RGB + mask
    audio = {k: tuple(v.shape) for k, v in torchvision.models.resnet18().state_dict().items()}
    audio["conv1.weight"] = (64, 1, 7, 7)
    audio.pop("fc.weight"), audio.pop("fc.bias")
    shapes = {f"video_model.r2plus1d.{k}": s for k, s in video.items()}
    shapes.update({f"audio_model.resnet.{k}": s for k, s in audio.items()})
    shapes.update({"fc.1.weight": (2, 1024), "fc.1.bias": (2,)})
    return shapes


def test_tsav_checkpoint_layout_loads():
    """Through avemo.convert's strict tables: the stem reduced to RGB, fc.1 unused."""
    generator = torch.Generator().manual_seed(0)
    checkpoint = {
        k: torch.zeros((), dtype=torch.long)
        if k.endswith("num_batches_tracked")
        else torch.randn(s, generator=generator)
        for k, s in tsav_shapes().items()
    }
    parts = layouts.state_dicts({"state_dict": checkpoint}, "tsav")
    visual, audio = models.build("r2plus1d_18"), models.build("audio_resnet18")
    visual.load_state_dict(parts["visual"], strict=True)
    audio.load_state_dict(parts["audio"], strict=True)
    stem = checkpoint["video_model.r2plus1d.stem.0.weight"]
    assert torch.equal(visual.stem[0].weight, stem[:, :3])
    assert torch.equal(audio.conv1.weight, checkpoint["audio_model.resnet.conv1.weight"])


def test_audio_names_are_torchvision():
    module = models.build("audio_resnet18")
    shapes = {k: tuple(v.shape) for k, v in torchvision.models.resnet18().state_dict().items()}
    shapes["conv1.weight"] = (64, 1, 7, 7)
    del shapes["fc.weight"], shapes["fc.bias"]
    load_reference(module, shapes)


def test_rgb_stem():
    weight = torch.randn(45, 4, 1, 7, 7)
    assert torch.equal(backbones.rgb_stem(weight), weight[:, :3])
    rgb = torch.randn(45, 3, 1, 7, 7)
    assert torch.equal(backbones.rgb_stem(rgb), rgb)
    with pytest.raises(ValueError, match="first-conv"):
        backbones.rgb_stem(torch.randn(45, 1, 1, 7, 7))
