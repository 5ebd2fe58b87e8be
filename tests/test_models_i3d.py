"""I3D with temporal strides 1, the TCN, and the reference checkpoint layouts."""

from __future__ import annotations

import pytest
import torch
from modelcheck import assert_gradients, assert_round_trip, parameter_count

from avemo import models
from avemo.models import i3d, layouts

# Inception-v1 (GoogLeNet) channel table: input, then (b0, b1a, b1b, b2a, b2b, b3b) per block
INCEPTION_V1 = [
    (192, 64, 96, 128, 16, 32, 32),
    (256, 128, 128, 192, 32, 96, 64),
    (480, 192, 96, 208, 16, 48, 64),
    (512, 160, 112, 224, 24, 64, 64),
    (512, 128, 128, 256, 24, 64, 64),
    (512, 112, 144, 288, 32, 64, 64),
    (528, 256, 160, 320, 32, 128, 128),
    (832, 256, 160, 320, 32, 128, 128),
    (832, 384, 192, 384, 48, 128, 128),
]


def unit(k: int, n_in: int, n_out: int) -> int:
    """Parameters of a k x k x k conv without bias + batch norm (weight, bias)."""
    return k**3 * n_in * n_out + 2 * n_out


def expected_i3d_parameters() -> int:
    stem = unit(7, 3, 64) + unit(1, 64, 64) + unit(3, 64, 192)
    blocks = sum(
        unit(1, n, b0) + unit(1, n, b1a) + unit(3, b1a, b1b) + unit(1, n, b2a)
        + unit(3, b2a, b2b) + unit(1, n, b3b)
        for n, b0, b1a, b1b, b2a, b2b, b3b in INCEPTION_V1
    )  # fmt: skip
    return stem + blocks


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "expected"),
    [
        (224, 7, 2, (2, 3)),
        (8, 7, 1, (3, 3)),
        (8, 3, 1, (1, 1)),
        (7, 3, 2, (1, 1)),
        (8, 1, 1, (0, 0)),
    ],
)
def test_same_padding(size, kernel, stride, expected):
    assert i3d.same_padding(size, kernel, stride) == expected


def test_same_padding_output_sizes():
    """SAME: output size is ceil(size / stride) for every axis, as in TensorFlow."""
    x = torch.randn(1, 2, 5, 9, 10)
    for kernel, stride in (((3, 3, 3), (1, 2, 2)), ((2, 7, 7), (1, 3, 2))):
        padded = i3d.pad_same(x, kernel, stride)
        out = torch.nn.functional.max_pool3d(padded, kernel, stride)
        assert out.shape[2:] == tuple(
            -(-s // st) for s, st in zip(x.shape[2:], stride, strict=True)
        )


def test_i3d_parameters_and_names():
    model = i3d.InceptionI3d()
    assert parameter_count(model) == expected_i3d_parameters() == 12_287_264
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # names and shapes of the public pytorch-i3d layout (SPEC 4)
    assert shapes["Conv3d_1a_7x7.conv3d.weight"] == (64, 3, 7, 7, 7)
    assert shapes["Conv3d_1a_7x7.bn.running_var"] == (64,)
    assert shapes["Conv3d_2c_3x3.conv3d.weight"] == (192, 64, 3, 3, 3)
    assert shapes["Mixed_3b.b0.conv3d.weight"] == (64, 192, 1, 1, 1)
    assert shapes["Mixed_3b.b1b.conv3d.weight"] == (128, 96, 3, 3, 3)
    assert shapes["Mixed_5c.b3b.bn.bias"] == (128,)
    assert not any("bias" in k for k in shapes if ".conv3d." in k)
    assert all(m.eps == 1e-3 for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d))


def test_pytorch_i3d_checkpoint_loads_with_logits():
    """pytorch-i3d's names are avemo's; its unused logits.* are dropped by avemo.convert."""
    model = models.build("i3d")
    state = {k: v.clone() for k, v in model.i3d.state_dict().items()}
    state["logits.conv3d.weight"] = torch.randn(400, 1024, 1, 1, 1)
    state["logits.conv3d.bias"] = torch.randn(400)
    state["Conv3d_1a_7x7.conv3d.weight"] = torch.randn(64, 3, 7, 7, 7)
    with pytest.raises(RuntimeError, match="logits"):  # the module itself drops nothing
        model.i3d.load_state_dict(state, strict=True)
    model.load_state_dict(layouts.state_dicts(state, "pytorch-i3d")["visual"], strict=True)
    assert torch.equal(model.i3d.Conv3d_1a_7x7.conv3d.weight, state["Conv3d_1a_7x7.conv3d.weight"])


def test_i3d_tcn_paper_size():
    """8 x 224 x 224 -> I3D 1024 x 7 (every temporal stride 1) -> TCN 512 x 7."""
    model = models.build("i3d_tcn").eval()
    with torch.inference_mode():
        features = model.i3d(torch.randn(1, 3, 8, 224, 224))
        assert features.shape == (1, i3d.I3D_DIM, 7)
        assert model.temporal(features).shape == (1, 512, 7)
    pre = model.avemo_config["preprocessing"]
    assert (pre["size"], pre["mean"], pre["std"]) == ([224, 224], [0.5] * 3, [0.5] * 3)


def test_tcn_is_causal_and_shaped():
    tcn = i3d.TemporalConvNet(16, (8, 8), kernel=3, dropout=0.0).eval()
    x = torch.randn(2, 16, 7)
    with torch.inference_mode():
        out = tcn(x)
        assert out.shape == (2, 8, 7)
        changed = x.clone()
        changed[..., 4:] += 1.0  # only the future of step 3 changes
        later = tcn(changed)
    assert torch.equal(out[..., :4], later[..., :4])
    assert not torch.equal(out[..., 4:], later[..., 4:])


def test_tcn_parameters():
    tcn = i3d.TemporalConvNet()  # 1024 -> 4 x 512, kernel 5
    conv = 512 * 5 + 1  # weight_v per output channel + bias
    level0 = 512 * (1024 * 5 + 1) + 512 * conv + 512 * 1024 + 512 + 2 * 512  # + weight_g
    other = 2 * 512 * conv + 2 * 512
    assert parameter_count(tcn) == level0 + 3 * other


def tcn_reference_state(tcn: i3d.TemporalConvNet, prefix: str) -> dict[str, torch.Tensor]:
    """Old-style weight norm, both aliases of each convolution (SPEC 4)."""
    state = {}
    generator = torch.Generator().manual_seed(3)
    for level, block in enumerate(tcn.network):
        for conv, alias in (("conv1", "net.0"), ("conv2", "net.4")):
            module = getattr(block, conv)
            out_channels = module.out_channels
            v = torch.randn(module.parametrizations.weight.original1.shape, generator=generator)
            g = torch.rand(out_channels, 1, 1, generator=generator) + 0.5
            b = torch.randn(out_channels, generator=generator)
            for name in (conv, alias):
                base = f"{prefix}network.{level}.{name}."
                state.update({base + "weight_g": g, base + "weight_v": v, base + "bias": b})
        if block.downsample is not None:
            base = f"{prefix}network.{level}.downsample."
            state[base + "weight"] = torch.randn(block.downsample.weight.shape)
            state[base + "bias"] = torch.randn(block.downsample.bias.shape)
    return state


def test_cvpr_checkpoint_layout_loads():
    """``{'net': ...}`` with module.i3d_WSDDA.*, temporal weight_g/v and aliases, heads, through
    avemo.convert's strict tables."""
    model = models.build("i3d_tcn")
    state = {f"module.i3d_WSDDA.{k}": v.clone() for k, v in model.i3d.state_dict().items()}
    state["module.i3d_WSDDA.logits.conv3d.weight"] = torch.randn(400, 1024, 1, 1, 1)
    state["module.i3d_WSDDA.logits.conv3d.bias"] = torch.randn(400)
    state.update(tcn_reference_state(model.temporal, "module.temporal."))
    state["module.regressor.0.weight"] = torch.randn(128, 512)
    state["module.predictions.weight"] = torch.randn(2, 128)
    model.load_state_dict(layouts.state_dicts({"net": state}, "jca-cvpr")["visual"], strict=True)
    conv = model.temporal.network[1].conv2
    g = state["module.temporal.network.1.conv2.weight_g"]
    v = state["module.temporal.network.1.conv2.weight_v"]
    assert torch.allclose(conv.weight, torch._weight_norm(v, g, 0))
    assert torch.equal(conv.bias, state["module.temporal.network.1.net.4.bias"])


def test_small_i3d_round_trip_and_gradients(tmp_path):
    """The smallest clip I3D takes: 2 frames of 193 x 193 (7 x 7 after the strides).

    Eval outputs of the saved and the loaded model are identical (so dropout is off and eval is
    deterministic); then every parameter gets a gradient.
    """
    model = models.build("i3d_tcn", channels=[8, 8], kernel=3)
    clips = torch.randn(1, 3, 2, 193, 193)
    loaded = assert_round_trip(model, (clips,), tmp_path)
    assert loaded.avemo_header["kwargs"] == {"channels": [8, 8], "kernel": 3}
    with torch.inference_mode():  # forward = I3D -> TCN -> max over time; bare I3D: mean
        features = model.i3d(clips)
        assert features.shape == (1, 1024, 1)
        assert torch.equal(loaded.test_output, model.temporal(features).amax(-1))
        bare = models.build("i3d").eval()
        bare.i3d = torch.nn.Identity()  # the I3D itself is checked above
        steps = torch.randn(2, 1024, 7)
        assert torch.equal(bare(steps), steps.mean(-1))
    assert_gradients(model, clips)
