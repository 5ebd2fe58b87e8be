"""Backends: which runtime runs each network (torch, onnxruntime or OpenVINO), converted and cached.

Every network avemo runs (the face detector, the expression model, the visual and audio
backbones, the fusion heads) is described by a :class:`Source`: how to build it as a torch module
(:mod:`avemo.models.deploy`) or where its ONNX graph is, plus a key that names its weights (the
checkpoint's sha256) and settings. :func:`load` runs it on the backend asked for:

- ``torch``: the module itself, under ``inference_mode`` and bf16 autocast on request.
- ``onnxruntime``: the module exported once to ONNX, cached by key in avemo's cache
  (``<cache>/networks``), run by onnxruntime (CUDA provider with the ``gpu`` extra). onnxruntime
  has no bfloat16 CPU kernels: bf16 requests run in float32.
- ``openvino`` (the ``openvino`` extra): the same cached ONNX, compiled by OpenVINO for the CPU,
  in float32 or, with bf16, bfloat16 inference precision.
- ``auto``: the fastest installed backend for the network and device, by :data:`AUTO`.

A converted network is never trusted blindly: tests compare every backend with torch
(``tests/test_backends.py``: float32 within 1e-4, bf16 at CCC >= 0.999). Once a network's ONNX
is cached, loading it on onnxruntime or OpenVINO does not import torch.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avemo.devices import DeviceSpec, cpu_bf16, cuda_available, onnx_providers, parse_device
from avemo.errors import AvemoError
from avemo.files import atomic_path, cache_dir

log = logging.getLogger("avemo")

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
NETWORKS = ("detector", "expression", "visual", "audio", "head")
# The fastest backend first, per device, network and precision (bf16: whether bf16 is asked for
# and the device computes it natively; see choose). Measured by benchmarks/backends.py with
# onnxruntime 1.32, OpenVINO 2026.4, torch 2.14 (items/s at batch 8; float32 / bfloat16) on a
# 2-core AMD EPYC with AVX512-BF16: expression model 5234 / 7192 OpenVINO, 2820 onnxruntime,
# 1827 / 2148 torch; CenterFace 130 / 251 OpenVINO, 146 onnxruntime; R(2+1)D-18 5.6 / 11.2
# OpenVINO, 4.3 onnxruntime, 3.8 / 7.9 torch; audio ResNet18 471 / 881 OpenVINO, 417
# onnxruntime, 312 / 511 torch; JCA head 2479 / 3150 OpenVINO, 2589 onnxruntime (and at batch 1,
# where annotate runs it: 1025 / 986 vs 1363). On a 2-core AMD EPYC with AVX2 only (float32):
# expression 1997 OpenVINO, 1838 onnxruntime, 702 torch; CenterFace 80 OpenVINO, 87
# onnxruntime; R(2+1)D-18 2.9 (3.3 at batch 1) OpenVINO, 2.3 onnxruntime and torch; audio 243
# OpenVINO, 224 onnxruntime, 125 torch; head 772 OpenVINO, 2044 onnxruntime, 609 torch.
# On CUDA, torch runs the networks (cuDNN, bf16 autocast) and onnxruntime-gpu the detector;
# OpenVINO here targets the CPU only.
AUTO = {
    ("cpu", False): {
        "detector": ("onnxruntime", "openvino"),
        "expression": ("openvino", "onnxruntime", "torch"),
        "visual": ("openvino", "onnxruntime", "torch"),
        "audio": ("openvino", "onnxruntime", "torch"),
        "head": ("onnxruntime", "openvino", "torch"),
    },
    ("cpu", True): {
        "detector": ("openvino", "onnxruntime"),
        "expression": ("openvino", "onnxruntime", "torch"),
        "visual": ("openvino", "torch", "onnxruntime"),
        "audio": ("openvino", "torch", "onnxruntime"),
        "head": ("onnxruntime", "openvino", "torch"),
    },
    ("cuda", False): {
        "detector": ("onnxruntime",),
        **dict.fromkeys(("expression", "visual", "audio", "head"), ("torch",)),
    },
}
AUTO[("cuda", True)] = AUTO[("cuda", False)]
ONNX_ONLY = ("detector",)  # networks that exist only as ONNX files: torch runs them on onnxruntime
CPU_ONLY = ("openvino",)  # backends that run on the CPU only
PACKAGES = {"torch": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino"}
EXTRAS = {"openvino": "pip install 'avemo[openvino]'", "onnxruntime": "pip install onnxruntime"}


def parse_backend(name: str | None) -> str:
    """``auto``, ``torch``, ``onnxruntime`` or ``openvino`` (case-insensitive)."""
    text = str(name or "auto").strip().lower()
    if text not in BACKENDS:
        raise AvemoError(f"unknown backend {name!r}: use {', '.join(BACKENDS)}")
    return text


@functools.cache
def installed(backend: str) -> bool:
    """Whether ``backend``'s package can be imported (without importing it)."""
    return importlib.util.find_spec(PACKAGES[backend]) is not None


def device_kind(device: str | DeviceSpec | None) -> str:
    """``cpu`` or ``cuda``: what ``--device`` comes to here (``auto``: CUDA when there is one)."""
    spec = parse_device(device)
    if spec.kind == "auto":
        return "cuda" if cuda_available() else "cpu"
    return spec.kind


def choose(backend: str | None, network: str, device="auto", bf16: bool = False) -> str:
    """The backend that runs ``network`` on ``device``: ``backend`` itself when it can, the
    first installed entry of :data:`AUTO` for ``auto``; an error names what is missing."""
    backend = parse_backend(backend)
    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}")
    kind = device_kind(device)
    if backend == "auto":
        # a CPU without native bf16 runs a bf16 request in float32 (OpenVINO) or emulates it
        # (torch, many times slower): rank by float32 speed there
        fast_bf16 = bool(bf16) and (kind == "cuda" or cpu_bf16())
        for candidate in AUTO[(kind, fast_bf16)][network]:
            if installed(candidate):
                return candidate
        raise AvemoError(f"no backend installed for the {network} network: pip install onnxruntime")
    if backend == "torch" and network in ONNX_ONLY:
        backend = "onnxruntime"  # the detector is an ONNX model file: it has no torch form
    if not installed(backend):
        raise AvemoError(f"--backend {backend}: the package is not installed ({EXTRAS[backend]})")
    if backend in CPU_ONLY and kind != "cpu":
        raise AvemoError(
            f"--backend {backend} runs on the CPU only: use --device cpu, or --backend auto"
        )
    return backend


@dataclass(frozen=True)
class Source:
    """A network to run: its cache ``key`` (checkpoint sha256 and settings; JSON-able), and
    either ``module`` (builds the torch network of :mod:`avemo.models.deploy`; called only when
    torch runs it or its ONNX is not cached yet) with an ``example`` input, or ``onnx`` (the
    ONNX graph's bytes, for networks that exist only as ONNX files)."""

    name: str  # one of NETWORKS
    key: dict
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    module: Callable[[], object] | None = None
    example: Callable[[], tuple[np.ndarray, ...]] | None = None
    onnx: Callable[[], bytes] | None = field(default=None)


def _versions() -> dict:
    from avemo import __version__

    def version(package: str) -> str | None:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {"avemo": __version__, "torch": version("torch"), "onnx": version("onnx")}


def onnx_path(source: Source) -> Path:
    """Where ``source``'s ONNX graph is cached: named by a hash of its key and the versions of
    avemo and the exporter (a new release re-exports)."""
    text = json.dumps({"key": source.key, "versions": _versions()}, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:20]
    return cache_dir() / "networks" / f"{source.name}-{digest}.onnx"


def onnx_file(source: Source) -> Path:
    """``source``'s ONNX graph in the cache, exported (or written) on first use, atomically, so
    that concurrent processes (Ray workers on one node) never read half a file."""
    path = onnx_path(source)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if source.onnx is not None:
            tmp.write_bytes(source.onnx())
        else:
            from avemo.models.deploy import export_onnx

            log.info("converting the %s network to ONNX (once; cached in %s)", source.name, path)
            export_onnx(
                source.module(),
                source.example(),
                tmp,
                inputs=source.inputs,
                outputs=source.outputs,
            )
    return path


class TorchNetwork:
    """A torch module on a device: arrays in, float32 arrays out."""

    backend = "torch"

    def __init__(self, module, device, bf16: bool):
        import torch

        from avemo.devices import torch_device

        self.device = torch_device(device) if not isinstance(device, torch.device) else device
        self.module = module.to(self.device).eval()
        self.precision = "bfloat16" if bf16 else "float32"

    def __call__(self, *inputs) -> list[np.ndarray]:
        """Arrays (or tensors) in, float32 arrays out."""
        import torch

        from avemo.devices import autocast, to_device

        tensors = [
            to_device(x, self.device) if isinstance(x, np.ndarray) else x.to(self.device)
            for x in inputs
        ]
        with torch.inference_mode(), autocast(self.device, self.precision == "bfloat16"):
            out = self.module(*tensors)
        out = out if isinstance(out, tuple | list) else (out,)
        return [o.float().cpu().numpy() for o in out]


def session_options():
    """onnxruntime session options: quiet, and worker threads that sleep instead of spinning
    between runs (spinning burns the CPU that decoding, in its own thread, needs)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


class OnnxRuntimeNetwork:
    """An ONNX graph on onnxruntime (float32; the CUDA provider when the device is a GPU)."""

    backend = "onnxruntime"
    precision = "float32"

    def __init__(self, path: Path, source: Source, device):
        import onnxruntime

        self.session = onnxruntime.InferenceSession(
            str(path), session_options(), providers=onnx_providers(device)
        )
        self.inputs, self.outputs = source.inputs, list(source.outputs)
        self.providers = self.session.get_providers()

    def __call__(self, *inputs: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.outputs, dict(zip(self.inputs, inputs, strict=True)))


@functools.cache
def openvino_bf16() -> bool:
    """Whether OpenVINO computes bfloat16 natively on this CPU (AVX512-BF16, AMX): elsewhere a
    bf16 request runs in float32."""
    import openvino

    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoNetwork:
    """An ONNX graph compiled by OpenVINO for the CPU, in float32 or bfloat16 precision."""

    backend = "openvino"

    def __init__(self, path: Path, source: Source, bf16: bool):
        import openvino

        core = openvino.Core()
        # compiled blobs are cached too: the next process skips OpenVINO's graph compilation
        core.set_property({"CACHE_DIR": str(cache_dir() / "openvino")})
        bf16 = bf16 and openvino_bf16()
        self.precision = "bfloat16" if bf16 else "float32"
        config = {
            "INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32",
            "PERFORMANCE_HINT": "LATENCY",
        }
        self.compiled = core.compile_model(str(path), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.outputs = [self.compiled.output(name) for name in source.outputs]
        self.providers = ["CPU"]

    def __call__(self, *inputs: np.ndarray) -> list[np.ndarray]:
        results = self.request.infer([np.ascontiguousarray(x) for x in inputs])
        return [np.asarray(results[output]) for output in self.outputs]


def load(source: Source, *, backend: str | None = "auto", device="auto", bf16: bool = False):
    """``source`` ready to run on its backend (:func:`choose`): a callable ``(*arrays) -> list of
    float32 arrays`` with ``backend`` and ``precision`` attributes."""
    chosen = choose(backend, source.name, device, bf16)
    if chosen == "torch":
        return TorchNetwork(source.module(), device, bf16)
    path = onnx_file(source)
    if chosen == "onnxruntime":
        if bf16:
            log.info(
                "onnxruntime has no bfloat16 CPU kernels: the %s network runs in float32",
                source.name,
            )
        return OnnxRuntimeNetwork(path, source, device)
    return OpenVinoNetwork(path, source, bf16)


def torch_imported() -> bool:
    """Whether this process has imported torch (the default path should not need to)."""
    return "torch" in sys.modules
