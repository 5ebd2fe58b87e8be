"""avemo.convert and `avemo weights import`: every published layout, on files the tests write.

Each reference file is made here from SPEC 10's layouts: avemo's own module with random weights
(batch-norm statistics moved off their defaults), its state dict renamed to the reference's names
(``module.`` prefixes, ``{'net': ...}``/``{'state_dict': ...}`` wrappers, old-style
``weight_g``/``weight_v`` with ``conv1``/``net.0`` aliases, TSAV's 4-channel stem, the unused
classifiers and JMT's ``final_encoder``), saved with ``torch.save``. The imported checkpoint must
give the outputs of the original module. Nothing is downloaded.
"""

from __future__ import annotations

import json
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from typer.testing import CliRunner

from avemo import cli, convert, hub, models
from avemo.errors import AvemoError
from avemo.files import sha256_file
from avemo.models import layouts


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """An empty weights cache and the packaged manifest, for every test."""
    monkeypatch.setenv("AVEMO_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Fresh random weights, and batch-norm statistics that matter in eval mode."""
    torch.manual_seed(seed)
    for sub in module.modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm):
            sub.running_mean.normal_(0, 0.1)
            sub.running_var.uniform_(0.5, 1.5)
            sub.weight.data.uniform_(0.5, 1.5)
            sub.bias.data.normal_(0, 0.1)
            sub.num_batches_tracked.fill_(7)
    return module.eval()


def build(name: str, seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return randomise(models.build(name, **kwargs), seed)


def same_outputs(imported: nn.Module, original: nn.Module, *inputs, atol=1e-5) -> None:
    with torch.no_grad():
        got, want = imported(*inputs), original(*inputs)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=atol, rtol=1e-4), (got - want).abs().max()


def old_weight_norm(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """``weight_g``/``weight_v`` as torch.nn.utils.weight_norm (old style) stores ``weight``."""
    conv = nn.Conv1d(weight.shape[1], weight.shape[0], weight.shape[2])
    conv.weight.data.copy_(weight)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nn.utils.weight_norm(conv)
    return {"weight_g": conv.weight_g.detach().clone(), "weight_v": conv.weight_v.detach().clone()}


def header(path: Path) -> dict:
    return models.read_header(path)


# --- reading source files ----------------------------------------------------------------------


def test_read_source_unwraps_and_strips(tmp_path):
    state = {"module.a.weight": torch.ones(2, 3), "module.a.bias": torch.zeros(2)}
    path = tmp_path / "wrapped.t7"
    torch.save({"net": state, "epoch": 3, "best_Val_acc": np.float64(0.61)}, path)
    source = layouts.read_source(path)
    assert set(source.state) == {"a.weight", "a.bias"}
    assert source.wrapper == "net" and source.parallel and source.member is None
    assert source.sha256 == sha256_file(path)

    archive = tmp_path / "release.zip"
    legacy = tmp_path / "TSAV_Sub4_544k.pth.tar"
    torch.save({"state_dict": {"x": torch.ones(1)}}, legacy, _use_new_zipfile_serialization=False)
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(legacy, "model2/TSAV_Sub4_544k.pth.tar")
        zf.writestr("model2/readme.txt", "hello")
    source = layouts.read_source(archive)
    assert source.member == "model2/TSAV_Sub4_544k.pth.tar" and source.wrapper == "state_dict"
    assert source.label == "release.zip!model2/TSAV_Sub4_544k.pth.tar"
    assert source.sha256 == sha256_file(archive)  # the file as downloaded


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"", "empty file"),
        (b"just some text", "not a readable PyTorch checkpoint"),
        (b"PK\x03\x04broken", "not a readable PyTorch checkpoint"),
        ("module", r"holds Python objects \(.*Linear.*\) besides tensors"),
        ({"epoch": 3, "lr": 0.1}, r"no state dict found \(top-level keys: epoch, lr\)"),
        ({"net": {"w": torch.ones(1), "step": 3}}, "'net' holds non-tensor entries \\(step\\)"),
        ("two", "a zip archive with 2 checkpoint files .*: pick one with --member"),
    ],
)
def test_read_source_errors(tmp_path, content, message):
    path = tmp_path / "source.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "module":
        torch.save(nn.Linear(2, 2), path)
    elif content == "two":
        path = tmp_path / "source.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("a.pth", b"1")
            zf.writestr("b.pth", b"2")
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(AvemoError, match=message) as error:
        layouts.read_source(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_detect_format():
    assert layouts.detect_format({"video_model.r2plus1d.stem.0.weight": 0}) == "tsav"
    assert layouts.detect_format({"mm_transformer.out_layer_pv.weight": 0}) == "jmt"
    assert layouts.detect_format({"i3d_WSDDA.Mixed_3b.b0.conv3d.weight": 0}) == "jca-cvpr"
    assert layouts.detect_format({"encoder1.weight": 0, "regressor.0.weight": 0}) == "jca-cvpr"
    assert layouts.detect_format({"encoder1.weight": 0, "vregressor.0.weight": 0}) == "jca-journal"
    assert layouts.detect_format({"coattn.dcn_layers.0.linears.0.0.weight": 0}) == "jca-journal"
    assert layouts.detect_format({"Conv3d_1a_7x7.conv3d.weight": 0}) == "pytorch-i3d"
    assert layouts.detect_format({"stem.0.weight": 0, "fc.weight": 0}) == "torchvision"
    assert layouts.detect_format({"something.else": 0}) is None


def test_output_paths(tmp_path):
    out = tmp_path / "tsav.safetensors"
    assert convert.output_paths(out, ["head"], "x") == {"head": out}
    assert convert.output_paths(out, ["visual", "audio"], "x") == {
        "visual": tmp_path / "tsav.visual.safetensors",
        "audio": tmp_path / "tsav.audio.safetensors",
    }
    assert convert.output_paths(tmp_path, ["visual", "audio"], "sub4")["audio"] == (
        tmp_path / "sub4.audio.safetensors"
    )
    assert convert.output_paths(f"{tmp_path}/new/", ["head"], "jmt") == {
        "head": tmp_path / "new" / "jmt.safetensors"
    }
    with pytest.raises(AvemoError, match="must be a .safetensors file or a folder"):
        convert.output_paths(tmp_path / "out.pt", ["head"], "x")


# --- visual and audio backbones ----------------------------------------------------------------


@pytest.mark.parametrize("arch", ["r2plus1d_18", "r3d_18"])
def test_torchvision_kinetics(tmp_path, arch):
    reference = randomise(getattr(torchvision.models.video, arch)())  # fc: 400 classes
    path = tmp_path / f"{arch}-kinetics.pth"
    torch.save(reference.state_dict(), path)
    (out,) = convert.import_weights(path, None, tmp_path / "visual.safetensors")  # detected
    imported = models.load(out)
    assert header(out)["builder"] == arch
    provenance = header(out)["provenance"]
    assert provenance["trained"] is True and provenance["import_format"] == "torchvision"
    assert provenance["source_sha256"] == sha256_file(path)
    assert provenance["ignored"] == {"the 400-class Kinetics classifier": 2}
    reference.fc = nn.Identity()  # torchvision's pooled features: what avemo's "pool" gives
    same_outputs(imported, reference, torch.randn(1, 3, 2, 16, 16))


def tsav_reference(tmp_path: Path) -> tuple[Path, nn.Module, nn.Module]:
    """A TSAV release zip as Kuhnke et al. publish it: model2/TSAV_Sub4_544k.pth.tar.

    The video model is torchvision's R(2+1)D-18 with a 4-channel stem (RGB + mask), the audio
    model torchvision's ResNet18 with a 1-channel conv1; `fc.1` is TSAV's 17-output head.
    """
    torch.manual_seed(1)
    video = torchvision.models.video.r2plus1d_18()
    video.stem[0] = nn.Conv3d(4, 45, (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False)
    video.fc, video.avgpool = nn.Identity(), nn.Identity()
    audio = torchvision.models.resnet18()
    audio.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    audio.fc = nn.Identity()
    randomise(video, 1), randomise(audio, 2)
    state = {f"video_model.r2plus1d.{k}": v for k, v in video.state_dict().items()}
    state.update({f"audio_model.resnet.{k}": v for k, v in audio.state_dict().items()})
    state.update({"fc.1.weight": torch.randn(17, 1024), "fc.1.bias": torch.randn(17)})
    assert state["video_model.r2plus1d.stem.0.weight"].shape == (45, 4, 1, 7, 7)  # SPEC 10
    assert state["audio_model.resnet.conv1.weight"].shape == (64, 1, 7, 7)
    inner = tmp_path / "TSAV_Sub4_544k.pth.tar"
    torch.save({"epoch": 9, "state_dict": state}, inner, _use_new_zipfile_serialization=False)
    path = tmp_path / "aff2model_tntsub4.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.write(inner, "model2/TSAV_Sub4_544k.pth.tar")
    return path, video, audio


def test_tsav_splits_into_visual_and_audio(tmp_path):
    path, video, audio = tsav_reference(tmp_path)
    outputs = convert.import_weights(path, "tsav", tmp_path / "tsav.safetensors")
    assert outputs == [tmp_path / "tsav.visual.safetensors", tmp_path / "tsav.audio.safetensors"]
    visual, sound = (models.load(p) for p in outputs)
    assert header(outputs[0])["builder"] == "r2plus1d_18"
    assert header(outputs[1])["builder"] == "audio_resnet18"
    provenance = header(outputs[0])["provenance"]
    assert provenance["source_file"] == "aff2model_tntsub4.zip!model2/TSAV_Sub4_544k.pth.tar"
    assert any("weight[:, :3] of 4 input channels" in n for n in provenance["notes"])
    assert provenance["ignored"] == {"TSAV's own 17-output expression/AU/VA head": 2}
    # the RGB stem on RGB == the 4-channel stem on RGB + an empty mask
    clips = torch.randn(1, 3, 2, 16, 16)
    with torch.no_grad():
        want = video(torch.cat([clips, torch.zeros(1, 1, 2, 16, 16)], dim=1))
        got = visual(clips)
    assert torch.allclose(got, want.view(1, 512, -1).mean(-1), atol=1e-5)
    same_outputs(sound, audio, torch.randn(2, 1, 64, 107))


@pytest.fixture(scope="module")
def i3d_tcn() -> nn.Module:
    """avemo's I3D + TCN with random weights: the source of the I3D-based reference files."""
    return build("i3d_tcn", seed=3)


def test_pytorch_i3d(tmp_path, i3d_tcn):
    state = {k.removeprefix("i3d."): v for k, v in i3d_tcn.state_dict().items() if "i3d." in k}
    assert state["Conv3d_1a_7x7.conv3d.weight"].shape == (64, 3, 7, 7, 7)
    assert state["Mixed_5c.b3b.bn.running_var"].shape == (128,)
    state["logits.conv3d.weight"] = torch.randn(400, 1024, 1, 1, 1)
    state["logits.conv3d.bias"] = torch.randn(400)
    del state["Mixed_4b.b0.bn.num_batches_tracked"]  # 2018 files predate the counters
    path = tmp_path / "rgb_imagenet.pt"
    torch.save(state, path)
    (out,) = convert.import_weights(path, "pytorch-i3d", tmp_path)
    assert out == tmp_path / "rgb_imagenet.safetensors"
    imported = models.load(out)
    original = models.build("i3d").eval()
    original.i3d.load_state_dict(i3d_tcn.i3d.state_dict())
    # 2 frames: one I3D time step (224 x 224 is the least the final 7 x 7 pool takes)
    same_outputs(imported, original, torch.randn(1, 3, 2, 224, 224), atol=1e-4)


def cvpr_visual_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The CVPRW I3D+TCN checkpoint's tensors (SPEC 10) from avemo's i3d_tcn."""
    state = {}
    for key, value in module.i3d.state_dict().items():
        state[f"module.i3d_WSDDA.{key}"] = value
    state["module.i3d_WSDDA.logits.conv3d.weight"] = torch.randn(400, 1024, 1, 1, 1)
    state["module.i3d_WSDDA.logits.conv3d.bias"] = torch.randn(400)
    for level, block in enumerate(module.temporal.network):
        prefix = f"module.temporal.network.{level}."
        for conv, alias in (("conv1", "net.0"), ("conv2", "net.4")):
            layer = getattr(block, conv)
            tensors = {**old_weight_norm(layer.weight.detach()), "bias": layer.bias.detach()}
            for name, value in tensors.items():
                state[prefix + f"{conv}.{name}"] = value
                state[prefix + f"{alias}.{name}"] = value  # the same tensor, twice
        if block.downsample is not None:
            state[prefix + "downsample.weight"] = block.downsample.weight.detach()
            state[prefix + "downsample.bias"] = block.downsample.bias.detach()
    state["module.regressor.0.weight"] = torch.randn(128, 512)
    state["module.regressor.0.bias"] = torch.randn(128)
    state["module.regressor.2.weight"] = torch.randn(1, 128)
    state["module.regressor.2.bias"] = torch.randn(1)
    for index, (cin, cout) in enumerate(((1024, 512), (512, 1))):
        state[f"module.predictions.{index}.conv3d.weight"] = torch.randn(cout, cin, 1, 1, 1)
        state[f"module.predictions.{index}.conv3d.bias"] = torch.randn(cout)
    return state


def test_jca_cvpr_visual_backbone(tmp_path, i3d_tcn):
    state = cvpr_visual_state(i3d_tcn)
    assert state["module.temporal.network.0.conv1.weight_v"].shape == (512, 1024, 5)
    assert state["module.temporal.network.3.net.4.weight_g"].shape == (512, 1, 1)
    path = tmp_path / "Val_model_valence_cnn_lstm_mil_64_new.t7"
    torch.save({"net": state, "epoch": 12}, path)
    (out,) = convert.import_weights(path, "jca-cvpr", tmp_path / "cvpr.safetensors")
    assert header(out)["builder"] == "i3d_tcn"
    assert header(out)["kwargs"] == {"channels": [512] * 4, "kernel": 5}
    ignored = header(out)["provenance"]["ignored"]
    assert ignored == {
        "the action classifier (logits.*), unused for features": 2,
        "the reference's per-clip regressors, unused": 8,
    }
    imported = models.load(out)
    # the TCN over SPEC's 7 I3D steps, then the whole chain on 2 frames (one step; 224 x 224 is
    # the least I3D's final 7 x 7 pool takes)
    same_outputs(imported.temporal, i3d_tcn.temporal, torch.randn(2, 1024, 7))
    same_outputs(imported, i3d_tcn, torch.randn(1, 3, 2, 224, 224), atol=1e-4)

    # the two names of one tensor must agree
    state["module.temporal.network.1.net.0.bias"] = torch.randn(512)
    torch.save({"net": state}, path)
    with pytest.raises(AvemoError, match=r"temporal\.network\.1\.net\.0\.bias differs from"):
        convert.import_weights(path, "jca-cvpr", tmp_path / "other.safetensors")


# --- fusion heads ------------------------------------------------------------------------------


COMPAT = {"regressor_input": "reference"}  # heads.JCA's mode for the reference's regressors


def reference_jca(tmp_path: Path, own: nn.Module, wrap: bool = True) -> Path:
    """A reference CAM file (SPEC 5.1 names, 640-input regressors) holding ``own``'s weights.

    The CVPRW code saves ``{'net': cam.state_dict()}``; the journal's is kept under DataParallel.
    """
    state = {f"module.{k}": v for k, v in own.state_dict().items()}
    path = tmp_path / "fusion.t7"
    torch.save({"net": state, "best_Val_acc": np.float64(0.5)} if wrap else state, path)
    return path


def head_outputs(module: nn.Module, seq_len: int) -> tuple[torch.Tensor, ...]:
    """Outputs and attended features of a JCA head on fixed random inputs."""
    generator = torch.Generator().manual_seed(9)
    audio = torch.randn(2, seq_len, 512, generator=generator)
    visual = torch.randn(2, seq_len, 512, generator=generator)
    with torch.no_grad():
        out, (att_a, att_v) = module.eval()(audio, visual, return_attended=True)
    return out, att_a, att_v


@pytest.mark.parametrize(
    ("fmt", "seq_len", "regressors"),
    [("jca-journal", 16, "separate"), ("jca-cvpr", 8, "joint")],
)
def test_reference_jca_imports_trained_in_compatibility_mode(tmp_path, fmt, seq_len, regressors):
    """The journal CAM (vregressor/aregressor) and a CVPRW CAM with a 2-output regressor."""
    own = build("jca", seed=4, seq_len=seq_len, regressors=regressors, **COMPAT)
    state = own.state_dict()
    heads = ["vregressor", "aregressor"] if regressors == "separate" else ["regressor"]
    for name in heads:  # SPEC 5.1/10: 640 inputs (V 512 + X_att,v 128), 1 output per dimension
        assert state[f"{name}.0.weight"].shape == (128, 640)
        assert state[f"{name}.2.weight"].shape == (2 // len(heads), 128)
    assert state["affine_a.weight"].shape == (seq_len, seq_len)
    path = reference_jca(tmp_path, own, wrap=fmt == "jca-cvpr")
    (out,) = convert.import_weights(path, None, tmp_path / "head.safetensors")  # detected
    config = header(out)
    assert config["builder"] == "jca"
    assert config["kwargs"] == {
        "audio_dim": 512,
        "visual_dim": 512,
        "seq_len": seq_len,
        "proj_dim": 128,
        "attn_dim": 32,
        "regressor_input": "reference",
        "regressors": regressors,
    }
    provenance = config["provenance"]
    assert provenance["trained"] is True and provenance["import_format"] == fmt
    assert "compatibility mode" in provenance["layout"]
    assert any("[V | X_att,v] (640 inputs)" in note for note in provenance["notes"])
    # the same weights loaded by name into the compatibility-mode module
    fresh = models.build("jca", seq_len=seq_len, regressors=regressors, **COMPAT)
    fresh.load_state_dict(state, strict=True)
    imported = head_outputs(models.load(out), seq_len)
    for got, want in zip(imported, head_outputs(fresh, seq_len), strict=True):
        assert torch.allclose(got, want, atol=1e-5)


def cvpr_one_dimension(tmp_path: Path) -> tuple[Path, nn.Module]:
    """The CVPRW CAM as its code trains it: one regressor Linear(640,128) -> Linear(128, 1).

    Built from a compatibility-mode head with separate regressors whose ``vregressor`` holds
    the file's regressor: the valence channel of that head is the file's output.
    """
    own = build("jca", seed=5, seq_len=8, regressors="separate", **COMPAT)
    state = {
        k.replace("vregressor.", "regressor."): v
        for k, v in own.state_dict().items()
        if not k.startswith("aregressor.")
    }
    assert state["regressor.0.weight"].shape == (128, 640)
    assert state["regressor.2.weight"].shape == (1, 128)
    path = tmp_path / "jca_cvpr_fusion.t7"
    torch.save({"net": state, "best_Val_acc": np.float64(0.5), "best_Val_acc_epoch": 3}, path)
    return path, own


@pytest.mark.parametrize("dimension", ["valence", "arousal"])
def test_cvpr_one_dimension_file(tmp_path, dimension):
    path, own = cvpr_one_dimension(tmp_path)
    with pytest.raises(AvemoError, match=r"regresses one dimension.*--dimension.*--regressor"):
        convert.import_weights(path, "jca-cvpr", tmp_path / "head.safetensors")
    (out,) = convert.import_weights(
        path, "jca-cvpr", tmp_path / "head.safetensors", dimension=dimension
    )
    config = header(out)
    assert config["kwargs"]["regressors"] == "separate"
    assert config["kwargs"]["regressor_input"] == "reference"
    provenance = config["provenance"]
    assert provenance["trained"] is False  # the other dimension's regressor is untrained
    other = "arousal" if dimension == "valence" else "valence"
    assert any(f"regresses {dimension} only" in n and other in n for n in provenance["notes"])
    imported = models.load(out)
    got, want = head_outputs(imported, 8), head_outputs(own, 8)
    channel = 0 if dimension == "valence" else 1
    assert torch.allclose(got[0][..., channel], want[0][..., 0], atol=1e-5)
    assert torch.allclose(got[2], want[2], atol=1e-5)  # X_att,v
    # a two-output file takes no --dimension
    two = build("jca", seq_len=8, **COMPAT)
    torch.save({"net": two.state_dict()}, path)
    with pytest.raises(AvemoError, match="dimension is for a one-output CVPRW regressor"):
        convert.import_weights(path, "jca-cvpr", tmp_path / "x.safetensors", dimension=dimension)


@pytest.mark.parametrize(
    ("fmt", "seq_len", "regressors"),
    [("jca-cvpr", 8, "joint"), ("jca-journal", 16, "separate")],
)
def test_reference_jca_retrain_keeps_attention_only(tmp_path, fmt, seq_len, regressors):
    own = build("jca", seed=4, seq_len=seq_len, regressors=regressors, **COMPAT)
    path = reference_jca(tmp_path, own)
    (out,) = convert.import_weights(path, fmt, tmp_path / "head.safetensors", regressor="retrain")
    head = header(out)
    assert head["builder"] == "jca" and head["kwargs"]["seq_len"] == seq_len
    assert "regressor_input" not in head["kwargs"]  # the paper's head
    assert head["provenance"]["trained"] is False  # its regressor is untrained
    assert any("regressor" in note and "untrained" in note for note in head["provenance"]["notes"])
    _, *attended = head_outputs(models.load(out), seq_len)
    _, *want = head_outputs(own, seq_len)
    for got, expected in zip(attended, want, strict=True):
        assert torch.allclose(got, expected, atol=1e-5)


def test_jca_journal_released_layout(tmp_path):
    own = build("jca_tbiom", seed=5)
    state = {f"module.{k}": v for k, v in own.state_dict().items()}
    # SPEC 5.2's names and shapes
    assert state["module.video_attn.attn.affine_v.weight"].shape == (49, 512)
    assert state["module.coattn.dcn_layers.0.dense_coattn.key1_linear.weight"].shape == (16, 16)
    assert state["module.coattn.dcn_layers.0.linears.1.0.weight"].shape == (512, 1024)
    assert state["module.Joint.init_hidden"].shape == (8, 256)
    assert state["module.aregressor.3.weight"].shape == (1, 128)
    path = tmp_path / "jointcam_model.pt"
    torch.save(state, path)
    (out,) = convert.import_weights(path, None, tmp_path / "journal.safetensors")
    assert header(out)["builder"] == "jca_tbiom"
    assert header(out)["provenance"]["import_format"] == "jca-journal"
    same_outputs(models.load(out), own, torch.randn(2, 16, 512), torch.randn(2, 16, 25088))


@pytest.mark.parametrize("mode", ["self_attention", "fc"])
def test_jmt(tmp_path, mode):
    own = build("jmt", seed=6, mode=mode)
    state = {f"module.{k}": v for k, v in own.state_dict().items()}
    assert state["module.mm_transformer.out_layer_pv.weight"].shape == (512, 1024)
    # the reference's unused final_encoder: one 3072-wide encoder block (~41M parameters)
    block = "module.mm_transformer.final_encoder.layers.0."
    width = 3072
    encoder = {
        "attention.in_proj_weight": (3 * width, width),
        "attention.in_proj_bias": (3 * width,),
        "attention.out_proj.weight": (width, width),
        "attention.out_proj.bias": (width,),
        "feed_forward.0.weight": (512, width),
        "feed_forward.0.bias": (512,),
        "feed_forward.2.weight": (width, 512),
        "feed_forward.2.bias": (width,),
        "layer_norm1.weight": (width,),
        "layer_norm1.bias": (width,),
        "layer_norm2.weight": (width,),
        "layer_norm2.bias": (width,),
    }
    if mode == "self_attention":  # the reference's default; enough to check it is skipped
        state.update({block + key: torch.empty(shape) for key, shape in encoder.items()})
    path = tmp_path / "fusion_w.pt"
    torch.save(state, path)
    (out,) = convert.import_weights(path, "jmt", tmp_path / "jmt.safetensors")
    assert header(out)["kwargs"]["mode"] == mode
    ignored = {"the reference's unused final_encoder": 12} if mode == "self_attention" else {}
    assert header(out)["provenance"]["ignored"] == ignored
    same_outputs(models.load(out), own, torch.randn(2, 16, 512), torch.randn(2, 16, 512))


# --- precise errors ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tbiom_state() -> dict[str, torch.Tensor]:
    return build("jca_tbiom", seed=7).state_dict()


def test_unknown_missing_and_mismatched_keys_are_listed(tmp_path, tbiom_state):
    state = dict(tbiom_state)
    del state["Joint.linear.bias"]
    del state["vregressor.3.weight"]
    state["video_attn.attn.affine_feat.bias"] = torch.zeros(7)
    path = tmp_path / "jointcam_model.pt"
    torch.save(state, path)
    with pytest.raises(AvemoError) as error:
        convert.import_weights(path, "jca-journal", tmp_path / "out.safetensors")
    message = str(error.value)
    assert "2 missing key(s): Joint.linear.bias, vregressor.3.weight" in message
    assert "1 shape mismatch(es): video_attn.attn.affine_feat.bias (file 7, avemo 512)" in message
    assert not (tmp_path / "out.safetensors").exists()

    state = dict(tbiom_state)
    state["audio_extract.rnn.weight_ih_l0"] = torch.zeros(1024, 512)  # an older release
    state["audio_extract.linear.weight"] = torch.zeros(512, 1024)
    torch.save(state, path)
    with pytest.raises(
        AvemoError,
        match=r"2 key\(s\) of this jca-journal file have no place in "
        r"avemo .*: audio_extract\.rnn\.weight_ih_l0, audio_extract\.linear\.weight",
    ):
        convert.import_weights(path, "jca-journal", tmp_path / "out.safetensors")


def test_wrong_format_is_named(tmp_path, tbiom_state):
    path = tmp_path / "jointcam_model.pt"
    torch.save(tbiom_state, path)
    with pytest.raises(
        AvemoError, match="not a jmt checkpoint: it looks like --format jca-journal"
    ):
        convert.import_weights(path, "jmt", tmp_path / "out.safetensors")
    with pytest.raises(AvemoError, match="unknown format 'onnx'"):
        convert.import_weights(path, "onnx", tmp_path / "out.safetensors")
    with pytest.raises(AvemoError, match="option heads does not apply to format jca-journal"):
        convert.import_weights(path, "jca-journal", tmp_path / "out.safetensors", heads=2)
    (out,) = convert.import_weights(path, "jca-journal", tmp_path / "out.safetensors")
    with pytest.raises(AvemoError, match="already an avemo checkpoint: nothing to import"):
        convert.import_weights(out, None, tmp_path / "again.safetensors")
    torch.save({"conv.weight": torch.ones(1)}, path)
    with pytest.raises(AvemoError, match="cannot tell the format of this file: give --format"):
        convert.import_weights(path, None, tmp_path / "out.safetensors")
    with pytest.raises(AvemoError, match=r"1 key\(s\) of this tsav file .*: conv\.weight"):
        convert.import_weights(path, "tsav", tmp_path / "out.safetensors")


def test_existing_output_is_kept(tmp_path, tbiom_state):
    path = tmp_path / "jointcam_model.pt"
    torch.save(tbiom_state, path)
    out = tmp_path / "head.safetensors"
    out.write_bytes(b"mine")
    with pytest.raises(AvemoError, match="already exists"):
        convert.import_weights(path, "jca-journal", out)
    assert out.read_bytes() == b"mine"
    assert convert.import_weights(path, "jca-journal", out, overwrite=True) == [out]


# --- names from the manifest, provenance, pipelines --------------------------------------------


def test_registry_name_and_licence(tmp_path, cache, tbiom_state, monkeypatch):
    entries = json.loads(hub.MANIFEST_PATH.read_text())
    monkeypatch.setattr(hub, "MANIFEST_PATH", tmp_path / "manifest.json")
    hub.MANIFEST_PATH.write_text(json.dumps(entries))
    entry = hub.get("jca-journal")
    entry.path.parent.mkdir(parents=True)
    torch.save(tbiom_state, entry.path)
    with pytest.raises(AvemoError, match="no known sha256: `avemo weights verify jca-journal"):
        convert.import_weights("jca-journal", None, tmp_path)
    hub.verify("jca-journal", trust=True)
    (out,) = convert.import_weights("jca-journal", None, tmp_path)  # format from the manifest
    assert out == tmp_path / "jca-journal.safetensors"
    provenance = header(out)["provenance"]
    assert provenance["weights_name"] == "jca-journal"
    assert provenance["licence"] == entry.licence and provenance["source"] == entry.source
    # the same file elsewhere is recognised by its recorded hash
    copy = tmp_path / "copy.pt"
    copy.write_bytes(entry.path.read_bytes())
    (out,) = convert.import_weights(copy, None, tmp_path / "copy.safetensors")
    assert header(out)["provenance"]["weights_name"] == "jca-journal"


def test_pipeline_of_tsav_and_journal_jca(tmp_path, tbiom_state):
    tsav, video, audio = tsav_reference(tmp_path)
    reference = tmp_path / "jointcam_model.pt"
    torch.save(tbiom_state, reference)
    (head,) = convert.import_weights(reference, None, tmp_path / "head.safetensors")
    # an avemo checkpoint as one part; options go to the sources that take them
    out = tmp_path / "journal.safetensors"
    result = invoke(str(tsav), str(head), "--pipeline", "--features", "pool", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert result.output == f"pipeline: {out}\n"
    config = header(out)
    assert config["provenance"]["notes"] == ["visual features set to 'flat' for the jca_tbiom head"]
    assert config["builder"] == "pipeline"
    assert config["kwargs"]["visual"] == {"builder": "r2plus1d_18", "kwargs": {"features": "flat"}}
    assert config["kwargs"]["seq_len"] == 16
    assert set(config["provenance"]["parts"]) == {"visual", "audio", "head"}
    pipeline = models.load(out)
    state = pipeline.state_dict()
    for key, value in video.state_dict().items():
        want = value[:, :3] if key == "stem.0.weight" else value
        assert torch.equal(state[f"visual.{key}"], want), key
    for key, value in audio.state_dict().items():
        assert torch.equal(state[f"audio.{key}"], value), key
    for key, value in tbiom_state.items():
        assert torch.equal(state[f"head.{key}"], value), key
    with torch.no_grad():  # one frame is enough for layer4's 1 x 7 x 7 grid
        features = pipeline.encode_visual(torch.randn(1, 3, 1, 112, 112))
    assert features.shape == (1, 25088)
    with pytest.raises(AvemoError, match="no head part among the sources"):
        convert.import_pipeline([tsav], tmp_path / "no-head.safetensors")


# --- CLI ---------------------------------------------------------------------------------------


def invoke(*args: str):
    return CliRunner().invoke(cli.app, ["weights", "import", *args])


def test_cli_import(tmp_path, tbiom_state):
    path = tmp_path / "jointcam_model.pt"
    torch.save(tbiom_state, path)
    result = invoke(str(path), "-o", str(tmp_path / "head.safetensors"))
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"head: {tmp_path / 'head.safetensors'}"

    result = invoke(str(path), "--format", "jmt", "-o", str(tmp_path / "x.safetensors"))
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert re.match(r"error: .*jointcam_model\.pt: not a jmt checkpoint", result.output)

    result = invoke(str(path), "--format", "onnx", "-o", str(tmp_path / "x.safetensors"))
    assert result.exit_code == 2 and "unknown format 'onnx'" in result.output
    result = invoke("jca-jurnal", "-o", str(tmp_path / "x.safetensors"))
    assert result.exit_code == 2 and "did you mean jca-journal" in result.output
    result = invoke(str(path), "--name", "jca-jurnal", "-o", str(tmp_path / "x.safetensors"))
    assert result.exit_code == 2 and "did you mean jca-journal" in result.output
    result = invoke(str(path), str(path), "-o", str(tmp_path / "x.safetensors"))
    assert result.exit_code == 2 and "--pipeline" in result.output


def test_cli_jca_regressor_options(tmp_path):
    path, _ = cvpr_one_dimension(tmp_path)
    out = tmp_path / "head.safetensors"
    result = invoke(str(path), "-o", str(out))
    assert result.exit_code == 1 and "regresses one dimension" in result.output
    result = invoke(str(path), "--dimension", "dominance", "-o", str(out))
    assert result.exit_code == 2 and "--dimension must be valence or arousal" in result.output
    result = invoke(str(path), "--regressor", "keep", "-o", str(out))
    assert result.exit_code == 2 and "--regressor takes reference or retrain" in result.output
    result = invoke(str(path), "--dimension", "arousal", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert header(out)["kwargs"]["regressors"] == "separate"
    result = invoke(str(path), "--regressor", "retrain", "-o", str(out), "--overwrite")
    assert result.exit_code == 0, result.output
    assert "regressor_input" not in header(out)["kwargs"]
