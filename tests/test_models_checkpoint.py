"""The builder registry and the checkpoint format: round trips and clear errors."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from avemo import models
from avemo.errors import AvemoError


class Tied(nn.Module):
    """A small module with a tied (shared) weight, a buffer and a tuple argument."""

    def __init__(self, sizes=(3, 4)):
        super().__init__()
        self.encode = nn.Linear(sizes[0], sizes[1])
        self.decode = nn.Linear(sizes[1], sizes[0], bias=False)
        self.alias = self.encode  # the same parameters under a second name
        self.norm = nn.BatchNorm1d(sizes[1])
        self.avemo_preprocessing = {"scale": 0.5, "sizes": list(sizes)}

    def forward(self, x):
        return self.decode(self.norm(self.alias(x)))


@models.register("test_tied", "head")
def build_tied(sizes=(3, 4)) -> Tied:
    return Tied(tuple(sizes))


PROVENANCE = {"trained": False, "source": "unit test"}


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    module = models.build("test_tied", sizes=(3, 5))
    module.train()(torch.randn(6, 3))  # move the batch-norm statistics off their defaults
    path = tmp_path / "tied.safetensors"
    models.save(module, path, provenance=PROVENANCE)
    return module.eval(), path


def test_build_records_config():
    module = models.build("test_tied", sizes=(2, 3))
    assert module.avemo_config == {
        "builder": "test_tied",
        "component": "head",
        "kwargs": {"sizes": [2, 3]},
        "preprocessing": {"scale": 0.5, "sizes": [2, 3]},
    }


def test_round_trip_identical_outputs(saved):
    module, path = saved
    loaded = models.load(path)
    assert not loaded.training
    x = torch.randn(4, 3)
    with torch.no_grad():
        assert torch.equal(loaded(x), module(x))
    assert loaded.alias is loaded.encode  # the shared tensor came back shared
    assert loaded.avemo_header == models.read_header(path)


def test_header(saved):
    _, path = saved
    header = models.read_header(path)
    assert header["format"] == models.FORMAT
    assert (header["builder"], header["component"]) == ("test_tied", "head")
    assert header["kwargs"] == {"sizes": [3, 5]}
    assert header["preprocessing"]["sizes"] == [3, 5]
    provenance = header["provenance"]
    assert provenance["trained"] is False and provenance["source"] == "unit test"
    assert {"source_sha256", "licence", "training", "created", "avemo_version"} <= set(provenance)
    assert not list(path.parent.glob("*.part"))  # written atomically, nothing left behind


def test_resave_of_loaded_keeps_config(saved, tmp_path):
    _, path = saved
    again = tmp_path / "again.safetensors"
    models.save(models.load(path), again, provenance={"trained": True, "source": "x"})
    assert models.read_header(again)["kwargs"] == {"sizes": [3, 5]}
    assert models.read_header(again)["provenance"]["trained"] is True


@pytest.mark.parametrize(
    "provenance",
    [{}, {"source": "x"}, {"trained": "yes"}, {"trained": True}, {"trained": False, "training": 3}],
)
def test_provenance_required(tmp_path, provenance):
    module = models.build("test_tied")
    with pytest.raises(ValueError):
        models.save(module, tmp_path / "m.safetensors", provenance=provenance)
    assert not (tmp_path / "m.safetensors").exists()


def test_save_needs_built_module(tmp_path):
    with pytest.raises(ValueError, match="build"):
        models.save(nn.Linear(2, 2), tmp_path / "m.safetensors", provenance=PROVENANCE)


def test_unknown_builder_name():
    with pytest.raises(ValueError, match="unknown builder"):
        models.build("no_such_builder")


def test_register_rejects_unknown_component():
    with pytest.raises(ValueError, match="component"):
        models.register("x", "tokenizer")


def expect_error(path, pattern):
    with pytest.raises(AvemoError, match=pattern) as info:
        models.load(path)
    assert info.value.path == str(path)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path):
    expect_error(tmp_path / "absent.safetensors", "no such")


def test_garbage_file(tmp_path):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(b"this is certainly not a tensor file" * 4)
    expect_error(path, "not a safetensors file")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    expect_error(path, "not a safetensors file")


@pytest.mark.parametrize("keep", [12, 100, -10])
def test_truncated_file(saved, keep):
    _, path = saved
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    assert 100 < 8 + length < len(data) - 10  # cuts in the header and in the tensor data
    cut = path.with_name("cut.safetensors")
    cut.write_bytes(data[:keep])
    expect_error(cut, "truncated")


def test_safetensors_without_avemo_header(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "pt"})
    expect_error(path, "not an avemo checkpoint")


def test_unknown_builder_in_file(tmp_path):
    path = tmp_path / "future.safetensors"
    header = {"format": 1, "builder": "from_the_future", "component": "head", "kwargs": {}}
    save_file({"w": torch.zeros(2)}, str(path), metadata={"avemo": json.dumps(header)})
    expect_error(path, "unknown builder 'from_the_future'")


def test_corrupt_header(tmp_path):
    path = tmp_path / "corrupt.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"avemo": "{not json"})
    expect_error(path, "corrupt avemo header")


def test_mismatched_tensors(saved, tmp_path):
    _, path = saved
    header = models.read_header(path)
    wrong_shape = tmp_path / "shape.safetensors"
    other = models.build("test_tied", sizes=(3, 6))
    save_file(
        {k: v.contiguous() for k, v in other.state_dict().items() if not k.startswith("alias")},
        str(wrong_shape),
        metadata={"avemo": json.dumps(header)},
    )
    expect_error(wrong_shape, "shape")
    missing = tmp_path / "missing.safetensors"
    save_file(
        {"encode.weight": torch.zeros(5, 3)}, str(missing), metadata={"avemo": json.dumps(header)}
    )
    expect_error(missing, "missing tensor")


class Pool(nn.Module):
    """A backbone stand-in: global average over all but the channel axis, then a Linear."""

    def __init__(self, channels: int, width: int, preprocessing: dict):
        super().__init__()
        self.fc = nn.Linear(channels, width)
        self.avemo_preprocessing = preprocessing

    def forward(self, x):
        return self.fc(x.flatten(2).mean(-1))


class Concat(nn.Module):
    def __init__(self, audio_dim: int, visual_dim: int):
        super().__init__()
        self.fc = nn.Linear(audio_dim + visual_dim, 2)

    def forward(self, audio, visual):
        return self.fc(torch.cat([audio, visual], -1))


@models.register("test_visual", "visual_backbone")
def build_visual(width=6) -> Pool:
    return Pool(3, width, {"frames": 8, "size": [16, 16]})


@models.register("test_audio", "audio_backbone")
def build_audio(width=5) -> Pool:
    return Pool(1, width, {"input": [1, 64, 107]})


@models.register("test_head", "head")
def build_head(audio_dim=5, visual_dim=6) -> Concat:
    return Concat(audio_dim, visual_dim)


def test_pipeline(tmp_path):
    spec = {
        "visual": {"builder": "test_visual", "kwargs": {"width": 6}},
        "audio": {"builder": "test_audio", "kwargs": {}},
        "head": {"builder": "test_head", "kwargs": {"audio_dim": 5, "visual_dim": 6}},
        "seq_len": 3,
    }
    pipe = models.build("pipeline", **spec)
    assert pipe.avemo_config["component"] == "pipeline"
    assert pipe.seq_len == 3
    assert pipe.visual_preprocessing == {"frames": 8, "size": [16, 16]}
    assert pipe.audio_preprocessing == {"input": [1, 64, 107]}
    clips, specs = torch.randn(2, 3, 3, 8, 16, 16), torch.randn(2, 3, 1, 64, 107)
    out = pipe(clips, specs)
    assert out.shape == (2, 3, 2)
    # forward is the three stages in a row
    visual = pipe.encode_visual(clips.flatten(0, 1)).view(2, 3, -1)
    audio = pipe.encode_audio(specs.flatten(0, 1)).view(2, 3, -1)
    assert torch.allclose(out, pipe.fuse(audio, visual))
    path = tmp_path / "pipe.safetensors"
    models.save(pipe, path, provenance=PROVENANCE)
    loaded = models.load(path)
    assert loaded.seq_len == 3 and loaded.visual_preprocessing == pipe.visual_preprocessing
    with torch.no_grad():
        assert torch.equal(loaded(clips, specs), pipe(clips, specs))


def test_pipeline_rejects_wrong_component():
    spec = {"builder": "test_head", "kwargs": {}}
    with pytest.raises(ValueError, match="visual must be a visual_backbone"):
        models.build("pipeline", visual=spec, audio=spec, head=spec, seq_len=2)
    with pytest.raises(ValueError, match="visual must be a dict"):
        models.build("pipeline", visual="r3d_18", audio=spec, head=spec, seq_len=2)


def test_header_that_cannot_be_built(tmp_path):
    path = tmp_path / "bad_kwargs.safetensors"
    header = {"format": 1, "builder": "test_tied", "component": "head", "kwargs": {"width": 3}}
    save_file({"w": torch.zeros(2)}, str(path), metadata={"avemo": json.dumps(header)})
    expect_error(path, "cannot rebuild 'test_tied'")


def test_folder_instead_of_file(tmp_path):
    expect_error(tmp_path, "folder")


def test_pipeline_with_seed_modules(tmp_path):
    """R(2+1)D + audio ResNet18 + JCA: the preprocessing comes from the backbones' builders."""
    from avemo.models.backbones import AUDIO_INPUT, KINETICS_MEAN

    pipe = models.build(
        "pipeline",
        visual={"builder": "r2plus1d_18", "kwargs": {"features": "pool"}},
        audio={"builder": "audio_resnet18", "kwargs": {}},
        head={"builder": "jca", "kwargs": {"seq_len": 2}},
        seq_len=2,
    ).eval()
    assert pipe.visual_preprocessing["mean"] == list(KINETICS_MEAN)
    assert pipe.visual_preprocessing["frames"] == 8
    assert pipe.audio_preprocessing["input_shape"] == list(AUDIO_INPUT)
    clips, specs = torch.randn(1, 2, 3, 8, 16, 16), torch.randn(1, 2, *AUDIO_INPUT)
    with torch.inference_mode():
        out = pipe(clips, specs)
    assert out.shape == (1, 2, 2)
    header = models.header_of(pipe, {"trained": False})
    assert header["kwargs"]["visual"] == {"builder": "r2plus1d_18", "kwargs": {"features": "pool"}}
    assert header["preprocessing"]["seq_len"] == 2
