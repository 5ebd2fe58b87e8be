"""Every network on every backend equals torch: float32 within 1e-4, bf16 at CCC >= 0.999.

Networks are converted from the same avemo modules the torch backend runs (ONNX export, cached by
key), so these tests compare the runtimes, not two ports. Weights are random except the bundled
expression model and the CenterFace detector (real); outputs are checked to be far from zero so
that a tolerance of 1e-4 means something.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tiny  # tests/tiny.py: small registered backbones
import torch

from avemo import backends, models
from avemo.errors import AvemoError
from avemo.face.detect import CenterFace
from avemo.features import Backbones
from avemo.metrics import ccc
from avemo.models import deploy, expression
from avemo.values import expression_source, head_source

CONVERTED = ("onnxruntime", "openvino")
FLOAT32_ATOL = 1e-4
BF16_CCC = 0.999
L = 4  # clips per sequence of the heads under test


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def clips(size: int = 112, batch: int = 2) -> np.ndarray:
    return rng().integers(0, 256, (batch, 8, size, size, 3), dtype=np.uint8)


def spectrograms(batch: int = 2) -> np.ndarray:
    return rng(1).standard_normal((batch, 1, 64, 107)).astype(np.float32)


def backbone_source(builder: str, role: str, **kwargs) -> backends.Source:
    """A backbone built with random weights (seeded), as the feature engine loads it."""
    torch.manual_seed(0)
    module = models.build(builder, **kwargs).eval()
    description = {
        role: {
            "builder": builder,
            "kwargs": kwargs,
            "preprocessing": module.avemo_config["preprocessing"],
        }
    }
    other = "audio" if role == "visual" else "visual"
    backbones = Backbones(**{role: module, other: None}, description=description)
    return backbones.source(role)


def pipeline_head(builder: str, **kwargs):
    """A head of a pipeline-like object with random weights, dims 512, L clips."""
    torch.manual_seed(0)
    head = models.build(builder, **kwargs).eval()

    class Holder:
        seq_len = L

    holder = Holder()
    holder.head = head
    return holder


def head_inputs(batch: int = 3, dims=(512, 512)) -> tuple[np.ndarray, np.ndarray]:
    audio = rng(2).standard_normal((batch, L, dims[0])).astype(np.float32)
    visual = rng(3).standard_normal((batch, L, dims[1])).astype(np.float32)
    return audio, visual


def expression_inputs(batch: int = 5) -> tuple[np.ndarray]:
    return (rng(4).integers(0, 256, (batch, 64, 64), dtype=np.uint8),)


def bundled_expression():
    from avemo.files import sha256_file

    path = expression.DEFAULT_CHECKPOINT
    return expression_source(path, sha256_file(path))


# name -> (source factory, inputs): every kind of network avemo runs, the 3D backbones at full
# size (R(2+1)D-18 of the JCA, I3D-TCN of the JMT), the rest small where a width is a setting
NETWORKS = {
    "expression (bundled)": (bundled_expression, expression_inputs),
    "r2plus1d_18": (lambda: backbone_source("r2plus1d_18", "visual"), lambda: (clips(),)),
    "r2plus1d_18 flat": (
        lambda: backbone_source("r2plus1d_18", "visual", features="flat"),
        lambda: (clips(batch=1),),
    ),
    "i3d_tcn": (lambda: backbone_source("i3d_tcn", "visual"), lambda: (clips(224, 1),)),
    "resnet18_gru": (
        lambda: backbone_source("resnet18_gru", "visual", hidden=16),
        lambda: (clips(batch=1),),
    ),
    "audio_resnet18": (
        lambda: backbone_source("audio_resnet18", "audio"),
        lambda: (spectrograms(),),
    ),
    **{
        f"head {name}": (
            lambda name=name, kwargs=kwargs, dims=dims: head_source(
                pipeline_head(name, **kwargs), dims, share=True
            ),
            lambda dims=dims: head_inputs(dims=dims),
        )
        for name, kwargs, dims in (
            ("jca", {"seq_len": L}, (512, 512)),
            ("jca_tbiom", {"seq_len": L}, (512, 25088)),  # flat R(2+1)D features
            ("jmt", {}, (512, 512)),
            ("concat", {}, (512, 512)),
            ("cross_attention", {}, (512, 512)),
            ("leader_follower", {}, (512, 512)),
            (
                "per_dimension",
                {
                    "valence": {"builder": "jca", "kwargs": {"seq_len": L}},
                    "arousal": {"builder": "jca", "kwargs": {"seq_len": L}},
                },
                (512, 512),
            ),
        )
    },
}


@pytest.fixture(scope="module")
def reference():
    """Each network's torch float32 outputs, with its source (built once per module)."""
    out = {}
    for name, (make, inputs) in NETWORKS.items():
        source = make()
        network = backends.load(source, backend="torch", device="cpu")
        out[name] = (source, inputs(), network(*inputs()))
    return out


@pytest.mark.parametrize("backend", CONVERTED)
@pytest.mark.parametrize("name", list(NETWORKS))
def test_float32_equals_torch(reference, name, backend):
    source, inputs, expected = reference[name]
    network = backends.load(source, backend=backend, device="cpu", bf16=False)
    assert (network.backend, network.precision) == (backend, "float32")
    got = network(*inputs)
    assert len(got) == len(expected) == len(source.outputs)
    for a, b in zip(got, expected, strict=True):
        assert a.shape == b.shape and a.dtype == np.float32
        finite = np.isfinite(b)
        assert np.array_equal(np.isfinite(a), finite)  # NaN shares stay NaN
        assert np.abs(b[finite]).mean() > 1e-3  # outputs are not trivially zero
        np.testing.assert_allclose(a[finite], b[finite], rtol=0, atol=FLOAT32_ATOL)


@pytest.mark.parametrize("backend", ["torch", "openvino"])
@pytest.mark.parametrize("name", ["expression (bundled)", "r2plus1d_18", "head jca"])
def test_bf16_agrees_with_float32(reference, name, backend):
    source, inputs, expected = reference[name]
    network = backends.load(source, backend=backend, device="cpu", bf16=True)
    native = backend == "torch" or backends.openvino_bf16()
    assert network.precision == ("bfloat16" if native else "float32")
    for a, b in zip(network(*inputs), expected, strict=True):
        keep = np.isfinite(b)
        assert ccc(a[keep].ravel(), b[keep].ravel()) >= BF16_CCC


def test_batch_axis_is_dynamic(reference):
    source, _, _ = reference["expression (bundled)"]
    for backend in CONVERTED:
        network = backends.load(source, backend=backend, device="cpu")
        for batch in (1, 3, 17):
            (probs,) = network(*expression_inputs(batch))
            assert probs.shape == (batch, len(expression.EMOTIONS))
            np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_centerface_on_openvino_equals_onnxruntime(group_photo):
    import cv2

    image = cv2.cvtColor(cv2.imread(str(group_photo)), cv2.COLOR_BGR2RGB)
    onnx = CenterFace(device="cpu", backend="onnxruntime")
    openvino = CenterFace(device="cpu", backend="openvino", bf16=False)
    assert onnx.backend == "onnxruntime" and openvino.backend == "openvino"
    assert CenterFace(device="cpu", backend="torch").backend == "onnxruntime"  # no torch form
    blob = rng().uniform(0, 255, (1, 3, 256, 320)).astype(np.float32)
    for a, b in zip(openvino.network(blob), onnx.network(blob), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=FLOAT32_ATOL)
    a, b = openvino(image), onnx(image)
    assert len(a) == len(b) >= 4
    np.testing.assert_allclose(a.landmarks, b.landmarks, atol=0.01)
    # bfloat16 (the default on OpenVINO where the CPU has it): same faces, landmarks within a
    # small fraction of the inter-ocular distance
    fast = CenterFace(device="cpu", backend="openvino")(image)
    assert len(fast) == len(b)
    iod = np.linalg.norm(b.landmarks[:, 1] - b.landmarks[:, 0], axis=1)
    shift = np.linalg.norm(fast.landmarks - b.landmarks, axis=2).max(axis=1) / iod
    assert np.all(shift < 0.1), shift


def test_conversion_is_cached_by_key(reference, monkeypatch, tmp_path):
    monkeypatch.setenv("AVEMO_HOME", str(tmp_path))
    source, inputs, _ = reference["head jca"]
    first = backends.onnx_file(source)
    assert first.parent == tmp_path / "networks" and first.name.startswith("head-")

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(deploy, "export_onnx", no_export)
    assert backends.onnx_file(source) == first  # cached: not exported again
    other = backends.Source(**{**source.__dict__, "key": {**source.key, "checkpoint": "other"}})
    assert backends.onnx_path(other) != first  # other weights: another file


@pytest.mark.parametrize("native", [True, False], ids=["native-bf16", "no-bf16"])
def test_choose_backend(monkeypatch, native):
    monkeypatch.setattr(backends, "cpu_bf16", lambda: native)
    assert backends.choose("auto", "expression", "cpu") == "openvino"
    assert backends.choose("auto", "visual", "cpu", bf16=True) == "openvino"
    assert backends.choose("torch", "detector", "cpu") == "onnxruntime"
    assert backends.choose("ONNXRuntime", "head", "cpu") == "onnxruntime"
    # CenterFace: OpenVINO only where it runs bf16 natively; in float32 onnxruntime is faster
    assert backends.choose("auto", "detector", "cpu") == "onnxruntime"
    fast = "openvino" if native else "onnxruntime"
    assert backends.choose("auto", "detector", "cpu", bf16=True) == fast
    monkeypatch.setattr(backends, "installed", lambda backend: backend != "openvino")
    assert backends.choose("auto", "expression", "cpu") == "onnxruntime"
    # torch's bf16 autocast is twice onnxruntime's float32 speed where bf16 is native, and
    # emulated (many times slower) where it is not
    slow = "torch" if native else "onnxruntime"
    assert backends.choose("auto", "visual", "cpu", bf16=True) == slow
    with pytest.raises(AvemoError, match=r"openvino: the package is not installed .*\[openvino\]"):
        backends.choose("openvino", "visual", "cpu")


def test_bad_backends_are_one_clear_error(monkeypatch):
    with pytest.raises(AvemoError, match="unknown backend 'tensorrt': use auto, torch"):
        backends.parse_backend("tensorrt")
    monkeypatch.setattr(backends, "device_kind", lambda device: "cuda")
    with pytest.raises(AvemoError, match="runs on the CPU only"):
        backends.choose("openvino", "visual", "cuda")
    assert backends.choose("auto", "visual", "cuda") == "torch"
    assert backends.choose("auto", "detector", "cuda") == "onnxruntime"


def test_default_path_runs_without_torch(carphone, tmp_path):
    """Once the expression model's conversion is cached, annotating with the default model on
    a non-torch backend never imports torch (the memory target: README, Speed)."""
    script = textwrap.dedent(
        f"""
        import sys
        from avemo import backends
        from avemo.annotate import annotate
        for backend in ("openvino", "onnxruntime"):
            table = annotate({str(carphone)!r}, backend=backend, device="cpu", detect_every=8)
            assert table["valence"].notna().sum() > 100, backend
            runtimes = table.attrs["avemo"]["settings"]["runtimes"]
            fast = backend == "openvino" and backends.openvino_bf16()
            precision = "bfloat16" if fast else "float32"
            assert runtimes == {{"detector": f"{{backend}} {{precision}}",
                                 "expression": f"{{backend}} float32"}}, runtimes
        print("torch" in sys.modules)
        """
    )
    env = {"AVEMO_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    first = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout.split()[-1] == "True"  # the first run converts the model with torch
    second = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.split()[-1] == "False"


def test_annotate_backends_agree(carphone, monkeypatch):
    """End to end, the expression model's raw values on each backend equal torch's within 1e-4
    when the faces are found by the same detector. OpenVINO's own detector, in bfloat16 by
    default, moves the landmarks by about 1 % of the inter-ocular distance: on this clip's tiny
    face (22 px between the eyes) that still changes the values, by CCC 0.992."""
    command = importlib.import_module("avemo.annotate")  # the module (avemo.annotate is also
    # the function's name in the package)

    def run(backend):
        table = command.annotate(carphone, backend=backend, device="cpu", detect_every=4)
        return table[["valence_raw", "arousal_raw"]].to_numpy(), table.attrs["avemo"]

    base, record = run("torch")
    assert record["settings"]["runtimes"]["expression"] == "torch float32"
    own_detector = run("openvino")[0]
    detect = command.cached_detector
    monkeypatch.setattr(
        command,
        "cached_detector",
        lambda *args: detect(*args[:5], "onnxruntime"),  # the detector torch uses, for all
    )
    for backend in ("onnxruntime", "openvino"):
        got, record = run(backend)
        assert record["settings"]["runtimes"]["expression"] == f"{backend} float32"
        np.testing.assert_allclose(got, base, rtol=0, atol=FLOAT32_ATOL, err_msg=backend)
    keep = np.isfinite(base[:, 0])
    for k in range(2):
        assert ccc(own_detector[keep, k], base[keep, k]) > 0.98


def test_tiny_pipeline_backends_agree(av_clip, tmp_path):
    from avemo.annotate import annotate

    model = tiny.trained_pipeline(tmp_path / "tiny.safetensors")
    tables = {
        backend: annotate(av_clip, model, backend=backend, device="cpu", stride=4, bf16=False)
        for backend in ("torch", "onnxruntime", "openvino")
    }
    runtimes = tables["openvino"].attrs["avemo"]["settings"]["runtimes"]
    assert runtimes == {
        "detector": "openvino float32",  # --no-bf16: float32 everywhere
        "visual": "openvino float32",
        "audio": "openvino float32",
        "head": "openvino float32",
    }
    base = tables["torch"][["valence_raw", "arousal_raw", "audio_share"]].to_numpy()
    assert np.isfinite(base).sum() > 100
    for backend, table in tables.items():
        got = table[["valence_raw", "arousal_raw", "audio_share"]].to_numpy()
        np.testing.assert_allclose(got, base, rtol=0, atol=FLOAT32_ATOL, err_msg=backend)


@pytest.mark.parametrize("command", ["annotate", "faces", "extract"])
def test_cli_bad_backend_is_one_usage_line(carphone, tmp_path, command):
    from typer.testing import CliRunner

    from avemo.cli import app

    out = tmp_path / "out"
    extra = ["--pipeline", "none.safetensors"] if command == "extract" else []
    result = CliRunner().invoke(
        app, [command, str(carphone), "-o", str(out), "--backend", "tensorrt", *extra]
    )
    assert result.exit_code == 2, result.output
    assert "unknown backend 'tensorrt'" in result.output and "Traceback" not in result.output
    assert not out.exists()  # refused before anything is written


def test_missing_openvino_fails_before_any_video(carphone, tmp_path, monkeypatch):
    from avemo.annotate import annotate_videos

    monkeypatch.setattr(backends, "installed", lambda backend: backend != "openvino")
    with pytest.raises(AvemoError, match=r"pip install 'avemo\[openvino\]'"):
        annotate_videos([carphone], tmp_path / "out", backend="openvino", progress=False)
    assert not (tmp_path / "out").exists()
