"""Named pipelines end to end, and the seed configurations that join or combine published files.

A test manifest (``$AVEMO_MANIFEST``) names three component files served by a loopback HTTP server
(tests/loopback.py): a visual and an audio backbone as avemo checkpoints, and a journal JCA fusion
head in the reference's layout (``encoder1``/``vregressor``/``aregressor``, DataParallel keys)
with tiny widths, served the way Google Drive serves a large file (a confirmation page first).
``avemo weights pull tiny-jca --trust`` pulls, imports and assembles them; ``avemo annotate
--model tiny-jca`` then runs. The synthetic weights are marked trained here only.

The CVPRW release's one-model-per-dimension fusion files are joined into one pipeline by
``avemo weights import ... valence.t7 arousal.t7 --pipeline``; I3D-TCN + R3D-18 (the ablation's
two-backbone row) is one visual backbone.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import loopback
import numpy as np
import pandas as pd
import pytest
import tiny  # tests/tiny.py: small registered backbones
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from avemo import cli, convert, hub, models
from avemo.errors import AvemoError
from avemo.models.backbones import KINETICS_MEAN, KINETICS_STD

SEQ_LEN = 2
HEAD = {"audio_dim": 8, "visual_dim": 16, "seq_len": SEQ_LEN, "proj_dim": 8, "attn_dim": 8}
COMPAT = {"regressor_input": "reference"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def trained(module: torch.nn.Module, path: Path) -> bytes:
    """Save ``module`` as an avemo checkpoint marked trained (synthetic: tests only)."""
    models.save(module, path, provenance={"trained": True, "source": "tests: synthetic"})
    return path.read_bytes()


def entry(name: str, component: str, file: str, url: str, **fields) -> dict:
    raw = {
        "name": name,
        "component": component,
        "file": file,
        "bundled": False,
        "size": None,
        "sha256": None,
        "licence": "test",
        "urls": [url],
        "source": "tests",
        "matches": "tests",
        "import_format": None,
        "notes": "sha256 unknown (test entry)",
    }
    raw.update(fields)
    return raw


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, bytes]:
    """The component files: two tiny backbones (avemo checkpoints) and a journal-layout CAM."""
    folder = tmp_path_factory.mktemp("components")
    torch.manual_seed(0)
    head = models.build("jca", **HEAD, **COMPAT, regressors="separate").eval()
    reference = {f"module.{k}": v for k, v in head.state_dict().items()}
    torch.save(reference, folder / "jointcam_model.pt")
    return {
        "visual": trained(models.build(tiny.VIDEO), folder / "visual.safetensors"),
        "audio": trained(models.build(tiny.AUDIO), folder / "audio.safetensors"),
        "head": (folder / "jointcam_model.pt").read_bytes(),
        "head_state": head.state_dict(),
    }


@pytest.fixture
def server():
    srv, thread = loopback.start()
    yield srv
    loopback.stop(srv, thread)


@pytest.fixture
def test_manifest(tmp_path, monkeypatch, server, files) -> Path:
    """A manifest of the served files and the pipeline ``tiny-jca``; an empty cache."""
    server.files["/visual.safetensors"] = files["visual"]
    server.files["/audio.safetensors"] = files["audio"]
    drive = server.drive("1TinyJca", files["head"])
    weights = [
        entry("tiny-visual", "visual_backbone", "visual.safetensors",
              server.url("/visual.safetensors"), sha256=sha(files["visual"])),
        entry("tiny-audio", "audio_backbone", "audio.safetensors",
              server.url("/audio.safetensors"), sha256=sha(files["audio"])),
        entry("tiny-cam", "head", "jointcam_model.pt", drive, import_format="jca-journal"),
    ]  # fmt: skip
    pipeline = {
        "name": "tiny-jca",
        "file": "tiny-jca.safetensors",
        "components": [
            {"weights": "tiny-visual"},
            {"weights": "tiny-audio"},
            {"weights": "tiny-cam", "options": {"regressor": "reference"}},
        ],
        "seq_len": SEQ_LEN,
        "features": "pool",
        "matches": "tests",
        "notes": "tests",
    }
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"format": 1, "weights": weights, "pipelines": [pipeline]}))
    monkeypatch.setenv(hub.MANIFEST_ENV, str(path))
    monkeypatch.setenv("AVEMO_HOME", str(tmp_path / "cache"))
    return path


def run(*args):
    return CliRunner().invoke(cli.app, [str(a) for a in args])


def status_of(name: str) -> str:
    result = run("weights", "list")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith(name + " "))
    return re.split(r"\s{2,}", line)[-1]


def test_named_pipeline_pull_then_annotate(test_manifest, server, files, av_clip, tmp_path):
    assert status_of("tiny-jca") == "not pulled (0 of 3 components cached)"
    out = tmp_path / "out"
    result = run("annotate", str(av_clip), "-o", str(out), "--model", "tiny-jca")
    assert result.exit_code == 2
    assert result.output == (
        "error: pipeline tiny-jca is not pulled yet: run `avemo weights pull tiny-jca --trust`\n"
    )
    result = run("weights", "pull", "tiny-jca")  # the head's sha256 is unknown: needs --trust
    assert result.exit_code == 1 and "--trust" in result.output

    result = run("weights", "pull", "tiny-jca", "--trust")
    assert result.exit_code == 0, result.output
    path = hub.get_pipeline("tiny-jca").path
    assert result.output.strip().endswith(f"tiny-jca: {path}")
    assert status_of("tiny-jca") == "ready"
    # the head came through the confirmation page, with its cookie
    assert any(p.startswith("/uc?export=download&id=1TinyJca") for p, _ in server.requests)
    assert any(p.startswith("/download?id=1TinyJca") for p, _ in server.requests)
    record = hub.load_state()["tiny-jca"]
    assert record["sha256"] == sha(path.read_bytes()) and record["seconds"] >= 0
    assert record["components"]["tiny-cam"] == sha(files["head"])
    header = models.read_header(path)
    assert header["builder"] == "pipeline" and header["kwargs"]["seq_len"] == SEQ_LEN
    assert header["provenance"]["trained"] is True
    assert header["provenance"]["pipeline"] == "tiny-jca"
    state = models.load(path).state_dict()
    for key, value in files["head_state"].items():
        assert torch.equal(state[f"head.{key}"], value), key

    requests = len(server.requests)
    assert run("weights", "pull", "tiny-jca", "--trust").exit_code == 0  # nothing to do
    assert len(server.requests) == requests
    assert hub.load_state()["tiny-jca"]["recorded"] == record["recorded"]

    result = run("annotate", str(av_clip), "-o", str(out), "--model", "tiny-jca", "--no-progress")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / f"{av_clip.stem}.csv")
    assert table["valence"].notna().sum() > 0
    provenance = json.loads((out / f"{av_clip.stem}.json").read_text())
    assert provenance["model"]["name"] == "tiny-jca"
    assert provenance["model"]["sha256"] == record["sha256"]

    info = run("weights", "info", "tiny-jca")
    assert info.exit_code == 0 and re.search(r"^status:\s+ready$", info.output, flags=re.M)


def test_named_pipeline_stale_and_corrupt(test_manifest, server):
    result = run("weights", "pull", "tiny-jca", "--trust")
    assert result.exit_code == 0, result.output
    pipeline = hub.get_pipeline("tiny-jca")
    # a cached component replaced (and re-trusted): the assembled file is stale
    state = hub.load_state()
    state["tiny-cam"]["sha256"] = "0" * 64
    (hub.cache_dir() / hub.STATE_FILE).write_text(json.dumps(state))
    assert status_of("tiny-jca") == "stale"
    with pytest.raises(AvemoError, match="assembled from other files.*weights pull tiny-jca"):
        hub.resolve("tiny-jca")
    state["tiny-cam"]["sha256"] = sha(hub.get("tiny-cam").path.read_bytes())
    (hub.cache_dir() / hub.STATE_FILE).write_text(json.dumps(state))
    assert status_of("tiny-jca") == "ready"
    data = bytearray(pipeline.path.read_bytes())
    data[-1] ^= 0xFF
    pipeline.path.write_bytes(bytes(data))
    with pytest.raises(AvemoError, match="corrupt; `avemo weights pull tiny-jca"):
        hub.resolve("tiny-jca")
    assert convert.pull_pipeline("tiny-jca", trust=True) == pipeline.path  # assembled again
    assert hub.resolve("tiny-jca") == pipeline.path


def test_manifest_pipeline_validation(tmp_path):
    weights = [entry("w", "head", "w.pt", "http://127.0.0.1:9/w.pt", import_format="jmt")]

    def load(**change):
        raw = {"name": "p", "file": "p.safetensors", "components": [{"weights": "w"}],
               "seq_len": 16, "features": None, "matches": "m", "notes": "n", **change}  # fmt: skip
        path = tmp_path / "manifest.json"
        path.write_text(json.dumps({"format": 1, "weights": weights, "pipelines": [raw]}))
        return hub.load_pipelines(path)

    assert load()["p"].weights == ["w"]
    for change, complaint in (
        ({"components": [{"weights": "x"}]}, "component 'x' is not a weights entry"),
        ({"components": [{"weights": "w", "options": {"dimension": "v"}}]}, "does not apply"),
        ({"seq_len": 0}, "'seq_len'"),
        ({"features": "grid"}, "'features'"),
        ({"file": "p.pt"}, "'file'"),
        ({"name": "w"}, "name of a weights entry"),
        ({"colour": 1}, "unknown keys: colour"),
    ):
        with pytest.raises(AvemoError, match=re.escape(complaint)):
            load(**change)


def test_packaged_pipelines_are_valid_recipes():
    pipelines = hub.load_pipelines(hub.MANIFEST_PATH)
    assert {"jca-journal-pipeline", "jmt-pipeline"} <= set(pipelines)
    journal = pipelines["jca-journal-pipeline"]
    assert journal.weights == ["tsav-affwild2-sub4", "jca-journal"]
    assert journal.seq_len == 16 and journal.features == "flat"


# --- the CVPRW release: one fusion file per dimension, joined -----------------------------------


def cvpr_file(path: Path, seed: int) -> torch.nn.Module:
    """A CVPRW fusion file as its code saves it: one regressor with one output, ``{'net': ...}``.

    Returns the compatibility-mode head (separate regressors) whose ``vregressor`` is the file's
    regressor: its output 0 is the file's output."""
    torch.manual_seed(seed)
    own = models.build("jca", **HEAD, **COMPAT, regressors="separate").eval()
    state = {
        "module." + k.replace("vregressor.", "regressor."): v
        for k, v in own.state_dict().items()
        if not k.startswith("aregressor.")
    }
    torch.save({"net": state, "best_Val_acc": np.float64(0.5)}, path)
    return own


@pytest.fixture
def backbones(tmp_path) -> tuple[Path, Path]:
    visual, audio = tmp_path / "visual.safetensors", tmp_path / "audio.safetensors"
    trained(models.build(tiny.VIDEO), visual)
    trained(models.build(tiny.AUDIO), audio)
    return visual, audio


def test_cvpr_files_joined_into_one_pipeline(tmp_path, backbones, av_clip, monkeypatch):
    monkeypatch.setenv("AVEMO_HOME", str(tmp_path / "cache"))
    valence_file, arousal_file = tmp_path / "valence.t7", tmp_path / "arousal.t7"
    valence, arousal = cvpr_file(valence_file, 1), cvpr_file(arousal_file, 2)
    out = tmp_path / "cvpr.safetensors"
    sources = [*map(str, backbones), str(valence_file), str(arousal_file)]
    result = run("weights", "import", *sources, "--format", "jca-cvpr", "--pipeline", "-o", out)
    assert result.exit_code == 0, result.output
    header = models.read_header(out)
    assert header["kwargs"]["head"]["builder"] == "per_dimension"
    assert header["kwargs"]["seq_len"] == SEQ_LEN
    head = header["provenance"]["parts"]["head"]
    assert header["provenance"]["trained"] is True and head["trained"] is True
    assert head["parts"]["valence"]["dimension"] == "valence"
    assert head["parts"]["arousal"]["source_file"] == "arousal.t7"
    joined = models.load(out).head
    audio, visual = torch.randn(3, SEQ_LEN, 8), torch.randn(3, SEQ_LEN, 16)
    with torch.no_grad():
        got = joined(audio, visual)
        want_v, want_a = valence(audio, visual)[..., 0], arousal(audio, visual)[..., 0]
    assert torch.allclose(got[..., 0], want_v, atol=1e-6)  # each with its own attention
    assert torch.allclose(got[..., 1], want_a, atol=1e-6)
    assert not torch.allclose(want_v, arousal(audio, visual)[..., 0])

    result = run("annotate", str(av_clip), "-o", str(tmp_path / "out"), "--model", str(out),
                 "--no-progress")  # fmt: skip
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "out" / f"{av_clip.stem}.csv")
    assert table["arousal"].notna().sum() > 0

    # the order says which file is which; a name saying otherwise is an error
    swapped = [*map(str, backbones), str(arousal_file), str(valence_file)]
    result = run("weights", "import", *swapped, "--pipeline", "-o", str(tmp_path / "x.safetensors"))
    assert result.exit_code == 2
    assert "arousal.t7: its name says arousal but it comes in as the valence file" in result.output
    alone = [*map(str, backbones), str(valence_file)]
    result = run("weights", "import", *alone, "--pipeline", "-o", tmp_path / "x.safetensors")
    assert result.exit_code == 2 and "give the valence file and the arousal file" in result.output


def test_per_dimension_head_trains_like_any_head():
    kwargs = models.builder("per_dimension").train_arguments(8, 16, SEQ_LEN)
    head = models.build("per_dimension", **kwargs)
    out = head(torch.randn(2, SEQ_LEN, 8), torch.randn(2, SEQ_LEN, 16))
    assert out.shape == (2, SEQ_LEN, 2)
    out.sum().backward()
    assert head.valence.encoder1.weight.grad is not None
    assert head.arousal.encoder1.weight.grad is not None
    with pytest.raises(ValueError, match="reads flat visual features"):
        models.build("per_dimension", valence={"builder": "jca_tbiom"}, arousal=kwargs["arousal"])


# --- the ablation's two-backbone row: I3D-TCN + R3D-18 -------------------------------------------


def test_i3d_tcn_r3d_concatenates_both_on_one_clip():
    torch.manual_seed(0)
    both = models.build("i3d_tcn_r3d", channels=[64, 64], kernel=3).eval()
    assert both.avemo_config["preprocessing"]["size"] == [224, 224]
    seen = {}
    for name in ("i3d_tcn", "r3d"):
        getattr(both, name).register_forward_hook(
            lambda module, inputs, output, name=name: seen.update({name: (inputs[0], output)})
        )
    clips = torch.rand(1, 3, 2, 224, 224) * 2 - 1  # I3D's [-1, 1] input; 2 frames: 1 I3D step
    with torch.no_grad():
        features = both(clips)
    assert features.shape == (1, 64 + 512)
    assert seen["i3d_tcn"][0] is clips
    assert torch.equal(features, torch.cat([seen["i3d_tcn"][1], seen["r3d"][1]], dim=1))
    # R3D sees the frames at 112 x 112 (area), normalised as its Kinetics weights expect
    pixels = (clips * 0.5 + 0.5).transpose(1, 2).flatten(0, 1)  # T x 3 x 224 x 224, in [0, 1]
    small = F.interpolate(pixels, size=(112, 112), mode="area")
    mean, std = torch.tensor(KINETICS_MEAN), torch.tensor(KINETICS_STD)
    small = (small - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    assert torch.allclose(seen["r3d"][0], small.unsqueeze(0).transpose(1, 2), atol=1e-5)

    # the two published halves, imported separately, become one backbone in a pipeline
    def part(module, label):
        return (1, convert.Imported("visual", module, {"trained": True, "source": label}), label)

    i3d_tcn, r3d = both.i3d_tcn, both.r3d  # built by i3d_tcn() and r3d_18(): their configs
    assert (i3d_tcn.avemo_config["builder"], r3d.avemo_config["builder"]) == ("i3d_tcn", "r3d_18")
    joined = convert._join("visual", [part(i3d_tcn, "cvpr.t7"), part(r3d, "r3d.pth")])
    assert joined.module.avemo_config["builder"] == "i3d_tcn_r3d"
    for key, value in both.state_dict().items():
        assert torch.equal(joined.module.state_dict()[key], value), key
    assert joined.provenance["trained"] is True
